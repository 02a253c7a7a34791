"""The cost said before a sweep starts: trials placed on the slots Ray would give, the steps timed here,
the warning past a day and the refusal past --max-hours."""

from __future__ import annotations

import pytest

from sweep_helpers import vaesweep
from sweeps.config import load_sweep
from sweeps.driver.estimate import SWEEP_FIXED_S, PackCost, duration, schedule, schedule_costs, slots


def test_trials_are_placed_longest_first_on_the_least_loaded_slot():
    assert schedule([3.0, 2.0, 2.0, 1.0], 2) == 4.0
    assert schedule([5.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert schedule([1.0] * 7, 3) == 3.0


def test_the_slots_are_what_the_resources_give_a_trial():
    paper = load_sweep("paper")
    assert slots(paper.resolved(gpus=0), cpus=2, gpus=0) == 2
    assert slots(paper.resolved(gpus=1), cpus=16, gpus=1) == 1  # three packs of 80, one GPU each
    half = paper.model_copy(update={"resources": paper.resources.model_copy(update={"gpu": 0.5, "pack": 80})})
    assert slots(half, cpus=16, gpus=1) == 2


def test_a_sweep_costs_its_epochs_probes_and_evaluation_per_trial_scheduled():
    smoke = load_sweep("smoke").resolved(gpus=0)
    costs = {(k, 1): PackCost(k, 1, epoch_s=2.0, probe_s=1.0, final_s=3.0, setup_s=0.5) for k in smoke.grid.k}
    found = schedule_costs(smoke, costs, cpus=2, gpus=0, pixels=784, measured_s=1.0)
    per_trial = 5 * 2.0 + 3 * 1.0 + 3.0  # 5 epochs, 3 probe epochs, final evaluation
    assert found.trials == 6 and found.at_once == 2
    assert found.wall_s == pytest.approx(SWEEP_FIXED_S + 0.5 + 3 * per_trial), "a fresh worker's setup once per slot"
    assert found.device_hours == pytest.approx((6 * per_trial + 2 * 0.5) / 3600)
    assert duration(found.wall_s) == f"{found.wall_s:.0f} s" and duration(9 * 86400) == "9 days"


TINY = ["--set", "data=digits", "--set", "grid.alpha=[1.0]", "--set", "grid.k=[5]", "--set", "grid.seed=[0]",
        "--set", "train.train_subset=1000", "--set", "train.test_subset=100", "--set", "eval.is_samples=10",
        "--set", "eval.probe_train_size=500", "--set", "eval.probe_epochs=[1]"]


def test_the_dry_run_says_the_estimate_and_past_a_day_the_cheaper_ways(tmp_path):
    quick = vaesweep("run", "smoke", "--storage", str(tmp_path), "--dry-run", *TINY)
    assert quick.returncode == 0, quick.stderr
    assert "estimate: 1 grid point in 1 trial, 1 at a time: about" in quick.stdout and "warning" not in quick.stderr
    long = vaesweep("run", "smoke", "--storage", str(tmp_path), "--dry-run", *TINY, "--set", "train.epochs=10000000")
    assert long.returncode == 0, long.stderr
    assert "days (10000000 epochs x" in long.stdout
    assert "that is more than a day here; cheaper: one seed" in long.stderr and "--set train.epochs=100" in long.stderr
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_no_estimate_skips_the_timing_and_says_so(tmp_path):
    skipped = vaesweep("run", "smoke", "--storage", str(tmp_path), "--dry-run", *TINY, "--no-estimate")
    assert skipped.returncode == 0, skipped.stderr
    assert "estimate: skipped (--no-estimate)" in skipped.stdout and "about" not in skipped.stdout


def test_a_run_without_an_estimate_leaves_no_earlier_run_s_to_be_ended(tmp_path):
    """The end line and status pair a run's end with its own estimate, never with an earlier run's."""
    from sweeps.driver.estimate import record, record_end

    sweep = load_sweep("smoke", storage=str(tmp_path))
    sweep.sweep_dir().mkdir(parents=True)
    found = schedule_costs(sweep.resolved(gpus=0), {(k, 1): PackCost(k, 1, 2.0, 1.0, 3.0) for k in sweep.grid.k},
                           cpus=2, gpus=0, pixels=784, measured_s=1.0)
    record(sweep, found)
    assert record_end(sweep.sweep_dir())["line"] == found.line()
    record(sweep, None)  # the next run: --no-estimate
    assert record_end(sweep.sweep_dir()) is None


def test_an_existing_sweep_is_estimated_for_what_it_has_left():
    smoke = load_sweep("smoke").resolved(gpus=0)
    costs = {(k, 1): PackCost(k, 1, epoch_s=2.0, probe_s=1.0, final_s=3.0) for k in smoke.grid.k}
    labels = [f"a{alpha:g}_k{k}_s0" for alpha in smoke.grid.alpha for k in smoke.grid.k]
    done = {label: 5 for label in labels[:4]} | {labels[4]: 3}  # four finished, one at epoch 3 of 5
    found = schedule_costs(smoke, costs, cpus=2, gpus=0, pixels=784, measured_s=1.0, done=done)
    fresh, resumed = 5 * 2.0 + 3 * 1.0 + 3.0, 2 * 2.0 + 1 * 1.0 + 3.0  # probe epochs 1, 2, 5
    assert found.finished == 4 and found.wall_s == pytest.approx(SWEEP_FIXED_S + schedule([fresh, resumed], 2))
    assert "6 grid points (4 finished) in 6 trials" in found.line()
