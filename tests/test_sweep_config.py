"""Sweep configs: presets validate, overrides apply, bad input names its field."""

from __future__ import annotations

import pytest

from sweeps.config import ConfigError, apply_override, load_sweep, preset_names


@pytest.mark.parametrize("preset", ["smoke", "mini", "paper", "optuna"])
def test_presets_validate(preset):
    config = load_sweep(preset)
    assert config.name == preset and config.grid_points()


def test_paper_preset_is_the_study_grid():
    config = load_sweep("paper")
    assert config.grid.alpha == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0]
    assert config.grid.k == [30, 40, 50] and len(config.grid.seed) == 10
    assert len(config.grid_points()) == 240 and config.train.epochs == 1000
    assert (config.eval.bound_samples, config.eval.is_samples) == (10, 2000)
    assert (config.resources.gpu, config.resources.pack) == ("auto", "auto")


@pytest.mark.parametrize("preset, overrides, gpus, expected", [
    ("paper", [], 1, (1.0, 80)),  # on a GPU: a pack per k, one GPU each
    ("paper", [], 0, (0.0, 1)),  # on CPU: a trial per grid point
    ("paper", ["grid.seed=[0, 1, 2]", "grid.k=[30]"], 1, (1.0, 24)),  # the k = 30 column in one pack
    ("paper", ["resources.pack=16"], 1, (1.0, 16)),  # explicit values stay
    ("paper", ["resources.gpu=0.5"], 0, (0.5, 80)),
    ("optuna", [], 1, (1.0, 1)),  # a search proposes one point at a time
    ("paper", ["train.binarization=static"], 1, (1.0, 80)),  # static binarisation packs too
    ("smoke", [], 1, (0.0, 1)),  # smoke and mini say gpu: 0, so they stay unpacked on a GPU machine
])
def test_auto_resources_pack_on_a_gpu_and_not_on_a_cpu(preset, overrides, gpus, expected):
    config = load_sweep(preset, overrides).resolved(gpus)
    assert (config.resources.gpu, config.resources.pack) == expected
    assert len(config.packs()) == -(-len(config.grid_points()) // expected[1]) or preset == "optuna"


def test_trials_in_grid_order_with_overrides():
    config = load_sweep("smoke", ["grid.alpha=[0, 1]", "grid.k=[5]", "train.epochs=2", "eval.probe_epochs=[1]"])
    assert [(t.alpha, t.k, t.seed, t.epochs) for t in config.grid_points()] == [(0.0, 5, 0, 2), (1.0, 5, 0, 2)]


def test_name_storage_and_tracking_flags_override_the_file(tmp_path):
    config = load_sweep("smoke", name="mine", storage=str(tmp_path), tracking_uri="http://127.0.0.1:5000")
    assert config.sweep_dir() == tmp_path / "mine" and config.tracking.uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.kk=3"], "train.kk: unknown key; valid keys of train: activation,"),
        (["grid.alpha=[]"], "grid.alpha"),
        (["grid.k=[0, 10]"], "grid.k"),
        (["grid.alpha=[.nan]"], "NaN"),
        (["train.epochs=-1"], "train.epochs"),
        (["train.alpha=0.5"], "set grid.alpha instead"),
        (["eval.probe_epochs=[1, 50]"], "outside 1..train.epochs"),
        (["resources.gpu=1.5"], "whole number"),
        (["resources.gpu=lots"], "resources.gpu"),
        (["resources.pack=many"], "resources.pack"),
        (["train.matmul_precision=medium"], "train.matmul_precision"),
        (["name=bad name"], "name"),
        (["search=random"], "search"),
        (["optuna.alpha_range=[1, 0]"], "alpha_range"),
        (["epochs"], "expected key=value"),
        (["train..epochs=3"], "expected key=value"),
        (["grid.alpha=[0, 1"], "not valid YAML"),
        (["train.epochs.x=3"], "not a section"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_sweep("smoke", overrides)


def test_unknown_preset_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose one of"):
        load_sweep("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: not valid YAML \(expected ',' or '\]'"):
        load_sweep(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_sweep(str(listy))
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(str(tmp_path / "missing.yaml"))


def test_to_dict_round_trips_including_infinite_alpha():
    config = load_sweep("smoke", ["grid.alpha=[-.inf, 0, 1]"])
    again = type(config)(**config.to_dict())
    assert again == config and again.grid.alpha[0] == float("-inf")


def test_apply_override_builds_sections():
    data: dict = {}
    apply_override(data, "eval.is_samples=50")
    assert data == {"eval": {"is_samples": 50}}
    assert "smoke" in preset_names()


def test_packs_group_the_grid_points_of_one_k_in_grid_order():
    config = load_sweep("paper", ["resources.pack=16"])
    packs = config.packs()
    assert [len(pack) for pack in packs] == [16, 16, 16, 16, 16] * 3  # 80 points per k
    assert all(len({point["k"] for point in pack}) == 1 for pack in packs)
    points = [point for pack in packs for point in pack]
    assert sorted(map(str, points)) == sorted(str({"alpha": t.alpha, "k": t.k, "seed": t.seed}) for t in config.grid_points())
    assert [len(p) for p in load_sweep("smoke", ["resources.pack=4"]).packs()] == [3, 3], "never across k"
    assert len(load_sweep("smoke", ["resources.pack=1"]).packs()) == 6, "pack 1: a trial per grid point"
    assert len(load_sweep("smoke").resolved(gpus=0).packs()) == 6, "on CPU, auto is a trial per grid point"


@pytest.mark.parametrize("overrides, field", [
    (["resources.pack=2"], "Optuna search proposes one point at a time"),
    (["resources.pack=0"], "resources.pack"),
])
def test_packs_are_refused_where_they_cannot_work(overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_sweep("optuna" if "=2" in overrides[0] else "smoke", overrides)


@pytest.mark.parametrize("setting, field", [("train.binarization=static", "binarization"),
                                            ("train.bf16_output_layer=true", "bf16_output_layer")])
def test_settings_once_of_the_unpacked_trainer_pack_too(setting, field):
    config = load_sweep("smoke", ["resources.pack=3", setting])
    assert config.packed and str(getattr(config.train, field)).lower() in setting


def test_a_resumed_sweep_packs_as_it_started_whatever_the_machine(tmp_path):
    from sweeps.driver.preflight import resolve_resources
    from sweeps.layout import write_settings

    overrides = ["grid.k=[30]", "grid.seed=[0,1,2]"]
    started = load_sweep("paper", overrides, storage=str(tmp_path)).resolved(gpus=1)  # started on a GPU machine
    started.sweep_dir().mkdir(parents=True)
    write_settings(started)
    again = resolve_resources(load_sweep("paper", overrides, storage=str(tmp_path)), address=None)  # resumed here
    assert (again.resources.gpu, again.resources.pack) == (1.0, 24) and again.to_dict() == started.to_dict()
