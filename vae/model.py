"""The study's VAE: MLP encoder to a diagonal Gaussian posterior, MLP decoder to Bernoulli logits.

Default architecture (paper.md section 2.1): 784-200-200-k ReLU encoder, k-200-200-784 decoder.
The model only maps; sampling and bounds live in ``vae.bounds`` so any model with ``encode`` and
``log_px_given_z`` (a linear-Gaussian test model, say) can be scored by the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd.function import once_differentiable

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
        # The trainer sets it from TrainConfig.bf16_output_layer; it only ever affects training steps.
        self.bf16_output_layer = False
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
        """log p(x|z) = sum_d x_d l_d - softplus(l_d) for logits l; ``z`` [K, B, k], ``x`` [B, 784] -> [K, B]."""
        if x.requires_grad:
            raise ValueError("log_px_given_z does not differentiate with respect to the data x")
        *hidden_layers, output = self.decoder
        h = z
        for layer in hidden_layers:
            h = layer(h)
        if torch.is_grad_enabled():  # the training path: a pack of one (vae/packed.py)
            return BernoulliLogLikelihood.apply(x.unsqueeze(0), h.reshape(1, -1, h.shape[-1]), output.weight.unsqueeze(0),
                                                output.bias.unsqueeze(0), self.bf16_output_layer).squeeze(0)
        return -bernoulli_nll(x, h, output.weight, output.bias)[0]


# Logits are floored here before softplus. Below the floor softplus(l) < exp(-25) = 1.4e-11, so a
# 784-pixel sum moves by under 1.1e-8 nats, far below float32's resolution of log p(x|z) (an ulp is
# 4e-6 at -50 nats). Without it a trained decoder's logits (a quarter under -25, some under -80) send
# softplus's log1p through denormal intermediates (4-5x slower per element for logits in -37..-29,
# measured) and the backward's sigmoid/exp through denormal results.
LOGIT_FLOOR = -25.0
# exp overflows float32 above 88.7; softplus(l) = l there to float precision, restored by a maximum.
EXP_CEILING = 88.0


def bernoulli_nll(
    x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p(x|z) [K, B] from the last hidden layer ``h`` [K, B, H] and the output layer (W [D, H],
    b [D]), and the logits [K, B, D] it computed.

    One product for the logits, then softplus(l) = log1p(exp(l)) on a copy clipped to [floor,
    ceiling] with every later pass in place: exp, log1p, the maximum with l, the data term x l
    subtracted per pixel (no cancellation between two large sums), the sum. Torch's own softplus is
    the same formula in one pass but twice the cost per element (1.95 vs 1.1 ns, measured).
    """
    logits = torch.addmm(bias, h.reshape(-1, h.shape[-1]), weight.t()).view(*h.shape[:-1], -1)
    return nll_from_logits(logits, x), logits


@contextmanager
def output_products(bf16: bool) -> Iterator[None]:
    """float32 products of the block with bf16 inputs and float32 accumulation when ``bf16`` (oneDNN's
    float32 matmul precision; AMX/AVX-512 BF16 CPUs, plain float32 elsewhere; CUDA products untouched).

    Only the output layer's three products per step take it: they are large enough ([500, 200] x
    [200, 784]) to run 2.5x faster (535 -> 212 us, measured), where oneDNN's call overhead makes the
    small products of the other layers slower than float32 MKL."""
    if not bf16:
        yield
        return
    matmul = torch.backends.mkldnn.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def nll_from_logits(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The per-pixel passes of ``bernoulli_nll``: -log p(x|z) summed over the last axis of ``logits``
    (``x`` broadcast against it); shared with the packed model (vae/packed.py)."""
    nll = logits.clamp(LOGIT_FLOOR, EXP_CEILING).exp_().log1p_()
    torch.maximum(nll, logits, out=nll)  # softplus(l) = l above the ceiling, and > l below it
    return nll.addcmul_(logits, x, value=-1).sum(-1)


def logit_residual(x: torch.Tensor, floored_logits: torch.Tensor) -> torch.Tensor:
    """d log p(x|z) / d logits = x - sigmoid(l), written over the saved (floored) logits."""
    residual = torch.sigmoid(floored_logits)
    return torch.sub(x, residual, out=residual)


def member_addmm(bias: torch.Tensor, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """bias [P, out] + h [P, N, in] @ weight [P, out, in]^T -> [P, N, out]. A pack of one takes the
    single product (``addmm``, as ``nn.Linear``): a batched product of one can round differently
    (seen on an AMD EPYC CPU: MKL's batched kernel sums a long, narrow product in another order).
    ``squeeze(0)``, not ``[0]``: the backward of a view is a view, where indexing's allocates a zero
    tensor of the whole parameter and copies into it (about 2% of a CPU step)."""
    if h.shape[0] == 1:
        return torch.addmm(bias.squeeze(0), h.squeeze(0), weight.squeeze(0).t()).unsqueeze(0)
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


def member_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [P, n, m] @ b [P, m, r] -> [P, n, r]; a pack of one takes ``mm`` (see ``member_addmm``)."""
    if a.shape[0] == 1:
        return torch.mm(a.squeeze(0), b.squeeze(0)).unsqueeze(0)
    return torch.bmm(a, b)


class BernoulliLogLikelihood(torch.autograd.Function):
    """log p(x|z) = -``bernoulli_nll`` with its derivative written out, for training, over a member axis
    (a plain ``VAE`` is a pack of one): h [P, K*B, H], W [P, D, H], b [P, D], x [P, B, D] -> [P, K, B].

    Backward: d log p / d l = x - sigmoid(l) in two passes over the (floored) logits; the upstream
    gradient, one number per row, scales the [K*B, H] side of each product, never the [K*B, D] one.
    ``x`` is data and gets no gradient. The products are ``member_addmm`` / ``member_mm``: single ones
    for a pack of one, so a plain model and a pack of one compute the same bits.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor,
        bias: torch.Tensor, bf16: bool = False,
    ) -> torch.Tensor:
        with output_products(bf16):
            logits = member_addmm(bias, h, weight)
        logits = logits.view(x.shape[0], -1, x.shape[1], logits.shape[-1])
        nll = nll_from_logits(logits, x.unsqueeze(1))
        ctx.bf16 = bf16
        ctx.save_for_backward(x, h, weight, logits.clamp_min_(LOGIT_FLOOR))
        return -nll

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[None, torch.Tensor, torch.Tensor, torch.Tensor, None]:
        x, h, weight, logits = ctx.saved_tensors
        residual = logit_residual(x.unsqueeze(1), logits).view(h.shape[0], h.shape[1], -1)  # before the upstream gradient
        grad = grad.reshape(h.shape[0], h.shape[1], 1)
        with output_products(ctx.bf16):
            grad_h = member_mm(residual, weight).mul_(grad)
            grad_weight = member_mm(residual.transpose(1, 2), h * grad)
        grad_bias = member_mm(residual.transpose(1, 2), grad).squeeze(-1)
        return None, grad_h, grad_weight, grad_bias, None
