"""A trained model as evaluation sees it: the images it is scored on, and one model with its config.

``ScoredImages`` are the training images left after the held-out validation images, the validation
images binarised once and the test set binarised once: the same for every model of a config's data,
so a pack builds them once for all its members (a trainer per member binarised the test set once
each). A ``Member`` (config, weights, those images, epoch) is what the engine's evaluation, the
probes, the latent analysis and the export read; ``PackedTrainer.member(i)`` and
``Trainer.member()`` give one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vae.bounds import dataset_bounds, log_likelihood
from vae.config import TrainConfig
from vae.data import Images, fixed_binarization
from vae.errors import DataError
from vae.metric_names import MetricName
from vae.model import VAE

# Every trial scores the same binarised test set, so log-likelihoods compare across seeds.
TEST_BINARIZATION_SEED = 12345
# Evaluation noise is fixed too: the same draws for every model of a sweep.
EVAL_SEED = 2024
# The validation images (held out of training) are binarised once, with their own seed.
VALIDATION_BINARIZATION_SEED = 54321


@dataclass(frozen=True)
class ScoredImages:
    """The images of one config's data, on its device: ``train_x`` in grey levels (a trainer draws its
    binarisation), ``val_x`` (None without held-out images) and ``test_x`` as every evaluation sees them;
    labels None for a data set without them; ``side`` (height, width) of an image."""

    binarization: str
    train_x: torch.Tensor
    train_y: torch.Tensor | None
    val_x: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    side: tuple[int, int]

    @classmethod
    def of(cls, data: Images, config: TrainConfig) -> ScoredImages:
        """Hold out ``config.validation_images`` (the last training images) and binarise the evaluation sets."""

        def fixed(x: torch.Tensor, seed: int) -> torch.Tensor:
            return x if config.binarization == "none" else fixed_binarization(x, seed)

        train_x, train_y, val_x = data.train_x, data.train_y, None
        if config.validation_images:
            keep = len(train_x) - config.validation_images
            if keep < 1:
                raise DataError(f"validation_images={config.validation_images} leaves no training images of "
                                f"{len(train_x)}; hold out fewer")
            train_x, val_x = train_x[:keep], fixed(train_x[keep:], VALIDATION_BINARIZATION_SEED)
            train_y = None if train_y is None else train_y[:keep]
        return cls(config.binarization, train_x, train_y, val_x, fixed(data.test_x, TEST_BINARIZATION_SEED), data.test_y,
                   data.side)

    def static_train_set(self, seed: int) -> torch.Tensor:
        """The training images binarised once from ``seed``: a static-binarisation model's training set."""
        return fixed_binarization(self.train_x, seed)


@dataclass
class Member:
    """One model at ``epoch`` with the images it is scored on (its weights: the trainer's, or a copy)."""

    config: TrainConfig
    model: VAE
    images: ScoredImages
    epoch: int

    @property
    def test_x(self) -> torch.Tensor:
        return self.images.test_x

    @property
    def test_y(self) -> torch.Tensor | None:
        return self.images.test_y

    @property
    def labelled(self) -> bool:
        """Whether the data set has labels (the probes need them)."""
        return self.images.train_y is not None

    @property
    def val_x(self) -> torch.Tensor | None:
        return self.images.val_x

    def evaluate(self, bound_samples: int, is_samples: int,
                 progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """Test VR bound at the training alpha and at alpha = 0 (K = ``bound_samples``), and IS log p(x).

        ``progress`` receives the number of test images done by the IS estimate, batch by batch.
        """
        self.model.eval()
        generator = torch.Generator(device=self.test_x.device).manual_seed(EVAL_SEED)
        bounds = dataset_bounds(self.model, self.test_x, [self.config.alpha, 0.0], bound_samples, generator=generator)
        log_px = log_likelihood(self.model, self.test_x, is_samples, generator=generator, progress=progress)
        return {
            MetricName.test_vr_bound_alpha: bounds[self.config.alpha],
            MetricName.test_vr_bound_0: bounds[0.0],
            MetricName.test_log_likelihood: log_px.mean().item(),
        }

    def validation_bound(self, images: int, samples: int) -> float:
        """The IWAE bound (alpha = 0) on the first ``images`` validation images: the selection signal
        of ASHA and Optuna, computed on images the model never trains on (never on the test set)."""
        if self.val_x is None:
            raise ValueError("this model holds out no validation images (validation_images = 0)")
        self.model.eval()
        generator = torch.Generator(device=self.val_x.device).manual_seed(EVAL_SEED)
        return dataset_bounds(self.model, self.val_x[:images], [0.0], samples, generator=generator)[0.0]

    def probe_train_set(self, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first ``size`` training images as the model sees them at evaluation: binarised once
        (under static binarisation, the set the model trained on)."""
        if self.config.binarization == "static":
            x = self.images.static_train_set(self.config.seed)[:size]
        elif self.config.binarization == "dynamic":
            x = fixed_binarization(self.images.train_x[:size], TEST_BINARIZATION_SEED)
        else:
            x = self.images.train_x[:size]
        return x, None if self.images.train_y is None else self.images.train_y[:size]
