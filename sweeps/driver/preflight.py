"""Every check a run makes before it writes anything or starts Ray (the dry run makes them too): the
resources against this machine or the cluster, the device line, a sweep of that name with another
config or data, the data read and checked against the config, and the disk space."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sweeps.config import ConfigError, SweepConfig
from sweeps.driver.data_record import check_same_data
from sweeps.driver.disk import space_problem
from sweeps.driver.local_ray import init_ray
from sweeps.driver.recovery import newest_checkpoints
from sweeps.driver.estimate import Estimate, duration, sweep_estimate
from sweeps.driver.growth import Growth, sweep_change
from sweeps.layout import saved_config, saved_settings

if TYPE_CHECKING:
    from vae.data import DataSet


def resolve_resources(config: SweepConfig, address: str | None) -> SweepConfig:
    """``auto`` resources made concrete: as the sweep was started (its ``sweep.yaml``: a resume packs as
    the start did, whatever machine it runs on), else for the GPUs the driver sees."""
    if "auto" not in (config.resources.gpu, config.resources.pack):
        return config
    if saved_settings(config.sweep_dir()) is not None:
        started = saved_config(config.sweep_dir()).resources
        update = {name: getattr(started, name) for name in ("gpu", "pack") if getattr(config.resources, name) == "auto"}
        config = config.model_copy(update={"resources": config.resources.model_copy(update=update)})
    # GPUs the trials can get now: an autoscaled cluster may have none yet (set resources.gpu there, as k8s/ does)
    return config.resolved(int(sum(node.get("GPU", 0.0) for node in node_resources(address))))


def device_line(config: SweepConfig, resolved: SweepConfig, address: str | None) -> str:
    """What torch sees on this machine and what the sweep will do with it, in one line: packs on GPUs, or a
    trial per grid point on CPU (and why, when ``auto`` decided it)."""
    from vae.devices import device_summary, probe_devices

    res = resolved.resources
    trials = len(resolved.packs())
    if res.gpu:
        plan = (f"{trials} trial{'s' * (trials > 1)} of up to {res.pack} grid points, {res.gpu:g} GPU each, steps "
                f"{'as CUDA graphs' if resolved.train.cuda_graphs == 'auto' else 'eager (train.cuda_graphs: off)'}")
    else:
        size = f"packs of up to {res.pack} grid points" if res.pack > 1 else "a trial per grid point"
        plan = f"{trials} trial{'s' * (trials > 1)}: {size} on CPU, {res.cpus:g} CPU each"
    if config.resources.gpu == "auto":
        plan += f" (resources.gpu auto: {'a GPU' if res.gpu else 'no GPU'} {'in the cluster' if address else 'here'})"
    where = "this machine (the driver)" if address else "device"
    return f"vaesweep: {where}: {device_summary(probe_devices())}; sweep: {plan}"


def node_resources(address: str | None) -> list[dict[str, float]]:
    """CPUs and GPUs of each node a trial could run on: this machine, or the cluster's live nodes."""
    if address is None:
        import torch

        return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]
    import ray

    init_ray(address, verbose=False)
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_resources(config: SweepConfig, address: str | None, autoscaling: bool) -> None:
    """Refuse a trial's request that no node can satisfy: Ray would keep such trials pending forever,
    silently. An autoscaled cluster (``--autoscaling``) may add the node later, so it is let through."""
    want = {"CPU": config.resources.cpus, "GPU": config.resources.gpu}
    nodes = node_resources(address)
    if any(all(node.get(kind, 0.0) >= amount for kind, amount in want.items()) for node in nodes) or (
            address and autoscaling):
        return
    where = "the cluster's nodes have" if address else "this machine has"
    have = "; ".join(f"{node.get('CPU', 0.0):g} CPUs and {node.get('GPU', 0.0):g} GPUs" for node in nodes) or "none"
    hint = ", or pass --autoscaling if the cluster adds nodes on demand" if address else ""
    raise ConfigError(f"resources: a trial asks for {want['CPU']:g} CPUs and {want['GPU']:g} GPUs, but no node can "
                      f"give that ({where} {have}): lower resources.cpus or resources.gpu (gpu auto fits the "
                      f"machine){hint}")


class Checked(NamedTuple):
    """What the preflight found: the config to run, its data, its growth and its estimated cost."""

    config: SweepConfig
    data: DataSet
    growth: Growth | None
    estimate: Estimate | None


def preflight(config: SweepConfig, address: str | None, data_dir: Path | None, force: bool,
              autoscaling: bool, check_nodes: bool = True, max_hours: float | None = None,
              estimate: bool = True) -> Checked:
    """Every check a run makes before it writes anything or starts Ray (the dry run makes them too):
    resources against this machine or the cluster (the device line printed), a sweep of that name with
    another config or data, the data read and checked against the config, the disk space (unless
    ``force``). Returns the config to run (resources resolved; a grown sweep's earlier grids), the data
    and the sweep's growth (None: a new sweep or a resume); ConfigError or DataError says what is refused. ``check_nodes`` False: the nodes are not asked (a dry run of a cluster sweep); ``estimate`` False: no cost is timed."""
    from vae.data_sets import load_data

    resolved = resolve_resources(config, address)
    if check_nodes:
        check_resources(resolved, address, autoscaling)
    print(device_line(config, resolved, address))
    resolved, growth = sweep_change(resolved)  # before the lock: a refused config leaves no file behind
    data = load_data(resolved.data, data_dir)  # verified once, before anything is written; trials get it from the object store
    if problem := resolved.data_problem(len(data.train_images), len(data.test_images)):
        raise ConfigError(problem)
    check_same_data(resolved.sweep_dir(), data)
    if not force and (problem := space_problem(resolved, data.pixels)):
        raise ConfigError(problem)
    if not estimate:
        print("estimate: skipped (--no-estimate)")
        return Checked(resolved, data, growth, None)
    return Checked(resolved, data, growth, said_estimate(resolved, data, address if check_nodes else None, max_hours))


def said_estimate(config: SweepConfig, data: DataSet, address: str | None, max_hours: float | None) -> Estimate | None:
    """The sweep's cost, timed here and printed (with the cheaper ways when it runs over a day);
    ConfigError when it runs over ``max_hours``. None for a search, whose trials a scheduler stops, and
    when the timing fails (an estimate never stops a sweep; a limit it cannot check is said)."""
    if config.search != "grid":
        unchecked = "; --max-hours is not checked" if max_hours is not None else ""
        print(f"estimate: none for a search (ASHA stops trials early){unchecked}")
        return None
    nodes = node_resources(address)
    cpus, gpus = sum(node.get("CPU", 0.0) for node in nodes), sum(node.get("GPU", 0.0) for node in nodes)
    done = {label: epoch for label, (epoch, _) in newest_checkpoints(config.sweep_dir(), config).items()} \
        if saved_settings(config.sweep_dir()) is not None else None
    try:
        found, warning = sweep_estimate(config, data, cpus, gpus, done)
    except Exception as err:  # noqa: BLE001 - e.g. a config whose first steps diverge: the trials will say so
        unchecked = "; --max-hours is not checked" if max_hours is not None else ""
        print(f"estimate: none ({type(err).__name__} while timing the trials' steps){unchecked}")
        return None
    where = f" (the cluster's {cpus:g} CPUs and {gpus:g} GPUs; the steps timed on this driver)" if address else ""
    print(found.line() + where)
    if max_hours is not None and found.wall_s > max_hours * 3600:
        raise ConfigError(f"--max-hours {max_hours:g}: the sweep would run about {duration(found.wall_s)} "
                          f"({found.line()}); run fewer grid points or epochs, or raise --max-hours")
    if warning:
        print(f"vaesweep: warning: {warning}", file=sys.stderr)
    return found
