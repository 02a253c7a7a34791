"""Every data set a model can train on, loaded and checked into one ``DataSet`` (``vae/data_spec.py`` names them).

- ``mnist``: the verified idx files of the cache (``vae/mnist.py``).
- ``digits``: scikit-learn's bundled copy of the UCI handwritten digits (1,797 images of 8x8, 17 grey
  levels 0..16 scaled to [0, 1], labels), no network needed: the first 1,497 images train, the last 300
  test (sklearn keeps the UCI file's order, so the split is the same everywhere).
- ``fashion-mnist``, ``kmnist``: downloaded by torchvision into the cache and checked against its
  published MD5s at every load; offline, the error points at ``idx:DIR``.
- ``idx:DIR``: a folder holding ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (raw or .gz),
  and optionally the two label files, as MNIST names them.
- ``npz:FILE``: one NumPy archive with ``train_images`` and ``test_images`` ([N, H, W], or [N, pixels] of a
  square side; grey levels in [0, 1] or binary) and optionally ``train_labels`` and ``test_labels``.
A user's files are checked before anything starts (shapes, value range, labels); each problem is one
DataError naming the file and the fix.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from vae.data import DataSet, Images, cache_root, images_of
from vae.data_spec import BUILTIN_SETS, OWN_KINDS, normalized_spec
from vae.errors import DataError
from vae.idx import check_idx, parse_idx, read_raw
from vae.mnist import SPLIT_FILES, mnist_set

DIGITS_TRAIN = BUILTIN_SETS["digits"].train_images
TORCHVISION_SETS = {"fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def load_data(spec: str, data_dir: Path | str | None = None) -> DataSet:
    """The data set ``spec`` names, verified; ``data_dir`` overrides MNIST's cache folder."""
    try:
        spec = normalized_spec(spec)
    except ValueError as err:
        raise DataError(str(err)) from None
    if spec == "mnist":
        return mnist_set(data_dir)
    if spec == "digits":
        return digits_set()
    if spec in TORCHVISION_SETS:
        return torchvision_set(spec)
    kind, _, path = spec.partition(":")
    assert kind in OWN_KINDS
    return idx_folder_set(spec, Path(path)) if kind == "idx" else npz_set(spec, Path(path))


def digits_set() -> DataSet:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    return DataSet("digits", (8, 8), images[:DIGITS_TRAIN], labels[:DIGITS_TRAIN], images[DIGITS_TRAIN:],
                   labels[DIGITS_TRAIN:])


def torchvision_set(spec: str) -> DataSet:
    """A torchvision MNIST-like set, downloaded once into the cache, its files checked against torchvision's MD5s."""
    import torchvision.datasets
    from torchvision.datasets.utils import check_integrity

    dataset = getattr(torchvision.datasets, TORCHVISION_SETS[spec])
    root = cache_root() / spec
    raw = root / dataset.__name__ / "raw"
    offline = "offline, put its four idx files in a folder and use data: idx:DIR (or --data idx:DIR)"
    if not all(check_integrity(str(raw / name), md5) for name, md5 in dataset.resources):
        try:
            for train in (True, False):
                dataset(str(root), train=train, download=True)
        except Exception as err:  # noqa: BLE001 - any download failure: one line with the way out
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise DataError(f"{spec} is not in {root} and could not be downloaded ({reason}); {offline}") from None
        bad = [name for name, md5 in dataset.resources if not check_integrity(str(raw / name), md5)]
        if bad:
            raise DataError(f"{raw / bad[0]} fails its published MD5 check; delete {root} and retry, or {offline}")
    return idx_folder_set(spec, raw, labels_required=True)


def idx_folder_set(spec: str, folder: Path, labels_required: bool = False) -> DataSet:
    """A folder of idx files named as MNIST's; labels optional unless ``labels_required``."""
    if folder.is_file():
        hint = f"; for an .npz archive write npz:{folder}" if folder.suffix == ".npz" else ""
        raise DataError(f"data idx:{folder} is a file, not a folder of idx files{hint} (data: idx:DIR)")
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; give a folder of idx files (data: idx:DIR)")
    arrays: dict[str, np.ndarray | None] = {}
    for split, names in SPLIT_FILES.items():
        for name, kind, ndim in zip(names, ("images", "labels"), (3, 1)):
            # .gz first: torchvision's folders hold both, and the .gz is what its MD5s check
            path = next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)
            if path is None:
                if kind == "labels" and not labels_required:
                    arrays[f"{split}_{kind}"] = None
                    continue
                raise DataError(f"{folder} has no {name} (nor {name}.gz); an idx folder holds train-images-idx3-ubyte "
                                "and t10k-images-idx3-ubyte, and optionally the two *-labels-idx1-ubyte files")
            hint = f"replace it with a complete idx file of {kind}"
            raw = read_raw(path, hint)
            check_idx(raw, path, hint, f"an idx file of {kind} ({ndim}-dimensional, unsigned bytes)", ndim=ndim)
            arrays[f"{split}_{kind}"] = parse_idx(raw)
    return checked_set(spec, str(folder), **arrays, byte_levels=True)


def npz_set(spec: str, path: Path) -> DataSet:
    """One ``.npz`` archive (no pickled objects) with the arrays ``NPZ_KEYS`` names."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; give a .npz file (data: npz:FILE)")
    fix = "save it again with numpy.savez(FILE, train_images=..., test_images=..., [train_labels=..., test_labels=...])"
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.files
            arrays = {key: archive[key] if key in names else None for key in NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable .npz archive ({str(err).splitlines()[0][:120]}); {fix}") from None
    unknown = sorted(set(names) - set(NPZ_KEYS))
    if unknown:
        raise DataError(f"{path} holds {unknown[0]!r}, which is not one of {', '.join(NPZ_KEYS)}; {fix}")
    for key in ("train_images", "test_images"):
        if arrays[key] is None:
            raise DataError(f"{path} has no {key!r} array; {fix}")
    return checked_set(spec, str(path), **arrays)


def checked_set(spec: str, source: str, train_images: np.ndarray, train_labels: np.ndarray | None,
                test_images: np.ndarray, test_labels: np.ndarray | None, byte_levels: bool = False) -> DataSet:
    """The arrays as a DataSet, or one DataError naming ``source``, the array and the fix; ``byte_levels``:
    uint8 images are grey levels 0..255 (idx files), else every image value must lie in [0, 1]."""
    side = image_side(source, "train_images", train_images)
    if image_side(source, "test_images", test_images) != side:
        raise DataError(f"{source}: test_images are {test_images.shape[1:]} but train_images {train_images.shape[1:]}; "
                        "both splits need images of one size")
    images = [grey_levels_checked(source, key, array, byte_levels) for key, array in
              (("train_images", train_images), ("test_images", test_images))]
    if (train_labels is None) != (test_labels is None):
        given, missing = ("train_labels", "test_labels") if test_labels is None else ("test_labels", "train_labels")
        raise DataError(f"{source} has {given} but no {missing}; give both (one class per image) or neither "
                        "(the probes are then skipped)")
    labels = [None if labels is None else checked_labels(source, key, labels, len(split)) for key, labels, split in
              (("train_labels", train_labels, images[0]), ("test_labels", test_labels, images[1]))]
    return DataSet(spec, side, images[0], labels[0], images[1], labels[1])


def image_side(source: str, key: str, images: np.ndarray) -> tuple[int, int]:
    """(height, width) of [N, H, W] images, or of [N, pixels] ones with a square number of pixels."""
    shape = images.shape
    if len(shape) == 3 and shape[0] > 0 and shape[1] > 0 and shape[2] > 0:
        return shape[1], shape[2]
    if len(shape) == 2 and shape[0] > 0 and shape[1] > 0 and math.isqrt(shape[1]) ** 2 == shape[1]:
        return math.isqrt(shape[1]), math.isqrt(shape[1])
    raise DataError(f"{source}: {key} has shape {shape}; expected images [N, height, width] (or [N, pixels] with a "
                    "square number of pixels), N >= 1")


def grey_levels_checked(source: str, key: str, images: np.ndarray, byte_levels: bool) -> np.ndarray:
    """Flattened [N, pixels]: uint8 idx grey levels as they are (0..255, divided when used), any other
    numbers as float32 that must lie in [0, 1]."""
    flat = images.reshape(len(images), -1)
    if not (byte_levels and flat.dtype == np.uint8):
        if flat.dtype.kind not in "biuf":
            raise DataError(f"{source}: {key} holds {flat.dtype} values; expected numbers in [0, 1]")
        flat = flat.astype(np.float32)
        low, high = float(flat.min()), float(flat.max())
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low and high <= 1.0):
            hint = " (grey levels? divide them by their maximum)" if high > 1.0 and np.isfinite(high) else ""
            raise DataError(f"{source}: {key} has values in [{low:g}, {high:g}]; every value must be in [0, 1]{hint}")
    return flat


def checked_labels(source: str, key: str, labels: np.ndarray, images: int) -> np.ndarray:
    """int64 class labels, one per image."""
    if labels.ndim != 1 or len(labels) != images:
        raise DataError(f"{source}: {key} has shape {labels.shape}; expected one label per image, shape ({images},)")
    if labels.dtype.kind not in "biuf" or (labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0)):
        raise DataError(f"{source}: {key} must hold whole-number class labels, not {labels.dtype} values")
    return labels.astype(np.int64)


def load_images(spec: str, data_dir: Path | str | None = None, train_subset: int | None = None,
                test_subset: int | None = None, device: torch.device | str = "cpu") -> Images:
    """``load_data`` as tensors, optionally the first N images of each split."""
    return images_of(load_data(spec, data_dir), train_subset, test_subset, device)
