"""The one-model training loop that ``vae.packed_train.PackedTrainer`` is checked against: a pack of one
is bit-identical to it on CPU (tests/test_packed.py), and its state_dict round trip resumes bit-
identically (tests/test_train.py). No command runs it; the product trains packs. The benchmarks use it
as the unpacked baseline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from vae.bounds import log_weights, vr_bound
from vae.config import RESUMABLE_CHANGES, TrainConfig
from vae.data import Images, binarize
from vae.denormals import flushing_denormals, start_threads_flushing_denormals
from vae.member import Member, ScoredImages
from vae.metric_names import MetricName
from vae.precision import training_matmuls
from vae.train import divergence, initial_model, resolve_device


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
        """Everything needed to continue bit-identically: weights, Adam, both RNG states, the epoch."""
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
