"""Posterior statistics of a dataset: means, variances and one seeded sample per image.

Encoding runs in chunks on the model's device, so the whole training set fits whatever its size.
Results are float64 NumPy arrays: the spectrum and probes downstream are NumPy/scikit-learn code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vae.model import VAE


@dataclass
class Posterior:
    """q(z|x) = N(means, diag(variances)) for N images, and one draw z ~ q(z|x) per image; [N, k] each."""

    means: np.ndarray
    variances: np.ndarray
    samples: np.ndarray


@torch.inference_mode()
def encode_dataset(model: VAE, x: torch.Tensor, seed: int = 0, batch_size: int = 2000) -> Posterior:
    """Encode ``x`` [N, 784] in chunks; the sample noise comes from ``seed`` alone."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    means, logvars, samples = [], [], []
    for batch in x.split(batch_size):
        mean, logvar = model.encode(batch.to(device))
        eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        means.append(mean), logvars.append(logvar), samples.append(mean + torch.exp(0.5 * logvar) * eps)
    model.train(was_training)

    def stack(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts).double().cpu().numpy()

    return Posterior(stack(means), np.exp(stack(logvars)), stack(samples))
