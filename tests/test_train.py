"""Trainer: exact resume on CPU, non-finite loss, real learning, config validation, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from vae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vae.config import TrainConfig
from vae.data import Images
from vae.mnist import load_mnist
from vae.errors import DataError
from reference_trainer import Trainer
from vae.errors import NonFiniteLossError


@pytest.fixture(scope="module")
def small_mnist(mnist_dir) -> Images:
    return load_mnist(mnist_dir, train_subset=600, test_subset=200)


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"alpha": 0.5, "k": 10, "epochs": 4, "device": "cpu", **overrides})


def fit(trainer: Trainer) -> list[dict]:
    """The remaining epochs, without the engine's probes and checkpoints."""
    return [trainer.train_epoch() for _ in range(trainer.config.epochs - trainer.epoch)]


def test_two_plus_two_epochs_equal_four_exactly(small_mnist, tmp_path):
    straight = Trainer(config(), small_mnist)
    fit(straight)

    first = Trainer(config(epochs=2), small_mnist)
    fit(first)
    save_checkpoint(first.state_dict(), tmp_path / "ckpt.pt")
    torch.manual_seed(999)  # the resumed run must not depend on the process's RNG state
    resumed = Trainer(config(), small_mnist)
    resumed.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))
    history = fit(resumed)

    assert [h["epoch"] for h in history] == [3, 4]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert straight.evaluate(10, 50) == resumed.evaluate(10, 50)


def test_different_seeds_train_different_models(small_mnist):
    a, b = Trainer(config(epochs=1), small_mnist), Trainer(config(epochs=1, seed=1), small_mnist)
    fit(a), fit(b)
    assert not torch.equal(a.model.encoder[0].weight, b.model.encoder[0].weight)


def test_training_improves_the_test_bound(small_mnist):
    trainer = Trainer(config(epochs=5), small_mnist)
    before = trainer.evaluate(10, 20)
    fit(trainer)
    after = trainer.evaluate(10, 20)
    assert after["test_vr_bound_0"] > before["test_vr_bound_0"] + 200
    # IS estimate is tighter than the 10-sample IWAE bound, which is tighter than the alpha=0.5 bound
    assert after["test_log_likelihood"] >= after["test_vr_bound_0"] - 0.5 >= after["test_vr_bound_alpha"] - 0.5


def test_alpha_zero_trial_reports_its_bound_equal_to_the_iwae_bound(small_mnist):
    result = Trainer(config(alpha=0.0, epochs=1), small_mnist).evaluate(10, 20)
    assert result["test_vr_bound_alpha"] == result["test_vr_bound_0"]
    assert result["test_log_likelihood"] > result["test_vr_bound_0"] - 1.0


def test_non_finite_loss_names_epoch_and_step(small_mnist):
    poisoned = Images(small_mnist.train_x.clone(), small_mnist.train_y, small_mnist.test_x, small_mnist.test_y, small_mnist.side)
    poisoned.train_x[123] = math.nan
    trainer = Trainer(config(binarization="none"), poisoned)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d+ \(alpha=0.5, k=10"):
        fit(trainer)


def test_validation_images_are_held_out_of_training_and_binarised_once(small_mnist):
    trainer = Trainer(config(validation_images=100), small_mnist)
    assert len(trainer.train_x) == 500 and len(trainer.train_y) == 500 and len(trainer.val_x) == 100
    assert set(trainer.val_x.unique().tolist()) == {0.0, 1.0}, "validation images are binarised once"
    held_out = small_mnist.train_x[500:]
    assert torch.equal(trainer.val_x, Trainer(config(validation_images=100, seed=7), small_mnist).val_x), \
        "the validation binarisation does not depend on the trial seed"
    assert ((trainer.val_x == 1) <= (held_out > 0)).all(), "validation images come from the last training images"
    bound = trainer.validation_bound(100, 5)
    assert math.isfinite(bound) and bound == trainer.validation_bound(100, 5)
    with pytest.raises(ValueError, match="holds out no validation images"):
        Trainer(config(), small_mnist).validation_bound(100, 5)


def test_holding_out_every_training_image_is_refused(small_mnist):
    with pytest.raises(DataError, match="validation_images=600 leaves no training images"):
        Trainer(config(validation_images=600), small_mnist)


def test_resume_refuses_a_different_model(small_mnist, tmp_path):
    trainer = Trainer(config(epochs=1), small_mnist)
    fit(trainer)
    with pytest.raises(ValueError, match="different config"):
        Trainer(config(k=11), small_mnist).load_state_dict(trainer.state_dict())


@pytest.mark.parametrize(
    "bad, field",
    [({"alpha": math.nan}, "alpha"), ({"k": 0}, "k"), ({"epochs": -1}, "epochs"), ({"lr": math.inf}, "lr"),
     ({"activation": "gelu"}, "activation"), ({"binarization": "half"}, "binarization"),
     ({"hidden": (200, 0)}, "hidden"), ({"kk": 3}, "kk")],
)
def test_config_rejects_bad_values_naming_the_field(bad, field):
    with pytest.raises(ValidationError) as info:
        TrainConfig(**bad)
    assert info.value.errors()[0]["loc"][0] == field


def test_infinite_alpha_is_a_valid_config():
    assert TrainConfig(alpha=-math.inf).alpha == -math.inf


def test_partial_checkpoint_is_detected(small_mnist, tmp_path):
    path = tmp_path / "checkpoint.pt"
    trainer = Trainer(config(epochs=1), small_mnist)
    save_checkpoint(trainer.state_dict(), path)
    assert load_checkpoint(path)["epoch"] == 0
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or partial"):
        load_checkpoint(path)
    assert not list(tmp_path.glob("*.part")), "no temporary file may be left behind"
