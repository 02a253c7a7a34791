"""Training throughput and IS log-likelihood cost, each as a ratio against a baseline of the same run.

    .venv/bin/python bench/train_throughput.py --data-dir ../shared/data/mnist   (about 5 minutes)

Per epoch of the full training set at K=5, batch 100, k=30 (alpha=0.5, dynamic binarisation):
(a) a naive loop in the style of pytorch/examples' VAE: torchvision's MNIST dataset, ToTensor,
    DataLoader(shuffle=True), the same model, bound, binarisation and default (foreach) Adam;
(b) our trainer (``vae.train.Trainer``: in-memory tensor, index-gather batches, fused Adam);
(c) the fp32 GEMM roofline: the epoch's matmul FLOPs divided by the best torch.mm rate measured
    now on this machine. FLOPs count forward MACs x 2 x 3 (backward is twice the forward).
Targets: (a)/(b) >= 2 and (c)/(b) >= 0.4. Then the IS log-likelihood of the test set with 2000
samples against its own GEMM roofline (target: within 2x, i.e. roofline/measured >= 0.5), and the
peak memory it adds (resident set size, peak reset just before through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST as TorchvisionMNIST

from vae.bounds import log_likelihood, log_weights, vr_bound
from vae.config import TrainConfig
from vae.data import binarize, default_data_dir, fixed_binarization, load_mnist
from vae.fetch import fetch_mnist
from vae.model import VAE
from vae.train import Trainer

ALPHA, K, BATCH, LATENT = 0.5, 5, 100, 30


def gemm_flops_per_second(size: int = 1024, repeats: int = 30) -> float:
    """Best fp32 matmul rate over a few timed repeats (after warm-up)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mlp_macs(sizes: list[int]) -> int:
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def epoch_matmul_flops(n_images: int, hidden=(200, 200), x_dim: int = 784) -> float:
    encoder = mlp_macs([x_dim, *hidden, 2 * LATENT])
    decoder = mlp_macs([LATENT, *hidden[::-1], x_dim])
    return 3 * 2 * n_images * (encoder + K * decoder)


def naive_epoch(root: Path) -> float:
    """pytorch/examples-style epoch: Dataset + DataLoader, per-item ToTensor."""
    dataset = TorchvisionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
    model = VAE(LATENT)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for x, _ in loader:
        x = binarize(x.view(-1, 784), generator)
        loss = -vr_bound(log_weights(model, x, K), ALPHA).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def trainer_epochs(root: Path, epochs: int) -> list[float]:
    config = TrainConfig(alpha=ALPHA, k=LATENT, epochs=epochs, train_samples=K, batch_size=BATCH, device="cpu")
    trainer = Trainer(config, load_mnist(root))
    return [m["epoch_seconds"] for m in trainer.fit()]


def rss_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS now, VmHWM peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_is(root: Path, samples: int, n_images: int) -> tuple[float, float, float]:
    """Seconds of the IS estimate, and the peak RSS it reached over the RSS before it (MB)."""
    x = fixed_binarization(load_mnist(root, train_subset=1, test_subset=n_images).test_x, 0)
    model = VAE(LATENT).eval()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
    before = rss_mb("VmRSS")
    seconds = timed(lambda: log_likelihood(model, x, samples, generator=torch.Generator().manual_seed(0)))
    return seconds, rss_mb("VmHWM") - before, before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    parser.add_argument("--epochs", type=int, default=2, help="trainer epochs timed (median reported)")
    parser.add_argument("--is-samples", type=int, default=2000)
    parser.add_argument("--is-images", type=int, default=10000)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        root = fetch_mnist(Path(tmp), args.data_dir, log=lambda _: None) if args.data_dir else default_data_dir()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {args.data_dir or root}")
        peak = gemm_flops_per_second()
        print(f"fp32 GEMM peak (1024^3 torch.mm, best of 30): {peak / 1e9:.1f} GFLOP/s")
        naive = naive_epoch(root)
        ours = statistics.median(trainer_epochs(root, args.epochs))
        roofline = epoch_matmul_flops(60000) / peak
        print(f"(a) naive DataLoader epoch: {naive:.2f} s")
        print(f"(b) vaesweep trainer epoch: {ours:.2f} s (median of {args.epochs})")
        print(f"(c) GEMM roofline epoch:    {roofline:.2f} s ({epoch_matmul_flops(60000) / 1e9:.0f} GFLOP)")
        print(f"speed-up (a)/(b) = {naive / ours:.2f}   [target >= 2]")
        print(f"roofline (c)/(b) = {roofline / ours:.2f}   [target >= 0.4]")

        seconds, added_mb, base_mb = measure_is(root, args.is_samples, args.is_images)
    decoder = mlp_macs([LATENT, 200, 200, 784])
    is_roofline = 2 * args.is_images * args.is_samples * decoder / peak
    naive_mb = args.is_images * args.is_samples * 784 * 4 / 2**20
    print(f"IS log-likelihood, {args.is_images} images x {args.is_samples} samples: {seconds:.1f} s; "
          f"GEMM roofline {is_roofline:.1f} s; roofline/measured = {is_roofline / seconds:.2f}   [target >= 0.5]")
    print(f"IS peak memory: +{added_mb:.0f} MB over the process before it ({base_mb:.0f} MB RSS); "
          f"the unchunked logits alone would take {naive_mb:.0f} MB")


if __name__ == "__main__":
    main()
