"""The packed step as a CUDA graph captures it (vae/step_graph.py): on CPU the same step code runs
eagerly and is checked here for what capture needs (buffers written in place, every step run once,
partial batches); on a GPU (tests marked ``gpu``, skipped without CUDA) the captured step is checked
against the eager one, for exact resume, for host syncs and for an isolated diverging member."""

from __future__ import annotations

import math

import pytest
import torch

from vae.checkpoint import save_checkpoint
from vae.config import TrainConfig
from vae.data import Images
from vae.mnist import load_mnist
from vae.packed_train import PackedTrainer
from vae.step_graph import GraphedSteps
from vae.train import Trainer



def gpu(test):
    """Marked ``gpu`` (``pytest -m gpu`` on the GPU machine) and skipped where CUDA is absent."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


STATIC_BUFFERS = ("order", "step_index", "positions", "epoch_total", "alive", "fail_step", "fail_loss")


@pytest.fixture(scope="module")
def small_mnist(mnist_dir) -> Images:
    return load_mnist(mnist_dir, train_subset=600, test_subset=200)


def configs(device: str = "cpu", **overrides) -> list[TrainConfig]:
    return [TrainConfig(alpha=alpha, k=10, epochs=4, seed=seed, device=device, **overrides)
            for alpha, seed in ((0.5, 0), (0.0, 1), (-math.inf, 2))]


def weights(pack: PackedTrainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in pack.model.state_dict().items()}


def test_the_step_writes_its_buffers_in_place_through_epochs_and_a_resume(small_mnist, tmp_path):
    pack = PackedTrainer(configs(), small_mnist)
    addresses = {name: getattr(pack, name).data_ptr() for name in STATIC_BUFFERS}
    params = [p.data_ptr() for p in pack.model.parameters()]
    pack.train_epoch()
    save_checkpoint(pack.state_dict(), tmp_path / "pack.pt")
    pack.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))
    pack.train_epoch()
    assert {name: getattr(pack, name).data_ptr() for name in STATIC_BUFFERS} == addresses
    assert [p.data_ptr() for p in pack.model.parameters()] == params
    assert pack.step_index.item() == 6, "the device step counter counts the epoch's steps"


@pytest.mark.parametrize("check_every", [1, 4])
def test_every_step_runs_once_whatever_the_failure_check_interval(small_mnist, check_every):
    every_100, checked = PackedTrainer(configs(), small_mnist), PackedTrainer(configs(), small_mnist, check_every=check_every)
    for _ in range(2):
        assert every_100.train_epoch().keys() == checked.train_epoch().keys()
    for name, value in weights(every_100).items():
        assert torch.equal(value, weights(checked)[name]), name


def test_a_partial_last_batch_trains_as_the_trainer_does(mnist_dir):
    data = load_mnist(mnist_dir, train_subset=550, test_subset=100)  # 5 batches of 100 and one of 50
    config = configs()[0]
    trainer, pack = Trainer(config, data), PackedTrainer([config], data)
    for _ in range(2):
        assert trainer.train_epoch()["train_vr_bound_alpha"] == pack.train_epoch()[0]["train_vr_bound_alpha"]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, pack.member_model(0).state_dict()[name]), name


def test_a_graph_needs_a_step():
    with pytest.raises(ValueError, match="at least one step"):
        GraphedSteps(lambda: None, [], 0)


@gpu
def test_graphed_steps_run_each_step_once_replaying_whole_blocks():
    counter = torch.zeros((), dtype=torch.long, device="cuda")
    graphed = GraphedSteps(lambda: counter.add_(1), [], steps=25)
    graphed(60)  # 3 warm-up steps, then 2 replays of 25, then 7 eager ones
    graphed(50)
    torch.cuda.synchronize()
    assert counter.item() == 110 and graphed.graph is not None


@gpu
def test_the_captured_step_trains_as_the_eager_step_on_the_gpu(small_mnist):
    graphed = PackedTrainer(configs("cuda"), small_mnist, check_every=4, graph_steps=2)
    eager = PackedTrainer(configs("cuda"), small_mnist, check_every=4, graph_steps=0)
    for _ in range(3):
        bounds_graphed, bounds_eager = graphed.train_epoch(), eager.train_epoch()
        for i, metrics in bounds_eager.items():
            assert bounds_graphed[i]["train_vr_bound_alpha"] == pytest.approx(metrics["train_vr_bound_alpha"], abs=1e-3)
    assert graphed.graphed.graph is not None, "the graph was captured and replayed"
    for name, value in weights(eager).items():
        assert torch.allclose(weights(graphed)[name], value, rtol=1e-4, atol=1e-5), name
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(graphed.generators, eager.generators)), \
        "replays advance each member's generator as eager steps do"


@gpu
def test_replays_do_not_wait_on_the_host(small_mnist):
    pack = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    pack.train_epoch()  # warm-up and capture
    torch.cuda.set_sync_debug_mode("error")
    try:
        pack.graphed(4)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@gpu
def test_a_graphed_pack_resumes_exactly_and_isolates_a_diverging_member(small_mnist, tmp_path):
    straight = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    first = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    for pack in (straight, first):
        pack.train_epoch()
        with torch.no_grad():
            pack.model.decoder.linears[-1].bias[1, 0] = math.inf
    straight.train_epoch(), straight.train_epoch()
    first.train_epoch()
    save_checkpoint(first.state_dict(), tmp_path / "pack.pt")
    resumed = PackedTrainer(configs("cuda"), small_mnist, graph_steps=2)
    resumed.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))
    assert sorted(resumed.train_epoch()) == [0, 2]
    assert list(resumed.failures) == [1] and "at epoch 2, step 1" in str(resumed.failures[1])
    for name, value in weights(straight).items():  # the resumed epoch warms up eagerly, the straight one replays
        assert torch.allclose(weights(resumed)[name], value, rtol=1e-5, atol=1e-6), name
