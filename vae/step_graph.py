"""Training steps captured once as a CUDA graph and replayed: on a GPU the packed step is bound by
kernel launches and Python dispatch, not by its arithmetic (``bench/pack_throughput.py``).

The step function given here must read and write only tensors that outlive a step (static buffers:
parameters, gradients, optimizer state, the epoch's batch order, a step counter on the device), draw
its random numbers only from the generators given here, and never wait on the host (no ``.item()``,
no ``.tolist()``, no shapes that depend on values). ``vae.packed_train.PackedTrainer._step`` is
written so, and runs eagerly on CPU (where the tests check it) exactly as it is captured on a GPU.

The recipe is PyTorch's "whole-network capture" (CUDA semantics notes): a few eager warm-up steps on
a side stream, so that cuBLAS handles, autograd's and the fused optimizer's lazy set-up happen outside
the graph; then ``torch.cuda.graph`` records ``steps`` consecutive steps once, and each replay runs
them with one launch from the host. A block of steps rather than one: each replay also refills two
small tensors per registered generator (its seed and offset), which a block amortises.

Random numbers: each generator is registered with the graph (``CUDAGraph.register_generator_state``)
before capture. A replay then draws from that generator's own Philox stream at its current offset and
advances the offset by what the captured kernels consume, as the same kernels run eagerly would: a
member's noise does not depend on its pack mates, nor on whether a step was replayed or run eagerly,
and a checkpointed generator state resumes the stream (``tests/test_step_graph.py`` checks this on a
GPU; the tests skip without CUDA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

WARMUP_STEPS = 3  # eager steps before capture, as in PyTorch's whole-network example


class GraphedSteps:
    """Runs a step function ``count`` times per call: as replays of a graph of ``steps`` steps where
    whole blocks fit, eagerly otherwise (the first ``WARMUP_STEPS`` calls, and remainders)."""

    def __init__(self, step: Callable[[], None], generators: Sequence[torch.Generator], steps: int) -> None:
        if steps < 1:
            raise ValueError(f"a graph holds at least one step, not {steps}")
        self.step = step
        self.generators = list(generators)
        self.steps = steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed_up = 0

    def __call__(self, count: int) -> None:
        done = 0
        while done < count:
            whole_block = count - done >= self.steps
            if whole_block and self.graph is None and self.warmed_up >= WARMUP_STEPS:
                self.graph = self._capture()
            if whole_block and self.graph is not None:
                self.graph.replay()
                done += self.steps
            else:
                self._eager()
                done += 1

    def reset(self) -> None:
        """Forget the graph (its buffers' addresses are stale after state was loaded anew)."""
        self.graph = None
        self.warmed_up = 0

    def _eager(self) -> None:
        if self.warmed_up >= WARMUP_STEPS:
            self.step()
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step()
        torch.cuda.current_stream().wait_stream(side)
        self.warmed_up += 1

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Record ``steps`` steps (recording runs nothing: the caller replays the graph next)."""
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        # thread_local: Ray Tune runs a function trainable in a thread of its worker process
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            for _ in range(self.steps):
                self.step()
        return graph
