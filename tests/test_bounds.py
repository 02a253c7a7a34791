"""VR bounds, the reparameterised draw and the IS log-likelihood, mostly on a linear-Gaussian model whose
log p(x) is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from vae.bounds import Reparameterised, dataset_bounds, log_likelihood, log_weights, vr_bound
from vae.model import VAE


@pytest.fixture(autouse=True)
def float64_default():
    """Exact comparisons need float64; restore the default so other test modules are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class LinearGaussian:
    """z ~ N(0, I_k), x | z ~ N(W z + b, s^2 I_D): p(x) = N(b, W W^T + s^2 I) in closed form.

    ``encode`` returns the exact posterior, optionally shifted and widened so the bounds are loose.
    """

    def __init__(self, k: int = 3, d: int = 6, s: float = 0.7, shift: float = 0.0, widen: float = 1.0, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.W = torch.randn(d, k, generator=gen)
        self.b = torch.randn(d, generator=gen)
        self.s2 = s**2
        precision = torch.eye(k) + self.W.T @ self.W / self.s2
        self.post_cov = torch.linalg.inv(precision)
        self.shift, self.widen = shift, widen

    def encode(self, x):
        mean = (x - self.b) @ (self.post_cov @ self.W.T / self.s2).T + self.shift
        logvar = torch.log(torch.diagonal(self.post_cov) * self.widen).expand_as(mean)
        return mean, logvar

    def log_px_given_z(self, x, z):
        resid = x - (z @ self.W.T + self.b)
        return -0.5 * (resid.square().sum(-1) / self.s2 + x.shape[-1] * math.log(2 * math.pi * self.s2))

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s2 * torch.eye(len(self.b))
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def sample_x(self, n: int, seed: int = 1):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=gen)
        return z @ self.W.T + self.b + math.sqrt(self.s2) * torch.randn(n, len(self.b), generator=gen)


ALPHAS = [-math.inf, -2.0, -0.5, 0.0, 0.3, 0.5, 0.99, 1.0, 1.5, 2.0, 5.0, math.inf]


def test_exact_posterior_makes_every_bound_equal_log_px():
    # With q equal to the true posterior (diagonal here only if W^T W is; so use k=1) the weights are constant.
    model = LinearGaussian(k=1, d=4)
    x = model.sample_x(8)
    log_w = log_weights(model, x, 7, torch.Generator().manual_seed(0))
    truth = model.log_px(x)
    for alpha in ALPHAS:
        torch.testing.assert_close(vr_bound(log_w, alpha), truth, rtol=0, atol=1e-9)


def test_bounds_non_increasing_in_alpha_for_the_same_samples():
    log_w = 40 * torch.randn(9, 50, generator=torch.Generator().manual_seed(3)) - 100
    values = torch.stack([vr_bound(log_w, a) for a in ALPHAS])
    assert (values[1:] <= values[:-1] + 1e-9).all()
    # and strictly so for distinct weights, between the two extremes
    assert (values[0] > values[-1]).all()


def test_special_alphas_match_their_definitions():
    log_w = torch.randn(6, 5, generator=torch.Generator().manual_seed(4)) * 10
    torch.testing.assert_close(vr_bound(log_w, 0.0), torch.logsumexp(log_w, 0) - math.log(6))
    torch.testing.assert_close(vr_bound(log_w, 1.0), log_w.mean(0))
    torch.testing.assert_close(vr_bound(log_w, -math.inf), log_w.max(0).values)
    torch.testing.assert_close(vr_bound(log_w, math.inf), log_w.min(0).values)
    torch.testing.assert_close(vr_bound(log_w, -1e6), log_w.max(0).values, atol=1e-4, rtol=0)


def test_alpha_to_one_is_continuous_with_the_elbo():
    log_w = torch.randn(5, 20, generator=torch.Generator().manual_seed(5)) * 3 - 50
    elbo = vr_bound(log_w, 1.0)
    for eps in (1e-3, 1e-5, 1e-7):
        torch.testing.assert_close(vr_bound(log_w, 1 - eps), elbo, atol=20 * eps + 1e-9, rtol=0)
        torch.testing.assert_close(vr_bound(log_w, 1 + eps), elbo, atol=20 * eps + 1e-9, rtol=0)


def test_single_sample_gives_the_same_estimate_for_every_alpha():
    log_w = torch.randn(1, 10, generator=torch.Generator().manual_seed(6)) * 5
    for alpha in ALPHAS:
        torch.testing.assert_close(vr_bound(log_w, alpha), log_w[0])


def test_nan_alpha_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        vr_bound(torch.zeros(2, 2), math.nan)


def test_is_estimate_converges_to_the_true_log_likelihood():
    model = LinearGaussian(shift=0.4, widen=1.8)
    x = model.sample_x(40)
    truth = model.log_px(x)
    errors = []
    for samples in (2, 20, 200, 5000):
        est = log_likelihood(model, x, samples, batch_size=16, max_rows=512, generator=torch.Generator().manual_seed(7))
        assert est.dtype == torch.float64
        errors.append((est - truth).abs().mean().item())
    assert errors[-1] < 0.05, errors
    assert errors == sorted(errors, reverse=True) and errors[0] > 20 * errors[-1], errors


def test_dataset_bounds_with_a_repeated_alpha_counts_each_image_once():
    model = LinearGaussian(shift=0.3)
    x = model.sample_x(10)
    once = dataset_bounds(model, x, [0.0], samples=5, generator=torch.Generator().manual_seed(1))
    twice = dataset_bounds(model, x, [0.0, 0.0], samples=5, generator=torch.Generator().manual_seed(1))
    assert once == twice


def test_expected_bounds_ordered_and_below_log_px():
    model = LinearGaussian(shift=0.5, widen=2.0)
    x = model.sample_x(20)
    truth = model.log_px(x).mean().item()
    gen = torch.Generator().manual_seed(8)
    reps = [dataset_bounds(model, x, [0.0, 0.5, 1.0, 2.0], samples=5, generator=gen) for _ in range(400)]
    means = {a: sum(r[a] for r in reps) / len(reps) for a in reps[0]}
    stderr = {a: math.sqrt(sum((r[a] - means[a]) ** 2 for r in reps) / (len(reps) - 1) / len(reps)) for a in means}
    for alpha in means:
        assert means[alpha] <= truth + 3 * stderr[alpha], (alpha, means[alpha], truth)
    assert means[0.0] >= means[0.5] >= means[1.0] >= means[2.0]
    # the ELBO's gap is real (q is off), so the test could not pass with a trivially tight bound
    assert truth - means[1.0] > 0.1


def test_reparameterised_draw_and_prior_ratio_match_the_densities():
    gen = torch.Generator().manual_seed(9)
    mean, logvar = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    eps = torch.randn(5, 4, 3, generator=gen)
    z, ratio = Reparameterised.apply(mean, logvar, eps)
    torch.testing.assert_close(z, mean + torch.exp(logvar / 2) * eps)
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    posterior = torch.distributions.Normal(mean, torch.exp(logvar / 2)).log_prob(z).sum(-1)
    torch.testing.assert_close(ratio, prior - posterior)


def test_reparameterised_passes_gradcheck():
    gen = torch.Generator().manual_seed(10)
    mean = torch.randn(4, 3, generator=gen, requires_grad=True)
    logvar = torch.randn(4, 3, generator=gen, requires_grad=True)
    eps = torch.randn(5, 4, 3, generator=gen)
    assert torch.autograd.gradcheck(Reparameterised.apply, (mean, logvar, eps))


def test_is_estimate_does_not_depend_on_the_chunk_size_at_the_study_sizes():
    # batches of 100 images, 30 latents: the noise stream is read the same way by 40- and 10-sample chunks
    torch.manual_seed(0)
    model = VAE(k=30, hidden=(20,)).eval()
    x = torch.bernoulli(torch.rand(200, 784))
    big, small = (
        log_likelihood(model, x, 80, max_rows=rows, generator=torch.Generator().manual_seed(3)) for rows in (4000, 1000)
    )
    torch.testing.assert_close(big, small, rtol=0, atol=1e-9)
