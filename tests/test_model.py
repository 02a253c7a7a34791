"""The VAE's shapes and its Bernoulli log-likelihood (the fused data term) against torch's BCE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vae.config import TrainConfig
from vae.model import ACTIVATIONS, VAE


def test_config_offers_exactly_the_model_activations():
    assert set(TrainConfig.model_fields["activation"].annotation.__args__) == set(ACTIVATIONS)


@pytest.mark.parametrize("hidden, activation", [((200, 200), "relu"), ((64,), "tanh"), ((32, 16, 8), "softplus")])
def test_shapes(hidden, activation):
    model = VAE(k=7, hidden=hidden, activation=activation)
    mean, logvar = model.encode(torch.rand(3, 784))
    assert mean.shape == logvar.shape == (3, 7)
    assert model.decode(torch.randn(4, 3, 7)).shape == (4, 3, 784)


@pytest.mark.parametrize("binary", [True, False])
def test_log_px_given_z_equals_negative_bce(binary):
    torch.manual_seed(0)
    model = VAE(k=5, hidden=(50, 40)).double()
    x = torch.rand(6, 784, dtype=torch.float64)
    x = torch.bernoulli(x) if binary else x
    z = torch.randn(4, 6, 5, dtype=torch.float64)
    expected = -F.binary_cross_entropy_with_logits(model.decode(z), x.expand(4, 6, 784), reduction="none").sum(-1)
    torch.testing.assert_close(model.log_px_given_z(x, z), expected, rtol=1e-12, atol=1e-9)
