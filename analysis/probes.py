"""Linear probes: how linearly separable the digit classes are in latent space (paper.md 2.2).

A multinomial logistic regression (scikit-learn, standardized features) is fit on training-set
features and scored on the test set, for posterior means, means + variances (the diagonal
covariance), one sampled latent per image, and raw pixels as the baseline. ``add_probes`` runs
the latent probes at chosen epochs of training (the study's Figure 3).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from analysis.latent import Posterior, encode_dataset
from analysis.metrics import MetricName
from analysis.settings import PROBE_EPOCHS
from vae.member import Member

LATENT_FEATURES = ("means", "means_variances", "samples")


def probe_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray,
    max_iter: int = 300,
) -> float:
    """Test accuracy of a standardized multinomial logistic regression fit on the training features.
    A fit that stops at ``max_iter`` is scored as it stands (the probe's budget is part of its definition):
    sklearn's warning about it would reach a sweep's console once per probe, from every trial.

    The fit's products are small (images x features by features x 10 classes), so it runs on one BLAS
    thread: beside torch's own threads, two OpenBLAS threads made a digits probe 8x slower (0.7 s against
    0.08 s on 2 cores, measured), which a Ray trial of one CPU never saw (Ray sets its OMP_NUM_THREADS)."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(train_features, train_labels)
    return float(classifier.score(test_features, test_labels))


def latent_features(posterior: Posterior) -> dict[str, np.ndarray]:
    return {
        "means": posterior.means,
        "means_variances": np.hstack([posterior.means, posterior.variances]),
        "samples": posterior.samples,
    }


def latent_probes(train: Posterior, train_labels: np.ndarray, test: Posterior, test_labels: np.ndarray) -> dict[str, float]:
    """Accuracy for each latent feature set."""
    train_sets, test_sets = latent_features(train), latent_features(test)
    return {name: probe_accuracy(train_sets[name], train_labels, test_sets[name], test_labels) for name in LATENT_FEATURES}


def probe_epochs(last_epoch: int, epochs: Iterable[int] = PROBE_EPOCHS) -> list[int]:
    """The probe epochs not past the end of training."""
    return sorted(e for e in set(epochs) if 0 < e <= last_epoch)


def add_probes(metrics: dict[str, float], member: Member, epochs: Iterable[int], train_size: int | None,
               seed: int) -> None:
    """Add ``probe_<features>`` accuracies (and ``probe_seconds``) to an epoch's metrics, in place, when
    its epoch is one of ``epochs``: probes fit on the first ``train_size`` images of the member's
    fixed-binarised training set and scored on its test set (the study's Figure 3). A data set without
    labels has no probes."""
    if member.labelled and metrics["epoch"] in probe_epochs(member.config.epochs, epochs):
        start = time.perf_counter()
        accuracies = member_probes(member, train_size, seed)
        metrics.update({f"probe_{name}": acc for name, acc in accuracies.items()})
        metrics[MetricName.probe_seconds] = time.perf_counter() - start


def member_probes(member: Member, train_size: int | None, seed: int, pixels: bool = False) -> dict[str, float]:
    """Probe accuracies of a member's model (and of raw pixels if ``pixels``)."""
    train_x, train_y = member.probe_train_set(train_size)
    train_labels, test_labels = to_numpy(train_y), to_numpy(member.test_y)
    train = encode_dataset(member.model, train_x, seed=seed + 1)
    test = encode_dataset(member.model, member.test_x, seed=seed)
    accuracies = latent_probes(train, train_labels, test, test_labels)
    if pixels:
        accuracies["pixels"] = probe_accuracy(to_numpy(train_x), train_labels, to_numpy(member.test_x), test_labels)
    return accuracies


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
