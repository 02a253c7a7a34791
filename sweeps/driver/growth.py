"""A sweep run again under its name: resumed as it was, grown (more seeds, alphas or k values), or refused.

A grown sweep keeps its folder, its MLflow parent run and every finished grid point: Ray cannot add
points to a restored experiment, so the driver sets Ray's state aside (``tune/grown-<time>/``) and
starts a new experiment over the whole grid in which each earlier point continues from its newest
checkpoint (sweeps/driver/recovery.py): a finished one reports its final result again without
training, and MLflow adopts its run, whose epochs are each logged once. New points train in packs of
their own (``SweepConfig.stages``). A longer ``train.epochs`` continues every point from its last
checkpoint to the new end (its run's final analysis replaced, the earlier one kept beside it:
sweeps/driver/run_writer.py). What defines a finished point cannot change under its name.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from sweeps.config import ConfigError, SweepConfig
from sweeps.driver.recovery import new_experiment
from sweeps.layout import GROWN_PREFIX, saved_config, saved_settings

# Settings a run may give differently from the sweep's own without changing what a grid point is.
FREE = {"storage", "tracking", "earlier_grids", "checkpoint_every", "max_failures"}


@dataclass(frozen=True)
class Growth:
    """Grid points a sweep keeps and those a run adds."""

    kept: int
    new: int
    grown: SweepConfig  # the run's config, with the sweep's grids before it in ``earlier_grids``
    epochs_from: int | None = None  # a longer training: the sweep's epochs before

    def line(self, finished: int | None) -> str:
        done = f" ({finished} finished)" if finished is not None else ""
        longer = (f"; train.epochs {self.epochs_from} -> {self.grown.train.epochs}: every grid point continues from "
                  "its last checkpoint") if self.epochs_from is not None else ""
        return f"grows sweep {self.grown.name}: {self.kept} grid points kept{done}, {self.new} new{longer}"


def points(grid: Any) -> set[tuple[float, int, int]]:
    return set(itertools.product(grid.alpha, grid.k, grid.seed))


def changed_settings(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (nested sections compared key by key)."""
    names = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            names.append(f"{prefix}{key}")
    return names


def sweep_change(config: SweepConfig) -> tuple[SweepConfig, Growth | None]:
    """What running ``config`` does to the sweep of its name: the config to run (with the sweep's
    ``earlier_grids``) and the Growth when it adds grid points (None for a new sweep or a resume);
    ConfigError (one line: the setting, and what to do instead) for any other change."""
    if saved_settings(config.sweep_dir()) is None:  # a new sweep: its grid is its only stage
        return config.model_copy(update={"earlier_grids": []}), None
    saved = saved_config(config.sweep_dir())  # validated: settings added since then take their defaults
    old = {k: v for k, v in saved.to_dict().items() if k not in FREE}
    new = {k: v for k, v in config.to_dict().items() if k not in FREE}
    same_points = points(saved.grid) == points(config.grid)
    if same_points:  # the grid written in another order is the same grid
        new["grid"] = old["grid"]
    if old == new:
        return config.model_copy(update={"earlier_grids": saved.earlier_grids, "grid": saved.grid}), None
    changed = changed_settings(old, new)
    name = config.name
    longer = config.train.epochs > saved.train.epochs and probes_kept(saved, config)
    growable = {"train.epochs", "eval.probe_epochs"} if longer else set()
    others = sorted((s for s in changed if not s.startswith("grid.") and s not in growable),
                    key=lambda s: (s != "train.epochs", s.startswith("resources."), s))
    if others:  # what the model is before how it is scheduled
        raise ConfigError(refusal(name, others[0], dotted(old, others[0]), dotted(new, others[0])))
    if config.search != "grid":
        raise ConfigError(f"sweep {name!r}: {', '.join(changed)} changed, but an Optuna search cannot grow: "
                          "give it more samples under another --name")
    dropped = points(saved.grid) - points(config.grid)
    if dropped:
        alpha, k, seed = sorted(dropped)[0]
        raise ConfigError(f"sweep {name!r}: the grid leaves out {len(dropped)} of its grid points (e.g. alpha={alpha:g}, "
                          f"k={k}, seed={seed}); a sweep only grows: to draw fewer points, keep their rows of its "
                          "report's trials.csv and run `vaesweep report --trials FILE`, or start a new sweep with "
                          "another --name")
    if same_points:
        grown = config.model_copy(update={"earlier_grids": saved.earlier_grids, "grid": saved.grid})
    else:
        grown = config.model_copy(update={"earlier_grids": [*saved.earlier_grids, saved.grid]})
    kept = len(points(saved.grid))
    return grown, Growth(kept=kept, new=len(points(config.grid)) - kept, grown=grown,
                         epochs_from=saved.train.epochs if longer else None)


def probes_kept(saved: SweepConfig, config: SweepConfig) -> bool:
    """Whether a longer training keeps the sweep's probe epochs, adding only epochs past its old end."""
    before, after = set(saved.eval.probe_epochs), set(config.eval.probe_epochs)
    return before <= after and all(epoch > saved.train.epochs for epoch in after - before)


def start_growth(config: SweepConfig, growth: Growth) -> str:
    """Under the sweep's lock: the next fit starts a new Ray experiment over the grown grid (sweeps/driver/
    recovery.py), every earlier point continuing from its newest checkpoint; returns what was done."""
    found, aside = new_experiment(config.sweep_dir(), config, GROWN_PREFIX)
    finished = sum(epoch >= (growth.epochs_from or config.train.epochs) for epoch, _ in found.values())
    kept = ("its grid points continue from their last checkpoints" if growth.epochs_from is not None else
            "its finished grid points report their results again without training")
    return f"{growth.line(finished)}; Ray's state of the sweep before it is in {aside.relative_to(config.sweep_dir())}, {kept}"


def dotted(settings: dict[str, Any], name: str) -> Any:
    for part in name.split("."):
        settings = settings.get(part) if isinstance(settings, dict) else None
    return settings


def refusal(name: str, setting: str, old: Any, new: Any) -> str:
    """The one line that refuses a change of ``setting`` in sweep ``name``, and says what to do instead."""
    if setting == "train.epochs" and isinstance(old, int) and isinstance(new, int):
        if new < old:
            return (f"sweep {name!r} trains {old} epochs, not {new}: a sweep does not shorten; draw an earlier epoch "
                    f"from its runs' history, or start a new sweep with another --name")
        return (f"sweep {name!r}: train.epochs {old} -> {new} may add probe epochs past {old} only (eval.probe_epochs): "
                "keep the sweep's probe epochs, or start a new sweep with another --name")
    why = ("it decides which grid points train together" if setting.startswith("resources.") else
           "it decides what the search proposes" if setting.startswith(("optuna.", "search")) else
           "it defines what a finished grid point is")
    return (f"sweep {name!r} already exists with {setting}={old!r}, not {new!r}: {why}; set it back, or start a new "
            "sweep with another --name (a sweep grows only in grid.alpha, grid.k, grid.seed and train.epochs)")
