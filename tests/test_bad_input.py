"""Bad input, one corpus: every malformed config, flag or file gives one line, exit 2, no traceback.

The table runs the real console script in a scratch folder that already holds a sweep, a training
run and a few files, and checks that the whole tree is byte-for-byte and mtime-for-mtime the same
afterwards: a refused command writes nothing and overwrites nothing. ``VAESWEEP_DATA_DIR`` points at
an empty cache, so even a command that wrongly passed validation could not train.

The hypothesis tests fuzz config parsing in process: whatever the data, ``validate_sweep``,
``apply_override`` and ``load_sweep`` return a SweepConfig or raise a one-line ConfigError.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from sklearn.datasets import load_digits

from sweeps.cli import main
from sweeps.config import PRESETS_DIR, ConfigError, SweepConfig, apply_override, load_sweep, validate_sweep

VAESWEEP = Path(sys.executable).with_name("vaesweep")
SMOKE = yaml.safe_load((PRESETS_DIR / "smoke.yaml").read_text())


def smoke_with(patch: str) -> str:
    """The smoke preset as YAML, with the sections of ``patch`` (YAML) merged in (one level deep)."""
    data = copy.deepcopy(SMOKE)
    for key, value in yaml.safe_load(patch).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


# Unreadable data files: a header of the right shape is enough, since a file is refused before its
# checksum is computed when its header or length is wrong (train-images is the file read first).
IMAGES = "train-images-idx3-ubyte"
IMAGES_HEADER = bytes([0, 0, 8, 3]) + struct.pack(">III", 60000, 28, 28)
SMALL_GZ = gzip.compress(IMAGES_HEADER + bytes(100))
BAD_DEFLATE = SMALL_GZ[:10] + bytes(b ^ 0xFF for b in SMALL_GZ[10:-8]) + SMALL_GZ[-8:]  # gzip header intact
WRONG_CONTENT_GZ = gzip.compress(IMAGES_HEADER + bytes(60000 * 28 * 28), compresslevel=1)  # right length, all black


def checkpoint_bytes(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def flip_a_weight(checkpoint: bytes) -> bytes:
    """``checkpoint`` with one byte of its tensor flipped: the zip is intact, only the record's CRC-32 tells."""
    with zipfile.ZipFile(io.BytesIO(checkpoint)) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    name_length, extra_length = struct.unpack("<HH", checkpoint[record.header_offset + 26:record.header_offset + 30])
    data = bytearray(checkpoint)
    data[record.header_offset + 30 + name_length + extra_length] ^= 0xFF
    return bytes(data)


CHECKPOINT = checkpoint_bytes({"model": {"w": torch.ones(64)}, "epoch": 1, "config": {}})

# A user's own data set, from real data: the UCI digits (scikit-learn's copy), as one .npz, then spoilt.
DIGITS = load_digits()
GOOD_ARRAYS = {"train_images": DIGITS.images[:1000] / 16, "test_images": DIGITS.images[1000:] / 16,
               "train_labels": DIGITS.target[:1000], "test_labels": DIGITS.target[1000:]}


def npz_bytes(**changes: np.ndarray | None) -> bytes:
    """The digits as one .npz archive, with ``changes`` (None: leave the array out)."""
    arrays = {key: value for key, value in {**GOOD_ARRAYS, **changes}.items() if value is not None}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


GOOD_NPZ = npz_bytes()
IDX_IMAGES = idx_bytes((DIGITS.images[:1000] * 255 / 16).round())

# What every case's scratch folder holds before the command runs (and must still hold, unchanged).
EXISTING_SWEEP = load_sweep("smoke", ["train.lr=0.01"], name="existing").resolved(gpus=0).to_dict()
WORKSPACE: dict[str, str | bytes] = {
    "runs/existing/sweep.yaml": yaml.safe_dump(EXISTING_SWEEP, sort_keys=False),
    "runs/existing/tracking.json": '{"tracking_uri": "sqlite:///x/mlflow.db", "experiment": "vaesweep", '
                                   '"experiment_id": "1", "parent_run_id": "abc"}\n',
    "runs/existing/tune/marker": "ray experiment state would be here\n",
    "train-out/metrics.json": '{"epochs_completed": 3, "history": []}\n',
    "existing-file": "a regular file, not a directory\n",
    "corrupt/checkpoint.pt": bytes(range(256)) * 8,
}
# A sweep of one grid point on the UCI digits (bundled with scikit-learn: no download): seconds to estimate.
TINY_DIGITS = ("name: tiny\ndata: digits\ngrid: {alpha: [1.0], k: [5], seed: [0]}\ntrain: {epochs: 2}\n"
               "eval: {probe_epochs: [1], is_samples: 10, probe_train_size: 500}\nresources: {cpus: 1, gpu: 0}\n")
EMPTY_DIRS = ("cache",)  # VAESWEEP_DATA_DIR: an empty MNIST cache

BAD_INPUT = [
    # --- run: config files with bad content -------------------------------------------------------
    ("run-unknown-top-level-key", ["run", "c.yaml"], {"c.yaml": smoke_with("colour: red")},
     "colour: unknown key; valid keys of the top level: checkpoint_every, data, eval, grid, max_failures, name,"),
    ("run-unknown-nested-key", ["run", "c.yaml"], {"c.yaml": smoke_with("train: {epochz: 3}")}, "train.epochz"),
    ("run-grid-k-not-int", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {k: [thirty]}")}, "grid.k.0"),
    ("run-epochs-a-string", ["run", "c.yaml"], {"c.yaml": smoke_with("train: {epochs: many}")}, "train.epochs"),
    ("run-empty-grid-alpha", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {alpha: []}")}, "grid.alpha"),
    ("run-empty-grid-seed", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {seed: []}")}, "grid.seed"),
    ("run-negative-k", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {k: [-5]}")}, "grid.k"),
    ("run-zero-k", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {k: [0, 10]}")}, "grid.k"),
    ("run-zero-epochs", ["run", "c.yaml"], {"c.yaml": smoke_with("train: {epochs: 0}")}, "train.epochs"),
    ("run-negative-epochs", ["run", "c.yaml"], {"c.yaml": smoke_with("train: {epochs: -3}")}, "train.epochs"),
    ("run-nan-alpha", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {alpha: [0.0, .nan]}")}, "grid.alpha"),
    ("run-duplicate-seeds", ["run", "c.yaml"], {"c.yaml": smoke_with("grid: {seed: [0, 0]}")}, "duplicate seed"),
    ("run-probe-epochs-past-end", ["run", "c.yaml"], {"c.yaml": smoke_with("eval: {probe_epochs: [1, 50]}")},
     "eval.probe_epochs"),
    ("run-gpu-fraction-above-1", ["run", "c.yaml"], {"c.yaml": smoke_with("resources: {gpu: 1.5}")}, "resources.gpu"),
    ("run-gpu-infinite", ["run", "c.yaml"], {"c.yaml": smoke_with("resources: {gpu: .inf}")}, "resources.gpu"),
    ("run-train-alpha-is-grid-owned", ["run", "c.yaml"], {"c.yaml": smoke_with("train: {alpha: 0.5}")},
     "set grid.alpha instead"),
    ("run-optuna-range-reversed", ["run", "c.yaml"], {"c.yaml": smoke_with("optuna: {alpha_range: [1, 0]}")},
     "optuna.alpha_range"),
    ("run-search-random", ["run", "c.yaml"], {"c.yaml": smoke_with("search: random")}, "search"),
    ("run-max-failures-below-minus-1", ["run", "c.yaml"], {"c.yaml": smoke_with("max_failures: -2")}, "max_failures"),
    ("run-non-string-top-level-key", ["run", "c.yaml"], {"c.yaml": smoke_with("{1: 2}")}, "1"),
    ("run-top-level-list", ["run", "c.yaml"], {"c.yaml": "- a\n- b\n"}, "expected a mapping"),
    ("run-yaml-syntax-error", ["run", "c.yaml"], {"c.yaml": "grid: [unclosed\n"}, "c.yaml:2:1: not valid YAML"),
    ("run-binary-file", ["run", "c.yaml"], {"c.yaml": b"\xff\xfe\x00\x81 binary \x00\xc3"}, "not readable YAML"),
    ("run-missing-config-file", ["run", "missing.yaml"], {}, "config file missing.yaml does not exist"),
    ("run-unknown-preset", ["run", "nope"], {}, "unknown preset 'nope'"),
    ("run-bad-name-flag", ["run", "smoke", "--name", "a/b"], {}, "name"),
    ("run-bad-storage-home", ["run", "smoke", "--storage", "~no-such-user-xyz/runs"], {}, "storage"),
    # --- run: --set overrides ------------------------------------------------------------------------
    ("set-without-equals", ["run", "smoke", "--set", "train.epochs"], {}, "expected key=value"),
    ("set-bad-yaml-value", ["run", "smoke", "--set", "grid.alpha=[0, 1"], {}, "not valid YAML"),
    ("set-into-non-section", ["run", "smoke", "--set", "train.epochs.x=3"], {}, "train.epochs.x: epochs is not a section"),
    ("set-negative-k", ["run", "smoke", "--set", "grid.k=[-1]"], {}, "grid.k"),
    ("set-epochs-below-probe-epochs", ["run", "smoke", "--set", "train.epochs=3"], {},
     "eval.probe_epochs [5] are outside 1..train.epochs=3; change eval.probe_epochs too "
     "(e.g. --set eval.probe_epochs=[1,2]) or raise train.epochs"),
    ("set-unknown-train-key", ["run", "smoke", "--set", "train.epoch=3"], {},
     "train.epoch: unknown key (did you mean epochs?); valid keys of train: activation, batch_size, bf16_output_layer, binarization,"),
    ("set-unknown-eval-key", ["run", "smoke", "--set", "eval.samples=3"], {}, "valid keys of eval: bound_samples,"),
    # --- run: --address, --storage, an existing sweep ------------------------------------------------
    ("address-words", ["run", "smoke", "--address", "not an address"], {}, "--address"),
    ("address-no-port", ["run", "smoke", "--address", "localhost"], {}, "--address"),
    ("address-http-url", ["run", "smoke", "--address", "http://x:1"], {}, "--address"),
    ("address-ray-no-port", ["run", "smoke", "--address", "ray://host"], {}, "--address"),
    ("storage-under-a-file", ["run", "smoke", "--storage", "existing-file/sub"], {}, "--storage existing-file/sub"),
    ("run-over-max-hours", ["run", "tiny.yaml", "--max-hours", "1e-6"], {"tiny.yaml": TINY_DIGITS},
     "--max-hours 1e-06: the sweep would run about"),
    ("run-max-hours-without-estimate", ["run", "smoke", "--max-hours", "1", "--no-estimate"], {},
     "--max-hours judges the estimate that --no-estimate skips"),
    ("run-existing-sweep-other-config", ["run", "smoke", "--name", "existing"], {}, "with train.lr=0.01, not 0.001"),
    ("run-existing-sweep-without-a-grid-point", ["run", "smoke", "--name", "existing", "--set", "train.lr=0.01",
                                                 "--set", "grid.alpha=[0.0, 0.5]"], {},
     "the grid leaves out 2 of its grid points (e.g. alpha=1, k=10, seed=0); a sweep only grows"),
    ("run-existing-sweep-fewer-epochs", ["run", "smoke", "--name", "existing", "--set", "train.lr=0.01",
                                         "--set", "train.epochs=4", "--set", "eval.probe_epochs=[1]"], {},
     "trains 5 epochs, not 4: a sweep does not shorten"),
    ("run-existing-sweep-other-batch-size", ["run", "smoke", "--name", "existing", "--set", "train.lr=0.01",
                                             "--set", "train.batch_size=50", "--set", "grid.seed=[0, 1]"], {},
     "with train.batch_size=100, not 50: it defines what a finished grid point is"),
    # --- run: what a trial would refuse at its start, refused before launch (no Ray, no server, nothing written)
    ("run-optuna-subset-below-held-out", ["run", "optuna", "--set", "train.train_subset=5000"], {},
     "train: validation_images=10000 leaves no training images of 5000 (train_subset=5000): hold out fewer"),
    ("run-train-subset-above-mnist", ["run", "smoke", "--set", "train.train_subset=70000"], {},
     "train: train_subset=70000 is more than MNIST's 60000 images"),
    ("run-test-subset-above-mnist", ["run", "smoke", "--set", "train.test_subset=20000"], {},
     "train: test_subset=20000 is more than MNIST's 10000 images"),
    ("run-pair-beyond-test-subset", ["run", "smoke", "--set", "train.test_subset=100", "--set", "eval.pair=[0,100]"],
     {}, "eval.pair [0, 100]: the trials score 100 test images (train.test_subset or the data set's), so both indices "
     "must be in 0..99"),
    ("run-pair-negative", ["run", "smoke", "--set", "eval.pair=[-1,3]"], {}, "eval.pair [-1, 3]"),
    ("run-cuda-without-a-gpu-share", ["run", "smoke", "--set", "train.device=cuda"], {},
     "train.device=cuda needs a GPU, but resources.gpu=0 gives trials none"),
    ("run-gpus-no-node-has", ["run", "smoke", "--set", "resources.gpu=64"], {},
     "resources: a trial asks for 1 CPUs and 64 GPUs, but no node can give that (this machine has"),
    ("run-cpus-no-node-has", ["run", "smoke", "--set", "resources.cpus=4096"], {},
     "resources: a trial asks for 4096 CPUs and 0 GPUs, but no node can give that"),
    ("run-pack-not-a-number", ["run", "smoke", "--set", "resources.pack=many"], {}, "resources.pack"),
    ("run-matmul-precision-unknown", ["run", "smoke", "--set", "train.matmul_precision=medium"], {},
     "train.matmul_precision"),
    ("run-data-dir-without-files", ["run", "smoke", "--data-dir", "cache"], {}, "not found in cache"),
    ("train-validation-leaves-nothing", ["train", "--train-subset", "500", "--validation-images", "600"], {},
     "validation_images=600 leaves no training images of 500"),
    ("train-matmul-precision-unknown", ["train", "--matmul-precision", "medium"], {}, "--matmul-precision"),
    # --- train flags ---------------------------------------------------------------------------------
    ("train-k-not-int", ["train", "--k", "abc"], {}, "--k: invalid int value"),
    ("train-k-negative", ["train", "--k", "-3"], {}, "--k: Input should be greater than 0"),
    ("train-alpha-nan", ["train", "--alpha", "nan"], {}, "--alpha"),
    ("train-epochs-not-int", ["train", "--epochs", "abc"], {}, "--epochs: invalid int value"),
    ("train-lr-negative", ["train", "--lr", "-1"], {}, "--lr"),
    ("train-hidden-not-ints", ["train", "--hidden", "200,x"], {}, "--hidden"),
    ("train-binarization-unknown", ["train", "--binarization", "half"], {}, "--binarization"),
    ("train-is-samples-zero", ["train", "--is-samples", "0"], {}, "--is-samples"),
    ("train-unknown-flag", ["train", "--nope"], {}, "unrecognized arguments: --nope"),
    ("train-out-under-a-file", ["train", "--out", "existing-file/sub"], {}, "--out existing-file/sub"),
    # --- analyze, data, sweep lookups, the command itself ---------------------------------------------
    ("analyze-missing-file", ["analyze", "nothing/checkpoint.pt"], {}, "does not exist"),
    ("analyze-corrupt-checkpoint", ["analyze", "corrupt/checkpoint.pt"], {}, "corrupt or partial"),
    ("analyze-truncated-checkpoint", ["analyze", "ck"], {"ck/checkpoint.pt": CHECKPOINT[: len(CHECKPOINT) // 2]},
     "checkpoint ck/checkpoint.pt is corrupt or partial (BadZipFile); delete it"),
    ("analyze-gzipped-checkpoint", ["analyze", "ck.pt.gz"], {"ck.pt.gz": gzip.compress(CHECKPOINT)},
     "checkpoint ck.pt.gz is corrupt or partial"),
    ("analyze-empty-checkpoint", ["analyze", "ck.pt"], {"ck.pt": b""}, "checkpoint ck.pt is corrupt or partial"),
    ("analyze-checkpoint-bad-crc", ["analyze", "ck.pt"], {"ck.pt": flip_a_weight(CHECKPOINT)},
     "checkpoint ck.pt fails the CRC-32 check of its record"),
    ("analyze-not-a-vaesweep-checkpoint", ["analyze", "ck.pt"], {"ck.pt": checkpoint_bytes([1, 2])},
     "ck.pt is not a vaesweep checkpoint; give a checkpoint.pt written by"),
    ("analyze-a-pack-of-two", ["analyze", "ck.pt"], {"ck.pt": checkpoint_bytes({"model": {}, "configs": [{}, {}], "epoch": 1})},
     "ck.pt is not the checkpoint of one model (a pack's holds several"),
    ("analyze-an-earlier-trainer-checkpoint", ["analyze", "ck"], {"ck/checkpoint.pt": CHECKPOINT},
     "ck/checkpoint.pt is not the checkpoint of one model"),
    # --- data files that cannot be read: compression, header, length, checksum ---------------------------
    ("data-gz-bad-deflate", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}.gz": BAD_DEFLATE},
     f"bad/{IMAGES}.gz is not a readable gzip file (Error -3 while decompressing data"),
    ("data-gz-truncated", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}.gz": SMALL_GZ[:-10]},
     f"bad/{IMAGES}.gz is not a readable gzip file (Compressed file ended"),
    ("data-gz-not-gzip", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}.gz": b"plain text"},
     f"bad/{IMAGES}.gz is not a readable gzip file (Not a gzipped file"),
    ("data-raw-name-gzip-content", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}": SMALL_GZ},
     f"bad/{IMAGES} is gzip-compressed but not named .gz; rename it to {IMAGES}.gz"),
    ("data-wrong-magic-number", ["data", "fetch", "--from", "bad"],
     {f"bad/{IMAGES}": bytes([0, 0, 8, 1]) + struct.pack(">I", 60000) + bytes(60000)},
     f"bad/{IMAGES} is not the idx file {IMAGES} (magic number 0x00000801, expected magic number 0x00000803)"),
    ("data-wrong-length", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}": IMAGES_HEADER + bytes(100)},
     f"bad/{IMAGES} has 116 bytes, expected 47040016 (truncated or padded)"),
    ("data-empty-file", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}": b""}, "(0 bytes in all, expected"),
    ("data-wrong-checksum", ["data", "fetch", "--from", "bad"], {f"bad/{IMAGES}.gz": WRONG_CONTENT_GZ},
     f"bad/{IMAGES}.gz fails its SHA-256 check"),
    ("fetch-from-missing-dir", ["data", "fetch", "--from", "/nonexistent/mnist"], {},
     "--from /nonexistent/mnist: not a directory"),
    # --- a user's own data set (data: npz:FILE | idx:DIR): refused before anything starts ---------------
    ("data-unknown-name", ["run", "smoke", "--set", "data=cifar"], {}, "data: unknown data set 'cifar': use one of mnist, "
     "digits, fashion-mnist, kmnist, idx:DIR"),
    ("data-set-in-train", ["run", "smoke", "--set", "train.data=digits"], {}, "train.data is set for every trial by the "
     "top-level data; set data instead"),
    ("train-data-unknown", ["train", "--data", "npz"], {}, "--data: unknown data set 'npz'"),
    ("data-npz-missing", ["run", "smoke", "--set", "data=npz:none.npz"], {}, "none.npz does not exist; give a .npz file"),
    ("data-npz-not-an-archive", ["data", "check", "npz:d.npz"], {"d.npz": b"plain text"},
     "d.npz is not a readable .npz archive"),
    ("data-npz-truncated", ["run", "smoke", "--set", "data=npz:d.npz"], {"d.npz": GOOD_NPZ[: len(GOOD_NPZ) // 2]},
     "d.npz is not a readable .npz archive"),
    ("data-npz-one-dimensional-images", ["data", "check", "npz:d.npz"],
     {"d.npz": npz_bytes(train_images=np.zeros(64))}, "train_images has shape (64,); expected images [N, height, width]"),
    ("data-npz-pixels-not-square", ["data", "check", "npz:d.npz"], {"d.npz": npz_bytes(train_images=np.zeros((5, 63)))},
     "train_images has shape (5, 63)"),
    ("data-npz-splits-of-two-sizes", ["data", "check", "npz:d.npz"],
     {"d.npz": npz_bytes(test_images=np.zeros((5, 7, 7)))}, "both splits need images of one size"),
    ("data-npz-grey-levels-not-scaled", ["run", "smoke", "--set", "data=npz:d.npz"],
     {"d.npz": npz_bytes(train_images=DIGITS.images[:1000])}, "train_images has values in [0, 16]; every value must "
     "be in [0, 1] (grey levels? divide them by their maximum)"),
    ("data-npz-negative-values", ["data", "check", "npz:d.npz"],
     {"d.npz": npz_bytes(test_images=DIGITS.images[1000:] / 16 - 0.5)}, "test_images has values in [-0.5, 0.5]"),
    ("data-npz-nan", ["data", "check", "npz:d.npz"], {"d.npz": npz_bytes(test_images=np.full((3, 8, 8), np.nan))},
     "every value must be in [0, 1]"),
    ("data-npz-labels-of-one-split", ["data", "check", "npz:d.npz"], {"d.npz": npz_bytes(test_labels=None)},
     "d.npz has train_labels but no test_labels; give both"),
    ("data-npz-labels-wrong-length", ["run", "smoke", "--set", "data=npz:d.npz"],
     {"d.npz": npz_bytes(train_labels=DIGITS.target[:999])}, "train_labels has shape (999,); expected one label per "
     "image, shape (1000,)"),
    ("data-npz-labels-fractional", ["data", "check", "npz:d.npz"],
     {"d.npz": npz_bytes(test_labels=DIGITS.target[1000:] + 0.5)}, "test_labels must hold whole-number class labels"),
    ("data-npz-unknown-array", ["data", "check", "npz:d.npz"], {"d.npz": npz_bytes(images=np.zeros(3))},
     "d.npz holds 'images', which is not one of train_images, train_labels, test_images, test_labels"),
    ("data-npz-no-test-images", ["data", "check", "npz:d.npz"], {"d.npz": npz_bytes(test_images=None)},
     "d.npz has no 'test_images' array"),
    ("data-npz-more-than-it-holds", ["run", "smoke", "--set", "data=npz:d.npz"], {"d.npz": GOOD_NPZ},
     "train: train_subset=10000 is more than d.npz's 1000 images of that split"),
    ("data-idx-folder-missing", ["run", "smoke", "--set", "data=idx:nothere"], {}, "nothere does not exist"),
    ("data-idx-no-test-images", ["data", "check", "idx:own"], {f"own/{IMAGES}": IDX_IMAGES},
     "own has no t10k-images-idx3-ubyte (nor t10k-images-idx3-ubyte.gz)"),
    ("data-idx-truncated", ["run", "smoke", "--set", "data=idx:own"],
     {f"own/{IMAGES}": IDX_IMAGES[:-100], "own/t10k-images-idx3-ubyte": IDX_IMAGES}, "(truncated or padded)"),
    ("data-idx-labels-as-images", ["data", "check", "idx:own"],
     {f"own/{IMAGES}": idx_bytes(DIGITS.target[:1000]), "own/t10k-images-idx3-ubyte": IDX_IMAGES},
     "is not an idx file of images (3-dimensional, unsigned bytes) (magic number 0x00000801"),
    ("data-idx-labels-wrong-length", ["data", "check", "idx:own"],
     {f"own/{IMAGES}": IDX_IMAGES, "own/t10k-images-idx3-ubyte": IDX_IMAGES,
      "own/train-labels-idx1-ubyte": idx_bytes(DIGITS.target[:10]), "own/t10k-labels-idx1-ubyte": idx_bytes(DIGITS.target[:1000])},
     "own: train_labels has shape (10,); expected one label per image, shape (1000,)"),
    ("status-unknown-sweep", ["status", "nosuchsweep"], {}, "no sweep named 'nosuchsweep'"),
    ("report-unknown-sweep", ["report", "nosuchsweep"], {}, "no sweep named 'nosuchsweep'"),
    ("sync-unknown-sweep", ["sync", "nosuchsweep"], {}, "no sweep named 'nosuchsweep'"),
    ("ui-unknown-sweep", ["ui", "nosuchsweep"], {}, "no sweep named 'nosuchsweep'"),
    ("ui-port-zero", ["ui", "existing", "--port", "0"], {}, "--port: must be a port number from 1 to 65535, got 0"),
    ("ui-port-too-high", ["ui", "existing", "--port", "70000"], {}, "--port: must be a port number"),
    ("ui-corrupt-tracking-json", ["ui", "broken"], {"runs/broken/tracking.json": "{truncated"}, "tracking.json is corrupt"),
    ("status-storage-unknown-user", ["status", "existing", "--storage", "~no-such-user-xyz"], {}, "--storage"),
    ("report-out-under-a-file", ["report", "existing", "--out", "existing-file/sub"], {}, "--out existing-file/sub"),
    ("report-no-name-nor-trials", ["report"], {}, "give a sweep name, or --trials FILE"),
    ("report-trials-missing", ["report", "--trials", "nosuch.csv"], {}, "--trials nosuch.csv: no such file"),
    ("report-trials-no-seed-column", ["report", "--trials", "t.csv"], {"t.csv": "status,alpha,k\nFINISHED,1,30\n"},
     "--trials t.csv: no column seed"),
    ("report-trials-not-a-number", ["report", "--trials", "t.csv"],
     {"t.csv": "status,alpha,k,seed,active_components\nFINISHED,1,30,0,many\n"}, "--trials t.csv: a value is not a number"),
    ("report-trials-with-a-name", ["report", "existing", "--trials", "t.csv"], {"t.csv": "status,alpha,k,seed\n"},
     "drop the sweep name"),
    ("report-margin-zero", ["report", "existing", "--margin", "0"], {}, "--margin: must be a positive number, got 0"),
    ("sync-saved-config-not-a-mapping", ["sync", "broken"], {"runs/broken/sweep.yaml": "- a\n",
                                                            "runs/broken/tune/marker": ""}, "sweep.yaml"),
    ("unknown-subcommand", ["frobnicate"], {}, "invalid choice"),
    ("run-saved-config-not-a-mapping", ["run", "smoke", "--name", "broken"], {"runs/broken/sweep.yaml": "- a\n"},
     "sweep.yaml is corrupt"),
    ("run-seed-past-64-bits", ["run", "smoke", "--set", "grid.seed=[18446744073709551617]"], {}, "grid.seed"),
    ("status-tune-folder-without-state", ["status", "existing"], {}, "has no Ray experiment state"),
    ("report-corrupt-tracking-json", ["report", "broken"], {"runs/broken/tracking.json": "{truncated",
                                                             "runs/broken/sweep.yaml": WORKSPACE["runs/existing/sweep.yaml"]},
     "tracking.json is corrupt"),
]


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: (size, mtime_ns, sha256) of files, mtime_ns of folders."""
    tree: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        relative = str(path.relative_to(root))
        if path.is_dir():
            tree[relative] = ("dir", stat.st_mtime_ns)
        else:
            tree[relative] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return tree


def workspace(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    work = tmp_path / "work"
    write_files(work, {**WORKSPACE, **files})
    for name in EMPTY_DIRS:
        (work / name).mkdir()
    return work


def assert_refused(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaesweep: error: "), stderr
    assert expected in lines[0], lines[0]


CASES = [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT]


@pytest.mark.parametrize("args, files, expected", CASES)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(args, files, expected, tmp_path, monkeypatch, capsys):
    """In process (``sweeps.cli.main``, what the console script calls): an escaping exception fails the test."""
    work = workspace(tmp_path, files)
    before = snapshot(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("VAESWEEP_DATA_DIR", str(work / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(args)
    assert_refused(code, capsys.readouterr().err, expected)
    assert snapshot(work) == before, "the refused command changed the folder"


# The console script itself (exit status, stderr as a user sees it) on a sample of the table.
SCRIPT_SAMPLE = {"run-unknown-top-level-key", "storage-under-a-file", "train-k-negative", "analyze-corrupt-checkpoint",
                 "run-existing-sweep-other-config", "unknown-subcommand", "data-gz-bad-deflate",
                 "analyze-checkpoint-bad-crc", "set-unknown-train-key", "run-optuna-subset-below-held-out",
                 "run-gpus-no-node-has", "data-npz-truncated", "data-idx-truncated", "data-npz-more-than-it-holds"}


@pytest.mark.parametrize("args, files, expected", [c for c in CASES if c.id in SCRIPT_SAMPLE])
def test_the_console_script_refuses_with_exit_2(args, files, expected, tmp_path):
    work = workspace(tmp_path, files)
    before = snapshot(work)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["VAESWEEP_DATA_DIR"] = str(work / "cache")
    done = subprocess.run([str(VAESWEEP), *args], capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert_refused(done.returncode, done.stderr, expected)
    assert snapshot(work) == before


def test_the_table_is_big_and_ids_are_unique():
    assert len(BAD_INPUT) >= 30 and len({case[0] for case in BAD_INPUT}) == len(BAD_INPUT)
    assert SCRIPT_SAMPLE <= {case[0] for case in BAD_INPUT}


# --- fuzzing config parsing in process -----------------------------------------------------------------

FIELD_NAMES = sorted({"name", "grid", "train", "eval", "resources", "storage", "tracking", "search", "optuna",
                      "checkpoint_every", "max_failures", "alpha", "k", "seed", "epochs", "hidden", "lr", "gpu", "cpus",
                      "probe_epochs", "alpha_range", "uri", "experiment", "activation", "binarization", "device"})
ODD_TEXT = st.sampled_from(["", " ", "\n", "\x00", "~nobody-xyz/x", "a/b", "..", "ü", "1e400", ".nan", "-.inf",
                            "grid", "0x10", "None", "true", "[1, 2]", "{a: 1}", "\u202e", "a" * 300])
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**2000), max_value=2**2000)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | ODD_TEXT)
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=10) | st.integers(-3, 3) | st.none() | st.booleans()


def containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4))


VALUES = st.recursive(SCALARS, containers, max_leaves=12)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_or_one_line_error(call) -> SweepConfig | None:
    """Run ``call``; a ConfigError must be one line, any other exception fails the test."""
    try:
        return call()
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None


def smoke_dict() -> dict[str, Any]:
    return copy.deepcopy(SMOKE)


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_fuzz_validate_arbitrary_data(data):
    config = valid_or_one_line_error(lambda: validate_sweep(data))
    assert config is None or isinstance(config, SweepConfig)


@FUZZ
@given(st.text(max_size=60) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
    ["train.epochs", "grid.alpha", "grid", "name", "eval.probe_epochs", "resources.gpu", "a.b.c", "train.hidden"]),
    st.text(max_size=30)))
def test_fuzz_apply_override_text(assignment):
    data = smoke_dict()

    def apply_and_validate() -> SweepConfig:
        apply_override(data, assignment)
        return validate_sweep(data)

    valid_or_one_line_error(apply_and_validate)


def leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys and list indices) of every leaf and every container of ``node``."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            paths += leaf_paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            paths += leaf_paths(child, (*prefix, index))
    return paths


def mutate(data: dict[str, Any], choice: int, value: Any, new_key: Any, add: bool) -> None:
    """Replace the ``choice``-th node of ``data`` by ``value``, or add ``new_key`` next to it."""
    paths = leaf_paths(data)
    path = paths[choice % len(paths)]
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if add and isinstance(parent, dict):
        parent[new_key] = value
    else:
        parent[path[-1]] = value


# Values of the right shape for many fields, so that a good share of mutants validate and round-trip.
PLAUSIBLE = (st.integers(-1, 60) | st.floats(-3, 3) | st.sampled_from([float("inf"), float("-inf"), 0.5, "x1"])
             | st.lists(st.integers(0, 12), min_size=1, max_size=3, unique=True)
             | st.lists(st.floats(-2, 2) | st.just(float("-inf")), min_size=1, max_size=3)
             | st.sampled_from(["grid", "optuna", "relu", "tanh", "static", "cpu", "runs2", "http://h:5000"]))


@FUZZ
@given(st.sampled_from(["smoke", "mini", "paper", "optuna"]), st.integers(0, 10_000), PLAUSIBLE | VALUES, KEYS,
       st.sampled_from([False, False, True]))  # mostly replace: an added key only tests the extra-key error
def test_fuzz_mutated_presets_round_trip(preset, choice, value, new_key, add):
    data = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())
    mutate(data, choice, value, new_key, add)
    config = valid_or_one_line_error(lambda: validate_sweep(data))
    if config is not None:
        assert validate_sweep(config.to_dict()) == config


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
       | st.builds(lambda text: (PRESETS_DIR / "smoke.yaml").read_bytes() + text, st.binary(max_size=40)))
def test_fuzz_load_sweep_arbitrary_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("yaml") / "sweep.yaml"
    path.write_bytes(content)
    config = valid_or_one_line_error(lambda: load_sweep(str(path)))
    assert config is None or isinstance(config, SweepConfig)
