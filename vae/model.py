"""The study's VAE: MLP encoder to a diagonal Gaussian posterior, MLP decoder to Bernoulli logits.

Default architecture (paper.md section 2.1): 784-200-200-k ReLU encoder, k-200-200-784 decoder.
The model only maps; sampling and bounds live in ``vae.bounds`` so any model with ``encode`` and
``log_px_given_z`` (a linear-Gaussian test model, say) can be scored by the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder q(z|x) = N(mean, diag(exp(logvar))), Bernoulli decoder p(x|z), prior N(0, I)."""

    def __init__(
        self, k: int = 30, hidden: tuple[int, ...] = (200, 200), activation: str = "relu", x_dim: int = 784
    ) -> None:
        super().__init__()
        self.k = k
        self.encoder = mlp([x_dim, *hidden, 2 * k], activation)
        self.decoder = mlp([k, *hidden[::-1], x_dim], activation)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each [..., k]."""
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits [..., 784] of p(x|z)."""
        return self.decoder(z)

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum_d x_d l_d - softplus(l_d) for logits l; ``z`` [K, B, k], ``x`` [B, 784] -> [K, B].

        With l = W h + b, sum_d x_d l_d = h . (x W) + x . b: the data term costs a [B, 784] x [784, H]
        product once per image instead of an elementwise pass over every sample's 784 logits, which
        leaves softplus as the only per-pixel work (half the cost of the IS estimate otherwise).
        """
        *hidden_layers, output = self.decoder
        h = nn.Sequential(*hidden_layers)(z) if hidden_layers else z
        logits = output(h)
        data_term = (h * (x @ output.weight)).sum(-1) + x @ output.bias
        return data_term - F.softplus(logits).sum(-1)
