"""CPU numerics of the training step: denormals flushed on every thread, bf16 output-layer products."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vae.bounds import log_weights, vr_bound
from vae.config import TrainConfig
from vae.data import Images, binarize
from vae.model import VAE
from reference_trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

# A fresh process with two intra-op threads builds a trainer, then asks whether every thread flushes.
FRESH_PROCESS = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(2)
    if sys.argv[1] == "pool-first":
        torch.ones(1 << 20).mul_(2)  # a parallel operation starts the thread pool before the trainer
    from vae.config import TrainConfig
    from vae.data import Images
    from vae.denormals import denormals_flushed, flushing_denormals
    sys.path.insert(0, "tests")  # the reference trainer (the process runs in the repository root)
    from reference_trainer import Trainer
    images, labels = torch.rand(200, 784), torch.zeros(200, dtype=torch.long)
    trainer = Trainer(TrainConfig(k=5, device="cpu"), Images(images, labels, images[:50], labels[:50], (28, 28)))
    trainer.train_epoch()
    with flushing_denormals():  # what every training step runs under
        print(denormals_flushed(), 5e-324 > 0)
    print(5e-324 > 0)  # the caller's own floats keep their denormals
""")


def fresh_process(order: str) -> str:
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, order], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not torch.backends.cpu.get_cpu_capability().startswith("AVX"),
                    reason="flush-to-zero is an x86 (SSE/AVX) mode")
def test_a_fresh_trainer_process_computes_with_denormals_flushed_on_every_thread():
    assert fresh_process("trainer-first").split() == ["True", "False", "True"]
    # the check can fail: threads started before the mode was set keep computing denormals
    assert fresh_process("pool-first").split() == ["False", "False", "True"]


def step(model: VAE, x: torch.Tensor, seed: int = 3) -> tuple[float, dict[str, torch.Tensor]]:
    """One training loss and its gradients, with the same noise every call."""
    model.zero_grad(set_to_none=True)
    loss = -vr_bound(log_weights(model, x, 5, torch.Generator().manual_seed(seed)), 0.5).mean()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_bf16_output_layer_trains_within_bf16_rounding_of_float32_and_evaluates_in_float32():
    torch.manual_seed(0)
    model = VAE(k=30)
    x = binarize(torch.rand(100, 784), torch.Generator().manual_seed(1))
    loss32, grads32 = step(model, x)
    model.bf16_output_layer = True
    loss16, grads16 = step(model, x)
    # bf16 keeps 8 bits of mantissa: products of 200 terms accumulated in float32 stay within 1e-3
    assert abs(loss16 - loss32) < 1e-3 * abs(loss32)
    for name, grad in grads32.items():
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), grads16[name].flatten(), dim=0)
        assert cosine > 0.999, name
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # the flag acts where the CPU has bf16 units
        assert not torch.equal(grads16["decoder.4.weight"], grads32["decoder.4.weight"])
    z = torch.randn(7, 100, 30)
    with torch.no_grad():  # evaluation never takes the bf16 path
        evaluated = model.log_px_given_z(x, z)
        model.bf16_output_layer = False
        assert torch.equal(evaluated, model.log_px_given_z(x, z))
    assert torch.backends.mkldnn.matmul.fp32_precision == "none", "the precision is restored after each product"


def test_the_trainer_takes_the_flag_from_its_config_and_a_checkpoint_resumes_under_either():
    images, labels = torch.rand(300, 784), torch.zeros(300, dtype=torch.long)
    data = Images(images, labels, images[:50], labels[:50], (28, 28))
    plain = Trainer(TrainConfig(k=5, epochs=1, device="cpu"), data)
    plain.train_epoch()
    fast = Trainer(TrainConfig(k=5, epochs=2, device="cpu", bf16_output_layer=True), data)
    fast.load_state_dict(plain.state_dict())
    assert fast.model.bf16_output_layer and not plain.model.bf16_output_layer
    assert fast.train_epoch()["epoch"] == 2


def test_binarisation_writes_the_comparison_of_its_uniforms_as_floats():
    x = torch.rand(50, 784)
    ours = binarize(x, torch.Generator().manual_seed(4))
    uniforms = torch.rand(x.shape, generator=torch.Generator().manual_seed(4))
    assert ours.dtype == torch.float32 and torch.equal(ours, (uniforms < x).float())
