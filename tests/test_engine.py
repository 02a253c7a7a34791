"""The trial engine (sweeps/trial/engine.py) with a recording sink, and `vaesweep train` as its directory sink."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest

from analysis.metrics import FINAL_METRICS, check_metrics
from analysis.settings import EvalConfig
from sweeps.packs import NODE_KEY
from sweeps.trial.engine import run_trial
from sweeps.trial.local_run import train_to_directory
from vae.checkpoint import load_checkpoint
from vae.config import TrainConfig
from vae.mnist import load_mnist
from vae.errors import NonFiniteLossError, RunDirError
from vae.packed_train import PackedTrainer

EVAL = EvalConfig(bound_samples=5, is_samples=10, probe_epochs=(2,), probe_train_size=300, val_images=50)


class RecordingSink:
    """Keeps every report and the files each epoch's folder held."""

    def __init__(self, root: Path) -> None:
        self.root, self.reports, self.results = root, [], []

    @contextlib.contextmanager
    def folder(self):
        folder = self.root / f"epoch{len(self.reports) + 1}"
        folder.mkdir()
        yield folder

    def member_folder(self, folder, label):
        return folder / "members" / label

    def report(self, result, folder):
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder else None
        self.reports.append(({**result["members"].get(LABEL, {}), "epoch": result["epoch"]}, files))
        self.results.append(result)


@pytest.fixture(scope="module")
def small(mnist_dir):
    return load_mnist(mnist_dir, train_subset=400, test_subset=100)


LABEL = "the point"


def trainer(small, **overrides) -> PackedTrainer:
    return PackedTrainer([TrainConfig(**{"alpha": 0.5, "k": 5, "epochs": 3, "device": "cpu", **overrides})], small)


def test_one_report_per_epoch_checkpoints_probes_and_a_final_analysis(small, tmp_path):
    sink = RecordingSink(tmp_path)
    last = run_trial(trainer(small), [LABEL], EVAL, sink, checkpoint_every=2)["members"][LABEL]
    assert [m["epoch"] for m, _ in sink.reports] == [1, 2, 3]
    assert [files is not None for _, files in sink.reports] == [False, True, True], "every 2nd epoch and the last"
    assert "probe_means" in sink.reports[1][0] and "probe_means" not in sink.reports[0][0]
    assert f"members/{LABEL}/analysis/analysis.json" in sink.reports[2][1] and "checkpoint.pt" in sink.reports[2][1]
    assert set(FINAL_METRICS) <= last.keys() and not set(FINAL_METRICS) & sink.reports[1][0].keys()
    assert all("val_vr_bound_0" not in m for m, _ in sink.reports), "no selection metric without held-out images"
    assert all("val_vr_bound_0" not in result for result in sink.results)
    assert load_checkpoint(tmp_path / "epoch3" / "checkpoint.pt")["epoch"] == 3


def test_held_out_images_give_a_validation_bound_every_epoch(small, tmp_path):
    sink = RecordingSink(tmp_path)
    run_trial(trainer(small, validation_images=100, epochs=2), [LABEL], EVAL, sink, checkpoint_every=1)
    bounds = [m["val_vr_bound_0"] for m, _ in sink.reports]
    assert len(bounds) == 2 and all(math.isfinite(b) for b in bounds) and bounds[1] > bounds[0]
    # what ASHA and Optuna read: the trial's own selection metric at the top of its result
    assert [result["val_vr_bound_0"] for result in sink.results] == bounds


def test_a_resumed_engine_goes_on_from_the_checkpoint_epoch(small, tmp_path):
    first = trainer(small)
    run_trial(first, [LABEL], EVAL.model_copy(update={"probe_epochs": ()}), RecordingSink(tmp_path), checkpoint_every=1)
    resumed = trainer(small, epochs=5)
    resumed.load_state_dict(load_checkpoint(tmp_path / "epoch3" / "checkpoint.pt"))
    sink = RecordingSink(tmp_path / "more")
    (tmp_path / "more").mkdir()
    run_trial(resumed, [LABEL], EVAL, sink, checkpoint_every=1)
    assert [m["epoch"] for m, _ in sink.reports] == [4, 5]
    assert run_trial(resumed, [LABEL], EVAL, sink, checkpoint_every=1) == {}, "a finished trainer has nothing to run"


def test_divergence_stops_the_engine_naming_epoch_and_step(small, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d+ \(alpha=-inf, k=5, lr=10"):
        run_trial(trainer(small, alpha=-math.inf, lr=10.0), [LABEL], EVAL, RecordingSink(tmp_path), checkpoint_every=1)


def test_an_unknown_metric_is_refused_where_it_is_made():
    check_metrics(["epoch", "test_log_likelihood", "ray_node_id"], also=[NODE_KEY])
    with pytest.raises(ValueError, match=r"\['test_loglik'\] are not in analysis/metrics.py's schema"):
        check_metrics(["epoch", "test_loglik"])


def test_train_directory_holds_history_final_metrics_and_analysis_and_refuses_a_finished_rerun(mnist_dir, tmp_path):
    config = TrainConfig(alpha=1.0, k=5, epochs=2, train_subset=300, test_subset=100, device="cpu")
    result = train_to_directory(config, tmp_path, mnist_dir, EVAL, log=lambda _: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [h["epoch"] for h in saved["history"]] == [1, 2] and saved["eval"]["is_samples"] == 10
    assert saved["test_log_likelihood"] >= saved["test_vr_bound_0"] - 1
    assert (tmp_path / "analysis" / "analysis.json").is_file()
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirError, match="already holds 2 trained epochs"):
        train_to_directory(config, tmp_path, mnist_dir, EVAL, log=lambda _: None)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
