"""The idx format (MNIST's: magic 0x0000 08 NDIM, big-endian dimensions, unsigned bytes), read and checked.

Shared by MNIST (whose files are also checked against their published checksums, ``vae/mnist.py``) and a
user's own idx folder (``data: idx:DIR``): a wrong, truncated or still-compressed file is named as such.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from vae.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def read_raw(path: Path, hint: str) -> bytes:
    """The bytes of an idx file, gunzipped if it is named .gz; DataError ending in ``hint`` if unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); {hint}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{path} is not a readable gzip file ({err}); {hint}") from None
    return raw


def header_shape(raw: bytes) -> tuple[int, ...]:
    """The dimensions an idx header declares (as many as its magic number says there are)."""
    ndim = raw[3]
    return tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))


def check_idx(raw: bytes, path: Path, hint: str, what: str, shape: tuple[int, ...] | None = None,
              ndim: int | None = None) -> tuple[int, ...]:
    """The array shape of ``raw``, an idx file of unsigned bytes; DataError naming ``path`` when it is not
    one, when ``shape`` (or, without it, its ``ndim``) differs, or when its length disagrees."""
    ndim = len(shape) if shape is not None else ndim
    magic = bytes([0, 0, 8, ndim]) if ndim is not None else None
    if raw[:2] == GZIP_MAGIC:
        raise DataError(f"{path} is gzip-compressed but not named .gz; rename it to {path.name}.gz, or {hint}")
    if len(raw) < 4 or raw[:3] != b"\0\0\x08" or (magic is not None and raw[:4] != magic):
        found = f"magic number 0x{raw[:4].hex()}" if len(raw) >= 4 else f"{len(raw)} bytes in all"
        expected = f"0x{magic.hex()}" if magic is not None else "0x000008NN (unsigned bytes)"
        raise DataError(f"{path} is not {what} ({found}, expected magic number {expected}); {hint}")
    declared = header_shape(raw) if len(raw) >= 4 + 4 * raw[3] else None
    shape = shape if shape is not None else declared
    size = 4 + 4 * raw[3] + math.prod(shape) if shape is not None else None
    if size is None or len(raw) != size:
        expected = f", expected {size}" if size is not None else ""
        raise DataError(f"{path} has {len(raw)} bytes{expected} (truncated or padded); {hint}")
    return shape


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an unsigned-byte idx array (its header checked by ``check_idx``)."""
    dims = header_shape(raw)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)
