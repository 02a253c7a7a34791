"""Train one latent-size column of the paper grid as a single pack, for a wall-clock budget.

    python bench/packed_column.py --out DIR [--k 30] [--seeds 3] [--budget-seconds 300]
        [--max-epochs 1000] [--eval-every 25] [--is-images 2000] [--train-images N] [--device auto]
        [--data-dir DIR]

Meant for a GPU machine without Ray or MLflow (plain ``vae/`` code): every alpha of the paper grid x
``--seeds`` seeds at latent size ``--k`` train together in one ``PackedTrainer`` until the next epoch
would overrun the budget (or ``--max-epochs``). Every ``--eval-every`` epochs each member's test VR
bound at alpha = 0 (IWAE, 10 samples, whole test set) is recorded. At the end each member gets the
study's measures: test VR bound at its own alpha and at 0 (10 samples, whole test set), the IS
log-likelihood (2000 samples, on the first ``--is-images`` test images: a paired subset, the same for
every member) and the PCA spectrum of its test posterior means (active components and units).
Written into --out as it goes: ``column.json`` (configs, per-epoch train bounds, the evaluation
history, final measures, timings, device), ``column.png`` (final measures against alpha, mean and
spread over seeds) and the members' weights, ``weights-<i>.pt`` (stacked ``PackedVAE`` state, split
into files under 16 MB).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt

from analysis.latent import encode_dataset
from analysis.metrics import MetricName
from analysis.settings import EPSILON
from analysis.spectrum import spectrum
from sweeps.config import SweepConfig, load_sweep
from vae.bounds import dataset_bounds, log_likelihood
from vae.mnist import load_mnist
from vae.member import EVAL_SEED
from vae.packed_train import PackedTrainer
from vae.train import resolve_device

WEIGHT_FILE_BYTES = 15 * 2**20  # what one file may hold (the device tool returns files of <= 16 MiB)


def column_trainer(paper: SweepConfig, k: int, seeds: int, device: str, data_dir: Path | None,
                   train_images: int | None) -> PackedTrainer:
    """Every paper-grid alpha x seeds 0..seeds-1 at latent size k, as one pack."""
    configs = [config.model_copy(update={"device": device}) for config in paper.grid_points()
               if config.k == k and config.seed < seeds]
    return PackedTrainer(configs, load_mnist(data_dir, train_subset=train_images))


def iwae_bounds(pack: PackedTrainer, test_x: torch.Tensor, samples: int) -> list[float]:
    """Each living member's test IWAE bound (alpha = 0) with ``samples`` samples; NaN for failed members."""
    out = []
    for i in range(len(pack.configs)):
        if i in pack.failures:
            out.append(math.nan)
            continue
        generator = torch.Generator(device=pack.device).manual_seed(EVAL_SEED)
        out.append(dataset_bounds(pack.member_model(i), test_x, [0.0], samples, generator=generator)[0.0])
    return out


def final_measures(pack: PackedTrainer, test_x: torch.Tensor, is_images: int, bound_samples: int,
                   is_samples: int) -> list[dict[str, Any]]:
    """The study's per-trial measures of each living member (failed members: their error)."""
    rows = []
    for i, config in enumerate(pack.configs):
        row: dict[str, Any] = {"alpha": config.alpha, "k": config.k, "seed": config.seed}
        if i in pack.failures:
            rows.append({**row, "failed": str(pack.failures[i])})
            continue
        model = pack.member_model(i)
        generator = torch.Generator(device=pack.device).manual_seed(EVAL_SEED)
        bounds = dataset_bounds(model, test_x, [config.alpha, 0.0], bound_samples, generator=generator)
        start = time.perf_counter()
        # one decoder product of 100 images x 1000 samples at a time: large enough to fill a GPU
        log_px = log_likelihood(model, test_x[:is_images], is_samples, max_rows=100_000, generator=generator)
        is_seconds = time.perf_counter() - start
        spec = spectrum(encode_dataset(model, test_x).means, EPSILON)
        rows.append({**row, MetricName.test_vr_bound_alpha: bounds[config.alpha], MetricName.test_vr_bound_0: bounds[0.0],
                     MetricName.test_log_likelihood: log_px.mean().item(), "is_seconds": is_seconds,
                     MetricName.active_components: spec.active_components, MetricName.active_units: spec.active_units,
                     "eigenvalues": spec.eigenvalues})
        print(f"  alpha={config.alpha:<4} seed={config.seed}: IS log-lik {rows[-1][MetricName.test_log_likelihood]:8.2f}  "
              f"IWAE(10) {bounds[0.0]:8.2f}  active components {spec.active_components:2d}  "
              f"(IS {is_seconds:.1f} s)", flush=True)
    return rows


def save_weights(pack: PackedTrainer, out: Path) -> list[str]:
    """The stacked weights in files of at most WEIGHT_FILE_BYTES, members split along the pack axis."""
    state = {name: tensor.detach().cpu() for name, tensor in pack.model.state_dict().items()}
    per_member = sum(t[0].numel() * t.element_size() for t in state.values())
    step = max(1, WEIGHT_FILE_BYTES // per_member)
    names = []
    for n, first in enumerate(range(0, len(pack.configs), step)):
        name = f"weights-{n}.pt"
        torch.save({"members": list(range(first, min(first + step, len(pack.configs)))),
                    "state": {key: t[first:first + step].clone() for key, t in state.items()}}, out / name)
        names.append(name)
    return names


def column_figure(final: list[dict[str, Any]], k: int, epochs: int, is_images: int) -> plt.Figure:
    """IS log-likelihood, IWAE bound and active components against alpha: mean and spread over seeds."""
    frame = pd.DataFrame([row for row in final if "failed" not in row])
    summary = frame.groupby("alpha")[[MetricName.test_log_likelihood, MetricName.test_vr_bound_0, MetricName.active_components]].agg(["mean", "std"])
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for metric, label in ((MetricName.test_log_likelihood, f"IS log-likelihood (2000 samples, {is_images} test images)"),
                          (MetricName.test_vr_bound_0, "IWAE bound (10 samples, test set)")):
        axes[0].errorbar(summary.index, summary[metric]["mean"], yerr=summary[metric]["std"], marker="o", capsize=3,
                         label=label)
    axes[0].set(xlabel="alpha", ylabel="nats", title=f"k={k}, {epochs} epochs")
    axes[0].legend(fontsize=8)
    axes[1].errorbar(summary.index, summary[MetricName.active_components]["mean"], yerr=summary[MetricName.active_components]["std"],
                     marker="o", capsize=3)
    axes[1].set(xlabel="alpha", ylabel=f"PCA components with eigenvalue > {EPSILON}", title=f"k={k}, {epochs} epochs")
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for column.json, column.png and the weights")
    parser.add_argument("--k", type=int, default=30, help="latent size of the column (paper grid: 30, 40, 50)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every alpha")
    parser.add_argument("--budget-seconds", type=float, default=300, help="wall-clock budget of the training loop")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=25, help="epochs between test IWAE bounds")
    parser.add_argument("--is-images", type=int, default=2000, help="test images of the final IS log-likelihood")
    parser.add_argument("--train-images", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    paper = load_sweep("paper")
    pack = column_trainer(paper, args.k, args.seeds, str(device), args.data_dir, args.train_images)
    test_x = pack.images.test_x
    record: dict[str, Any] = {
        "device": name, "torch": torch.__version__, "k": args.k, "members": len(pack.configs),
        "configs": [config.model_dump() for config in pack.configs], "budget_seconds": args.budget_seconds,
        "train_bounds": [], MetricName.epoch_seconds: [], "eval_history": [], "failures": {},
    }

    def write() -> None:
        record["failures"] = {str(i): str(err) for i, err in pack.failures.items()}
        (args.out / "column.json").write_text(json.dumps(record, indent=1, allow_nan=True))

    print(f"{name}: {len(pack.configs)} members (k={args.k}, alphas {paper.grid.alpha}, seeds 0..{args.seeds - 1}), "
          f"budget {args.budget_seconds:.0f} s", flush=True)
    start = time.perf_counter()
    while pack.epoch < args.max_epochs:
        epoch_start = time.perf_counter()
        metrics = pack.train_epoch()
        record[MetricName.epoch_seconds].append(time.perf_counter() - epoch_start)
        record["train_bounds"].append([metrics[i][MetricName.train_vr_bound_alpha] if i in metrics else math.nan
                                       for i in range(len(pack.configs))])
        if pack.epoch % args.eval_every == 0 or pack.epoch == 1:
            bounds = iwae_bounds(pack, test_x, paper.eval.bound_samples)
            record["eval_history"].append({"epoch": pack.epoch, MetricName.test_vr_bound_0: bounds})
            print(f"epoch {pack.epoch:4d}  {record[MetricName.epoch_seconds][-1]:.2f} s/epoch  "
                  f"test IWAE(10) mean {np.nanmean(bounds):.2f} (best {np.nanmax(bounds):.2f})  "
                  f"failed {len(pack.failures)}  elapsed {time.perf_counter() - start:.0f} s", flush=True)
            write()
        if time.perf_counter() - start + max(record[MetricName.epoch_seconds][-3:]) > args.budget_seconds:
            break
    record["epochs"] = pack.epoch
    record["train_seconds"] = time.perf_counter() - start
    print(f"trained {pack.epoch} epochs in {record['train_seconds']:.0f} s "
          f"({len(pack.configs) * pack.epoch / record['train_seconds']:.2f} model-epochs/s); final measures:", flush=True)
    record["weights"] = save_weights(pack, args.out)
    eval_start = time.perf_counter()
    record["final"] = final_measures(pack, test_x, args.is_images, paper.eval.bound_samples, paper.eval.is_samples)
    record["eval_seconds"] = time.perf_counter() - eval_start
    write()
    figure = column_figure(record["final"], args.k, pack.epoch, args.is_images)
    figure.savefig(args.out / "column.png", dpi=120)
    print(f"evaluated in {record['eval_seconds']:.0f} s; wrote {args.out}/column.json, column.png, "
          f"{', '.join(record['weights'])}", flush=True)


if __name__ == "__main__":
    main()
