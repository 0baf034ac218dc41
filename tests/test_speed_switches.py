"""The speed switches train correctly on the CPU (GPU-only ones skip cleanly)."""
from __future__ import annotations

import pytest
import torch

from helpers import metrics, run_cli, run_dirs, tiny
from trainer.core.data import load
from trainer.core.pipeline import BatchTransform, DeviceBatches, LoaderBatches

LEARNS = ["epochs=2", "lr=0.05"]
SMALL_MLP = "model.hidden=[32]"


@pytest.mark.parametrize("switches", [
    ["model=conv", "model.channels=[8,16]", "model.head_hidden=[32]", "channels_last=true", "precision=bf16"],
    # No flips: the synthetic classes are positions, a mirrored one is another class.
    [SMALL_MLP, "pipeline=loader", "loader.num_workers=1", "train.shuffle=true", "transform=augment",
     "transform.hflip=0", "transform.shift=1", "transform.erase=0", "epochs=4"],
    [SMALL_MLP, "compile=true"],
], ids=["conv-channels_last-bf16", "loader", "compile"])
def test_switch_trains(synthetic_root, tmp_path, switches):
    run_cli(tiny(synthetic_root, *LEARNS, *switches), tmp_path, check=True)
    (run_dir,) = run_dirs(tmp_path)
    m = metrics(run_dir)
    assert m["status"] == "completed"
    assert m["final"]["test/acc"] > 0.6  # chance is 0.1; the synthetic classes are easy
    if "compile=true" in switches:
        # Warm-up reported apart: the first step (compilation) takes far longer than a steady one.
        steady_step = m["history"][-1]["epoch_seconds"] / (512 // 32)
        assert m["timing"]["first_step_seconds"] > 5 * steady_step


def test_device_and_loader_pipelines_give_the_same_batches(synthetic_root):
    x, y = load("mnist", synthetic_root, train=True)
    transform = BatchTransform(mean=0.5, std=1.0)
    device = DeviceBatches(x, y, 64, transform, shuffle=True, seed=3)
    loader = LoaderBatches(x, y, 64, transform, torch.device("cpu"), shuffle=True, seed=3)
    for (xa, ya), (xb, yb) in zip(device.epoch(2), loader.epoch(2)):
        assert torch.equal(ya, yb)
        assert torch.allclose(xa, xb, atol=1e-6)


def test_augmentation_is_per_sample_and_reproducible(synthetic_root):
    x, y = load("fashion_mnist", synthetic_root, train=True)
    batches = DeviceBatches(x, y, 128, BatchTransform(shift=2, hflip=0.5, erase=0.5), shuffle=True, seed=0)
    first = next(iter(batches.epoch(1)))[0]
    again = next(iter(batches.epoch(1)))[0]
    plain = BatchTransform()(x[batches.order(1)[:128]])
    assert torch.equal(first, again)  # same (seed, epoch, step): same augmentation (exact resume)
    changed = (first != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.3  # most samples are augmented
    same = x[:1].expand(64, *x.shape[1:]).clone()  # one image 64 times: per-sample randomness augments each its own way
    out = BatchTransform(shift=2, hflip=0.5, erase=0.5)(same, torch.Generator().manual_seed(0), train=True)
    assert len({tuple(img.flatten().tolist()) for img in out}) > 8
    assert not torch.equal(first, next(iter(batches.epoch(2)))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_switches_train(synthetic_root, tmp_path):
    run_cli(tiny(synthetic_root, *LEARNS, SMALL_MLP, "device=cuda", "precision=bf16", "compile=true"), tmp_path,
            check=True)
    (run_dir,) = run_dirs(tmp_path)
    assert metrics(run_dir)["final"]["test/acc"] > 0.6
