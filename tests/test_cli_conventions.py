"""The CLI's conventions, each case with its exact line: the version, one error prefix, every config
problem at once (unknown keys first, with the key meant), YAML errors with line and column, a rule
broken with its fix, a bare data path with the spelling to use, the dry run refusing what a run
refuses, the exit codes in --help; and the generated configuration reference kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sweeps.config_reference import SECTIONS, reference

VAESWEEP = Path(sys.executable).with_name("vaesweep")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(VAESWEEP), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture
def own_npz(tmp_path: Path) -> Path:
    path = tmp_path / "own.npz"
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.random((20, 4, 4), dtype=np.float32), test_images=rng.random((5, 4, 4), dtype=np.float32))
    return path


def test_version_and_the_exit_codes_in_help():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == "vaesweep 0.1.0"
    helped = cli("--help").stdout
    assert "exit codes:" in helped and "75   the disk is full" in helped and "2    bad input" in helped


def refused(*args: str, cwd: Path | None = None) -> str:
    done = cli(*args, cwd=cwd)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("yaml_text, expected", [
    ("name: x\ngrid: {alpha: [0], k: [5], seeds: [0]}\n",
     "vaesweep: error: 2 problems: grid.seeds: unknown key (did you mean seed?); valid keys of grid: alpha, k, seed; "
     "grid.seed: is required (add seed: to grid)"),
    ("name: x\ngrid: {alpha: [0], k: [5], seed: [0]}\ntrain: {epochs: 0, lr: -1}\n",
     "vaesweep: error: 2 problems: train.epochs: must be greater than 0, not 0 (e.g. --set train.epochs=1); "
     "train.lr: must be greater than 0.0, not -1 (e.g. --set train.lr=1.0)"),
    ("name: x\ngrid: [\n  alpha: 1\n", "vaesweep: error: c.yaml:4:1: not valid YAML (expected ',' or ']', but got "
                                        "'<stream end>')"),
])
def test_config_problems_each_in_one_line(tmp_path, yaml_text, expected):
    (tmp_path / "c.yaml").write_text(yaml_text)
    assert refused("run", "c.yaml", "--dry-run", cwd=tmp_path) == expected


def test_a_rule_broken_on_the_command_line_names_its_fix_and_an_unknown_flag_has_one_prefix():
    assert refused("run", "smoke", "--dry-run", "--set", "train.epochs=0") == (
        "vaesweep: error: train.epochs: must be greater than 0, not 0 (e.g. --set train.epochs=1)")
    assert refused("run", "smoke", "--bogus") == "vaesweep: error: unrecognized arguments: --bogus (see `vaesweep --help`)"
    assert refused("train", "--activation", "gelu").startswith(
        "vaesweep: error: train: argument --activation: invalid choice: 'gelu' (choose from 'relu', 'tanh', 'softplus')")


def test_a_bare_data_path_gets_the_spelling_to_use(own_npz):
    assert refused("run", "smoke", "--dry-run", "--set", f"data={own_npz}") == (
        f"vaesweep: error: data: data '{own_npz}' is a .npz file: write npz:{own_npz} (data: npz:PATH)")
    assert refused("run", "smoke", "--dry-run", "--set", f"data={own_npz.parent}") == (
        f"vaesweep: error: data: data '{own_npz.parent}' is a folder: write idx:{own_npz.parent} (data: idx:PATH)")


@pytest.mark.parametrize("override", ["data=npz:/no/such/file.npz", "data=idx:{npz}", "resources.gpu=1"])
def test_the_dry_run_refuses_what_a_run_refuses_with_the_same_line(tmp_path, own_npz, override):
    import torch

    if override == "resources.gpu=1" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = ["run", "smoke", "--storage", str(tmp_path / "runs"), "--set", override.format(npz=own_npz)]
    assert refused(*args, "--dry-run") == refused(*args)
    assert not (tmp_path / "runs").exists(), "neither wrote anything"


def test_config_show_prints_yaml_that_a_run_takes_unchanged(tmp_path):
    shown = cli("config", "show", "smoke")
    assert shown.returncode == 0
    (tmp_path / "smoke.yaml").write_text(shown.stdout)
    dry = cli("run", str(tmp_path / "smoke.yaml"), "--dry-run", "--storage", str(tmp_path / "runs"))
    assert dry.returncode == 0 and "6 grid points on MNIST" in dry.stdout, dry.stderr
    assert yaml.safe_load(shown.stdout)["train"]["epochs"] == 5


def test_the_configuration_reference_is_current_and_lists_every_field():
    text = reference()
    assert (DOCS / "config.md").read_text() == text, "regenerate: vaesweep config reference > docs/config.md"
    for section, (model, left_out) in SECTIONS.items():
        assert f"## {section}\n" in text
        for name in set(model.model_fields) - left_out:
            assert f"| `{name}` |" in text, f"{section}.{name}"
    assert cli("config", "schema").stdout.startswith("{")


def test_the_command_line_reference_is_current_and_names_every_flag():
    from sweeps.cli import build_parser
    from sweeps.cli_reference import reference, subcommands

    text = reference()
    assert (DOCS / "cli.md").read_text() == text, "regenerate: python -m sweeps.cli_reference > docs/cli.md"

    def flags(parser) -> set[str]:
        own = {flag for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")}
        return own.union(*(flags(child) for child in subcommands(parser).values()))

    assert {"--retry-failed", "--max-hours", "--trials", "--epsilon", "--from"} <= flags(build_parser())
    assert all(f"`{flag}`" in text for flag in flags(build_parser()))


def test_the_metrics_reference_is_current_and_describes_every_metric_once():
    from analysis.metrics import SCHEMA
    from sweeps.metrics_reference import reference

    text = reference()
    assert (DOCS / "metrics.md").read_text() == text, "regenerate: python -m sweeps.metrics_reference > docs/metrics.md"
    assert all(text.count(f"| `{name}` |") == 1 for name in SCHEMA)


def test_the_sweep_folder_reference_is_current_and_names_every_file_of_the_layout():
    """Every file or folder name sweeps/layout.py defines has its row, so a new file cannot go unsaid."""
    import ast

    import sweeps.layout as layout
    from sweeps.folder_reference import reference

    text = reference()
    assert (DOCS / "sweep-folder.md").read_text() == text, "regenerate: python -m sweeps.folder_reference > docs/sweep-folder.md"
    own = {target.id for node in ast.parse(Path(layout.__file__).read_text()).body if isinstance(node, ast.Assign)
           for target in node.targets if isinstance(target, ast.Name)}
    names = {getattr(layout, key) for key in own if isinstance(getattr(layout, key), str)
             and key.endswith(("_FILE", "_DIR", "_STATE", "_PREFIX", "_LOG", "CHECKPOINTS"))}
    listed = {entry.name for entry in layout.FOLDER}
    missing = {name for name in names if not any(entry.startswith(name) for entry in listed)}
    assert not missing, f"add to sweeps/layout.py's FOLDER: {sorted(missing)}"
