"""Training throughput and IS log-likelihood cost, each as a ratio against a baseline of the same run.

    .venv/bin/python bench/train_throughput.py --data-dir ../shared/data/mnist   (about 3 minutes, 4-5 the first time)

Everything is measured twice: at initialisation and on trained weights, because a trained decoder's
logits (many far below zero) cost more per pixel than an untrained one's. The trained weights are
the benchmark's own model trained for 20 epochs by the one-model reference trainer (``tests/reference_trainer.py``) (alpha=0.5, seed 0),
cached at ``--cache-dir`` (trained here, about a minute, when absent or made by other settings).

Per epoch of the full training set at K=5, batch 100, k=30 (alpha=0.5, dynamic binarisation):
(a) a naive loop in the style of pytorch/examples' VAE: torchvision's MNIST dataset, ToTensor,
    DataLoader(shuffle=True), the same model, bound, binarisation and default (foreach) Adam, in a
    fresh process of its own, so with torch's defaults (denormals not flushed);
(b) our trainer (the one-model reference trainer (``tests/reference_trainer.py``): in-memory tensor, index-gather batches, fused Adam,
    denormals flushed on every thread); on trained weights it continues from the cached checkpoint
    (epochs 21, 22, ...);
(c) the fp32 GEMM roofline: the epoch's matmul FLOPs divided by the best torch.mm rate measured
    now on this machine. FLOPs count forward MACs x 2 x 3 (backward is twice the forward).
Targets on trained weights: (a)/(b) >= 2.5 and (c)/(b) >= 0.5. Then the optional
``bf16_output_layer`` (the output layer's products with bf16 inputs, float32 accumulation) on
trained weights, against the same roofline, and where the trained step's time goes:
(d) the step's 17 matrix products alone (its shapes, back to back, nothing between them) and its
    fused Adam step alone: the ceiling of any eager step built on torch's float32 products and Adam;
(e) the trainer's step time at batch 50, 100 and 200 (epochs of 12,000 images, trained weights),
    fitted as fixed + per-image cost: the fixed part (per-op dispatch, Adam, small ops) does not
    shrink with the batch, the per-image part is the products and the per-pixel passes.
(f) the pack of one (``vae.packed_train.PackedTrainer`` with this one configuration) against (b), both
    continuing from the trained state, epoch by epoch interleaved (trainer, pack, trainer, pack, ...):
    median pack/trainer ratio [target <= 1.05: the pack may replace the trainer]. ``--only-pack-of-one``
    runs this part alone (about 2 minutes with the trained weights cached).
Last, the IS log-likelihood of the test set with 2000 samples against its own GEMM roofline (target:
roofline/measured >= 0.6), with its decoder products alone for the same ceiling, and the peak
memory it adds (resident set size, peak reset just before through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import inspect
import math
import multiprocessing
import statistics
import tempfile
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST as TorchvisionMNIST

from analysis.metrics import MetricName
from vae.bounds import log_likelihood, log_weights, vr_bound
from vae.checkpoint import load_checkpoint, save_checkpoint
from vae.config import TrainConfig
from vae.data import Images, binarize, fixed_binarization
from vae.mnist import default_data_dir, load_mnist
from vae.fetch import fetch_mnist
from vae.model import VAE
from vae.denormals import flushing_denormals, start_threads_flushing_denormals
from vae.packed import PackedVAE
from vae.packed_train import PackedTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_trainer import Trainer  # noqa: E402  (the one-model loop: the unpacked baseline)

ALPHA, K, BATCH, LATENT = 0.5, 5, 100, 30
TRAINED_EPOCHS = 20
CONFIG = TrainConfig(alpha=ALPHA, k=LATENT, epochs=TRAINED_EPOCHS, train_samples=K, batch_size=BATCH, device="cpu")


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


def naive_epoch(root: Path, weights: dict[str, torch.Tensor] | None) -> float:
    """pytorch/examples-style epoch: Dataset + DataLoader, per-item ToTensor."""
    dataset = TorchvisionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
    model = VAE(LATENT)
    if weights is not None:
        model.load_state_dict(weights)
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


def trained_state(root: Path, cache_dir: Path) -> tuple[dict, str]:
    """The trainer's state after ``TRAINED_EPOCHS`` epochs of ``CONFIG``: cached, else trained now."""
    path = cache_dir / f"trained-a{ALPHA}-k{LATENT}-K{K}-e{TRAINED_EPOCHS}-s{CONFIG.seed}.pt"
    if path.is_file():
        state = load_checkpoint(path)
        if state["config"] == CONFIG.model_dump():
            return state, f"cached {path}"
    start = time.perf_counter()
    trainer = Trainer(CONFIG, load_mnist(root))
    for _ in range(TRAINED_EPOCHS):
        trainer.train_epoch()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(trainer.state_dict(), path)
    return trainer.state_dict(), f"trained now in {time.perf_counter() - start:.0f} s, cached at {path}"


def fresh_process_naive_epoch(root: Path, weights: dict[str, torch.Tensor] | None) -> float:
    """``naive_epoch`` in a new process: torch's defaults, whatever this process has set."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(naive_epoch, (root, weights))


def trainer_epochs(root: Path, epochs: int, state: dict | None, bf16: bool = False) -> list[float]:
    """Epoch times of the trainer from initialisation, or continuing from a trained ``state``."""
    trainer = Trainer(CONFIG.model_copy(update={"bf16_output_layer": bf16}), load_mnist(root))
    if state is not None:
        trainer.load_state_dict(state)
    return [trainer.train_epoch()[MetricName.epoch_seconds] for _ in range(epochs)]


def pack_of_one(trainer: Trainer, data: Images) -> PackedTrainer:
    """A pack of ``trainer``'s one configuration in the trainer's state: weights, Adam moments (by the
    plain model's parameter names), generator and epoch."""
    packed = PackedTrainer([trainer.config], data)
    packed.model.load_state_dict(PackedVAE([trainer.model]).state_dict())
    plain = dict(trainer.model.named_parameters())
    for name, stacked in packed.model.stacked_parameters().items():
        moments = trainer.optimizer.state[plain[name]]
        packed.optimizer.state[stacked] = {key: value if value.dim() == 0 else value.unsqueeze(0).clone()
                                           for key, value in moments.items()}
    packed.generators[0].set_state(trainer.generator.get_state())
    packed.epoch = trainer.epoch
    return packed


def pack_vs_trainer_epochs(root: Path, state: dict, rounds: int) -> tuple[list[float], list[float]]:
    """Epoch seconds of the trainer and of its pack of one, both from the trained ``state``, interleaved
    (after one warm-up epoch each), so the machine's load changes both alike."""
    data = load_mnist(root)
    trainer = Trainer(CONFIG, data)
    trainer.load_state_dict(state)
    packed = pack_of_one(trainer, data)
    plain, pack = [], []
    for round_ in range(rounds + 1):
        trainer_seconds = trainer.train_epoch()[MetricName.epoch_seconds]
        pack_seconds = packed.train_epoch()[0][MetricName.epoch_seconds]
        if round_:
            plain.append(trainer_seconds)
            pack.append(pack_seconds)
    return plain, pack


def product_and_adam_seconds(batch: int = BATCH, repeats: int = 200) -> tuple[float, float]:
    """Seconds of one training step's matrix products alone, and of its fused Adam step alone.

    The products are the model's 17: per linear layer the forward addmm, the weight gradient and
    (all but the encoder's first layer, whose input is data) the input gradient, with the encoder's
    layers on ``batch`` rows and the decoder's on ``K * batch``, run back to back on random operands
    under flushed denormals."""
    model = VAE(LATENT)
    products = []
    for layers, rows in ((model.encoder, batch), (model.decoder, K * batch)):
        for layer in (m for m in layers if isinstance(m, torch.nn.Linear)):
            x, grad = torch.randn(rows, layer.in_features), torch.randn(rows, layer.out_features)
            weight, bias = layer.weight.detach(), layer.bias.detach()
            products += [lambda x=x, w=weight, b=bias: torch.addmm(b, x, w.t()),
                         lambda x=x, g=grad: g.t() @ x]
            if layers is model.decoder or layer is not layers[0]:
                products.append(lambda w=weight, g=grad: g @ w)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    with flushing_denormals():
        for _ in range(10):
            optimizer.step()
            for product in products:
                product()
        adam = min(timed(lambda: [optimizer.step() for _ in range(repeats)]) for _ in range(3)) / repeats
        matmuls = min(timed(lambda: [p() for _ in range(repeats) for p in products]) for _ in range(3)) / repeats
    return matmuls, adam


def is_product_seconds(rows: int, chunks: int, repeats: int = 100) -> float:
    """Seconds of the IS estimate's decoder products alone: ``chunks`` chunks of ``rows`` latent
    samples each (as ``vae.bounds.log_likelihood`` decodes them), back to back."""
    layers = [m for m in VAE(LATENT).decoder if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, layer.in_features) for layer in layers]
    with torch.inference_mode():
        def chunk() -> None:
            for layer, x in zip(layers, inputs):
                torch.addmm(layer.bias, x, layer.weight.t())
        for _ in range(10):
            chunk()
        best = min(timed(lambda: [chunk() for _ in range(repeats)]) for _ in range(3))
    return best / repeats * chunks


def step_seconds_by_batch(root: Path, state: dict, batches: tuple[int, ...], images: int = 12000) -> dict[int, float]:
    """The trainer's seconds per step on trained weights at each batch size (median of 2 epochs of
    ``images`` training images each); weights and Adam state from ``state``, whatever its batch."""
    data = load_mnist(root, train_subset=images)
    seconds = {}
    for batch in batches:
        trainer = Trainer(CONFIG.model_copy(update={"batch_size": batch}), data)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.train_epoch()  # warm-up
        epoch = statistics.median(trainer.train_epoch()[MetricName.epoch_seconds] for _ in range(2))
        seconds[batch] = epoch / math.ceil(images / batch)
    return seconds


def rss_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS now, VmHWM peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_is(root: Path, samples: int, n_images: int, weights: dict | None) -> tuple[float, float, float]:
    """Seconds of the IS estimate, and the peak RSS it reached over the RSS before it (MB)."""
    x = fixed_binarization(load_mnist(root, train_subset=1, test_subset=n_images).test_x, 0)
    model = VAE(LATENT).eval()
    if weights is not None:
        model.load_state_dict(weights)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
    before = rss_mb("VmRSS")
    seconds = timed(lambda: log_likelihood(model, x, samples, generator=torch.Generator().manual_seed(0)))
    return seconds, rss_mb("VmHWM") - before, before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "vaesweep" / "bench",
                        help="where the trained checkpoint is kept between runs")
    parser.add_argument("--epochs", type=int, default=2, help="trainer epochs timed (median reported)")
    parser.add_argument("--is-samples", type=int, default=2000)
    parser.add_argument("--is-images", type=int, default=10000)
    parser.add_argument("--pack-rounds", type=int, default=4, help="interleaved epoch pairs of (f) (median reported)")
    parser.add_argument("--only-pack-of-one", action="store_true", help="run (f) alone")
    args = parser.parse_args()
    # before anything else starts torch's threads: they inherit the mode, as in a fresh trainer process
    flushed = start_threads_flushing_denormals()
    with tempfile.TemporaryDirectory() as tmp:
        root = fetch_mnist(Path(tmp), args.data_dir, log=lambda _: None) if args.data_dir else default_data_dir()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {args.data_dir or root}")
        peak = gemm_flops_per_second()
        print(f"torch's threads compute with denormals flushed (as in a trainer's process): {flushed}")
        print(f"fp32 GEMM peak (1024^3 torch.mm, best of 30): {peak / 1e9:.1f} GFLOP/s")
        state, origin = trained_state(root, args.cache_dir)
        print(f"trained weights: {TRAINED_EPOCHS} epochs of this configuration ({origin})")
        plain, pack = pack_vs_trainer_epochs(root, state, args.pack_rounds)
        ratio = statistics.median(p / t for p, t in zip(pack, plain))
        print(f"(f) pack of one vs trainer, trained weights, {args.pack_rounds} interleaved epochs each: trainer "
              f"{statistics.median(plain):.2f} s, pack {statistics.median(pack):.2f} s, pack/trainer {ratio:.3f} "
              "(median of the pairs)   [target <= 1.05]")
        if args.only_pack_of_one:
            return
        roofline = epoch_matmul_flops(60000) / peak
        print(f"(c) GEMM roofline epoch: {roofline:.2f} s ({epoch_matmul_flops(60000) / 1e9:.0f} GFLOP)")
        for label, trained in (("initial", None), ("trained", state)):
            weights = None if trained is None else trained["model"]
            naive = fresh_process_naive_epoch(root, weights)
            ours = statistics.median(trainer_epochs(root, args.epochs, trained))
            print(f"{label} weights: (a) naive DataLoader epoch {naive:.2f} s, (b) vaesweep trainer epoch {ours:.2f} s "
                  f"(median of {args.epochs})")
            print(f"  speed-up (a)/(b) = {naive / ours:.2f}   roofline (c)/(b) = {roofline / ours:.2f}"
                  f"   [targets on trained weights: >= 2.5, >= 0.5]")
        bf16 = statistics.median(trainer_epochs(root, args.epochs, state, bf16=True))
        print(f"optional bf16_output_layer, trained weights: trainer epoch {bf16:.2f} s, "
              f"speed-up (a)/(b) = {naive / bf16:.2f}   roofline (c)/(b) = {roofline / bf16:.2f}")

        step_roofline = roofline * BATCH / 60000
        matmuls, adam = product_and_adam_seconds()
        print(f"(d) one step's products alone {matmuls * 1e3:.2f} ms, its Adam step alone {adam * 1e3:.2f} ms: "
              f"roofline/(products) = {step_roofline / matmuls:.2f}, roofline/(products + Adam) = "
              f"{step_roofline / (matmuls + adam):.2f} (the trained step: {roofline / ours:.2f})")
        by_batch = step_seconds_by_batch(root, state, (50, 100, 200))
        per_image, fixed = statistics.linear_regression(list(by_batch), list(by_batch.values()))
        print("(e) trained step: " + ", ".join(f"batch {b} {s * 1e3:.2f} ms" for b, s in by_batch.items())
              + f" -> fixed {fixed * 1e3:.2f} ms per step ({fixed / by_batch[BATCH]:.0%} of the batch-{BATCH} step) "
              f"+ {per_image * 1e6:.1f} us per image (roofline/per-image = {step_roofline / BATCH / per_image:.2f})")

        decoder = mlp_macs([LATENT, 200, 200, 784])
        is_roofline = 2 * args.is_images * args.is_samples * decoder / peak
        naive_mb = args.is_images * args.is_samples * 784 * 4 / 2**20
        print(f"IS log-likelihood, {args.is_images} images x {args.is_samples} samples, "
              f"GEMM roofline {is_roofline:.1f} s:")
        rows = inspect.signature(log_likelihood).parameters["max_rows"].default
        alone = is_product_seconds(rows, args.is_images * args.is_samples // rows)
        print(f"  its decoder products alone ({rows} rows at a time, back to back): {alone:.1f} s; "
              f"roofline/products = {is_roofline / alone:.2f}")
        for label, weights in (("initial", None), ("trained", state["model"])):
            seconds, added_mb, base_mb = measure_is(root, args.is_samples, args.is_images, weights)
            print(f"  {label} weights: {seconds:.1f} s; roofline/measured = {is_roofline / seconds:.2f}"
                  "   [target >= 0.6]; "
                  f"peak memory +{added_mb:.0f} MB over the process before it ({base_mb:.0f} MB RSS)")
    print(f"the unchunked logits alone would take {naive_mb:.0f} MB")


if __name__ == "__main__":
    main()
