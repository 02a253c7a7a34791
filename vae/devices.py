"""What torch can train on here, said in one line before any training starts.

A CUDA build of torch under an NVIDIA driver older than that build needs reports
``torch.cuda.is_available()`` False with no more than a warning, and ``device: auto`` then trains on
CPU without a word. The probe keeps torch's own reason, and ``device_summary`` turns the case
(a CUDA build, an NVIDIA device node, no usable GPU) into the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

NVIDIA_DEVICE_NODE = Path("/dev/nvidiactl")  # present wherever an NVIDIA kernel driver is loaded
# The torch builds for older drivers are on pytorch.org's wheel indexes (the README's install section).
OLDER_DRIVER_FIX = ("update the NVIDIA driver, or install the torch build of your driver's CUDA version from the index "
                    "https://pytorch.org/get-started/locally/ names (e.g. `pip install torch torchvision --index-url "
                    "https://download.pytorch.org/whl/cu128` for a CUDA 12.8 driver)")


@dataclass(frozen=True)
class DeviceProbe:
    """What torch and the machine say about GPUs."""

    torch_version: str
    cuda_build: str | None  # torch.version.cuda: None for a CPU-only build
    gpus: tuple[tuple[str, float], ...]  # (name, GiB) of each GPU torch can use
    nvidia_device_node: bool
    cuda_warning: str | None  # torch's warning when CUDA did not initialise

    @property
    def cuda_unusable(self) -> bool:
        """A CUDA build on a machine with an NVIDIA driver, yet no GPU torch can use (a driver too old)."""
        return bool(self.cuda_build) and self.nvidia_device_node and not self.gpus


def probe_devices() -> DeviceProbe:
    """Ask torch (catching the warning it gives when CUDA does not initialise) and the device nodes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    gpus = tuple((torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / 2**30)
                 for i in range(torch.cuda.device_count())) if usable else ()
    reason = next((str(w.message).strip().splitlines()[0] for w in caught if "CUDA" in str(w.message)), None)
    return DeviceProbe(torch.__version__, torch.version.cuda, gpus, NVIDIA_DEVICE_NODE.exists(), reason)


def device_summary(probe: DeviceProbe) -> str:
    """'torch 2.14.1+cu130 (CUDA 13.0 build): GPU 0 NVIDIA H200 (139 GiB)', 'no GPU', or why the GPU is unusable
    and the fix."""
    build = f"CUDA {probe.cuda_build} build" if probe.cuda_build else "CPU-only build"
    head = f"torch {probe.torch_version} ({build})"
    if probe.gpus:
        return f"{head}: " + ", ".join(f"GPU {i} {name} ({gib:.0f} GiB)" for i, (name, gib) in enumerate(probe.gpus))
    if probe.cuda_unusable:
        why = f" ({probe.cuda_warning})" if probe.cuda_warning else " (the NVIDIA driver is probably older than the build)"
        return f"{head}: this machine has an NVIDIA driver but torch cannot use its GPU{why}: {OLDER_DRIVER_FIX}"
    return f"{head}: no GPU"
