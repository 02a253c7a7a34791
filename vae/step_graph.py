"""Training steps captured once as a CUDA graph and replayed: on a GPU the packed step is bound by
kernel launches and Python dispatch, not by its arithmetic (``bench/pack_throughput.py``).

The step function given here must read and write only tensors that outlive a step (static buffers:
parameters, gradients, optimizer state, the epoch's batch order, a step counter on the device), draw
its random numbers only from generators that outlive the graph, and never wait on the host (no
``.item()``, no ``.tolist()``, no shapes that depend on values). ``vae.packed_train.PackedTrainer._step``
is written so; ``tests/test_step_graph.py`` runs it on CPU through ``EagerGraphs`` (the same calls,
each step run eagerly) under a recorder of host synchronisations.

The recipe is PyTorch's "whole-network capture" (CUDA semantics notes): a few eager warm-up steps on
a side stream, so that cuBLAS handles, autograd's and the fused optimizer's lazy set-up happen outside
the graph; then ``torch.cuda.graph`` records ``steps`` consecutive steps once, and each replay runs
them with one launch from the host. A block of steps rather than one: each replay also refills two
small tensors per generator used in the graph (its seed and offset), which a block amortises. Every
stream, capture and replay is bound to the trainer's device explicitly (``torch.cuda.device``), so a
trial on ``cuda:1`` captures its kernels there whichever device is current.

Random numbers: torch 2.14 registers a generator with the capturing graph at its first draw inside
the capture (``CUDAGraph.register_generator_state`` is a deprecated no-op there; older torch needed
it, and gets it). A replay draws from each generator's own Philox stream at its current offset and
advances the offset by what the captured kernels consume, as the same kernels run eagerly would: a
member's noise does not depend on its pack mates, nor on whether a step was replayed or run eagerly.

A capture that raises (an operation the driver or torch cannot capture) is not fatal: the steps go on
eagerly for the rest of the trial, with the generators as they were before the attempt, and
``GraphedSteps.fallback`` says why (the trial reports it: ``PackedTrainer.step_mode``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

WARMUP_STEPS = 3  # eager steps before capture, as in PyTorch's whole-network example
# Below this torch a graph had to be told of each non-default generator it draws from.
EXPLICIT_GENERATOR_REGISTRATION = torch.torch_version.TorchVersion(torch.__version__) < (2, 14)


class StepGraphs(Protocol):
    """How ``GraphedSteps`` runs a step outside a graph, records a block and replays it, on one device."""

    device: torch.device
    name: str  # how a trial's step mode names it

    def on_device(self) -> contextlib.AbstractContextManager[None]:
        """Make ``device`` the current one for what runs inside."""

    def warm_up(self, step: Callable[[], None]) -> None:
        """Run ``step`` once before capture (on a side stream on a GPU)."""

    def capture(self, block: Callable[[], None], generators: Sequence[torch.Generator]) -> Callable[[], None]:
        """Record ``block`` (running nothing) and return what replays it."""


class CudaGraphs:
    """CUDA graphs on one device: streams, capture and replay all bound to it."""

    name = "CUDA graphs"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def on_device(self) -> contextlib.AbstractContextManager[None]:
        return torch.cuda.device(self.device)

    def warm_up(self, step: Callable[[], None]) -> None:
        side, current = torch.cuda.Stream(device=self.device), torch.cuda.current_stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            step()
        current.wait_stream(side)

    def capture(self, block: Callable[[], None], generators: Sequence[torch.Generator]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        if EXPLICIT_GENERATOR_REGISTRATION:
            for generator in generators:
                graph.register_generator_state(generator)
        # thread_local: Ray Tune runs a function trainable in a thread of its worker process
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(device=self.device), capture_error_mode="thread_local"):
            block()
        return graph.replay


class EagerGraphs:
    """The CPU twin of ``CudaGraphs``: the same calls from ``GraphedSteps``, each step run eagerly
    (capture keeps the block, a replay runs it), counted. What the tests use to check the GPU path's
    step counting, re-capture and device binding without a GPU; ``fail_capture`` makes the first
    capture raise, as a capture the driver refuses would."""

    name = "EagerGraphs (CUDA graphs' CPU twin)"

    def __init__(self, device: torch.device, fail_capture: bool = False) -> None:
        self.device = device
        self.fail_capture = fail_capture
        self.warm_ups = self.captures = self.replays = 0

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        yield

    def warm_up(self, step: Callable[[], None]) -> None:
        self.warm_ups += 1
        step()

    def capture(self, block: Callable[[], None], generators: Sequence[torch.Generator]) -> Callable[[], None]:
        if self.fail_capture:
            self.fail_capture = False
            raise RuntimeError("operation not permitted when stream is capturing (EagerGraphs.fail_capture)")
        self.captures += 1

        def replay() -> None:
            self.replays += 1
            block()

        return replay


class GraphedSteps:
    """Runs a step function ``count`` times per call: as replays of a graph of ``steps`` steps where
    whole blocks fit, eagerly otherwise (the first ``WARMUP_STEPS`` calls, and remainders)."""

    def __init__(self, step: Callable[[], None], generators: Sequence[torch.Generator], steps: int,
                 graphs: StepGraphs) -> None:
        if steps < 1:
            raise ValueError(f"a graph holds at least one step, not {steps}")
        self.step = step
        self.generators = list(generators)
        self.steps = steps
        self.graphs = graphs
        self.replay: Callable[[], None] | None = None
        self.warmed_up = 0
        self.fallback: str | None = None  # why the steps run eagerly after a capture raised

    def __call__(self, count: int) -> None:
        done = 0
        with self.graphs.on_device():
            while done < count:
                whole_block = count - done >= self.steps
                if whole_block and self.replay is None and self.warmed_up >= WARMUP_STEPS and self.fallback is None:
                    self.replay = self._capture()
                if whole_block and self.replay is not None:
                    self.replay()
                    done += self.steps
                else:
                    self._eager()
                    done += 1

    def reset(self) -> None:
        """Forget the graph (its buffers' addresses are stale after state was loaded anew)."""
        self.replay = None
        self.warmed_up = 0

    def _eager(self) -> None:
        if self.warmed_up >= WARMUP_STEPS:
            self.step()
            return
        self.graphs.warm_up(self.step)
        self.warmed_up += 1

    def _capture(self) -> Callable[[], None] | None:
        """Record ``steps`` steps (recording runs nothing: the caller replays the graph next); None, with
        ``fallback`` set and the generators as they were, if the capture raised."""
        before = [generator.get_state() for generator in self.generators]
        try:
            return self.graphs.capture(self._block, self.generators)
        except Exception as err:  # noqa: BLE001 - any capture failure: the steps still run eagerly
            for generator, state in zip(self.generators, before):
                generator.set_state(state)
            self.fallback = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            print(f"vaesweep: {self.graphs.name} capture failed ({self.fallback}); this trial's steps run eagerly",
                  file=sys.stderr)
            return None

    def _block(self) -> None:
        for _ in range(self.steps):
            self.step()
