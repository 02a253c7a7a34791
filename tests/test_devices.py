"""The device line every run starts with: what torch can use here and what the sweep does with it.
The "CUDA unusable" wording is reached by giving ``device_summary`` a probe as an old driver leaves it."""

from __future__ import annotations

import torch

from sweep_helpers import vaesweep
from vae.devices import DeviceProbe, device_summary, probe_devices

OLD_DRIVER = "CUDA initialization: The NVIDIA driver on your system is too old (found version 12040)."


def test_an_old_driver_under_a_cuda_build_is_named_with_its_fix():
    line = device_summary(DeviceProbe("2.14.1+cu130", "13.0", (), True, OLD_DRIVER))
    assert line.startswith("torch 2.14.1+cu130 (CUDA 13.0 build): this machine has an NVIDIA driver but torch cannot "
                           f"use its GPU ({OLD_DRIVER}): update the NVIDIA driver, or install the torch build")
    assert "download.pytorch.org/whl/" in line and "\n" not in line


def test_the_other_cases_each_read_as_what_they_are():
    assert device_summary(DeviceProbe("2.14.1+cpu", None, (), True, None)) == "torch 2.14.1+cpu (CPU-only build): no GPU"
    assert device_summary(DeviceProbe("2.14.1+cu130", "13.0", (), False, None)) == \
        "torch 2.14.1+cu130 (CUDA 13.0 build): no GPU", "no NVIDIA driver: a plain CPU machine"
    assert device_summary(DeviceProbe("2.14.1+cu130", "13.0", (("NVIDIA H200", 139.8),), True, None)) == \
        "torch 2.14.1+cu130 (CUDA 13.0 build): GPU 0 NVIDIA H200 (140 GiB)"


def test_this_machine_is_probed_as_it_is():
    probe = probe_devices()
    assert probe.torch_version == torch.__version__ and probe.cuda_build == torch.version.cuda
    assert bool(probe.gpus) == torch.cuda.is_available()


def test_a_dry_run_and_a_run_start_with_the_device_line():
    done = vaesweep("run", "smoke", "--dry-run")
    first = done.stdout.splitlines()[0]
    assert done.returncode == 0 and first.startswith(f"vaesweep: device: {device_summary(probe_devices())}; sweep: ")
    if not torch.cuda.is_available():
        assert first.endswith("sweep: 6 trials: a trial per grid point on CPU, 1 CPU each")
        auto = vaesweep("run", "smoke", "--dry-run", "--set", "resources.gpu=auto").stdout.splitlines()[0]
        assert auto.endswith("on CPU, 1 CPU each (resources.gpu auto: no GPU here)")
    packed = vaesweep("run", "smoke", "--dry-run", "--set", "resources.pack=3")
    assert "sweep: 2 trials: packs of up to 3 grid points on CPU, 1 CPU each" in packed.stdout


def test_the_device_line_says_what_a_sweep_does_with_gpus():
    """On a GPU: packs per trial and how their steps run (the config as resources auto resolves it there)."""
    from sweeps.config import load_sweep
    from sweeps.driver.preflight import device_line

    config = load_sweep("smoke", ["resources.gpu=1", "train.cuda_graphs=off"])
    line = device_line(config, config.resolved(gpus=1), None)
    assert line.endswith("sweep: 2 trials of up to 3 grid points, 1 GPU each, steps eager (train.cuda_graphs: off)")
    graphed = load_sweep("paper")
    assert device_line(graphed, graphed.resolved(gpus=1), "auto").endswith(
        "sweep: 3 trials of up to 80 grid points, 1 GPU each, steps as CUDA graphs (resources.gpu auto: a GPU in the "
        "cluster)")
