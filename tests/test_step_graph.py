"""The packed step as a CUDA graph captures it (vae/step_graph.py), checked on CPU through its twin.

``EagerGraphs`` takes the calls ``GraphedSteps`` makes of ``CudaGraphs`` (warm-up, capture, replay,
each inside ``on_device``) and runs each step eagerly, so the GPU path's step counting, partial
blocks, re-capture, fallback and device binding run here; a ``TorchDispatchMode`` records every host
synchronisation and value-dependent shape inside the replayed block (there must be none: a CUDA
graph cannot hold them). Every test marked ``gpu`` (skipped without CUDA) has a CPU twin above it
that makes the same calls."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sweep_helpers import children, vaesweep, write_config
from vae.checkpoint import save_checkpoint
from vae.config import TrainConfig
from vae.data import Images
from vae.mnist import load_mnist
from vae.packed_train import GRAPH_STEPS, PackedTrainer
from vae.step_graph import EXPLICIT_GENERATOR_REGISTRATION, WARMUP_STEPS, CudaGraphs, EagerGraphs, GraphedSteps
from reference_trainer import Trainer

CPU = torch.device("cpu")


def gpu(test):
    """Marked ``gpu`` (``pytest -m gpu`` on the GPU machine) and skipped where CUDA is absent."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


STATIC_BUFFERS = ("order", "step_index", "positions", "epoch_total", "alive", "fail_step", "fail_loss")
# Operations that wait on the host; value-dependent shapes are found by their tags.
HOST_READS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal", "aten::nonzero", "aten::masked_select",
              "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive", "aten::item"}


class HostSyncs(TorchDispatchMode):
    """Records each operation that a CUDA graph cannot hold: a host read, or an output shape that
    depends on the values."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in HOST_READS or self.value_dependent(func, args):
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))

    @staticmethod
    def value_dependent(func, args) -> bool:
        """Tagged so by torch; indexing only with a boolean mask (integer indices give a fixed shape)."""
        if not {torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape} & set(func.tags):
            return False
        if func._schema.name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
            return any(index is not None and index.dtype in (torch.bool, torch.uint8) for index in args[1])
        return True


class RecordingGraphs(EagerGraphs):
    """``EagerGraphs`` that checks each call runs bound to its device and records host syncs in replays."""

    def __init__(self, device: torch.device = CPU) -> None:
        super().__init__(device)
        self.bound = 0
        self.syncs = HostSyncs()

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        self.bound += 1
        try:
            yield
        finally:
            self.bound -= 1

    def warm_up(self, step: Callable[[], None]) -> None:
        assert self.bound, "a warm-up step outside the trainer's device"
        super().warm_up(step)

    def capture(self, block: Callable[[], None], generators: Sequence[torch.Generator]) -> Callable[[], None]:
        assert self.bound, "a capture outside the trainer's device"
        replay = super().capture(block, generators)

        def recorded() -> None:
            assert self.bound, "a replay outside the trainer's device"
            with self.syncs:
                replay()

        return recorded


@pytest.fixture(scope="module")
def small_mnist(mnist_dir) -> Images:
    return load_mnist(mnist_dir, train_subset=600, test_subset=200)


def configs(device: str = "cpu", **overrides) -> list[TrainConfig]:
    return [TrainConfig(alpha=alpha, k=10, epochs=4, seed=seed, device=device, **overrides)
            for alpha, seed in ((0.5, 0), (0.0, 1), (-math.inf, 2))]


def weights(pack: PackedTrainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in pack.model.state_dict().items()}


def member_weights(pack: PackedTrainer, i: int) -> dict[str, torch.Tensor]:
    return {name: value[i].detach().cpu().clone() for name, value in pack.model.state_dict().items()}


def test_the_step_writes_its_buffers_in_place_through_epochs_and_a_resume(small_mnist, tmp_path):
    pack = PackedTrainer(configs(), small_mnist)
    addresses = {name: getattr(pack, name).data_ptr() for name in STATIC_BUFFERS}
    params = [p.data_ptr() for p in pack.model.parameters()]
    pack.train_epoch()
    save_checkpoint(pack.state_dict(), tmp_path / "pack.pt")
    pack.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))
    pack.train_epoch()
    assert {name: getattr(pack, name).data_ptr() for name in STATIC_BUFFERS} == addresses
    assert [p.data_ptr() for p in pack.model.parameters()] == params
    assert pack.step_index.item() == 6, "the device step counter counts the epoch's steps"


@pytest.mark.parametrize("check_every", [1, 4])
def test_every_step_runs_once_whatever_the_failure_check_interval(small_mnist, check_every):
    every_100, checked = PackedTrainer(configs(), small_mnist), PackedTrainer(configs(), small_mnist, check_every=check_every)
    for _ in range(2):
        assert every_100.train_epoch().keys() == checked.train_epoch().keys()
    for name, value in weights(every_100).items():
        assert torch.equal(value, weights(checked)[name]), name


def test_a_partial_last_batch_trains_as_the_trainer_does(mnist_dir):
    data = load_mnist(mnist_dir, train_subset=550, test_subset=100)  # 5 batches of 100 and one of 50
    config = configs()[0]
    trainer, pack = Trainer(config, data), PackedTrainer([config], data)
    for _ in range(2):
        assert trainer.train_epoch()["train_vr_bound_alpha"] == pack.train_epoch()[0]["train_vr_bound_alpha"]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, pack.member_model(0).state_dict()[name]), name


def test_a_graph_needs_a_step():
    with pytest.raises(ValueError, match="at least one step"):
        GraphedSteps(lambda: None, [], 0, EagerGraphs(CPU))


# --- GraphedSteps through its CPU twin ---------------------------------------------------------------

def test_graphed_steps_run_each_step_once_replaying_whole_blocks_cpu_twin():
    counter = torch.zeros((), dtype=torch.long)
    graphs = RecordingGraphs()
    graphed = GraphedSteps(lambda: counter.add_(1), [], steps=25, graphs=graphs)
    graphed(60)  # 3 warm-up steps, then 2 replays of 25, then 7 eager ones
    assert (counter.item(), graphs.warm_ups, graphs.captures, graphs.replays) == (60, WARMUP_STEPS, 1, 2)
    graphed(50)
    assert (counter.item(), graphs.captures, graphs.replays) == (110, 1, 4)


@gpu
def test_graphed_steps_run_each_step_once_replaying_whole_blocks():
    counter = torch.zeros((), dtype=torch.long, device="cuda")
    graphed = GraphedSteps(lambda: counter.add_(1), [], steps=25, graphs=CudaGraphs(torch.device("cuda")))
    graphed(60)
    graphed(50)
    torch.cuda.synchronize()
    assert counter.item() == 110 and graphed.replay is not None


def test_the_replayed_block_never_waits_on_the_host_cpu_twin(small_mnist):
    graphs = RecordingGraphs()
    pack = PackedTrainer(configs(), small_mnist, graph_steps=2, graphs=graphs)
    pack.train_epoch()  # 6 steps: 3 warm-ups, a capture and one replay of 2, one eager step
    pack.start_epoch()  # a replay must follow the start of an epoch (past its last batch it reads outside `order`)
    pack.graphed(4)
    assert graphs.replays == 3 and graphs.syncs.seen == [], graphs.syncs.seen


def test_the_recorder_finds_a_host_read_added_to_the_step(small_mnist):
    """What the test above would see if the step read a value on the host (as the CPU shortcut does)."""
    graphs = RecordingGraphs()
    pack = PackedTrainer(configs(), small_mnist, graphs=graphs)

    def step_with_a_read() -> None:
        pack._step(100)
        pack.epoch_total.sum().item()

    pack.start_epoch()
    GraphedSteps(step_with_a_read, pack.generators, steps=2, graphs=graphs)(5)  # 3 warm-ups, one replay of 2
    assert graphs.syncs.seen == ["aten::_local_scalar_dense"] * 2


@gpu
def test_replays_do_not_wait_on_the_host(small_mnist):
    pack = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    pack.train_epoch()  # warm-up and capture
    pack.start_epoch()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pack.graphed(4)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_graphed_steps_train_exactly_as_eager_steps_and_capture_again_after_a_load_cpu_twin(small_mnist, tmp_path):
    graphs = RecordingGraphs()
    graphed = PackedTrainer(configs(), small_mnist, check_every=4, graph_steps=2, graphs=graphs)
    eager = PackedTrainer(configs(), small_mnist, check_every=4, graph_steps=0, graphs=EagerGraphs(CPU))
    assert graphed.graphs.device == graphed.device and eager.graphed is None
    for _ in range(2):
        bounds_graphed, bounds_eager = graphed.train_epoch(), eager.train_epoch()
        assert {i: m["train_vr_bound_alpha"] for i, m in bounds_graphed.items()} == \
            {i: m["train_vr_bound_alpha"] for i, m in bounds_eager.items()}
    for name, value in weights(eager).items():
        assert torch.equal(weights(graphed)[name], value), name
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(graphed.generators, eager.generators))
    assert graphs.captures == 1
    save_checkpoint(graphed.state_dict(), tmp_path / "pack.pt")
    graphed.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))
    assert graphed.graphed.replay is None, "a load forgets the graph (its optimizer state tensors are new)"
    graphed.train_epoch()
    assert graphs.captures == 2 and graphs.syncs.seen == []


@gpu
def test_the_captured_step_trains_as_the_eager_step_on_the_gpu(small_mnist):
    graphed = PackedTrainer(configs("cuda"), small_mnist, check_every=4, graph_steps=2)
    eager = PackedTrainer(configs("cuda"), small_mnist, check_every=4, graph_steps=0)
    for _ in range(3):
        bounds_graphed, bounds_eager = graphed.train_epoch(), eager.train_epoch()
        for i, metrics in bounds_eager.items():
            assert bounds_graphed[i]["train_vr_bound_alpha"] == pytest.approx(metrics["train_vr_bound_alpha"], abs=1e-3)
    assert graphed.graphed.replay is not None, "the graph was captured and replayed"
    for name, value in weights(eager).items():
        assert torch.allclose(weights(graphed)[name], value, rtol=1e-4, atol=1e-5), name
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(graphed.generators, eager.generators)), \
        "replays advance each member's generator as eager steps do"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.gpu
def test_a_pack_on_the_second_gpu_captures_there(small_mnist):
    torch.cuda.set_device(0)
    graphed = PackedTrainer(configs("cuda:1"), small_mnist, graph_steps=2)
    eager = PackedTrainer(configs("cuda:1"), small_mnist, graph_steps=0)
    graphed.train_epoch(), eager.train_epoch()
    for name, value in weights(eager).items():
        assert torch.allclose(weights(graphed)[name], value, rtol=1e-4, atol=1e-5), name


def test_generators_are_not_registered_by_hand_on_this_torch():
    """torch 2.14 registers a generator with the capturing graph at its first draw; its
    ``register_generator_state`` is a deprecated no-op, called only for older torch (EagerGraphs has none)."""
    assert EXPLICIT_GENERATOR_REGISTRATION is (torch.torch_version.TorchVersion(torch.__version__) < (2, 14))
    generator = torch.Generator().manual_seed(0)
    noise = torch.empty(3)
    graphed = GraphedSteps(lambda: noise.normal_(generator=generator), [generator], steps=2, graphs=EagerGraphs(CPU))
    graphed(5)
    assert graphed.replay is not None and graphed.fallback is None


# --- the switch, the fallback and the step mode ------------------------------------------------------

def test_cuda_graphs_off_reaches_the_trainer_and_a_resume_may_switch_it(small_mnist, tmp_path):
    on = PackedTrainer(configs(), small_mnist, graphs=EagerGraphs(CPU))
    assert on.graph_steps == GRAPH_STEPS and on.graphed is not None
    assert on.step_mode == f"EagerGraphs (CUDA graphs' CPU twin) of {GRAPH_STEPS} steps"
    on.train_epoch()
    save_checkpoint(on.state_dict(), tmp_path / "pack.pt")
    off = PackedTrainer(configs(cuda_graphs="off"), small_mnist, graphs=EagerGraphs(CPU))
    off.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))  # a resumable change
    assert (off.graph_steps, off.graphed, off.step_mode) == (0, None, "eager: cuda_graphs is off")
    assert PackedTrainer(configs(), small_mnist).step_mode == "eager on cpu"
    assert TrainConfig(cuda_graphs=False).cuda_graphs == "off", "YAML's bare off"
    with pytest.raises(ValueError, match="cuda_graphs"):
        TrainConfig(cuda_graphs="maybe")


def test_a_failed_capture_goes_on_eagerly_with_the_same_training(small_mnist, capfd):
    failing = PackedTrainer(configs(), small_mnist, check_every=4, graph_steps=2, graphs=EagerGraphs(CPU, fail_capture=True))
    eager = PackedTrainer(configs(), small_mnist, check_every=4, graph_steps=0, graphs=EagerGraphs(CPU))
    for _ in range(2):
        failing.train_epoch(), eager.train_epoch()
    assert failing.graphs.captures == 0 and failing.graphed.fallback.startswith("RuntimeError: operation not permitted")
    assert failing.step_mode.startswith("eager: EagerGraphs (CUDA graphs' CPU twin) capture failed (RuntimeError")
    assert capfd.readouterr().err.count("capture failed") == 1, "said once, in one line"
    for name, value in weights(eager).items():
        assert torch.equal(weights(failing)[name], value), name


def test_vaesweep_train_takes_cuda_graphs_and_refuses_a_bad_value(mnist_dir, tmp_path):
    common = ["train", "--epochs", "1", "--k", "5", "--train-subset", "3000", "--test-subset", "100", "--is-samples", "5",
              "--probe-epochs", "0", "--data-dir", str(mnist_dir)]
    hook = {"VAESWEEP_EAGER_GRAPHS": "1"}
    off = vaesweep(*common, "--cuda-graphs", "off", "--out", str(tmp_path / "off"), env=hook)
    assert off.returncode == 0, off.stderr[-2000:]
    assert json.loads((tmp_path / "off" / "metrics.json").read_text())["step_mode"] == "eager: cuda_graphs is off"
    assert "vaesweep: device: torch " in off.stdout and "training on cpu (eager: cuda_graphs is off)" in off.stdout
    auto = vaesweep(*common, "--out", str(tmp_path / "auto"), env=hook)
    assert auto.returncode == 0, auto.stderr[-2000:]
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["step_mode"].endswith(f"of {GRAPH_STEPS} steps")
    bad = vaesweep(*common, "--cuda-graphs", "maybe", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--cuda-graphs: invalid choice: 'maybe'" in bad.stderr and not (tmp_path / "bad").exists()
    refused = vaesweep("run", "smoke", "--dry-run", "--set", "train.cuda_graphs=maybe")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "vaesweep: error: train.cuda_graphs: Input should be 'auto' or 'off'")


@pytest.mark.slow
def test_a_sweep_records_a_failed_capture_in_status_and_mlflow(mnist_dir, tmp_path):
    config = write_config(tmp_path, "fallback", [1.0], epochs=1, train={"epochs": 1, "train_subset": 3000, "test_subset": 100})
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir), env={"VAESWEEP_EAGER_GRAPHS": "fail"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "capture failed (RuntimeError: operation not permitted" in done.stdout + done.stderr
    status = vaesweep("status", "fallback", "--storage", str(tmp_path / "runs"))
    assert "steps: eager: EagerGraphs (CUDA graphs' CPU twin) capture failed" in status.stdout
    (run,) = children(tmp_path / "runs" / "fallback")
    assert run.info.status == "FINISHED" and "capture failed" in run.data.tags["step_mode"]
    # train.cuda_graphs: off reaches a sweep's trainer (the GPU path's twin on, as on a GPU)
    off = vaesweep("run", str(config), "--name", "off", "--set", "train.cuda_graphs=off", "--data-dir", str(mnist_dir),
                   env={"VAESWEEP_EAGER_GRAPHS": "1"})
    assert off.returncode == 0, off.stderr[-3000:]
    (run,) = children(tmp_path / "runs" / "off")
    assert run.data.tags["step_mode"] == "eager: cuda_graphs is off"


# --- divergence and checkpoints across devices --------------------------------------------------------

@pytest.mark.parametrize("graphs", [None, "eager twin"])
def test_a_diverged_member_does_not_move_from_the_step_it_failed(small_mnist, graphs):
    pack = PackedTrainer(configs(), small_mnist, graphs=EagerGraphs(CPU) if graphs else None)
    pack.train_epoch()  # Adam's moments are non-zero from here on
    with torch.no_grad():
        pack.model.decoder.linears[-1].bias[1, 0] = math.inf  # member 1's loss is not finite from step 1 on
    before = member_weights(pack, 1)
    assert sorted(pack.train_epoch()) == [0, 2]  # the host checks once, at the epoch's end (check_every 100)
    assert "at epoch 2, step 1 " in str(pack.failures[1])
    for name, value in member_weights(pack, 1).items():
        assert torch.equal(value, before[name]), f"{name} drifted on Adam's momentum"


def as_a_gpu_writes_it(state: dict) -> dict:
    """A CPU trainer's state with what a GPU trainer's holds instead: CUDA generator states (16 bytes:
    Philox seed and offset) and capturable Adam."""
    generators = [torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)
                  for seed, offset in ((1234, 4096), (99, 0), (7, 12))][: len(state["generators"])]
    groups = [{**group, "capturable": True} for group in state["optimizer"]["param_groups"]]
    return {**state, "generators": generators, "optimizer": {**state["optimizer"], "param_groups": groups}}


def test_a_gpu_checkpoint_resumes_on_cpu_reproducibly_and_a_cpu_one_in_a_capture_safe_trainer(small_mnist, tmp_path):
    pack = PackedTrainer(configs(), small_mnist)
    pack.train_epoch()
    save_checkpoint(as_a_gpu_writes_it(pack.state_dict()), tmp_path / "gpu.pt")
    resumed = [PackedTrainer(configs(), small_mnist) for _ in range(2)]
    for trainer in resumed:
        trainer.load_state_dict(torch.load(tmp_path / "gpu.pt", weights_only=True))
        assert {group["capturable"] for group in trainer.optimizer.param_groups} == {False}
        trainer.train_epoch()
    for name, value in weights(resumed[0]).items():
        assert torch.equal(weights(resumed[1])[name], value), "the same checkpoint continues with the same numbers"
    safe = PackedTrainer(configs(), small_mnist, graphs=EagerGraphs(CPU))
    safe.load_state_dict(pack.state_dict())
    assert {group["capturable"] for group in safe.optimizer.param_groups} == {True}
    safe.train_epoch()


def test_vaesweep_analyze_reads_a_gpu_written_checkpoint_on_cpu(mnist_dir, tmp_path):
    data = load_mnist(mnist_dir, train_subset=600, test_subset=200)
    config = TrainConfig(alpha=0.5, k=5, epochs=1, seed=0, device="cuda", train_subset=600, test_subset=200)
    pack = PackedTrainer([config.model_copy(update={"device": "cpu"})], data)
    pack.train_epoch()
    state = as_a_gpu_writes_it(pack.member_state(0))
    state["configs"] = [config.model_dump()]  # trained on the GPU
    save_checkpoint(state, tmp_path / "run" / "checkpoint.pt")
    done = vaesweep("analyze", str(tmp_path / "run"), "--device", "cpu", "--data-dir", str(mnist_dir),
                    "--probe-train-size", "300")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "analysis" / "analysis.json").read_text())["active_components"] >= 0


@gpu
def test_a_graphed_pack_resumes_exactly_and_isolates_a_diverging_member(small_mnist, tmp_path):
    straight = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    first = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    for pack in (straight, first):
        pack.train_epoch()
        with torch.no_grad():
            pack.model.decoder.linears[-1].bias[1, 0] = math.inf
    straight.train_epoch(), straight.train_epoch()
    first.train_epoch()
    save_checkpoint(first.state_dict(), tmp_path / "pack.pt")
    resumed = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    resumed.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))
    assert sorted(resumed.train_epoch()) == [0, 2]
    assert list(resumed.failures) == [1] and "at epoch 2, step 1" in str(resumed.failures[1])
    for name, value in weights(straight).items():  # the resumed epoch warms up eagerly, the straight one replays
        assert torch.allclose(weights(resumed)[name], value, rtol=1e-5, atol=1e-6), name


@gpu
def test_a_cpu_checkpoint_resumes_on_the_gpu_with_capturable_adam(small_mnist, tmp_path):
    pack = PackedTrainer(configs(), small_mnist)
    pack.train_epoch()
    on_gpu = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    on_gpu.load_state_dict(pack.state_dict())
    assert {group["capturable"] for group in on_gpu.optimizer.param_groups} == {True}
    on_gpu.train_epoch()
    assert on_gpu.graphed.replay is not None and on_gpu.graphed.fallback is None
