"""A sweep as validated data: the grid, the training and evaluation settings, resources, tracking.

Loaded from a YAML preset (``sweeps/presets/NAME.yaml``) or file, then ``--set key=value``
overrides (dotted keys, YAML values: ``--set grid.alpha=[0,1] --set train.epochs=3``). Every model
forbids unknown keys, so a typo fails naming its field. ``SweepConfig.grid_points()`` lists the grid in a
fixed order (alpha, then k, then seed), the same order Ray Tune's grid_search expands.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis.metrics import GRID
from analysis.settings import EvalConfig
from vae.config import MAX_SEED, DataSpec, TrainConfig
from vae.data_spec import SPEC_HELP, builtin_sizes

PRESETS_DIR = Path(__file__).parent / "presets"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped: a key or path from a file
    can hold a newline, and an error message must stay one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def first_error(err: ValidationError) -> tuple[str, str]:
    """(dotted field, reason) of the first problem in a pydantic error, for one-line messages."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    return field, first["msg"].removeprefix("Value error, ")


class ConfigError(ValueError):
    """A sweep file or override that cannot be used; the message names the field (on one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # keep alpha=-inf in JSON


class GridConfig(Strict):
    """The study's grid: every combination of alpha, k and seed is one trial."""

    alpha: list[float] = Field(min_length=1, description="Rényi alphas (1 = ELBO, 0 = IWAE, -inf = VR-max)")
    k: list[int] = Field(min_length=1, description="latent dimensions")
    seed: list[int] = Field(min_length=1, description="seeds (replicates)")

    @field_validator("alpha")
    @classmethod
    def _no_nan(cls, alphas: list[float]) -> list[float]:
        if any(math.isnan(a) for a in alphas):
            raise ValueError("alpha values must be numbers or +-inf, not NaN")
        return alphas

    @field_validator("k", "seed")
    @classmethod
    def _non_negative(cls, values: list[int], info) -> list[int]:
        lowest = 1 if info.field_name == "k" else 0
        if any(v < lowest for v in values):
            raise ValueError(f"every {info.field_name} must be >= {lowest}")
        if info.field_name == "seed" and any(v > MAX_SEED for v in values):
            raise ValueError(f"every seed must be <= {MAX_SEED}")
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate {info.field_name} values")
        return values


class ResourcesConfig(Strict):
    """What each Ray trial asks for; ``auto`` is resolved against the driver's machine, or the cluster of ``--address``."""

    # allow_inf_nan=False: an infinite share means nothing to Ray (and int(inf) would raise below)
    cpus: float = Field(1.0, gt=0, allow_inf_nan=False, description="CPUs per trial (torch threads follow it)")
    gpu: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["auto"] = Field(
        "auto", description="GPU per trial; a fraction shares one GPU between trials; auto = 1 where the driver "
        "sees a GPU (on its machine, or in the cluster of --address), else 0")
    pack: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="grid points of one k trained together in one trial (vectorised; 1 = a trial per grid "
        "point); auto = every grid point of a k in one trial when trials get a GPU, else 1")

    @field_validator("gpu")
    @classmethod
    def _fraction_or_integer(cls, gpu: float | str) -> float | str:
        if gpu != "auto" and gpu > 1 and gpu != int(gpu):
            raise ValueError("a GPU share above 1 must be a whole number")
        return gpu


class TrackingConfig(Strict):
    """The MLflow server and experiment of the sweep's runs (one parent run, a child run per grid point)."""

    uri: str | None = Field(None, description="MLflow tracking URI; empty = an embedded sqlite store under the sweep")
    experiment: str = Field("vaesweep", min_length=1, description="MLflow experiment name")


class OptunaConfig(Strict):
    """Optuna (TPE) search over alpha in a range and k in a list, with ASHA early stopping."""

    num_samples: int = Field(8, gt=0, description="trials Optuna proposes")
    alpha_range: tuple[float, float] = Field((0.0, 1.0), description="alpha is drawn uniformly from [low, high]")
    max_concurrent: int = Field(2, gt=0, description="trials running at once")
    grace_period: int = Field(1, gt=0, description="ASHA: epochs every trial gets before it can be stopped")
    reduction_factor: int = Field(2, gt=1, description="ASHA: keep 1/reduction_factor at each rung")

    @field_validator("alpha_range")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] < bounds[1]):
            raise ValueError("alpha_range must be two finite numbers, low < high")
        return bounds


def sweep_path(storage: Path | str, name: str) -> Path:
    """A sweep's folder, ``STORAGE/NAME``, absolute: the one place it is resolved."""
    return Path(storage).expanduser().resolve() / name


# Settings that `vaesweep run` writes into a sweep's sweep.yaml, not offered to users.
WRITTEN_BY_VAESWEEP = {"earlier_grids"}


class SweepConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="sweep name: its folder under storage and its MLflow parent run")
    data: DataSpec = Field("mnist", description=f"data set of every trial: {SPEC_HELP}")
    grid: GridConfig = Field(description="the grid: every combination of its alpha, k and seed lists is a grid point")
    train: TrainConfig = Field(default_factory=TrainConfig, description="trainer settings; alpha, k, seed come from grid")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="what each trial measures and analyses")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig,
                                       description="what each trial gets: CPUs, a GPU share, grid points per trial")
    storage: str = Field("runs", min_length=1, description="folder holding every sweep (Ray results, embedded MLflow)")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="where the MLflow runs go")
    search: Literal["grid", "optuna"] = Field("grid", description="grid: every grid point; optuna: TPE + ASHA")
    optuna: OptunaConfig = Field(default_factory=OptunaConfig, description="the search's settings (search: optuna)")
    checkpoint_every: int = Field(1, gt=0, description="epochs between trial checkpoints")
    max_failures: int = Field(2, ge=-1, description="retries of a failed trial from its last checkpoint (-1: forever)")
    earlier_grids: list[GridConfig] = Field(default_factory=list, description="the grids a grown sweep had before, "
                                            "oldest first: written by `vaesweep run` when a sweep grows; leave it out")

    @model_validator(mode="before")
    @classmethod
    def _data_for_every_trial(cls, values: Any) -> Any:
        """The top-level ``data`` is each trial's ``train.data``: one place to say it, every trial's config to hold it."""
        if not isinstance(values, dict):
            return values
        train = values.get("train", {})
        if isinstance(train, dict):
            if "data" in train:
                raise ValueError("train.data is set for every trial by the top-level data; set data instead "
                                 "(e.g. data: digits, or --set data=digits)")
            values = {**values, "train": {**train, "data": values.get("data", "mnist")}}
        return values

    @field_validator("storage")
    @classmethod
    def _usable_path(cls, storage: str) -> str:
        """Fail here, not with a traceback when the sweep folder is first resolved."""
        if "\0" in storage:
            raise ValueError("must not contain a NUL character")
        try:
            Path(storage).expanduser()
        except RuntimeError:
            raise ValueError(f"cannot expand {storage.split('/')[0]!r}: no such user; give a plain path") from None
        return storage

    @model_validator(mode="after")
    def _consistent(self) -> "SweepConfig":
        grid_fields = set(GRID) & self.train.model_fields_set  # (train.data: see _data_for_every_trial)
        if grid_fields:
            field = sorted(grid_fields)[0]
            raise ValueError(f"train.{field} is set per trial by grid.{field}; set grid.{field} instead")
        late = [e for e in self.eval.probe_epochs if e > self.train.epochs or e < 1]
        if late:
            inside = ",".join(str(e) for e in self.eval.probe_epochs if e not in late)
            longer = " or raise train.epochs" if max(late) > self.train.epochs else ""
            raise ValueError(f"eval.probe_epochs {late} are outside 1..train.epochs={self.train.epochs}; change "
                             f"eval.probe_epochs too (e.g. --set eval.probe_epochs=[{inside}]){longer}")
        return self

    @model_validator(mode="after")
    def _what_a_trial_would_refuse(self) -> "SweepConfig":
        """Checks a trial would make only at its start (or at its end), made here so the sweep is refused
        before it launches: the interpolated test images exist (in a built-in data set: a user's own files
        are checked by ``data_problem`` once read, still before launch), a CUDA device comes with a GPU share."""
        if problem := self.data_problem(*builtin_sizes(self.data)):
            raise ValueError(problem)
        if self.train.device.startswith("cuda") and self.resources.gpu == 0:
            raise ValueError(f"train.device={self.train.device} needs a GPU, but resources.gpu=0 gives trials none: "
                             "set resources.gpu (1, a fraction, or auto), or train.device=auto")
        return self

    @model_validator(mode="after")
    def _selection_off_the_test_set(self) -> "SweepConfig":
        """Optuna and ASHA select on validation images held out of training, never on the test set."""
        if self.search == "optuna" and not self.train.validation_images:
            raise ValueError("search: optuna selects on held-out training images: set train.validation_images "
                             "(e.g. 10000, the last 10,000 of the 60,000)")
        return self

    @model_validator(mode="after")
    def _packable(self) -> "SweepConfig":
        """Packs group grid points; a search proposes one point at a time."""
        if self.resources.pack == "auto" or self.resources.pack == 1:
            return self
        if self.search != "grid":
            raise ValueError("resources.pack packs grid points; an Optuna search proposes one point at a time: "
                             "set resources.pack=1 (or search: grid)")
        return self

    def data_problem(self, train_images: int | None, test_images: int | None) -> str | None:
        """What the trials would refuse of a data set with these split sizes (None: nothing; unknown sizes
        are not checked)."""
        if problem := self.train.data_problem(train_images, test_images):
            return f"train: {problem}"
        scored = self.train.test_subset or test_images
        if min(self.eval.pair) < 0 or (scored is not None and max(self.eval.pair) >= scored):
            within = f"0..{scored - 1}" if scored is not None else "the test set"
            return (f"eval.pair {list(self.eval.pair)}: the trials score {scored} test images (train.test_subset or "
                    f"the data set's), so both indices must be in {within}")
        return None

    def resolved(self, gpus: int) -> "SweepConfig":
        """This config with ``auto`` resources made concrete, for a driver that sees ``gpus`` GPUs: a GPU
        per trial where there is one; then on a GPU every grid point of a k in one pack (for a grid search;
        a search proposes one point at a time), on CPU a trial per grid point. The
        sweep folder's ``sweep.yaml`` holds the resolved values, so a resume packs as the start did."""
        gpu = (1.0 if gpus > 0 else 0.0) if self.resources.gpu == "auto" else self.resources.gpu
        pack = self.resources.pack
        if pack == "auto":
            pack = len(self.grid.alpha) * len(self.grid.seed) if gpu > 0 and self.search == "grid" else 1
        return self.model_copy(update={"resources": self.resources.model_copy(update={"gpu": gpu, "pack": pack})})

    @property
    def packed(self) -> bool:
        """Whether grid points train in packs (a resolved config: see ``resolved``)."""
        return self.pack_size > 1

    @property
    def pack_size(self) -> int:
        if self.resources.pack == "auto":
            raise ValueError("resources.pack is 'auto': call SweepConfig.resolved(gpus) first")
        return self.resources.pack

    def stages(self) -> list[list[dict[str, Any]]]:
        """The grid points, {alpha, k, seed} each, by the grid that added them: the first grid's in grid
        order, then those each growth added (``earlier_grids``), so that a pack never spans two stages."""
        seen: set[tuple[float, int, int]] = set()
        stages = []
        for grid in [*self.earlier_grids, self.grid]:
            new = [p for p in itertools.product(grid.alpha, grid.k, grid.seed) if p not in seen]
            seen.update(new)
            stages.append([{"alpha": alpha, "k": k, "seed": seed} for alpha, k, seed in new])
        return stages

    def packs(self) -> list[list[dict[str, Any]]]:
        """The grid points in packs of at most ``resources.pack`` that share k (so every shape) and the
        stage that added them, in grid order; with pack 1, one point per pack."""
        size = self.pack_size
        packs = []
        for stage in self.stages():
            by_k: dict[int, list[dict[str, Any]]] = {}
            for point in stage:
                by_k.setdefault(point["k"], []).append(point)
            packs += [points[i:i + size] for points in by_k.values() for i in range(0, len(points), size)]
        return packs

    def point_config(self, point: dict[str, Any]) -> TrainConfig:
        """The validated trainer config of one point {alpha, k, seed}: the only way a trial's config
        is made (the dry run, every trial, and sync all call it)."""
        return TrainConfig.model_validate({**self.train.model_dump(exclude=set(GRID)),
                                           "alpha": point["alpha"], "k": point["k"], "seed": point["seed"]})

    def grid_points(self) -> list[TrainConfig]:
        """Every grid point as a full TrainConfig, in grid order, stage by stage (``stages``)."""
        return [self.point_config(point) for stage in self.stages() for point in stage]

    def to_dict(self) -> dict[str, Any]:
        """Plain data that validates back to this config (train's grid-owned fields left out)."""
        return json.loads(self.model_dump_json(exclude={"train": {*GRID, "data"}}))

    def sweep_dir(self) -> Path:
        return sweep_path(self.storage, self.name)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(source: str) -> dict[str, Any]:
    """A preset name or a YAML file path, as a mapping."""
    path = PRESETS_DIR / f"{source}.yaml" if re.fullmatch(r"[A-Za-z0-9_-]+", source) else Path(source)
    if not path.is_file():
        if path.parent == PRESETS_DIR:
            raise ConfigError(f"unknown preset {source!r}; choose one of {', '.join(preset_names())} or give a YAML file")
        raise ConfigError(f"config file {source} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:  # where the parser stopped, as editors count (from 1)
        mark = err.problem_mark or err.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({err.problem or err.context})") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not readable YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=yaml-value`` to ``data`` in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"--set {assignment!r}: expected key=value with a dotted key, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML") from None
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    node[leaf] = value


def load_sweep(source: str, overrides: list[str] = (), name: str | None = None, storage: str | None = None,
               tracking_uri: str | None = None) -> SweepConfig:
    """Read, override and validate a sweep config (ConfigError names the first bad field)."""
    data = read_yaml(source)
    for assignment in overrides:
        apply_override(data, assignment)
    for key, value in (("name", name), ("storage", storage)):
        if value is not None:
            data[key] = value
    if tracking_uri is not None:
        data.setdefault("tracking", {})["uri"] = tracking_uri
    return validate_sweep(data)


def validate_sweep(data: dict[str, Any], source: str = "") -> SweepConfig:
    """``SweepConfig(**data)``, with a failure as one ConfigError line naming the field.

    (``model_validate``, not ``**data``: a YAML mapping can have non-string keys like ``1: 2``.)
    """
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        # every problem at once, unknown keys first (a typo'd key also leaves its field missing)
        errors = sorted(err.errors(), key=lambda error: error["type"] != "extra_forbidden")
        if any(error["loc"] == ("data",) for error in errors):  # train.data is a copy of it
            errors = [error for error in errors if error["loc"] != ("train", "data")]
        problems = list(dict.fromkeys(problem_text(error) for error in errors))
        count = f"{len(problems)} problems: " if len(problems) > 1 else ""
        raise ConfigError(f"{source}{count}{'; '.join(problems)}") from None


# pydantic's wording of a broken rule -> the fix, by error type
FIXES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must hold at least {min_length} value(s)",
    "missing": "is required",
}


def problem_text(error: dict[str, Any]) -> str:
    """One pydantic error as 'field: what is wrong, and the fix' (a whole-config check names its fields itself)."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        return unknown_key(loc)
    field = ".".join(str(part) for part in loc)
    template = FIXES.get(error["type"])
    if template is None:
        message = error["msg"].removeprefix("Value error, ")
        return f"{field}: {message}" if loc else message
    ctx = error.get("ctx", {})
    if error["type"] == "missing":
        return f"{field}: {template} (add {loc[-1]}: to {'.'.join(map(str, loc[:-1])) or 'the top level'})"
    bound = ctx.get("gt", ctx.get("ge", ctx.get("le")))
    example = f" (e.g. --set {field}={bound + 1 if 'gt' in ctx else bound})" if isinstance(bound, (int, float)) else ""
    return f"{field}: {template.format(**ctx)}, not {error['input']!r}{example}"


def unknown_key(loc: tuple[str | int, ...]) -> str:
    """'KEY: unknown key; valid keys of SECTION: ...' for pydantic's extra_forbidden at ``loc``."""
    model: type[BaseModel] = SweepConfig
    for part in loc[:-1]:
        model = model.model_fields[part].annotation  # extra_forbidden's loc runs through section models only
    owned = {TrainConfig: {*GridConfig.model_fields, "data"}, SweepConfig: WRITTEN_BY_VAESWEEP}.get(model, set())
    keys = sorted(set(model.model_fields) - owned)
    section = ".".join(map(str, loc[:-1])) or "the top level"
    key = ".".join(map(str, loc))
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{key}: unknown key{hint}; valid keys of {section}: {', '.join(keys)}"
