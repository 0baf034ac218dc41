"""The captured training step (trainer.core.capture) on the CPU: the static-buffer
step is the eager step bit for bit, its checkpoints resume either way, and
`cuda_graph` decides and explains where capture applies. Only capture and
replay themselves need a GPU (the last test, skipped without CUDA)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from trainer.core import schedules
from trainer.core.capture import StaticStep, plan
from trainer.core.engine import EarlyStopping, Schedule, Trainer, TrainStep
from trainer.core.errors import UserError
from trainer.core.pipeline import BatchTransform, DeviceBatches
from test_engine import data


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    "adam": (torch.optim.Adam, {"weight_decay": 1e-4}),
}


def make_trainer(optimizer: str, *, static: bool, fused: bool, device="cpu", epochs=2, grad_clip=0.0) -> Trainer:
    """96 samples in batches of 20 (four full, one partial), random shifts,
    dropout, a per-step one-cycle schedule (lr only: the momentum stays the
    optimizer's, as it must for a graph). `fused`: the optimizer a captured
    run builds (fused, its lr a tensor)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4)).to(device)
    cls, kwargs = OPTIMIZERS[optimizer]
    lr = torch.tensor(0.05, device=device) if fused else 0.05
    opt = cls(model.parameters(), lr=lr, **kwargs, **({"fused": True} if fused else {"foreach": True}))
    x, y = data()
    tx, ty = data(40, seed=1)
    train = DeviceBatches(x.to(device), y.to(device), 20, BatchTransform(shift=2), shuffle=True, seed=0, train=True)
    test = DeviceBatches(tx.to(device), ty.to(device), 20, BatchTransform(), train=False)
    sched, interval = schedules.build("onecycle", opt, lr=0.05, epochs=epochs, steps_per_epoch=len(train),
                                      interval="step")
    step = TrainStep(model, nn.CrossEntropyLoss(label_smoothing=0.1), opt, torch.device(device), grad_clip=grad_clip)
    return Trainer(step, train_batches=train, eval_batches={"test": test},
                   schedule=Schedule(epochs, sched, interval, EarlyStopping("test/acc"), log_every_n_steps=3),
                   static_step=StaticStep(step, batch_size=20, capture=device == "cuda") if static else None)


def fitted(optimizer: str, **kwargs) -> Trainer:
    """Built and trained at once: dropout draws from the global RNG, which
    make_trainer seeds, so two trainers must not interleave."""
    trainer = make_trainer(optimizer, **kwargs)
    trainer.fit()
    return trainer


def weights(trainer: Trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.step.model.state_dict().items()}


def same_weights(a: Trainer, b: Trainer) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused-tensor-lr"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_static_step_is_the_eager_step_bit_for_bit(optimizer, fused):
    eager = fitted(optimizer, static=False, fused=fused)
    static = fitted(optimizer, static=True, fused=fused)
    assert static.static_step.steps == 8  # four full batches an epoch; the partial ones ran eagerly
    assert same_weights(eager, static)
    moment = "momentum_buffer" if optimizer == "sgd" else "exp_avg"
    assert torch.equal(eager.step.optimizer.state_dict()["state"][0][moment],
                       static.step.optimizer.state_dict()["state"][0][moment])
    # The epoch's sums are added inside the step: the same logged numbers.
    for a, b in zip(eager.history, static.history):
        assert (a["train/loss"], a["train/acc"], a["lr"], a["test/acc"]) == (b["train/loss"], b["train/acc"], b["lr"],
                                                                              b["test/acc"])


def test_static_step_clips_gradients_as_the_eager_step_does():
    eager = fitted("sgd", static=False, fused=False, epochs=1, grad_clip=0.01)
    static = fitted("sgd", static=True, fused=False, epochs=1, grad_clip=0.01)
    unclipped = fitted("sgd", static=True, fused=False, epochs=1)
    assert same_weights(eager, static)
    assert not same_weights(static, unclipped)


def test_static_checkpoint_resumes_exactly_and_into_an_eager_run():
    """A captured run's optimizer reads its lr from a tensor: the checkpoint
    keeps it as a float, resuming fills the new run's own tensor (the graph
    keeps reading it), and an eager run can resume the same file."""
    straight = fitted("adam", static=True, fused=True)
    first = make_trainer("adam", static=True, fused=True)
    first.schedule = dataclasses.replace(first.schedule, epochs=1)
    first.fit()
    state = first.state_dict()
    assert isinstance(state["optimizer"]["param_groups"][0]["lr"], float)

    second = make_trainer("adam", static=True, fused=True)
    lr_tensor = second.step.optimizer.param_groups[0]["lr"]
    second.load_state_dict(state)
    assert second.step.optimizer.param_groups[0]["lr"] is lr_tensor
    assert float(lr_tensor) == state["optimizer"]["param_groups"][0]["lr"]
    second.fit()
    assert same_weights(straight, second)
    assert [r["train/loss"] for r in straight.history] == [r["train/loss"] for r in second.history]

    eager = make_trainer("adam", static=False, fused=False)
    eager.load_state_dict(state)
    group = eager.step.optimizer.param_groups[0]
    assert isinstance(group["lr"], float) and group["foreach"] and not group["fused"]
    eager.fit()  # foreach Adam refuses a tensor lr: this would raise if one leaked through
    assert eager.history[-1]["epoch"] == 2


CUDA = torch.device("cuda")  # a device object: no GPU needed to plan for one
FINE = dict(precision="fp32", nan_policy="stop", pipeline="device", world_size=1, compile=False,
            optimizer="torch.optim.SGD")


@pytest.mark.parametrize("change, key", [
    ({"precision": "fp16"}, "precision=fp16"), ({"nan_policy": "skip"}, "train.nan_policy=skip"),
    ({"pipeline": "loader"}, "pipeline=loader"), ({"world_size": 2}, "DDP"), ({"compile": True}, "compile=true"),
    ({"optimizer": "torch.optim.RMSprop"}, "torch.optim.RMSprop"),
    ({"changes_momentum": True}, "scheduler.cycle_momentum=true"),
])
def test_auto_says_in_one_line_why_it_trains_eagerly_and_true_refuses(change, key):
    capture, line = plan("auto", CUDA, **{**FINE, **change})
    assert not capture and key in line and line.startswith("Training eagerly") and "\n" not in line
    with pytest.raises(UserError, match=f"cuda_graph=true cannot apply: .*{key.split('=')[0]}"):
        plan(True, CUDA, **{**FINE, **change})


def test_auto_captures_on_cuda_only_and_true_on_a_cpu_is_refused():
    assert plan("auto", CUDA, **FINE) == (True, "")
    assert plan("auto", CUDA, **{**FINE, "precision": "bf16", "optimizer": "torch.optim.AdamW"}) == (True, "")
    assert plan(False, CUDA, **FINE) == (False, "")
    assert plan("auto", torch.device("cpu"), **FINE) == (False, "")  # nothing to say on a CPU
    with pytest.raises(UserError, match="cuda_graph=true needs a CUDA device.*cpu"):
        plan(True, torch.device("cpu"), **FINE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_cuda_graph_trains_like_the_eager_loop(optimizer):
    """On a GPU: capture happens once, replays train, and the result matches
    the eager loop with the same fused optimizer (same kernels; replay may
    differ from eager in the last bits, so compare closely, not exactly)."""
    eager = fitted(optimizer, static=False, fused=True, device="cuda", epochs=3)
    graph = fitted(optimizer, static=True, fused=True, device="cuda", epochs=3)
    assert graph.static_step.graph is not None and graph.static_step.capture_seconds is not None
    for k, v in weights(eager).items():
        torch.testing.assert_close(weights(graph)[k], v, rtol=1e-4, atol=1e-5)
    assert abs(eager.history[-1]["train/loss"] - graph.history[-1]["train/loss"]) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_run_captures_by_default_and_resumes(synthetic_root, tmp_path):
    """The CLI on a GPU: auto captures (said at the start, capture time in
    metrics.json), and a stopped run resumes captured to the same end."""
    from helpers import metrics, run_cli, run_dirs, tiny

    args = tiny(synthetic_root, "device=cuda", "epochs=2", "lr=0.05", "model.hidden=[32]")
    proc = run_cli(args, tmp_path, check=True)
    assert "Whole training step in one CUDA graph" in proc.stdout
    (run_dir,) = run_dirs(tmp_path)
    m = metrics(run_dir)
    assert m["status"] == "completed" and m["timing"]["capture_seconds"] > 0
    assert m["final"]["test/acc"] > 0.6
    eager = run_cli([*args, "cuda_graph=false", f"hydra.run.dir={tmp_path / 'eager'}"], tmp_path, check=True)
    assert "CUDA graph" not in eager.stdout
    assert abs(metrics(tmp_path / "eager")["final"]["test/acc"] - m["final"]["test/acc"]) < 0.05
