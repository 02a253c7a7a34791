"""Trains a pack of grid points at once: P configs that differ only in alpha and seed, in one process,
each member exactly the training its own config would get alone (``PackedTrainer``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from vae.config import MAX_SEED, RESUMABLE_CHANGES, TrainConfig
from vae.data import Images
from vae.denormals import flushing_denormals, start_threads_flushing_denormals
from vae.errors import NonFiniteLossError
from vae.formats import FORMAT, FORMAT_KEY, refuse_earlier_checkpoint
from vae.member import Member, ScoredImages
from vae.metric_names import MetricName
from vae.model import VAE
from vae.packed import PackedVAE, PackedVRBound, binarize_members, member_noise
from vae.precision import training_matmuls
from vae.step_graph import CudaGraphs, GraphedSteps, StepGraphs
from vae.train import divergence, initial_model, resolve_device

# What may differ between the members of a pack; everything else is shared.
PER_MEMBER = ("alpha", "seed")
# On a GPU, steps per CUDA graph (0: eager steps); 25 divides an epoch of 600 and the failure checks' 100.
GRAPH_STEPS = 25


def repeat_steps(step: Callable[[], None], count: int) -> None:
    """Run ``step`` ``count`` times: the eager counterpart of ``GraphedSteps``."""
    for _ in range(count):
        step()


def on_device(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """``device`` made the current CUDA device (streams and graphs follow it); nothing on CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def restore_generator(generator: torch.Generator, saved: torch.Tensor) -> None:
    """``generator.set_state(saved)``, or, for a state of the other device type (a checkpoint written on a
    GPU, read on CPU, or back), the generator seeded from a digest of the saved state: the stream
    cannot carry over, but the same checkpoint always continues with the same numbers."""
    if saved.numel() == generator.get_state().numel():
        generator.set_state(saved)
        return
    digest = hashlib.sha256(saved.cpu().numpy().tobytes()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little") & MAX_SEED)


def check_packable(configs: Sequence[TrainConfig]) -> None:
    """ValueError unless ``configs`` can train as one pack (same everything but alpha and seed)."""
    if not configs:
        raise ValueError("a pack needs at least one config")
    dumps = [config.model_dump(exclude=set(PER_MEMBER)) for config in configs]
    differ = [field for field in dumps[0] if any(dump[field] != dumps[0][field] for dump in dumps)]
    if differ:
        raise ValueError(f"pack members may differ only in {' and '.join(PER_MEMBER)}, not in {', '.join(differ)}")


class PackedTrainer:
    """Trains the configs' VAEs together, one epoch at a time; member i is ``configs[i]``.

    Each member is the tests' one-model reference trainer (``tests/reference_trainer.py``) vectorised:
    its initial weights and its ``torch.Generator`` are the reference's (``initial_model``, the generator
    seeded with the member's seed), and the generator draws in the reference's order (the epoch's
    permutation, then per batch the binarisation and the reparameterisation noise), so a member sees the
    same batches and noise whatever its pack mates. The loss is the sum of the members' losses: each
    member gets its own gradient and nothing crosses members (``vae.packed``). Adam over the stacked
    parameters is exactly per-member Adam: its update is elementwise (each element's moments come from
    its own gradients; lr, betas, eps and the step count are equal for all members).

    On CPU a pack of one is bit-identical to the reference. In larger packs a member matches its
    unpacked run to float tolerance per step; over many steps training amplifies that rounding as it
    amplifies any other (a change of thread count moves the smoke preset's alpha = 1, k = 10 IS
    log-likelihood by 3.8 nats in the unpacked trainer), so compare trained members to unpacked runs
    statistically.
    """

    def __init__(self, configs: Sequence[TrainConfig], data: Images, check_every: int = 100,
                 graph_steps: int | None = None, graphs: StepGraphs | None = None) -> None:
        """``graph_steps``: steps per CUDA graph (default: ``GRAPH_STEPS``, 0 when ``cuda_graphs`` is off);
        ``graphs``: how to capture (default: ``CudaGraphs`` on a CUDA device, none on CPU; the tests give
        ``EagerGraphs`` to run the GPU path on CPU)."""
        check_packable(configs)
        start_threads_flushing_denormals()
        self.configs = list(configs)
        self.check_every = check_every
        self.device = resolve_device(configs[0].device)
        self.images = ScoredImages.of(data.to(self.device), configs[0])
        # static binarisation: each member's own binarised training set [P, N, D], as bytes (a quarter of
        # float32's memory), gathered per step with the member axis
        static = configs[0].binarization == "static"
        self.train_x = (torch.stack([self.images.static_train_set(config.seed).bool() for config in self.configs])
                        if static else self.images.train_x)
        self.member_rows = torch.arange(len(self.configs), device=self.device).unsqueeze(1)
        pixels = self.images.train_x.shape[1]
        self.model = PackedVAE([initial_model(config, pixels, self.device) for config in self.configs])
        self.model.bf16_output_layer = configs[0].bf16_output_layer
        self.generators = [torch.Generator(device=self.device).manual_seed(config.seed) for config in self.configs]
        self.graphs = graphs if graphs is not None else CudaGraphs(self.device) if self.device.type == "cuda" else None
        # the step as a GPU runs it: no host reads, and capturable Adam (its step count and bias
        # corrections stay on the device, so a graph can hold it)
        self.capture_safe = self.graphs is not None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=configs[0].lr, fused=True,
                                          capturable=self.capture_safe)
        self.bound = PackedVRBound([config.alpha for config in self.configs], self.device)
        members, device = len(self.configs), self.device
        # The step's static buffers (vae/step_graph.py): written in place, never rebound.
        self.order = torch.empty((members, self.train_x.shape[-2]), dtype=torch.long, device=device)  # the epoch's batches
        self.step_index = torch.zeros((), dtype=torch.long, device=device)  # steps done in this epoch
        self.positions = torch.arange(configs[0].batch_size, device=device)
        self.epoch_total = torch.zeros(members, dtype=torch.float64, device=device)
        self.alive = torch.ones(members, dtype=torch.bool, device=device)
        self.fail_step = torch.zeros(members, dtype=torch.long, device=device)
        self.fail_loss = torch.zeros(members, device=device)
        self.failures: dict[int, NonFiniteLossError] = {}
        self.epoch = 0
        if graph_steps is None:
            graph_steps = GRAPH_STEPS if configs[0].cuda_graphs == "auto" else 0
        self.graph_steps = graph_steps if self.graphs is not None else 0
        full_batch = partial(self._step, configs[0].batch_size)
        self.graphed = (GraphedSteps(full_batch, self.generators, self.graph_steps, self.graphs)
                        if self.graphs is not None and self.graph_steps else None)
        self.run_steps = self.graphed or partial(repeat_steps, full_batch)

    @property
    def step_mode(self) -> str:
        """How the steps run, in words (a trial reports it; MLflow and ``vaesweep status`` show it)."""
        if self.graphed is not None and self.graphed.fallback is not None:
            return f"eager: {self.graphs.name} capture failed ({self.graphed.fallback})"
        if self.graphed is not None:
            return f"{self.graphs.name} of {self.graph_steps} steps"
        if self.graphs is not None:
            return "eager: cuda_graphs is off"
        return f"eager on {self.device.type}"

    def train_epoch(self) -> dict[int, dict[str, float]]:
        """One pass over the training set for every member; the epoch's metrics of each member still
        training (the trainer's keys; ``epoch_seconds`` is the pack's). Failed members: ``failures``."""
        start = time.perf_counter()
        epoch = self.epoch + 1
        images = self.train_x.shape[-2]
        self.start_epoch()
        full, rest = divmod(images, self.configs[0].batch_size)
        with (flushing_denormals(), training_matmuls(self.configs[0].matmul_precision, self.device),
              on_device(self.device)):
            for done in range(0, full, self.check_every):
                self.run_steps(min(self.check_every, full - done))
                self._collect_failures(epoch)
            if rest:
                self._step(rest)
        self._collect_failures(epoch)
        self.epoch = epoch
        totals, seconds = self.epoch_total.tolist(), time.perf_counter() - start
        return {
            i: {"epoch": epoch, MetricName.train_vr_bound_alpha: -totals[i] / images, MetricName.epoch_seconds: seconds}
            for i in range(len(self.configs))
            if i not in self.failures
        }

    def seconds_per_step(self, least_seconds: float = 0.25, warmup: int = 3) -> float:
        """Wall time of one full-batch step of the whole pack, timed as ``train_epoch`` runs steps (after
        ``warmup`` steps, over at least ``least_seconds``): what a cost estimate scales to epochs. It
        trains the pack a few steps, so it is for a trainer made to be timed."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        block, per_epoch = max(1, self.graph_steps), self.train_x.shape[-2] // self.configs[0].batch_size
        if per_epoch < block:
            raise ValueError(f"an epoch of {per_epoch} full steps is shorter than a graph of {block} steps")
        steps = 0
        with (flushing_denormals(), training_matmuls(self.configs[0].matmul_precision, self.device),
              on_device(self.device)):
            self.start_epoch()
            self.run_steps(in_epoch := max(min(warmup, per_epoch), block))  # a graph is captured here
            if in_epoch + block <= per_epoch:  # and replayed once before the timing
                self.run_steps(block)
                in_epoch += block
            sync()
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < least_seconds or steps == 0:
                if in_epoch + block > per_epoch:  # a new order before the step counter runs past the epoch
                    self.start_epoch()
                    in_epoch = 0
                self.run_steps(block)
                sync()
                steps, in_epoch = steps + block, in_epoch + block
        return elapsed / steps

    def start_epoch(self) -> None:
        """Draw each member's batch order of a new epoch and zero the step counter and the loss total:
        what must precede any step (a step past the epoch's last batch reads outside ``order``)."""
        for row, generator in zip(self.order, self.generators):
            torch.randperm(row.numel(), generator=generator, device=self.device, out=row)
        self.step_index.zero_()
        self.epoch_total.zero_()

    def _step(self, size: int) -> None:
        """One step of every member on its next ``size`` images of the epoch's order: forward, backward
        and Adam on the members' summed loss, non-finite members flagged and frozen.

        Device tensors only, written in place, never waiting on the host: the epoch's batch order of
        every member sits on the device (``order``), a device counter picks each step's slice, the loss
        total and the divergence flags accumulate there. On CPU it runs eagerly; on a GPU
        (``config.cuda_graphs: auto``) blocks of ``graph_steps`` steps are captured once as a CUDA graph
        and replayed (vae/step_graph.py); a capture that fails leaves the trial eager (``step_mode``).
        The GPU-only choices (never read a flag on the host, ``capturable`` Adam with its step count on
        the device) follow whether a ``StepGraphs`` is given, not the device type, so the CPU tests run
        them through ``EagerGraphs``.

        Divergence without a host round-trip per step: the step records which members' losses turned
        non-finite (at which step, with which value); their losses stay in the sum, but nothing of
        theirs reaches another member."""
        cfg = self.configs[0]
        batch = self.order.index_select(1, self.positions[:size] + self.step_index * cfg.batch_size)
        if cfg.binarization == "static":
            x = self.train_x[self.member_rows, batch].float()
        else:
            x = self.train_x[batch]
            if cfg.binarization == "dynamic":
                x = binarize_members(x, self.generators)
        eps = member_noise(self.generators, cfg.train_samples, size, cfg.k, self.device)
        losses = -self.bound(self.model.log_weights(x, eps)).mean(-1)
        values = losses.detach()
        finite = values.isfinite()
        newly = self.alive & ~finite
        self.fail_step.copy_(torch.where(newly, self.step_index + 1, self.fail_step))
        self.fail_loss.copy_(torch.where(newly, values, self.fail_loss))
        self.alive.logical_and_(finite)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        # A failed member does not move from the step its loss turned non-finite: its gradient (NaN,
        # often) and its Adam moments are zeroed, so Adam's update of its weights is 0. On CPU reading
        # the flags costs nothing and skips passes over every gradient while all members live (5% of a
        # CPU step of a pack of one); a GPU step must not read them (no host sync in a graph), so it
        # always masks.
        if self.capture_safe or not bool(self.alive.all()):
            frozen = ~self.alive
            for param in self.model.parameters():
                members = frozen.view(-1, *[1] * (param.dim() - 1))
                param.grad.masked_fill_(members, 0)
                for moment in ("exp_avg", "exp_avg_sq"):  # absent before Adam's first step
                    if moment in (state := self.optimizer.state[param]):
                        state[moment].masked_fill_(members, 0)
        self.optimizer.step()
        self.epoch_total.add_(values.double() * size)
        self.step_index.add_(1)

    def _collect_failures(self, epoch: int) -> None:
        """Read the device's flags (one host sync, every ``check_every`` steps and at the end of each
        epoch); a newly failed member gets a ``NonFiniteLossError`` in ``failures`` with the message of
        its epoch, step, alpha, k, lr and seed. Its pack mates go on."""
        alive = self.alive.tolist()
        new = [i for i, ok in enumerate(alive) if not ok and i not in self.failures]
        if not new:
            return
        steps, values = self.fail_step.tolist(), self.fail_loss.tolist()
        for i in new:
            self.failures[i] = divergence(self.configs[i], epoch, steps[i], values[i])

    def member_model(self, i: int) -> VAE:
        """Member ``i``'s current weights in a plain ``VAE`` (a copy; no random draws)."""
        cfg = self.configs[i]
        with torch.device("meta"):
            model = VAE(cfg.k, cfg.hidden, cfg.activation, x_dim=self.images.train_x.shape[1])
        model.load_state_dict(self.model.member_state(i), assign=True)
        return model

    def member(self, i: int) -> Member:
        """Member ``i`` as evaluation sees it: a copy of its weights, the pack's scored images, the epoch."""
        return Member(self.configs[i], self.member_model(i), self.images, self.epoch)

    def member_state(self, i: int) -> dict[str, Any]:
        """Member ``i`` as the checkpoint of a pack of one (its weights, its slice of Adam's state,
        generator, divergence record, epoch, config): what a member's own folder holds, what
        `vaesweep analyze` reads, and a pack of one loading it continues the member as it would have gone on."""
        state = self.state_dict()
        one = slice(i, i + 1)
        optimizer = state["optimizer"]
        return {
            **state,
            "model": {name: value[one].clone() for name, value in state["model"].items()},
            "optimizer": {
                "state": {index: {name: (value if value.dim() == 0 else value[one]).clone() for name, value in moments.items()}
                          for index, moments in optimizer["state"].items()},
                "param_groups": optimizer["param_groups"],
            },
            "generators": [state["generators"][i]],
            **{name: state[name][one].clone() for name in ("alive", "fail_step", "fail_loss")},
            "failures": {0: state["failures"][i]} if i in state["failures"] else {},
            "configs": [state["configs"][i]],
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically on CPU (failures included)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "alive": self.alive,
            "fail_step": self.fail_step,
            "fail_loss": self.fail_loss,
            "failures": {i: str(err) for i, err in self.failures.items()},
            "epoch": self.epoch,
            "configs": [config.model_dump() for config in self.configs],
            FORMAT_KEY: FORMAT,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``; the configs must be the same members (``RESUMABLE_CHANGES`` may differ).
        Checkpoints move between devices: a generator state of the other device type (16 bytes of Philox
        seed and offset on CUDA, 5,056 of Mersenne Twister on CPU) cannot be converted, so the member's
        generator is seeded from a digest of the saved state (``restore_generator``: the same state always
        gives the same stream), and Adam's ``capturable`` is set for the device in use after loading.
        CheckpointError for the checkpoint of an earlier format (``vae/formats.py``)."""
        refuse_earlier_checkpoint(state)
        saved = [TrainConfig(**config).model_dump(exclude=RESUMABLE_CHANGES) for config in state["configs"]]
        if saved != [config.model_dump(exclude=RESUMABLE_CHANGES) for config in self.configs]:
            raise ValueError(f"checkpoint was trained with different configs (only {', '.join(sorted(RESUMABLE_CHANGES))} "
                             "may change)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the checkpoint's flag is the device it was written on
            group["capturable"] = self.capture_safe
        for generator, generator_state in zip(self.generators, state["generators"]):
            restore_generator(generator, generator_state)
        for name in ("alive", "fail_step", "fail_loss"):  # in place: the step's buffers keep their addresses
            getattr(self, name).copy_(state[name])
        self.failures = {i: NonFiniteLossError(message) for i, message in state["failures"].items()}
        self.epoch = state["epoch"]
        if self.graphed is not None:  # the optimizer's state tensors are new: capture again
            self.graphed.reset()
