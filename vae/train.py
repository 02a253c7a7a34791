"""What starting to train needs, shared by the trainer (``vae/packed_train.py``) and the tests'
one-model reference trainer: the device, the seeds, a model's initial weights, and the error a
non-finite loss raises.

Reproducibility: every random draw (initial weights, shuffling, binarisation, reparameterisation
noise) comes from torch's default RNG seeded once (weights) and one ``torch.Generator`` seeded
with the grid point's seed (everything else); both states go into the checkpoint.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from vae.config import TrainConfig
from vae.errors import NonFiniteLossError
from vae.model import VAE


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda when a GPU is visible, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed the default RNGs of Python, NumPy and torch (the latter draws the initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def initial_model(config: TrainConfig, pixels: int, device: torch.device) -> VAE:
    """The model of images of ``pixels`` pixels with its initial weights, drawn from the default RNGs
    seeded with the config's seed."""
    seed_everything(config.seed)
    return VAE(config.k, config.hidden, config.activation, x_dim=pixels).to(device)


def divergence(config: TrainConfig, epoch: int, step: int, value: float) -> NonFiniteLossError:
    """The error of a diverged model, naming where and which model, the same for every trainer."""
    return NonFiniteLossError(f"non-finite loss ({value}) at epoch {epoch}, step {step} "
                              f"(alpha={config.alpha}, k={config.k}, lr={config.lr}, seed={config.seed})")
