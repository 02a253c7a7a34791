"""Which data set a model trains on, as one string: the name of a built-in set or a path to the user's own.

``mnist`` (the default), ``digits`` (scikit-learn's copy of the UCI handwritten digits, offline),
``fashion-mnist`` and ``kmnist`` (torchvision downloads, where the network allows), ``idx:DIR`` (a
folder of idx files in MNIST's layout) or ``npz:FILE`` (one NumPy archive). Light on purpose (no
NumPy): the configs validate a spec, and check their subsets against a built-in set's sizes, with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OWN_KINDS = ("idx", "npz")


@dataclass(frozen=True)
class BuiltinSet:
    """A data set the product knows by name: its title in reports, split sizes and image side."""

    title: str
    train_images: int
    test_images: int
    side: tuple[int, int]


BUILTIN_SETS: dict[str, BuiltinSet] = {
    "mnist": BuiltinSet("MNIST", 60_000, 10_000, (28, 28)),
    # sklearn.datasets.load_digits: 1,797 images; the first 1,497 train, the last 300 test (vae/data_sets.py)
    "digits": BuiltinSet("UCI digits", 1_497, 300, (8, 8)),
    "fashion-mnist": BuiltinSet("Fashion-MNIST", 60_000, 10_000, (28, 28)),
    "kmnist": BuiltinSet("KMNIST", 60_000, 10_000, (28, 28)),
}
SPEC_HELP = f"one of {', '.join(BUILTIN_SETS)}, idx:DIR (idx files in MNIST's layout) or npz:FILE"


def normalized_spec(spec: str) -> str:
    """``spec`` checked, an own file's path made absolute (a sweep resumed from another folder finds it);
    ValueError saying what is accepted."""
    if spec in BUILTIN_SETS:
        return spec
    kind, sep, path = spec.partition(":")
    if not sep or kind not in OWN_KINDS or not path.strip():
        if (bare := Path(spec).expanduser()).is_dir() or (bare.is_file() and bare.suffix == ".npz"):
            form = "idx" if bare.is_dir() else "npz"  # the user's own files, named without their form
            raise ValueError(f"data {spec!r} is a {'folder' if form == 'idx' else '.npz file'}: write "
                             f"{form}:{bare.absolute()} (data: {form}:PATH)")
        raise ValueError(f"unknown data set {spec!r}: use {SPEC_HELP}")
    if "\0" in path:
        raise ValueError("a data path must not contain a NUL character")
    try:
        return f"{kind}:{Path(path).expanduser().absolute()}"
    except RuntimeError:
        raise ValueError(f"cannot expand {path.split('/')[0]!r}: no such user; give a plain path") from None


def builtin_set(spec: str) -> BuiltinSet | None:
    """The built-in set ``spec`` names, None for a user's own files."""
    return BUILTIN_SETS.get(spec)


def builtin_sizes(spec: str) -> tuple[int | None, int | None]:
    """(training, test) images of the built-in set ``spec`` names; (None, None), unknown before reading,
    for a user's own files."""
    builtin = builtin_set(spec)
    return (builtin.train_images, builtin.test_images) if builtin else (None, None)


def spec_title(spec: str) -> str:
    """How reports and logs name the data set: a built-in set's title, else the own file's name."""
    builtin = builtin_set(spec)
    return builtin.title if builtin else Path(spec.partition(":")[2]).name
