"""Wall time of ``vaesweep report`` on a synthetic sweep of 2,400 finished trials (issue 11: under a minute).

    .venv/bin/python bench/report_scale.py            (about 5 minutes, 3 of them to build the sweep)

Builds ``STORAGE/scale`` as ``vaesweep run`` leaves it (sweep.yaml, tracking.json, mlflow.db,
mlartifacts/): the paper grid (8 alphas x k in {30, 40, 50}) with 100 seeds, each child run FINISHED
with the tags, params, per-epoch metrics (30 epochs, probes at the probe epochs), final metrics and
``pca_eigenvalue`` spectrum (k steps) a real trial logs, and the best run's interpolations artifact.
It is written straight into the sqlite store (one ``log_batch`` per run, no server: nothing else
writes the file meanwhile). Then it times

(a) the real CLI, ``vaesweep report scale``, end to end (a subprocess: imports, the sweep's server,
    reading, figures, report.html, logging the report to the parent run), with the MLflow calls it
    made as counted in the server's access log (the sweep's server runs with MLflow 3's job runner
    off, sweeps/mlflow_server.py: its 7 worker processes tripled this time on 2 cores);
(b) the old reading (one search, one ``get_metric_history`` per run for the 6 keys it read) on a
    sample of runs, and that per-call time times the calls it would make on the whole sweep.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from analysis.metrics import EIGENVALUE_KEY, MetricName
from sweeps.config import SweepConfig, load_sweep
from sweeps.layout import SWEEP_FILE, read_tracking, write_tracking
from sweeps.layout import artifacts_dir, backend_uri
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.tracking import PARENT_TAG, SEARCH_PAGE, SWEEP_TAG, TRIAL_TAG, flatten
from vae.config import grid_point_label

EPOCHS = 30
PROBE_EPOCHS = [1, 2, 5, 10, 20, 30]
PROBE_KEYS = [MetricName.probe_means, MetricName.probe_means_variances, MetricName.probe_samples]
OLD_KEYS = [*PROBE_KEYS, MetricName.train_vr_bound_alpha, MetricName.val_vr_bound_0, EIGENVALUE_KEY]  # what the old reader read
VAESWEEP = Path(sys.executable).with_name("vaesweep")
REQUEST = re.compile(r'"(?:GET|POST|PUT) (/(?:ajax-)?api/[^? ]*)')


def trial_metrics(alpha: float, k: int, rng: np.random.Generator, now: int) -> list[Metric]:
    """What a trial logs, shaped like the study's trends: more active components and a tighter bound
    as alpha -> 0."""
    active = int(round(17 - 4 * min(alpha, 1) ** 2 - 1.5 * max(alpha - 1, 0) + rng.normal(0, 0.7)))
    log_lik = -91.3 - 1.8 * min(alpha, 1) + rng.normal(0, 0.1)
    final = {MetricName.test_log_likelihood: log_lik, MetricName.test_vr_bound_alpha: log_lik - 3 - 3.5 * alpha + rng.normal(0, 0.05),
             MetricName.test_vr_bound_0: log_lik - 3 + rng.normal(0, 0.05), MetricName.active_components: active,
             MetricName.active_units: active + 1, MetricName.axis_alignment: 0.6 + rng.normal(0, 0.02),
             MetricName.final_probe_means: 0.91 + rng.normal(0, 0.005),
             MetricName.final_probe_means_variances: 0.93 + rng.normal(0, 0.002),
             MetricName.final_probe_samples: 0.86 + rng.normal(0, 0.002), MetricName.final_probe_pixels: 0.863}
    metrics = [Metric(key, float(value), now, EPOCHS) for key, value in final.items()]
    for epoch in range(1, EPOCHS + 1):
        bound = -200 + 100 * (1 - math.exp(-epoch / 5))
        per_epoch = {"epoch": epoch, MetricName.train_vr_bound_alpha: bound, MetricName.val_vr_bound_0: bound + 2,
                     MetricName.epoch_seconds: 6 + rng.normal(0, 0.1)}
        if epoch in PROBE_EPOCHS:
            per_epoch.update({key: 0.8 + 0.1 * epoch / EPOCHS + rng.normal(0, 0.003) for key in PROBE_KEYS})
        metrics += [Metric(key, float(value), now + epoch, epoch) for key, value in per_epoch.items()]
    spectrum = 2.0 * 0.005 ** (np.arange(k) / max(active, 1)) * rng.uniform(0.9, 1.1, k)
    return metrics + [Metric(EIGENVALUE_KEY, float(v), now, step) for step, v in enumerate(spectrum, 1)]


def build_sweep(storage: Path, seeds: int) -> SweepConfig:
    """The synthetic sweep ``scale`` under ``storage``: FINISHED child runs of one parent, as a sweep has."""
    config = load_sweep("paper", [f"grid.seed={list(range(seeds))}", f"train.epochs={EPOCHS}",
                                  f"eval.probe_epochs={PROBE_EPOCHS}"], name="scale", storage=str(storage))
    sweep_dir = config.sweep_dir()
    sweep_dir.mkdir(parents=True)
    (sweep_dir / SWEEP_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    client = MlflowClient(backend_uri(sweep_dir))
    experiment_id = client.create_experiment(config.tracking.experiment, artifact_location="mlflow-artifacts:/scale")
    parent = client.create_run(experiment_id, run_name=config.name, tags={SWEEP_TAG: config.name}).info.run_id
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    best = (-math.inf, "")
    for index, trial in enumerate(config.grid_points()):
        name = grid_point_label(trial.alpha, trial.k, trial.seed)
        tags = {PARENT_TAG: parent, "sweep": config.name, "alpha": f"{trial.alpha:g}", "k": str(trial.k),
                "seed": str(trial.seed), TRIAL_TAG: f"t{index:05d}", "ray_node_id": "node0"}
        run = client.create_run(experiment_id, start_time=now + index, run_name=name, tags=tags)
        metrics = trial_metrics(trial.alpha, trial.k, rng, now)
        params = flatten({"trial": trial.model_dump(), "eval": config.eval.model_dump()})
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
        log_lik = next(m.value for m in metrics if m.key == MetricName.test_log_likelihood)
        best = max(best, (log_lik, run.info.run_id))
    client.set_terminated(parent, "FINISHED")
    client.log_batch(parent, tags=[RunTag("bench", "report_scale")])
    interpolations = artifacts_dir(sweep_dir) / "scale" / best[1] / "artifacts" / "analysis" / "interpolations.npy"
    interpolations.parent.mkdir(parents=True)
    np.save(interpolations, np.linspace(0, 1, 5 * 10 * 28 * 28).reshape(5, 10, 28, 28).astype(np.float32))
    write_tracking(config, experiment_id, parent)
    return config


def old_reading(client: MlflowClient, experiment_id: str, parent: str, sample: int) -> tuple[int, float]:
    """(runs one search call returns, seconds per get_metric_history call) of the old reader."""
    runs = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'")
    start = time.perf_counter()
    for run in runs[:sample]:
        for key in OLD_KEYS:
            client.get_metric_history(run.info.run_id, key)
    return len(runs), (time.perf_counter() - start) / (sample * len(OLD_KEYS))


def timed_report(storage: str, server_log: Path) -> tuple[float, dict[str, int]]:
    """(seconds, MLflow API calls by kind) of one ``vaesweep report`` through the real CLI."""
    seen = server_log.stat().st_size if server_log.exists() else 0
    start = time.perf_counter()
    report = subprocess.run([str(VAESWEEP), "report", "scale", "--storage", storage], capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert report.returncode == 0, report.stderr[-3000:]
    with server_log.open() as log:
        log.seek(seen)
        calls: dict[str, int] = {}
        for endpoint in REQUEST.findall(log.read()):
            kind = "artifacts" if "mlflow-artifacts" in endpoint else "/".join(endpoint.split("/")[-2:])
            calls[kind] = calls.get(kind, 0) + 1
    return wall, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds per grid point (24 points; 100 = 2,400 runs)")
    parser.add_argument("--sample", type=int, default=100, help="runs the old per-run reading is timed on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        config = build_sweep(Path(tmp), args.seeds)
        n = len(config.grid_points())
        print(f"built a synthetic sweep of {n} finished runs in {time.perf_counter() - start:.1f} s")

        server_log = config.sweep_dir() / "mlflow-server.log"
        wall, calls = timed_report(tmp, server_log)
        listed = ", ".join(f"{count} {endpoint}" for endpoint, count in sorted(calls.items()))
        print(f"(a) vaesweep report, {n} runs, end to end: {wall:.1f} s   [target < 60 s]; "
              f"{sum(calls.values())} calls to the server ({listed}) + {math.ceil(n / SEARCH_PAGE)} search "
              "pages read from the sqlite file")

        tracking = read_tracking(config.sweep_dir())
        with LocalMlflowServer(config.sweep_dir()) as server:
            client = MlflowClient(server.wait())
            found, per_call = old_reading(client, tracking["experiment_id"], tracking["parent_run_id"], args.sample)
        old_calls = n * len(OLD_KEYS)
        cut = " (the rest silently left out)" if found < n else ""
        print(f"(b) old reading: its one search call returned {found} of {n} runs{cut}; "
              f"get_metric_history {per_call * 1000:.1f} ms per call (timed on {args.sample} runs x "
              f"{len(OLD_KEYS)} keys); "
              f"all {n} runs would take 1 + {old_calls} calls = {per_call * old_calls:.0f} s of history reads")


if __name__ == "__main__":
    main()
