"""The five interpolation rows of the study's Figure 5 between two images (paper.md 2.3).

Rows, each ``steps`` images from the first image's end to the second's:
1. ``pixels``: convex combination in pixel space;
2. ``means_line``: straight line between the posterior means, decoded without sampling;
3. ``samples_line``: straight line between one sampled latent of each posterior;
4. ``geodesic_sampled``: Fisher-Rao geodesic between the posteriors, one sample drawn at each point;
5. ``geodesic_mean``: the same geodesic decoded at its mean mu(t), no sampling.
Decoded rows show Bernoulli means (sigmoid of the logits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from analysis.geodesics import fisher_rao_geodesic
from vae.model import VAE

ROWS = ("pixels", "means_line", "samples_line", "geodesic_sampled", "geodesic_mean")


@torch.inference_mode()
def interpolation_rows(model: VAE, x1: torch.Tensor, x2: torch.Tensor, side: tuple[int, int], steps: int = 10,
                       seed: int = 0) -> np.ndarray:
    """Array [5, steps, height, width] in [0, 1] (``side``: the images' height and width), rows in the
    order of ``ROWS``."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    x = torch.stack([x1, x2]).to(device)
    mean, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    t = torch.linspace(0, 1, steps, device=device, dtype=mean.dtype)[:, None]

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=mean.dtype)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model.decode(z))

    def line(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (1 - t) * a + t * b

    z_end = mean + std * noise(2, model.k)
    geo_mu, geo_sigma = (torch.as_tensor(a, dtype=mean.dtype, device=device) for a in fisher_rao_geodesic(
        *(a.double().cpu().numpy() for a in (mean[0], std[0], mean[1], std[1])), np.linspace(0, 1, steps)))
    rows = [
        line(x[0], x[1]),
        decode(line(mean[0], mean[1])),
        decode(line(z_end[0], z_end[1])),
        decode(geo_mu + geo_sigma * noise(steps, model.k)),
        decode(geo_mu),
    ]
    return torch.stack(rows).reshape(len(ROWS), steps, *side).cpu().numpy()


def save_interpolation_grid(rows: np.ndarray, path: Path) -> None:
    """One PNG, a row per interpolation kind, with torchvision's grid layout."""
    from torchvision.utils import save_image  # here: importing torchvision costs a trial worker 1.3 s at start

    images = torch.from_numpy(rows).reshape(-1, 1, *rows.shape[2:])
    save_image(images, path, nrow=rows.shape[1], padding=2, pad_value=1.0)
