"""Every metric a trial reports, with its unit: the one schema that the trial engine, MLflow
tracking, ``vaesweep status``, the aggregation and the figures read.

A trial's per-epoch result and its final result may hold only these keys (``check_metrics``), so a
misspelt or new metric fails where it is produced instead of surfacing as an empty column later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from vae.metric_names import MetricName


@dataclass(frozen=True)
class Metric:
    name: MetricName
    unit: str
    when: Literal["epoch", "probe", "final"]  # every epoch, at probe epochs, once after the last epoch
    description: str


SCHEMA: dict[str, Metric] = {m.name: m for m in (
    Metric(MetricName.epoch, "epoch", "epoch", "epochs completed (MLflow step of every per-epoch metric)"),
    Metric(MetricName.train_vr_bound_alpha, "nats", "epoch", "training VR bound at the trial's alpha, mean over the epoch"),
    Metric(MetricName.epoch_seconds, "s", "epoch", "wall time of the epoch's training steps"),
    Metric(MetricName.val_vr_bound_0, "nats", "epoch", "IWAE bound (alpha 0) on the held-out validation images; "
                                               "only when the sweep selects (train.validation_images > 0)"),
    Metric(MetricName.probe_means, "accuracy", "probe", "logistic probe on posterior means"),
    Metric(MetricName.probe_means_variances, "accuracy", "probe", "logistic probe on means and variances"),
    Metric(MetricName.probe_samples, "accuracy", "probe", "logistic probe on one sampled latent per image"),
    Metric(MetricName.probe_seconds, "s", "probe", "wall time of the three probes"),
    Metric(MetricName.test_vr_bound_alpha, "nats", "final", "test VR bound at the trial's alpha (eval.bound_samples)"),
    Metric(MetricName.test_vr_bound_0, "nats", "final", "test IWAE bound (eval.bound_samples)"),
    Metric(MetricName.test_log_likelihood, "nats", "final", "test IS log-likelihood (eval.is_samples)"),
    Metric(MetricName.active_components, "count", "final", "PCA eigenvalues of the test posterior means above epsilon"),
    Metric(MetricName.active_units, "count", "final", "latent units with posterior-mean variance above epsilon (Burda)"),
    Metric(MetricName.axis_alignment, "score", "final", "how far the PCA components align with the latent axes (0-1)"),
    Metric(MetricName.final_probe_means, "accuracy", "final", "logistic probe on posterior means after training"),
    Metric(MetricName.final_probe_means_variances, "accuracy", "final", "logistic probe on means and variances after training"),
    Metric(MetricName.final_probe_samples, "accuracy", "final", "logistic probe on sampled latents after training"),
    Metric(MetricName.final_probe_pixels, "accuracy", "final", "logistic probe on the binarised pixels (baseline)"),
)}

FINAL_METRICS = [name for name, m in SCHEMA.items() if m.when == "final"]
# What a data set without labels cannot have: the final probes.
UNLABELLED_FINAL_METRICS = [name for name in FINAL_METRICS if SCHEMA[name].unit != "accuracy"]
# A trial's PCA spectrum: one MLflow metric with step = component number.
EIGENVALUE_KEY = "pca_eigenvalue"
# A grid point's fields: the identity of each trial's run, and the key columns of every table of runs.
GRID = ["alpha", "k", "seed"]
# What ``analysis.model_analysis.analyze_member`` writes its numbers to, beside its figures.
ANALYSIS_FILE = "analysis.json"
SELECTION_METRIC = MetricName.val_vr_bound_0  # what ASHA and Optuna maximize: validation images only


def check_metrics(keys: Iterable[str], also: Iterable[str] = ()) -> None:
    """ValueError naming any key outside the schema and ``also`` (keys that say where a result was made)."""
    unknown = sorted(set(keys) - SCHEMA.keys() - set(also))
    if unknown:
        raise ValueError(f"metrics {unknown} are not in analysis/metrics.py's schema; add them there first")

