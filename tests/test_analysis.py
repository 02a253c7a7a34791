"""Spectrum, probes, interpolations and `vaesweep analyze`: known answers and a real trained model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.interpolate import ROWS, interpolation_rows
from analysis.latent import encode_dataset
from analysis.probes import add_probes, probe_accuracy, probe_epochs
from analysis.spectrum import spectrum
from vae.config import TrainConfig
from vae.mnist import load_mnist
from vae.model import VAE
from reference_trainer import Trainer

RNG = np.random.default_rng(0)


def test_three_informative_axes_give_three_active_and_full_alignment():
    means = np.zeros((2000, 10))
    means[:, [1, 4, 7]] = RNG.normal(scale=[3.0, 2.0, 1.0], size=(2000, 3))
    means += RNG.normal(scale=0.01, size=means.shape)  # variance 1e-4, well under epsilon
    spec = spectrum(means)
    assert spec.active_components == 3 and spec.active_units == 3
    assert spec.axis_alignment > 0.999
    assert spec.eigenvalues == sorted(spec.eigenvalues, reverse=True)
    np.testing.assert_allclose(spec.eigenvalues[:3], [9.0, 4.0, 1.0], rtol=0.1)


def test_rotated_code_keeps_components_but_loses_alignment_and_units():
    informative = RNG.normal(size=(3000, 2)) * [1.0, 0.5]
    rotation, _ = np.linalg.qr(RNG.normal(size=(40, 40)))
    means = np.hstack([informative, np.zeros((3000, 38))]) @ rotation  # spread over all 40 coordinates
    spec = spectrum(means)
    assert spec.active_components == 2
    assert spec.axis_alignment < 0.5
    assert spec.active_units > 2  # the per-unit count is not rotation-invariant
    assert spectrum(means, epsilon=10.0).active_components == 0


def test_probe_is_perfect_on_separable_labels_and_chance_on_noise():
    labels = RNG.integers(0, 10, size=3000)
    separable = np.eye(10)[labels] * 5 + RNG.normal(scale=0.1, size=(3000, 10))
    assert probe_accuracy(separable[:2000], labels[:2000], separable[2000:], labels[2000:]) > 0.99
    noise = RNG.normal(size=(3000, 10))
    assert probe_accuracy(noise[:2000], labels[:2000], noise[2000:], labels[2000:]) < 0.2


def test_probe_epochs_stop_at_the_last_epoch():
    assert probe_epochs(30) == [1, 2, 5, 10, 20]
    assert probe_epochs(1000)[-1] == 1000
    assert probe_epochs(3, [3, 7, 1]) == [1, 3]


def test_encode_dataset_is_chunk_invariant_and_seeded():
    model = VAE(k=4, hidden=(32,))
    x = torch.rand(50, 784)
    a, b = encode_dataset(model, x, seed=3, batch_size=7), encode_dataset(model, x, seed=3, batch_size=50)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-6, atol=1e-6)
    assert (a.variances > 0).all()
    assert not np.allclose(encode_dataset(model, x, seed=4).samples, b.samples)


def test_interpolation_rows_start_and_end_at_the_endpoints():
    model = VAE(k=4, hidden=(32,))
    x1, x2 = torch.bernoulli(torch.rand(784)), torch.bernoulli(torch.rand(784))
    rows = interpolation_rows(model, x1, x2, (28, 28), steps=6)
    assert rows.shape == (len(ROWS), 6, 28, 28) and (0 <= rows).all() and (rows <= 1).all()
    np.testing.assert_allclose(rows[0, 0].ravel(), x1.numpy())
    np.testing.assert_allclose(rows[0, -1].ravel(), x2.numpy())
    # mean line and geodesic-at-mean decode the same posterior means at both ends
    np.testing.assert_allclose(rows[1, [0, -1]], rows[4, [0, -1]], atol=1e-5)


def test_probes_add_accuracies_at_chosen_epochs(mnist_dir):
    data = load_mnist(mnist_dir, train_subset=1000, test_subset=300)
    trainer = Trainer(TrainConfig(k=8, epochs=3, device="cpu"), data)
    seen = []
    for _ in range(3):
        metrics = trainer.train_epoch()
        add_probes(metrics, trainer.member(), epochs=[2, 50], train_size=1000, seed=0)
        seen.append(metrics)
    assert "probe_means" not in seen[0] and "probe_means" not in seen[2]
    assert {"probe_means", "probe_means_variances", "probe_samples", "probe_seconds"} <= seen[1].keys()
    assert seen[1]["probe_means"] > 0.25  # ten classes: chance is 0.1


@pytest.mark.slow
def test_analyze_command_on_a_trained_model(mnist_dir, tmp_path):
    vaesweep = Path(sys.executable).with_name("vaesweep")
    run_dir = tmp_path / "run"
    env_args = ["--data-dir", str(mnist_dir)]
    train = [str(vaesweep), "train", "--alpha", "1", "--k", "20", "--epochs", "2", "--train-subset", "5000",
             "--test-subset", "500", "--is-samples", "10", "--probe-epochs", "0", "--probe-train-size", "2000",
             "--out", str(run_dir), *env_args]
    subprocess.run(train, check=True, capture_output=True, timeout=600)
    done = subprocess.run([str(vaesweep), "analyze", str(run_dir), "--out", str(tmp_path / "a"), "--probe-train-size",
                           "2000", *env_args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert len(result["eigenvalues"]) == 20 and result["eigenvalues"] == sorted(result["eigenvalues"], reverse=True)
    assert 0 < result["active_components"] < 20 and 0 < result["active_units"] <= 20
    assert set(result["probe_accuracy"]) == {"means", "means_variances", "samples", "pixels"}
    assert result["probe_accuracy"]["means"] > 0.4  # ten classes: chance is 0.1 (two epochs on 5,000 images)
    for name in ("interpolations.png", "fig4_geodesics.png", "spectrum.csv", "probes.csv"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    bad = subprocess.run([str(vaesweep), "analyze", str(tmp_path / "nope.pt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
