"""`vaesweep train` and `vaesweep data` through the real console script (bad input: test_bad_input.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VAESWEEP = Path(sys.executable).with_name("vaesweep")
TINY = ["--epochs", "1", "--train-subset", "300", "--test-subset", "50", "--is-samples", "20", "--k", "5"]


def run(*args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(VAESWEEP), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_train_writes_metrics_and_checkpoint_then_resumes(mnist_dir, tmp_path):
    out = tmp_path / "run"
    done = run("train", "--alpha", "0.5", *TINY, "--out", str(out), env_extra={"VAESWEEP_DATA_DIR": str(mnist_dir)})
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (IS, 20 samples)" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_vr_bound_alpha", "test_vr_bound_0", "test_log_likelihood"):
        assert -1000 < metrics[key] < 0, key
    assert metrics["epochs_completed"] == 1 and (out / "checkpoint.pt").is_file()

    again = run("train", "--alpha", "0.5", *TINY[2:], "--epochs", "2", "--out", str(out), "--data-dir", str(mnist_dir))
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_fetch_from_directory(mnist_dir, tmp_path):
    done = run("data", "fetch", "--from", str(mnist_dir), env_extra={"VAESWEEP_DATA_DIR": str(tmp_path / "c")})
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "c" / "MNIST" / "raw").iterdir())) == 4


def test_missing_dataset_is_a_clean_error(tmp_path):
    done = run("train", *TINY, "--out", str(tmp_path / "o"), env_extra={"VAESWEEP_DATA_DIR": str(tmp_path / "none")})
    assert done.returncode == 2 and "vaesweep data fetch" in done.stderr and "Traceback" not in done.stderr


def test_existing_run_with_another_config_is_not_overwritten(mnist_dir, tmp_path):
    out = tmp_path / "run"
    env = {"VAESWEEP_DATA_DIR": str(mnist_dir)}
    assert run("train", *TINY, "--out", str(out), env_extra=env).returncode == 0
    before = (out / "checkpoint.pt").read_bytes(), (out / "metrics.json").read_bytes()
    done = run("train", *TINY, "--alpha", "0", "--out", str(out), env_extra=env)
    assert done.returncode == 2 and "holds another run" in done.stderr
    assert before == ((out / "checkpoint.pt").read_bytes(), (out / "metrics.json").read_bytes())


def test_unwritable_out_dir(tmp_path, mnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = run("train", *TINY, "--out", str(blocker / "sub"), env_extra={"VAESWEEP_DATA_DIR": str(mnist_dir)})
    assert done.returncode == 2 and "--out" in done.stderr and "Traceback" not in done.stderr
    assert blocker.read_text() == "not a directory"


def test_core_packages_do_not_import_ray_or_mlflow():
    code = "import sys, vae.train, vae.fetch, analysis; print(any(m in sys.modules for m in ('ray', 'mlflow')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_dry_run_shows_how_the_paper_preset_packs_here_and_on_a_gpu(tmp_path):
    import torch

    here = run("run", "paper", "--dry-run", "--storage", str(tmp_path))
    gpus = torch.cuda.device_count()
    assert here.returncode == 0, here.stderr
    expected = "240 grid points in 3 packs on MNIST (resources per trial: gpu 1, cpus 1, pack 80)" if gpus else \
        "240 grid points on MNIST (resources per trial: gpu 0, cpus 1, pack 1)"
    assert expected in here.stdout
    column = run("run", "paper", "--dry-run", "--storage", str(tmp_path), "--set", "grid.k=[30]",
                 "--set", "grid.seed=[0,1,2]", "--set", "resources.gpu=1")
    if gpus:
        assert "24 grid points in 1 pack on MNIST (resources per trial: gpu 1, cpus 1, pack 24)" in column.stdout
        assert column.stdout.count("  pack 0") == 24
    else:  # the dry run checks the resources as a run does
        assert column.returncode == 2 and "a trial asks for 1 CPUs and 1 GPUs, but no node can give that" in column.stderr
    assert not (tmp_path / "paper").exists(), "a dry run writes nothing"
