"""Packed training: a pack of one is the trainer bit for bit, each member gets its unpacked gradient,
stacked Adam is per-member Adam, members are independent of their mates, divergence freezes one
member only, exact resume, and the configs a pack refuses."""

from __future__ import annotations

import math

import pytest
import torch

from vae.bounds import log_weights, vr_bound
from vae.checkpoint import save_checkpoint
from vae.config import TrainConfig
from vae.data import Images, fixed_binarization
from vae.mnist import load_mnist
from vae.errors import CheckpointError, NonFiniteLossError
from vae.model import VAE
from vae.packed import PackedVAE, member_noise
from vae.packed_train import PackedTrainer, check_packable
from reference_trainer import Trainer

ALPHAS = [1.0, 0.0, 0.5, math.inf, -math.inf]  # the ELBO, IWAE, a power mean, and both limits


@pytest.fixture(scope="module")
def small_mnist(mnist_dir) -> Images:
    return load_mnist(mnist_dir, train_subset=600, test_subset=200)


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"alpha": 0.5, "k": 10, "epochs": 4, "device": "cpu", **overrides})


def pack_configs(points: list[tuple[float, int]]) -> list[TrainConfig]:
    return [config(alpha=alpha, seed=seed) for alpha, seed in points]


def poison(pack: PackedTrainer, i: int) -> None:
    """Member ``i``'s first output logit +inf: its loss is NaN from the next step on."""
    with torch.no_grad():
        pack.model.decoder.linears[-1].bias[i, 0] = math.inf


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name


@pytest.mark.parametrize("settings", [{"alpha": 0.5}, {"alpha": -math.inf}, {"binarization": "static"},
                                      {"binarization": "none"}, {"bf16_output_layer": True}])
def test_a_pack_of_one_is_bit_identical_to_the_trainer(small_mnist, settings):
    trainer, pack = Trainer(config(**settings), small_mnist), PackedTrainer([config(**settings)], small_mnist)
    for _ in range(2):
        plain, packed = trainer.train_epoch(), pack.train_epoch()[0]
        assert plain["train_vr_bound_alpha"] == packed["train_vr_bound_alpha"]
    assert_same_weights(trainer.model, pack.member_model(0))
    assert trainer.evaluate(10, 20) == pack.member(0).evaluate(10, 20)


def test_a_member_s_state_continues_the_member_as_the_trainer_would(small_mnist):
    trainer, pack = Trainer(config(), small_mnist), PackedTrainer([config()], small_mnist)
    trainer.train_epoch(), pack.train_epoch()
    member, before = PackedTrainer([config()], small_mnist), pack.member_model(0)
    member.load_state_dict(pack.member_state(0))
    adam_before = [value.clone() for state in pack.optimizer.state.values() for value in state.values()]
    assert member.epoch == 1
    assert trainer.train_epoch()["train_vr_bound_alpha"] == member.train_epoch()[0]["train_vr_bound_alpha"]
    assert_same_weights(trainer.model, member.member_model(0))
    # the member's state is a copy of its weights and Adam state: training it left the pack as it was
    assert_same_weights(before, pack.member_model(0))
    adam_after = [value for state in pack.optimizer.state.values() for value in state.values()]
    assert all(torch.equal(a, b) for a, b in zip(adam_before, adam_after, strict=True))


def test_each_member_gets_the_gradient_of_its_unpacked_model(small_mnist):
    configs = [config(alpha=alpha, seed=seed) for seed, alpha in enumerate(ALPHAS)]
    pack = PackedTrainer(configs, small_mnist)
    samples, images = 5, 20
    x = torch.stack([fixed_binarization(small_mnist.train_x[i * images:(i + 1) * images], i) for i in range(len(configs))])
    generators = [torch.Generator().manual_seed(100 + i) for i in range(len(configs))]
    eps = member_noise(generators, samples, images, 10, torch.device("cpu"))
    losses = -pack.bound(pack.model.log_weights(x, eps)).mean(-1)
    losses.sum().backward()

    for i, cfg in enumerate(configs):
        model = pack.member_model(i)
        log_w = log_weights(model, x[i], samples, torch.Generator().manual_seed(100 + i))  # the same noise
        loss = -vr_bound(log_w, cfg.alpha).mean()
        loss.backward()
        torch.testing.assert_close(losses[i], loss, rtol=3e-7, atol=0)  # an ulp at 544 nats is 6e-5
        # Batched and single products round differently (an ulp of a log-weight, ~ -544 here), and for
        # alpha < 1 the gradient weighs samples by exp(l_k - bound), which turns that into a relative
        # error of ~ 1e-5: the tolerance is 1e-4 of the tensor's largest gradient.
        packed_grads = {name: param.grad[i] for name, param in pack.model.stacked_parameters().items()}
        for name, param in model.named_parameters():
            scale = param.grad.abs().max().item()
            torch.testing.assert_close(packed_grads[name], param.grad, rtol=1e-4, atol=1e-4 * scale,
                                       msg=lambda m, i=i, name=name: f"member {i}, {name}: {m}")


def test_adam_over_stacked_parameters_is_per_member_adam():
    torch.manual_seed(0)
    stacked = [torch.nn.Parameter(torch.randn(3, 40, 7)), torch.nn.Parameter(torch.randn(3, 13))]
    members = [[torch.nn.Parameter(p[i].detach().clone()) for p in stacked] for i in range(3)]
    packed_adam = torch.optim.Adam(stacked, lr=1e-3, fused=True)
    member_adams = [torch.optim.Adam(params, lr=1e-3, fused=True) for params in members]
    for _ in range(5):
        grads = [torch.randn_like(p) * 10 ** torch.randint(-4, 3, p.shape[:1]).view(-1, *[1] * (p.dim() - 1))
                 for p in stacked]
        for p, g in zip(stacked, grads):
            p.grad = g
        packed_adam.step()
        for i, (params, adam) in enumerate(zip(members, member_adams)):
            for p, g in zip(params, grads):
                p.grad = g[i].clone()
            adam.step()
    for i, params in enumerate(members):
        for p, q in zip(stacked, params):
            assert torch.equal(p[i], q)


@pytest.mark.parametrize("binarization", ["dynamic", "static"])
def test_a_member_trains_the_same_whatever_its_pack_mates(small_mnist, binarization):
    def configs(points: list[tuple[float, int]]) -> list[TrainConfig]:
        return [member.model_copy(update={"binarization": binarization}) for member in pack_configs(points)]

    alone = PackedTrainer(configs([(0.5, 3)]), small_mnist)
    mates = PackedTrainer(configs([(0.0, 1), (0.5, 3), (math.inf, 2)]), small_mnist)
    bound_alone, bound_mates = alone.train_epoch()[0], mates.train_epoch()[1]
    assert bound_alone["train_vr_bound_alpha"] == pytest.approx(bound_mates["train_vr_bound_alpha"], abs=1e-3)
    # Float rounding of the batched products differs with the pack's size, and Adam divides each
    # update by the gradient's own scale: where a gradient is a near-cancelling sum, rounding moves
    # a weight by up to ~lr. So the test is on each tensor's relative distance: under 1e-3, where
    # rounding gave up to 4e-5 here, and the same member with another batch order and noise 5e-3 to 0.1.
    for name, value in alone.member_model(0).state_dict().items():
        distance = torch.linalg.vector_norm(mates.member_model(1).state_dict()[name] - value)
        assert distance <= 1e-3 * torch.linalg.vector_norm(value), name
    # and it is not its mates' model
    assert not torch.allclose(mates.member_model(0).encoder[0].weight, mates.member_model(1).encoder[0].weight)


def test_a_diverging_member_is_reported_as_the_trainer_does_and_frozen_while_its_mates_train(small_mnist):
    # member 1 at alpha = 0: the backward of its NaN bound is NaN (0 * exp(NaN)) unless it is masked
    configs = pack_configs([(0.5, 0), (0.0, 1), (1.0, 2)])
    clean, pack = PackedTrainer(configs, small_mnist), PackedTrainer(configs, small_mnist, check_every=2)
    clean.train_epoch(), pack.train_epoch()
    poison(pack, 1)
    plain = Trainer(configs[1], small_mnist)
    plain.train_epoch()
    with torch.no_grad():
        plain.model.decoder[-1].bias[0] = math.inf
    with pytest.raises(NonFiniteLossError) as raised:
        plain.train_epoch()

    metrics, _ = pack.train_epoch(), clean.train_epoch()
    assert sorted(metrics) == [0, 2] and all(math.isfinite(m["train_vr_bound_alpha"]) for m in metrics.values())
    assert list(pack.failures) == [1]
    assert str(pack.failures[1]) == str(raised.value)
    assert "at epoch 2, step 1 (alpha=0.0, k=10" in str(raised.value)
    for i in (0, 2):
        assert_same_weights(clean.member_model(i), pack.member_model(i))
    frozen = pack.member_model(1)
    assert sorted(pack.train_epoch()) == [0, 2]
    assert_same_weights(frozen, pack.member_model(1))


def test_resume_from_a_state_dict_is_exact(small_mnist, tmp_path):
    configs = pack_configs([(0.5, 0), (-math.inf, 1)])
    straight = PackedTrainer(configs, small_mnist)
    poison(straight, 1)
    straight.train_epoch(), straight.train_epoch()

    first = PackedTrainer(configs, small_mnist)
    poison(first, 1)
    first.train_epoch()
    save_checkpoint(first.state_dict(), tmp_path / "pack.pt")
    torch.manual_seed(999)
    resumed = PackedTrainer(configs, small_mnist)
    resumed.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))  # plain tensors and values
    assert sorted(resumed.train_epoch()) == [0]
    assert resumed.epoch == 2
    assert {i: str(e) for i, e in resumed.failures.items()} == {i: str(e) for i, e in straight.failures.items()}
    assert_same_weights(straight.model, resumed.model)
    with pytest.raises(ValueError, match="different configs"):
        PackedTrainer(pack_configs([(0.5, 0), (-math.inf, 2)]), small_mnist).load_state_dict(straight.state_dict())


@pytest.mark.parametrize(
    "configs, message",
    [([config(), config(k=11)], "not in k"), ([config(), config(lr=1e-4)], "not in lr"),
     ([], "at least one")],
)
def test_configs_that_cannot_share_a_pack_are_refused(configs, message):
    with pytest.raises(ValueError, match=message):
        check_packable(configs)


def test_a_packed_model_refuses_members_of_different_shapes():
    with pytest.raises(ValueError, match="one shape only"):
        PackedVAE([VAE(10), VAE(10, activation="tanh")])


def test_the_checkpoint_of_an_earlier_one_model_trainer_is_refused_as_unreadable(small_mnist):
    with pytest.raises(CheckpointError, match="earlier vaesweep"):
        PackedTrainer([config()], small_mnist).load_state_dict(Trainer(config(), small_mnist).state_dict())
