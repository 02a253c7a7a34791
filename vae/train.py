"""The trainer: a ``TrainConfig`` in, one epoch at a time; no Ray, no MLflow (the loop over epochs,
with probes, checkpoints and the final analysis, is the trial engine in ``sweeps/trial/engine.py``).

Reproducibility: every random draw (initial weights, shuffling, binarisation, reparameterisation
noise) comes from the global torch RNG seeded once (weights) and one ``torch.Generator`` seeded
with the trial seed (everything else). Both states go into the checkpoint, so training 2 epochs,
saving, loading into a fresh trainer and training 2 more gives bit-identical weights to 4 epochs in
one go on CPU (``tests/test_train.py``). On CUDA, kernels are not bitwise deterministic.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vae.bounds import log_weights, vr_bound
from vae.config import RESUMABLE_CHANGES, TrainConfig
from vae.errors import NonFiniteLossError
from vae.data import Images, binarize
from vae.denormals import flushing_denormals, start_threads_flushing_denormals
from vae.member import Member, ScoredImages
from vae.metric_names import MetricName
from vae.model import VAE
from vae.precision import training_matmuls


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda when a GPU is visible, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global RNGs (the latter draws the initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def initial_model(config: TrainConfig, pixels: int, device: torch.device) -> VAE:
    """The model of images of ``pixels`` pixels with its initial weights, drawn from the global RNGs
    seeded with the config's seed."""
    seed_everything(config.seed)
    return VAE(config.k, config.hidden, config.activation, x_dim=pixels).to(device)


def divergence(config: TrainConfig, epoch: int, step: int, value: float) -> NonFiniteLossError:
    """The error of a diverged model, naming where and which model, the same for every trainer."""
    return NonFiniteLossError(f"non-finite loss ({value}) at epoch {epoch}, step {step} "
                              f"(alpha={config.alpha}, k={config.k}, lr={config.lr}, seed={config.seed})")


class Trainer:
    """Trains one VAE on in-memory images with the VR bound of ``config.alpha``."""

    def __init__(self, config: TrainConfig, data: Images) -> None:
        start_threads_flushing_denormals()
        self.config = config
        self.device = resolve_device(config.device)
        self.model = initial_model(config, data.train_x.shape[1], self.device)
        self.model.bf16_output_layer = config.bf16_output_layer
        # fused Adam: one kernel per step instead of a dozen per parameter, about 7% of a CPU step
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch = 0
        self.images = ScoredImages.of(data.to(self.device), config)
        static = config.binarization == "static"
        self.train_x = self.images.static_train_set(config.seed) if static else self.images.train_x
        self.train_y, self.val_x, self.test_x, self.test_y = (
            self.images.train_y, self.images.val_x, self.images.test_x, self.images.test_y)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training set in shuffled batches; returns the epoch's metrics."""
        cfg = self.config
        self.model.train()
        start = time.perf_counter()
        epoch = self.epoch + 1
        order = torch.randperm(len(self.train_x), generator=self.generator, device=self.device)
        total = 0.0
        with flushing_denormals(), training_matmuls(cfg.matmul_precision, self.device):
            for step, batch in enumerate(order.split(cfg.batch_size), start=1):
                x = self.train_x[batch]
                if cfg.binarization == "dynamic":
                    x = binarize(x, self.generator)
                bound = vr_bound(log_weights(self.model, x, cfg.train_samples, self.generator), cfg.alpha).mean()
                loss = -bound
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                value = loss.item()
                if not math.isfinite(value):
                    raise divergence(cfg, epoch, step, value)
                total += value * len(batch)
        self.epoch = epoch
        return {
            "epoch": epoch,
            MetricName.train_vr_bound_alpha: -total / len(self.train_x),
            MetricName.epoch_seconds: time.perf_counter() - start,
        }

    def member(self) -> Member:
        """The model as evaluation sees it (its weights, not a copy): test bounds, IS log-likelihood,
        validation bound, probe sets."""
        return Member(self.config, self.model, self.images, self.epoch)

    def evaluate(self, bound_samples: int, is_samples: int,
                 progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """``Member.evaluate`` of the current model."""
        return self.member().evaluate(bound_samples, is_samples, progress)

    def validation_bound(self, images: int, samples: int) -> float:
        """``Member.validation_bound`` of the current model."""
        return self.member().validation_bound(images, samples)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (see the module docstring)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "config": self.config.model_dump(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``; the config must describe the same model."""
        saved = TrainConfig(**state["config"])
        if saved.model_dump(exclude=RESUMABLE_CHANGES) != self.config.model_dump(exclude=RESUMABLE_CHANGES):
            raise ValueError(f"checkpoint was trained with a different config (only "
                             f"{', '.join(sorted(RESUMABLE_CHANGES))} may change)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]
