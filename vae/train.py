"""The trainer: a ``TrainConfig`` in, one epoch at a time; no Ray, no MLflow (the loop over epochs,
with probes, checkpoints and the final analysis, is the trial engine in ``sweeps/engine.py``).

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

from vae.bounds import dataset_bounds, log_likelihood, log_weights, vr_bound
from vae.config import RESUMABLE_CHANGES, TrainConfig
from vae.errors import DataError, NonFiniteLossError
from vae.data import MNIST, binarize, fixed_binarization
from vae.denormals import flushing_denormals, start_threads_flushing_denormals
from vae.model import VAE
from vae.precision import training_matmuls

# Every trial scores the same binarised test set, so log-likelihoods compare across seeds.
TEST_BINARIZATION_SEED = 12345
# Evaluation noise is fixed too: the same draws for every model of a sweep.
EVAL_SEED = 2024
# The validation images (held out of training) are binarised once, with their own seed.
VALIDATION_BINARIZATION_SEED = 54321


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


def divergence(config: TrainConfig, epoch: int, step: int, value: float) -> NonFiniteLossError:
    """The error of a diverged model, naming where and which model, the same for every trainer."""
    return NonFiniteLossError(f"non-finite loss ({value}) at epoch {epoch}, step {step} "
                              f"(alpha={config.alpha}, k={config.k}, lr={config.lr}, seed={config.seed})")


class Trainer:
    """Trains one VAE on in-memory MNIST with the VR bound of ``config.alpha``."""

    def __init__(self, config: TrainConfig, data: MNIST) -> None:
        start_threads_flushing_denormals()
        self.config = config
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.model = VAE(config.k, config.hidden, config.activation).to(self.device)
        self.model.bf16_output_layer = config.bf16_output_layer
        # fused Adam: one kernel per step instead of a dozen per parameter, about 7% of a CPU step
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch = 0
        data = data.to(self.device)
        train_x, self.train_y = data.train_x, data.train_y
        self.val_x: torch.Tensor | None = None
        if config.validation_images:
            keep = len(train_x) - config.validation_images
            if keep < 1:
                raise DataError(f"validation_images={config.validation_images} leaves no training images of "
                                f"{len(train_x)}; hold out fewer")
            train_x, val_x, self.train_y = train_x[:keep], train_x[keep:], self.train_y[:keep]
            self.val_x = self._fixed(val_x, VALIDATION_BINARIZATION_SEED)
        self.train_x = fixed_binarization(train_x, config.seed) if config.binarization == "static" else train_x
        self.test_x = self._fixed(data.test_x, TEST_BINARIZATION_SEED)
        self.test_y = data.test_y

    def _fixed(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Images as every evaluation sees them: binarised once from ``seed`` (grey levels kept with 'none')."""
        return x if self.config.binarization == "none" else fixed_binarization(x, seed)

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
            "train_vr_bound_alpha": -total / len(self.train_x),
            "epoch_seconds": time.perf_counter() - start,
        }

    def evaluate(
        self, bound_samples: int, is_samples: int, progress: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        """Test VR bound at the training alpha and at alpha = 0 (K = ``bound_samples``), and IS log p(x).

        ``progress`` receives the number of test images done by the IS estimate, batch by batch.
        """
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(EVAL_SEED)
        bounds = dataset_bounds(self.model, self.test_x, [self.config.alpha, 0.0], bound_samples, generator=generator)
        log_px = log_likelihood(self.model, self.test_x, is_samples, generator=generator, progress=progress)
        return {
            "test_vr_bound_alpha": bounds[self.config.alpha],
            "test_vr_bound_0": bounds[0.0],
            "test_log_likelihood": log_px.mean().item(),
        }

    def validation_bound(self, images: int, samples: int) -> float:
        """The IWAE bound (alpha = 0) on the first ``images`` validation images: the selection signal
        of ASHA and Optuna, computed on images the model never trains on (never on the test set)."""
        if self.val_x is None:
            raise ValueError("this trainer holds out no validation images (validation_images = 0)")
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(EVAL_SEED)
        return dataset_bounds(self.model, self.val_x[:images], [0.0], samples, generator=generator)[0.0]

    def probe_train_set(self, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` training images as the model sees them at evaluation (fixed binarisation)."""
        x = self.train_x[:size]
        if self.config.binarization == "dynamic":
            x = fixed_binarization(x, TEST_BINARIZATION_SEED)
        return x, self.train_y[:size]

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
            raise ValueError("checkpoint was trained with a different config (only epochs, device, "
                             "bf16_output_layer and matmul_precision may change)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]
