"""P VAEs of one shape as one model: each parameter stacked along a leading member axis.

A training step of the study's VAE is too small to fill a GPU (launch- and dispatch-bound), so a
pack trains P grid points at once: every Linear of the P members is one batched product
(``torch.baddbmm`` over the member axis; ``bench/pack_throughput.py`` measures it against
``torch.func.vmap`` over the plain module). Members share nothing but the kernels: member i's
outputs depend only on member i's weights, batch and noise, so the sum of the members' losses
gives each member its own gradient. With one member the products give the plain ``VAE``'s bits
(a pack of one is bit-identical on CPU to the tests' one-model reference trainer,
``tests/reference_trainer.py``); with more, a batched product may round differently from the single
one (an ulp), so members match to float tolerance.

Shapes: P members, B images, K samples, D pixels, k latent units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vae.bounds import Reparameterised, vr_bound
from vae.model import VAE, BernoulliLogLikelihood, member_addmm


class PackedLinear(nn.Module):
    """P ``nn.Linear`` of one shape: weight [P, out, in], bias [P, out]."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([linear.weight.detach() for linear in linears]))
        self.bias = nn.Parameter(torch.stack([linear.bias.detach() for linear in linears]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[P, N, in] -> [P, N, out]."""
        return member_addmm(self.bias, h, self.weight)


class PackedMLP(nn.Module):
    """P copies of one ``vae.model.mlp``: its Linear layers packed, its activation shared (elementwise)."""

    def __init__(self, stacks: Sequence[nn.Sequential]) -> None:
        super().__init__()
        first = stacks[0]
        # where each Linear sits in the Sequential: the plain module's parameter names
        self.positions = [name for name, layer in first.named_children() if isinstance(layer, nn.Linear)]
        self.linears = nn.ModuleList(
            PackedLinear([stack.get_submodule(name) for stack in stacks]) for name in self.positions
        )
        self.activation = next((layer for layer in first if not isinstance(layer, nn.Linear)), nn.Identity())

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Every layer but the last, each followed by the activation: [P, N, in] -> [P, N, H]."""
        for linear in self.linears[:-1]:
            h = self.activation(linear(h))
        return h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linears[-1](self.hidden(h))


class PackedVAE(nn.Module):
    """P ``VAE`` of one shape (k, hidden widths, activation), each member's weights its own."""

    def __init__(self, models: Sequence[VAE]) -> None:
        super().__init__()
        if len({repr(model) for model in models}) != 1:  # the repr lists every layer with its sizes
            raise ValueError("a pack holds models of one shape only (same k, hidden widths and activation)")
        self.k = models[0].k
        self.members = len(models)
        # TrainConfig.bf16_output_layer (set by the trainer): the output layer's training products in bf16
        self.bf16_output_layer = False
        self.encoder = PackedMLP([model.encoder for model in models])
        self.decoder = PackedMLP([model.decoder for model in models])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each [P, B, k], of images x [P, B, D]."""
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return mean, logvar

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) [K, P, B] of x [P, B, D] under latents z [K, P, B, k] (samples first, as ``Reparameterised``)."""
        if x.requires_grad:
            raise ValueError("log_px_given_z does not differentiate with respect to the data x")
        h = self.decoder.hidden(z.transpose(0, 1).reshape(self.members, -1, self.k))
        output = self.decoder.linears[-1]
        return BernoulliLogLikelihood.apply(x, h, output.weight, output.bias, self.bf16_output_layer).transpose(0, 1)

    def log_weights(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Log importance weights [K, P, B] of x [P, B, D] for standard normal noise eps [K, P, B, k]
        (``vae.bounds.log_weights_from_posterior`` with the noise given, one draw per member)."""
        mean, logvar = self.encode(x)
        z, log_prior_ratio = Reparameterised.apply(mean, logvar, eps)
        return self.log_px_given_z(x, z) + log_prior_ratio

    def stacked_parameters(self) -> dict[str, nn.Parameter]:
        """Each stacked parameter [P, ...] under the name its slices have in a plain ``VAE``."""
        return {
            f"{part}.{position}.{kind}": getattr(linear, kind)
            for part, mlp in (("encoder", self.encoder), ("decoder", self.decoder))
            for position, linear in zip(mlp.positions, mlp.linears)
            for kind in ("weight", "bias")
        }

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s weights as a ``VAE`` state dict (copies, on the pack's device)."""
        return {name: param[i].detach().clone() for name, param in self.stacked_parameters().items()}


def member_noise(
    generators: Sequence[torch.Generator], samples: int, images: int, k: int, device: torch.device
) -> torch.Tensor:
    """Reparameterisation noise [K, P, B, k]: member i's [K, B, k] drawn from its own generator, the
    draw ``vae.bounds.log_weights_from_posterior`` makes for one model, so a member's noise is the
    unpacked trainer's and does not depend on its pack mates. Each member fills its contiguous slice
    of one buffer in place (``randn`` is ``empty().normal_()``: the same numbers): one operation per
    member, where drawing and stacking took two; on a GPU each is a kernel launch, and at P = 240
    these launches were most of a step (``bench/pack_throughput.py``)."""
    noise = torch.empty((len(generators), samples, images, k), device=device)
    for member, generator in zip(noise, generators):
        member.normal_(generator=generator)
    return noise.transpose(0, 1)


def binarize_members(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``vae.data.binarize`` of each member's images x [P, B, D] with its own generator: the uniforms
    drawn in place member by member (``rand`` is ``empty().uniform_()``), the comparison once."""
    uniforms = torch.empty_like(x)
    for member, generator in zip(uniforms, generators):
        member.uniform_(generator=generator)
    return torch.lt(uniforms, x, out=uniforms)


class PackedVRBound:
    """The VR bound of each member at its own alpha: log-weights [K, P, B] -> bounds [P, B].

    Members are grouped by alpha and each group goes through ``vae.bounds.vr_bound`` (its branches
    for alpha = 1 and +-inf included), vectorised over the group: a grid has a few alphas, so a few
    small reductions per step. A pack of one alpha is a single call on the whole tensor.
    """

    def __init__(self, alphas: Sequence[float], device: torch.device) -> None:
        self.alphas = list(alphas)
        self.groups = [
            (alpha, torch.tensor([i for i, a in enumerate(alphas) if a == alpha], device=device))
            for alpha in dict.fromkeys(alphas)
        ]

    def __call__(self, log_w: torch.Tensor) -> torch.Tensor:
        if len(self.groups) == 1:
            return vr_bound(log_w, self.alphas[0])
        bounds = log_w.new_empty(log_w.shape[1:])
        for alpha, members in self.groups:
            bounds.index_copy_(0, members, vr_bound(log_w.index_select(1, members), alpha))
        return bounds
