"""Every metric's name, spelled once, at the lowest layer that produces one (the trainer's epoch
metrics and a member's test bounds are the model's; ``analysis/metrics.py`` holds the schema: units,
when each is reported, descriptions)."""

from __future__ import annotations

from enum import StrEnum, auto


class MetricName(StrEnum):
    """Every metric's name, spelled once: code writes ``MetricName.test_log_likelihood``, never the string."""

    epoch = auto()
    train_vr_bound_alpha = auto()
    epoch_seconds = auto()
    val_vr_bound_0 = auto()
    probe_means = auto()
    probe_means_variances = auto()
    probe_samples = auto()
    probe_seconds = auto()
    test_vr_bound_alpha = auto()
    test_vr_bound_0 = auto()
    test_log_likelihood = auto()
    active_components = auto()
    active_units = auto()
    axis_alignment = auto()
    final_probe_means = auto()
    final_probe_means_variances = auto()
    final_probe_samples = auto()
    final_probe_pixels = auto()
