"""File formats: what vaesweep writes carries its version, and an earlier version's files are read or refused."""

from __future__ import annotations

import json

import pytest

from reference_trainer import Trainer
from sweeps.layout import MEMBER_METRICS_FILE, SWEEP_FILE, is_final, member_metrics_file, saved_settings, write_settings
from sweeps.config import ConfigError, validate_sweep
from vae.config import TrainConfig
from vae.errors import CheckpointError
from vae.formats import FORMAT, checkpoint_format, refuse_earlier_checkpoint
from vae.mnist import load_mnist
from vae.packed_train import PackedTrainer

CONFIG = TrainConfig(alpha=1.0, k=4, epochs=1, device="cpu")


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    return load_mnist(mnist_dir, train_subset=64, test_subset=32)


def test_a_pack_checkpoint_carries_the_format_and_a_one_model_checkpoint_is_format_1(small_mnist):
    state = PackedTrainer([CONFIG], small_mnist).state_dict()
    assert checkpoint_format(state) == state["format"] == FORMAT
    refuse_earlier_checkpoint(state)
    earlier = Trainer(CONFIG, small_mnist).state_dict()
    assert checkpoint_format(earlier) == 1
    with pytest.raises(CheckpointError, match="format 1.*choose a new --out"):
        refuse_earlier_checkpoint(earlier, "; choose a new --out")


def test_a_format_2_members_final_metrics_are_read_under_their_name_then(tmp_path):
    member = tmp_path / "members" / "a1_k4_s0"
    (member / "analysis").mkdir(parents=True)
    (member / "analysis" / "analysis.json").write_text("{}")
    assert not is_final(tmp_path, ["a1_k4_s0"])
    (member / "metrics.json").write_text(json.dumps({"epoch": 3}))
    assert member_metrics_file(member) == member / "metrics.json" and is_final(tmp_path, ["a1_k4_s0"])
    (member / MEMBER_METRICS_FILE).write_text(json.dumps({"epoch": 4}))
    assert member_metrics_file(member) == member / MEMBER_METRICS_FILE


def test_sweep_yaml_cut_short_is_refused_and_one_without_head_lines_is_read(tmp_path):
    config = validate_sweep({"name": "f", "storage": str(tmp_path), "grid": {"alpha": [1.0], "k": [4], "seed": [0]}})
    config.sweep_dir().mkdir(parents=True)
    write_settings(config)
    path = config.sweep_dir() / SWEEP_FILE
    whole = path.read_text()
    assert saved_settings(config.sweep_dir())["name"] == "f"
    path.write_text("".join(whole.splitlines(keepends=True)[1:-1]))
    assert saved_settings(config.sweep_dir())["name"] == "f", "format 1: no head and end lines"
    path.write_text("".join(whole.splitlines(keepends=True)[:-1]))
    with pytest.raises(ConfigError, match="corrupt"):
        saved_settings(config.sweep_dir())
