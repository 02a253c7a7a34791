"""What a sweep will cost, said before it starts: its packs' steps and evaluation timed on this machine,
then scheduled as Ray will run them.

For each distinct pack (its k and size) the estimate builds the real trainer on the trials' device, with
the trials' CPU threads, and times full-batch steps after a warm-up (``PackedTrainer.seconds_per_step``);
an epoch is those steps times the steps per epoch. It times one member's probes and final evaluation
(IS log-likelihood on a slice of the test images, scaled; the latent analysis whole) on the untrained
model. A trial costs its epochs, its probe epochs and its final evaluation per member; the trials are
placed longest first on the slots the resources give (CPUs or GPUs over what a trial asks), and the
sweep's fixed cost (Ray, the MLflow server, the first workers, the close) is added.
"""

from __future__ import annotations

import heapq
import json
import math
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.config import SweepConfig
from sweeps.driver.disk import MB, estimate as disk_estimate
from sweeps.estimate_record import DAY_S, duration, read_estimate
from sweeps.layout import ESTIMATE_FILE
from vae.atomic import write_atomic

if TYPE_CHECKING:
    from vae.data import DataSet

# What a sweep pays besides its trials on 2 cores (bench/fixed_cost.py, docs/benchmarks.md): Ray and the
# MLflow server started together (8.5 s), the first workers' start and imports (4.5 s), the close (3 s).
# A trial that follows another on its slot reuses that worker (``reuse_actors``) and pays no start.
SWEEP_FIXED_S = 16.0
IS_SLICE = 100  # test images the IS log-likelihood is timed on (one batch of it)
PROBE_SLICE = 1000  # training images the probes are timed on


@dataclass(frozen=True)
class PackCost:
    """Seconds of one pack (k, members): an epoch of training, per member the probes of one probe epoch
    and the final evaluation, and the setup of a trial in a fresh worker (its images and trainer built;
    a trial that reuses the worker of another pays a fraction)."""

    k: int
    members: int
    epoch_s: float
    probe_s: float
    final_s: float
    setup_s: float = 0.0

    def trial_s(self, epochs: int, probe_rounds: int, final: bool = True) -> float:
        """A trial that trains ``epochs`` more, probes ``probe_rounds`` times and (``final``) evaluates."""
        return epochs * self.epoch_s + self.members * (probe_rounds * self.probe_s + final * self.final_s)


@dataclass(frozen=True)
class Estimate:
    """A sweep's cost before it runs."""

    grid_points: int
    finished: int  # grid points an existing sweep has finished (they replay at a worker's start)
    trials: int
    at_once: int
    wall_s: float
    device_hours: float
    device: str  # "CPU" or "GPU": what device_hours counts
    epochs: int
    epoch_s: float  # the slowest trial's epoch
    disk_bytes: int
    memory_bytes: int
    measured_s: float

    def line(self) -> str:
        finished = f" ({self.finished} finished)" if self.finished else ""
        return (f"estimate: {self.grid_points} grid point{'s' * (self.grid_points > 1)}{finished} in {self.trials} "
                f"trial{'s' * (self.trials > 1)}, "
                f"{self.at_once} at a time: about {duration(self.wall_s)} ({self.epochs} epochs x "
                f"{self.epoch_s:.2g} s per epoch per trial, measured now in {self.measured_s:.1f} s); "
                f"{device_time(self.device_hours, self.device)}; disk {size(self.disk_bytes)}; "
                f"memory about {size(self.memory_bytes)} per trial (the timing's peak)")


def device_time(hours: float, device: str) -> str:
    """'625 CPU-hours', or under an hour '2 CPU-minutes'."""
    return f"{hours:.3g} {device}-hours" if hours >= 1 else f"{max(1, round(hours * 60))} {device}-minutes"


def size(count: int) -> str:
    return f"{count / (1 << 30):.1f} GB" if count >= 1 << 30 else f"{count / MB:.0f} MB"


def slots(config: SweepConfig, cpus: float, gpus: float) -> int:
    """Trials Ray runs at once on ``cpus`` CPUs and ``gpus`` GPUs, given what each trial asks."""
    res = config.resources
    by_cpu = math.floor(cpus / res.cpus) if res.cpus > 0 else math.inf
    by_gpu = math.floor(gpus / res.gpu) if res.gpu > 0 else math.inf
    return max(1, int(min(by_cpu, by_gpu, len(config.packs()))))


def schedule(durations: list[float], at_once: int) -> float:
    """The wall time of trials placed longest first on the least loaded of ``at_once`` slots."""
    loads = [0.0] * at_once
    for seconds in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + seconds)
    return max(loads)


def measure(config: SweepConfig, data: DataSet) -> dict[tuple[int, int], PackCost]:
    """PackCost of each distinct (k, pack size) of the sweep, timed here on the threads a trial has: its
    CPUs for torch and for BLAS (more BLAS threads than a trial's made its probes 8x slower)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = max(1, int(config.resources.cpus))
    torch.set_num_threads(threads)
    with threadpool_limits(threads):  # a trial's BLAS threads: Ray sets its OMP_NUM_THREADS to its CPUs
        return measured_packs(config, data)


def measured_packs(config: SweepConfig, data: DataSet) -> dict[tuple[int, int], PackCost]:
    """The steps of each pack shape; the probes and the final evaluation once, on the first pack's first
    member, the probes fit on at most ``PROBE_SLICE`` images and scaled to the probe size (a logistic fit
    costs about linearly in images); a trial's setup once, as a fresh worker pays it (the first trainer
    built in a process initializes torch's and the model's modules: 1.6 s of 2 s for smoke)."""
    import torch

    from sweeps.trial.engine import trial_trainer
    from vae.data import images_of

    first = config.point_config(config.packs()[0][0])
    start = time.perf_counter()
    images = images_of(data, first.train_subset, first.test_subset)
    costs, evaluation, setup_s = {}, None, None
    for pack in config.packs():
        shape = (pack[0]["k"], len(pack))
        if shape in costs:
            continue
        trainer = trial_trainer([config.point_config(point) for point in pack], images)
        setup_s = setup_s or time.perf_counter() - start
        evaluation = evaluation or evaluation_seconds(trainer.member(0), config)  # on the untrained model
        try:
            epoch_s = math.ceil(trainer.train_x.shape[-2] / first.batch_size) * trainer.seconds_per_step()
        except ValueError:  # an epoch shorter than a CUDA graph's steps: timed whole
            epoch_s = timed(trainer.train_epoch)
        costs[shape] = PackCost(shape[0], shape[1], epoch_s, *evaluation, setup_s)
        del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the trials, not the driver, need the GPU's memory
    return costs


def evaluation_seconds(member, config: SweepConfig) -> tuple[float, float]:
    """(probes of one probe epoch, final evaluation) of one member, timed on slices and scaled."""
    from analysis.model_analysis import analyze_member
    from analysis.probes import member_probes
    from vae.bounds import log_likelihood

    wanted = config.eval.probe_train_size or len(member.images.train_x)
    fitted = min(wanted, PROBE_SLICE)
    probe_s = pixels_s = 0.0
    if member.labelled:
        probe_s = timed(lambda: member_probes(member, fitted, config.eval.seed)) * wanted / fitted
        pixels_s = timed(lambda: member_probes(member, fitted, config.eval.seed, pixels=True)) * wanted / fitted
    small = config.eval.model_copy(update={"probe_train_size": fitted})
    with tempfile.TemporaryDirectory() as tmp:
        analysis_s = timed(lambda: analyze_member(member, Path(tmp), small)) - pixels_s * fitted / wanted + pixels_s
    is_s = timed(lambda: log_likelihood(member.model, member.test_x[:IS_SLICE], config.eval.is_samples))
    bound_s = is_s * 2 * config.eval.bound_samples / config.eval.is_samples  # two bounds of K samples
    return probe_s, (is_s + bound_s) * len(member.test_x) / IS_SLICE + analysis_s


def timed(work) -> float:
    """Seconds ``work()`` takes, the GPU's queue drained."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    work()
    sync()
    return time.perf_counter() - start


def sweep_estimate(config: SweepConfig, data: DataSet, cpus: float, gpus: float,
                   done: dict[str, int] | None = None) -> tuple[Estimate, str | None]:
    """The cost on ``cpus`` CPUs and ``gpus`` GPUs of what the sweep has left (``done``: epochs trained
    per grid point), its steps timed here (a grid search), and the warning with cheaper ways when a new
    sweep runs over a day."""
    start = time.perf_counter()
    costs = measure(config, data)
    found = schedule_costs(config, costs, cpus, gpus, data.pixels, time.perf_counter() - start, done)
    over = found.wall_s > DAY_S and not done
    return found, cheaper_ways(config, costs, cpus, gpus, data.pixels) if over else None


def schedule_costs(config: SweepConfig, costs: dict[tuple[int, int], PackCost], cpus: float, gpus: float,
                   pixels: int, measured_s: float, done: dict[str, int] | None = None) -> Estimate:
    """The Estimate of the sweep's trials from their packs' costs; ``done``: the epochs each grid point
    of an existing sweep has trained (a trial then trains what its least trained member lacks). Each
    slot's first trial sets up a fresh worker; the slots do it side by side."""
    from analysis.probes import probe_epochs
    from vae.config import grid_point_label

    done = done or {}
    epochs = config.train.epochs
    packs = config.packs()
    durations = []
    for pack in packs:
        start = min(done.get(grid_point_label(**point), 0) for point in pack)
        rounds = len([e for e in probe_epochs(epochs, config.eval.probe_epochs) if e > start])
        durations.append(costs[(pack[0]["k"], len(pack))].trial_s(epochs - start, rounds, start < epochs))
    at_once = slots(config, cpus, gpus)
    per = "GPU" if config.resources.gpu else "CPU"
    share = config.resources.gpu if config.resources.gpu else config.resources.cpus
    setup_s = max(cost.setup_s for cost in costs.values())
    return Estimate(grid_points=sum(map(len, packs)), finished=sum(epoch >= epochs for epoch in done.values()),
                    trials=len(packs), at_once=at_once, wall_s=SWEEP_FIXED_S + setup_s + schedule(durations, at_once),
                    device_hours=share * (sum(durations) + at_once * setup_s) / 3600,
                    device=per, epochs=epochs, epoch_s=max(cost.epoch_s for cost in costs.values()),
                    disk_bytes=disk_estimate(config, pixels).total,
                    memory_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, measured_s=measured_s)


def cheaper_ways(config: SweepConfig, costs: dict[tuple[int, int], PackCost], cpus: float, gpus: float,
                 pixels: int) -> str:
    """The warning of a sweep over a day: cheaper ways, each with its estimate (per-member costs scaled)."""
    def cost_of(changed: SweepConfig) -> str:
        per_member = {k: cost for (k, _), cost in costs.items()}
        scaled = {(pack[0]["k"], len(pack)): costs.get((pack[0]["k"], len(pack))) or scale(per_member[pack[0]["k"]], len(pack))
                  for pack in changed.packs()}
        return duration(schedule_costs(changed, scaled, cpus, gpus, pixels, 0.0).wall_s)

    seeds = config.model_copy(update={"grid": config.grid.model_copy(update={"seed": config.grid.seed[:1]})})
    epochs = min(100, config.train.epochs // 10) or 1
    shorter = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs}),
                                        "eval": config.eval.model_copy(update={"probe_epochs": [
                                            e for e in config.eval.probe_epochs if e <= epochs] or [epochs]})})
    return (f"that is more than a day here; cheaper: one seed (--set grid.seed=[{config.grid.seed[0]}]: about "
            f"{cost_of(seeds)}), {epochs} epochs (--set train.epochs={epochs}: about {cost_of(shorter)}), a preset "
            "that fits (smoke, mini, digits), packs on a GPU (resources.gpu: auto), or a Ray cluster (--address)")


def scale(cost: PackCost, members: int) -> PackCost:
    """A pack's cost at another size, its epoch scaled per member (packs on CPU cost about linearly)."""
    return PackCost(cost.k, members, cost.epoch_s * members / cost.members, cost.probe_s, cost.final_s, cost.setup_s)


def record(config: SweepConfig, estimate: Estimate | None) -> None:
    """Write the estimate a run starts with into the sweep folder (``estimate.json``); a run without one
    (``--no-estimate``, a search, a timing that failed) removes an earlier run's, whose end this run's
    end is not."""
    path = config.sweep_dir() / ESTIMATE_FILE
    if estimate is None:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, json.dumps({**asdict(estimate), "line": estimate.line(), "started": time.time()},
                                  indent=1).encode())


def record_end(sweep_dir: Path) -> dict | None:
    """The run's end time added to its ``estimate.json``; returns the record (None without one)."""
    recorded = read_estimate(sweep_dir)
    if recorded is not None:
        recorded["ended"] = time.time()
        try:
            write_atomic(sweep_dir / ESTIMATE_FILE, json.dumps(recorded, indent=1).encode())
        except OSError:  # a full disk: the run's own end line matters more than this record
            pass
    return recorded
