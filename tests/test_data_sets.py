"""Data sets beyond MNIST: the UCI digits built in, a user's own .npz or idx folder, each checked up front,
its checksum recorded by a sweep and checked on resume. Real data throughout (scikit-learn's digits and
files written from them), the real CLI, Ray and MLflow for the sweeps."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from sweep_helpers import children, vaesweep
from sweeps.layout import DATA_FILE
from vae.data import images_of
from vae.data_sets import load_data
from vae.errors import DataError

DIGITS = load_digits()
TRAIN = 1000  # the own files' split of the 1,797 digits (the built-in set splits at 1,497)


def write_npz(path: Path, labels: bool = True, flat: bool = False) -> Path:
    images = DIGITS.images / 16 if not flat else DIGITS.data / 16
    arrays = {"train_images": images[:TRAIN], "test_images": images[TRAIN:]}
    if labels:
        arrays |= {"train_labels": DIGITS.target[:TRAIN], "test_labels": DIGITS.target[TRAIN:]}
    np.savez(path, **arrays)
    return path


def idx_file(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, labels: bool) -> Path:
    """The digits as idx files in MNIST's names: grey levels 0..16 scaled to bytes 0..255."""
    folder.mkdir(parents=True)
    levels = (DIGITS.images * 255 / 16).round()
    (folder / "train-images-idx3-ubyte").write_bytes(idx_file(levels[:TRAIN]))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_file(levels[TRAIN:]))
    if labels:
        (folder / "train-labels-idx1-ubyte").write_bytes(idx_file(DIGITS.target[:TRAIN]))
        (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_file(DIGITS.target[TRAIN:]))
    return folder


def test_digits_are_the_uci_set_split_as_documented():
    data = load_data("digits")
    assert data.title == "UCI digits" and data.side == (8, 8) and data.pixels == 64
    assert (len(data.train_images), len(data.test_images)) == (1497, 300)
    np.testing.assert_array_equal(data.train_images, (DIGITS.data[:1497] / 16).astype(np.float32))
    np.testing.assert_array_equal(data.test_labels, DIGITS.target[1497:])
    assert set(np.unique(data.train_images * 16)) <= set(range(17)) and set(data.train_labels) == set(range(10))
    assert load_data("digits").sha256 == data.sha256
    images = images_of(data, train_subset=100)
    assert images.train_x.shape == (100, 64) and images.side == (8, 8) and float(images.train_x.max()) == 1.0


def test_own_npz_and_idx_hold_the_same_images_and_a_changed_file_changes_the_checksum(tmp_path):
    npz = load_data(f"npz:{write_npz(tmp_path / 'd.npz')}")
    flat = load_data(f"npz:{write_npz(tmp_path / 'flat.npz', flat=True)}")
    idx = load_data(f"idx:{write_idx_folder(tmp_path / 'own', labels=True)}")
    for data in (npz, flat, idx):
        assert data.side == (8, 8) and data.labelled and len(data.train_images) == TRAIN
        np.testing.assert_array_equal(data.test_labels, DIGITS.target[TRAIN:])
    np.testing.assert_array_equal(npz.train_images, flat.train_images)
    assert idx.train_images.dtype == np.uint8  # bytes stay bytes (a quarter of float32's memory in the object store)
    np.testing.assert_allclose(images_of(idx).train_x.numpy(), npz.train_images, atol=0.5 / 255)
    assert npz.title == "d.npz" and idx.title == "own"
    unlabelled = load_data(f"npz:{write_npz(tmp_path / 'u.npz', labels=False)}")
    assert not unlabelled.labelled and images_of(unlabelled).train_y is None
    changed = dict(np.load(tmp_path / "d.npz"))
    changed["train_images"][0, 0, 0] = 1.0 - changed["train_images"][0, 0, 0]
    np.savez(tmp_path / "d.npz", **changed)
    assert load_data(f"npz:{tmp_path / 'd.npz'}").sha256 != npz.sha256


def test_relative_paths_are_made_absolute_and_unknown_names_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "d.npz")
    assert load_data("npz:d.npz").spec == f"npz:{tmp_path / 'd.npz'}"
    with pytest.raises(DataError, match="unknown data set 'emnist'"):
        load_data("emnist")


def test_a_torchvision_set_offline_says_how_to_use_own_files(tmp_path):
    """No network (a proxy that refuses every connection): one line, exit 2, pointing at idx:DIR."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    done = vaesweep("data", "check", "fashion-mnist", env=env)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("vaesweep: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "fashion-mnist is not in" in lines[0] and "could not be downloaded" in lines[0] and "idx:DIR" in lines[0]


def test_vaesweep_train_and_analyze_on_digits(tmp_path):
    out = tmp_path / "run"
    done = vaesweep("train", "--data", "digits", "--k", "5", "--epochs", "2", "--is-samples", "20",
                    "--probe-epochs", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"] == "digits" and metrics["data"]["title"] == "UCI digits"
    assert metrics["data"]["side"] == [8, 8] and 0 < metrics["final_probe_means"] <= 1
    assert np.load(out / "analysis" / "interpolations.npy").shape == (5, 10, 8, 8)
    analyzed = vaesweep("analyze", str(out), "--out", str(tmp_path / "again"))
    assert analyzed.returncode == 0, analyzed.stderr
    assert np.load(tmp_path / "again" / "interpolations.npy").shape == (5, 10, 8, 8)


def own_data_sweep(tmp_path: Path, name: str, data: str) -> Path:
    config = {"name": name, "data": data, "grid": {"alpha": [0.0, 1.0], "k": [5], "seed": [0]},
              "train": {"epochs": 2}, "eval": {"is_samples": 20, "probe_epochs": [1, 2], "probe_train_size": 500},
              "storage": str(tmp_path / "runs"), "resources": {"cpus": 1, "gpu": 0}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_a_sweep_on_an_own_npz_names_it_and_refuses_the_file_changed_on_resume(tmp_path):
    npz = write_npz(tmp_path / "mydigits.npz")
    config = own_data_sweep(tmp_path, "own-npz", f"npz:{npz}")
    done = vaesweep("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_dir = tmp_path / "runs" / "own-npz"
    record = json.loads((sweep_dir / DATA_FILE).read_text())
    assert record["spec"] == f"npz:{npz}" and record["side"] == [8, 8] and record["train_images"] == TRAIN
    runs = children(sweep_dir)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["data"] for r in runs} == {"mydigits.npz"}
    assert {r.data.params["trial.data"] for r in runs} == {f"npz:{npz}"}
    assert all("final_probe_means" in r.data.metrics for r in runs)
    report = vaesweep("report", "own-npz", "--storage", str(tmp_path / "runs"))
    assert report.returncode == 0, report.stderr
    page = (sweep_dir / "report" / "report.html").read_text()
    assert "<b>Data:</b> mydigits.npz" in page and "1000 training and 797 test images of 8x8" in page
    assert "Interpolations between two mydigits.npz test images (8x8)" in page

    changed = dict(np.load(npz))
    changed["test_images"][3, 4, 4] = 1.0 - changed["test_images"][3, 4, 4]
    np.savez(npz, **changed)
    before = (sweep_dir / DATA_FILE).read_bytes(), (sweep_dir / "sweep.yaml").read_bytes()
    refused = vaesweep("run", str(config))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert f"the data set mydigits.npz (npz:{npz}) changed since sweep 'own-npz' started" in refused.stderr
    assert ((sweep_dir / DATA_FILE).read_bytes(), (sweep_dir / "sweep.yaml").read_bytes()) == before


@pytest.mark.slow
def test_a_sweep_on_an_unlabelled_idx_folder_skips_the_probes_and_its_report_says_why(tmp_path):
    folder = write_idx_folder(tmp_path / "own", labels=False)
    done = vaesweep("run", str(own_data_sweep(tmp_path, "own-idx", f"idx:{folder}")))
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_dir = tmp_path / "runs" / "own-idx"
    runs = children(sweep_dir)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert "test_log_likelihood" in run.data.metrics and "active_components" in run.data.metrics
        assert not [key for key in run.data.metrics if "probe" in key], run.data.metrics
    report = vaesweep("report", "own-idx", "--storage", str(tmp_path / "runs"))
    assert report.returncode == 0, report.stderr
    assert "note: Figure 3: own has no labels, so no probes were run" in report.stdout
    assert not [line for line in report.stdout.splitlines() if "missing metric" in line and "probe" in line], report.stdout
    assert not (sweep_dir / "report" / "fig3_probes.png").exists()
