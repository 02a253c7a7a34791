"""The precision of a training step's matrix products on CUDA (``TrainConfig.matmul_precision``).

Scoped to the training steps, as ``vae/denormals.py`` scopes its mode: TF32 products ("high") speed a
GPU's step, while every evaluation (bounds, IS log-likelihood, probes) keeps float32, so trained
models compare on one scale. A CUDA graph captured inside the scope keeps the products it chose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def training_matmuls(precision: str, device: torch.device) -> Iterator[None]:
    """TF32 matrix products inside the block for ``precision`` 'high' on a CUDA device; otherwise nothing."""
    if precision == "highest" or device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
