"""MNIST from the standard idx files, verified against their published checksums.

Accepted layouts of a data directory: the four files at its top level or under torchvision's
``MNIST/raw/``, each either raw or gzipped. Every file is checked against the SHA-256 of its raw
(uncompressed) bytes, recorded here, so a truncated download or a tampered copy is caught before
a trial trains on it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from vae.data import DataSet, Images, cache_root, images_of
from vae.errors import DataError
from vae.idx import check_idx, parse_idx, read_raw

# SHA-256 of the raw idx files (../shared/data/mnist/SHA256SUMS.raw lists the same values).
RAW_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Their shapes: with the idx magic number they say what a file must look like, so a wrong, truncated or
# still-compressed file is named as such before its checksum is computed.
IDX_SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte": (60_000, 28, 28),
    "train-labels-idx1-ubyte": (60_000,),
    "t10k-images-idx3-ubyte": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte": (10_000,),
}
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The cache keeps torchvision's layout so torchvision.datasets.MNIST(root=cache) reads it too.
RAW_SUBDIR = Path("MNIST") / "raw"
FETCH_HINT = "run `vaesweep data fetch` (or `vaesweep data fetch --from DIR` with a copy of the idx files)"


def default_data_dir() -> Path:
    """The MNIST cache: $VAESWEEP_DATA_DIR, else the user's cache dir (XDG)."""
    if env := os.environ.get("VAESWEEP_DATA_DIR"):
        return Path(env).expanduser()
    return cache_root() / "mnist"


def find_idx_file(root: Path, name: str) -> Path:
    """The path of idx file ``name`` under ``root`` in any accepted layout (raw preferred)."""
    for folder in (root, root / RAW_SUBDIR):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"MNIST file {name} not found in {root}; {FETCH_HINT}")


def read_verified(path: Path, name: str) -> bytes:
    """The raw bytes of an idx file (gunzipped if named .gz), checked: header, length, ``RAW_SHA256``."""
    hint = f"delete it and {FETCH_HINT}"
    raw = read_raw(path, hint)
    check_idx(raw, path, hint, f"the idx file {name}", IDX_SHAPES[name])
    if hashlib.sha256(raw).hexdigest() != RAW_SHA256[name]:
        raise DataError(f"{path} fails its SHA-256 check (corrupted or tampered); {hint}")
    return raw


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, 784] and labels as int64 [N] of ``split`` ('train' or 'test')."""
    image_name, label_name = SPLIT_FILES[split]
    images = parse_idx(read_verified(find_idx_file(root, image_name), image_name))
    labels = parse_idx(read_verified(find_idx_file(root, label_name), label_name))
    return images.reshape(len(images), -1), labels.astype(np.int64)


def mnist_set(root: Path | str | None = None) -> DataSet:
    """Both splits of MNIST from ``root`` (default: the cache), verified."""
    root = Path(root) if root is not None else default_data_dir()
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; {FETCH_HINT}")
    (train_x, train_y), (test_x, test_y) = (load_split(root, split) for split in SPLIT_FILES)
    return DataSet("mnist", (28, 28), train_x, train_y, test_x, test_y)


def load_mnist(root: Path | str | None = None, train_subset: int | None = None, test_subset: int | None = None,
               device: torch.device | str = "cpu") -> Images:
    """Load and verify MNIST from ``root`` (default: the cache), optionally the first N images, as tensors."""
    return images_of(mnist_set(root), train_subset, test_subset, device)
