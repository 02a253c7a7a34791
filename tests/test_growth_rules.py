"""What `vaesweep run` does with a sweep that exists, decided from its saved settings alone: a resume, a
growth (with its new grid points and packs), or a one-line refusal. Quick: nothing trains."""

from __future__ import annotations

import pytest

from sweeps.config import ConfigError, load_sweep
from sweeps.driver.growth import sweep_change
from sweeps.failures import RETRY_HINT, FailedBefore, cause_of, first_cause
from sweeps.layout import write_settings


def saved(tmp_path, *overrides: str):
    config = load_sweep("smoke", list(overrides), storage=str(tmp_path)).resolved(gpus=0)
    config.sweep_dir().mkdir(parents=True)
    write_settings(config)
    return config


def run(tmp_path, *overrides: str):
    return sweep_change(load_sweep("smoke", list(overrides), storage=str(tmp_path)).resolved(gpus=0))


def test_a_new_sweep_is_its_grid_alone_whatever_earlier_grids_its_file_holds(tmp_path):
    config, growth = run(tmp_path, "earlier_grids=[{alpha: [3.0], k: [10], seed: [7]}]")
    assert growth is None and config.earlier_grids == [] and len(config.grid_points()) == 6


def test_the_same_grid_in_another_order_resumes_and_a_larger_one_grows_in_packs_of_its_own(tmp_path):
    saved(tmp_path, "resources.pack=3")
    config, growth = run(tmp_path, "grid.alpha=[1.0, 0.5, 0.0]", "resources.pack=3")
    assert growth is None and config.grid.alpha == [0.0, 0.5, 1.0]
    config, growth = run(tmp_path, "grid.seed=[0, 1]", "resources.pack=3")
    assert (growth.kept, growth.new, growth.epochs_from) == (6, 6, None)
    packs = config.packs()
    assert packs[:2] == load_sweep("smoke", ["resources.pack=3"]).resolved(gpus=0).packs(), "the kept packs stay"
    assert all(point["seed"] == 1 for pack in packs[2:] for point in pack) and len(packs) == 4


def test_a_longer_training_grows_and_may_add_probe_epochs_past_the_old_end(tmp_path):
    saved(tmp_path)
    config, growth = run(tmp_path, "train.epochs=8", "eval.probe_epochs=[1, 2, 5, 8]")
    assert growth.epochs_from == 5 and growth.new == 0 and config.earlier_grids == []
    assert "train.epochs 5 -> 8: every grid point continues" in growth.line(6)
    with pytest.raises(ConfigError, match="may add probe epochs past 5 only"):
        run(tmp_path, "train.epochs=8", "eval.probe_epochs=[1, 8]")


@pytest.mark.parametrize("overrides, message", [
    (["train.lr=0.01"], "with train.lr=0.001, not 0.01: it defines what a finished grid point is"),
    (["resources.cpus=2"], "resources.cpus=1.0, not 2.0: it decides which grid points train together"),
    (["grid.k=[10]"], "leaves out 3 of its grid points"),
    (["train.epochs=4", "eval.probe_epochs=[1]"], "trains 5 epochs, not 4: a sweep does not shorten"),
])
def test_a_change_that_is_not_a_growth_is_refused_in_one_line(tmp_path, overrides, message):
    saved(tmp_path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(tmp_path, *overrides)


def test_checkpoints_and_retries_are_free_to_change(tmp_path):
    saved(tmp_path)
    assert run(tmp_path, "checkpoint_every=2", "max_failures=0")[1] is None


def test_a_failure_kept_over_reruns_keeps_its_first_cause():
    first = "NonFiniteLossError: non-finite loss (nan) at epoch 1, step 3 (alpha=-inf, k=5, lr=10, seed=0)"
    again = f"{FailedBefore.__name__}: {first}; {RETRY_HINT}"
    assert first_cause(again) == first and first_cause(first) == first
    assert cause_of(again) == "non-finite loss" == cause_of(first)
