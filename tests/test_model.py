"""The VAE's shapes and its Bernoulli log-likelihood (floored logits, written-out gradient) against
float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vae.config import TrainConfig
from vae.model import ACTIVATIONS, LOGIT_FLOOR, VAE, BernoulliLogLikelihood


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



def extreme_decoder() -> tuple[VAE, VAE, torch.Tensor, torch.Tensor]:
    """A float32 model whose logits span about -250..200 (a trained decoder's reach under -25, and
    beyond both ways), its float64 copy, binary images [6, 784] drawn from it and latents [4, 6, 5]."""
    torch.manual_seed(1)
    model = VAE(k=5, hidden=(50, 40))
    with torch.no_grad():
        model.decoder[-1].weight.mul_(100)
        model.decoder[-1].bias.copy_(torch.linspace(-220, 10, 784))
        model.decoder[-1].bias[::98] = 150.0  # some logits over exp's float32 range
    exact = VAE(k=5, hidden=(50, 40)).double()
    exact.load_state_dict(model.state_dict())
    z = torch.randn(4, 6, 5)
    with torch.no_grad():  # images the first latent sample explains well: its log p(x|z) is moderate
        x = torch.bernoulli(torch.sigmoid(model.decode(z[0])))
    return model, exact, x, z


def exact_log_px_given_z(model: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The textbook formula, no floor on the logits, in the model's dtype (float64 for the reference)."""
    logits = model.decode(z)
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def test_floored_logits_keep_log_px_given_z_exact_to_float32_precision():
    model, exact, x, z = extreme_decoder()
    logits = exact.decode(z.double())
    assert logits.min() < -200 and (logits < LOGIT_FLOOR).double().mean() > 0.3 and logits.max() > 100
    truth = exact_log_px_given_z(exact, x.double(), z.double())
    ours = model.log_px_given_z(x, z).double()
    with torch.no_grad():  # evaluation skips the autograd Function: same numbers
        assert torch.equal(model.log_px_given_z(x, z).double(), ours)
    plain_float32 = exact_log_px_given_z(model, x, z).double()  # torch's BCE in float32, no floor
    assert (ours - truth).abs().max() <= (plain_float32 - truth).abs().max()
    # per pixel, then summed: no cancellation between a large data term and a large softplus sum
    assert ((ours - truth).abs() < 1e-6 * truth.abs() + 1e-5).all()


def test_gradients_match_the_float64_textbook_formula():
    model, exact, x, z = extreme_decoder()
    upstream = torch.rand(4, 6)
    (model.log_px_given_z(x, z) * upstream).sum().backward()
    (exact_log_px_given_z(exact, x.double(), z.double()) * upstream.double()).sum().backward()
    for (name, ours), theirs in zip(model.decoder.named_parameters(), exact.decoder.parameters()):
        scale = theirs.grad.abs().max().item()
        torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_bernoulli_function_passes_gradcheck_in_float64():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 784, generator=gen, dtype=torch.float64)  # grey levels: the data term must hold for any x
    h = torch.randn(1, 2 * 3, 8, generator=gen, dtype=torch.float64, requires_grad=True)  # member axis of one
    weight = (10 * torch.randn(1, 784, 8, generator=gen, dtype=torch.float64)).requires_grad_()
    bias = torch.linspace(-60, 30, 784, dtype=torch.float64).unsqueeze(0).requires_grad_()
    assert torch.autograd.gradcheck(BernoulliLogLikelihood.apply, (x, h, weight, bias))


def test_data_requiring_a_gradient_is_refused():
    model = VAE(k=3, hidden=(8,))
    with pytest.raises(ValueError, match="data x"):
        model.log_px_given_z(torch.rand(2, 784, requires_grad=True), torch.randn(1, 2, 3))
