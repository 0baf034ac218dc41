"""The engine in-process: Trainer, EarlyStopping, evaluate, the schedules,
built directly from tensors and modules (no config, no subprocess)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from trainer.core import schedules
from trainer.core.engine import (Checkpointing, Diverged, EarlyStopping, Interrupted, Safety, Schedule, Trainer,
                                 TrainStep, evaluate)
from trainer.core.pipeline import BatchTransform, DeviceBatches


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


def data(n: int = 96, seed: int = 0):
    """n separable 28x28 uint8 images in 4 classes (a bright quadrant each)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.uint8)
    for c in range(4):
        r, q = divmod(c, 2)
        images[labels == c, r * 14:(r + 1) * 14, q * 14:(q + 1) * 14] += 200
    return images, labels


def make_trainer(tmp_path=None, *, epochs=2, shuffle=True, scheduler="none", stop=lambda: 0, every_n_steps=0,
                 **safety) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data()
    tx, ty = data(40, seed=1)
    train = DeviceBatches(x, y, 16, BatchTransform(shift=1), shuffle=shuffle, seed=0, train=True)
    test = DeviceBatches(tx, ty, 20, BatchTransform(), train=False)
    sched, interval = schedules.build(scheduler, optimizer, lr=1e-2, epochs=epochs, steps_per_epoch=len(train),
                                      interval="step")
    return Trainer(TrainStep(model, nn.CrossEntropyLoss(), optimizer, torch.device("cpu")), train_batches=train,
                   eval_batches={"test": test},
                   schedule=Schedule(epochs, sched, interval, EarlyStopping("test/acc"), log_every_n_steps=2),
                   checkpointing=Checkpointing(tmp_path, every_n_steps), safety=Safety(stop_requested=stop, **safety))


def weights(trainer: Trainer) -> dict:
    return {k: v.clone() for k, v in trainer.step.model.state_dict().items()}


# --------------------------------------------------------- the training step
def test_the_step_is_forward_loss_backward_clip_optimizer_step_then_the_sums():
    """TrainStep (the one step the eager loop and the captured step both run)
    against the textbook loop written out here, bit for bit, with clipping
    that bites: a step in another order gives other weights."""
    def model_and_optimizer():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 4))
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    model, optimizer = model_and_optimizer()
    step = TrainStep(model, nn.CrossEntropyLoss(), optimizer, torch.device("cpu"), grad_clip=0.05)
    reference, reference_optimizer = model_and_optimizer()
    images, labels = data()
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    for start in range(0, len(labels), 16):
        x, y = images[start:start + 16].float() / 255, labels[start:start + 16]
        reference_optimizer.zero_grad()
        logits = reference(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        reference_optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        assert torch.equal(step(x, y), loss.detach())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert torch.equal(step.running.loss_sum, loss_sum) and torch.equal(step.running.correct, correct)


# ------------------------------------------------------------------ Trainer
def test_fit_learns_and_writes_a_history_row_per_epoch(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3)
    final = trainer.fit()
    assert [row["epoch"] for row in trainer.history] == [1, 2, 3]
    assert [row["step"] for row in trainer.history] == [6, 12, 18]  # 96 / 16 = 6 steps an epoch
    assert trainer.history[-1]["train/loss"] < trainer.history[0]["train/loss"]
    assert final["test/acc"] == trainer.history[-1]["test/acc"] > 0.9
    assert final["test_samples"] == 40 and final["epochs"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_state_dict_round_trip_continues_exactly(tmp_path):
    """Stop after epoch 1, load into a fresh Trainer, finish: the same weights
    and history as training straight through (shuffle, augmentation, dropout,
    a per-step cosine schedule, Adam)."""
    straight = make_trainer(epochs=2, scheduler="cosine")
    straight.fit()

    first = make_trainer(epochs=2, scheduler="cosine")
    first.schedule = dataclasses.replace(first.schedule, epochs=1)  # the same 2-epoch schedule, stopped after epoch 1
    first.fit()
    state = first.state_dict()
    second = make_trainer(epochs=2, scheduler="cosine")
    second.load_state_dict(state)
    second.fit()
    a, b = weights(straight), weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in row.items() if "second" not in k} for row in straight.history]
    assert strip == [{k: v for k, v in row.items() if "second" not in k} for row in second.history]


def test_a_stop_request_mid_epoch_saves_where_it_stands(tmp_path):
    asked = {"now": 0}
    trainer = make_trainer(tmp_path, epochs=2, stop=lambda: asked["now"])

    real_step = trainer.train_step

    def step(x, y, weight=1.0):
        if trainer.position.global_step == 3:
            asked["now"] = 2  # SIGINT arrives during step 4
        return real_step(x, y, weight)

    trainer.train_step = step
    with pytest.raises(Interrupted) as stopped:
        trainer.fit()
    assert stopped.value.signum == 2
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    # Stops at the next point where it checks (a logging point: every 2 steps), with that step finished.
    assert saved["position"] == {"epoch": 1, "step": 4, "global_step": 4}
    assert saved["partial"]["seen"] == 4 * 16


def test_divergence_names_the_step_and_what_is_kept(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2, every_n_steps=0)
    real_step = trainer.train_step

    def step(x, y, weight=1.0):
        bad = trainer.position.epoch == 2 and trainer.position.step == 2
        return real_step(x * float("nan") if bad else x, y, weight)

    trainer.train_step = step
    with pytest.raises(Diverged) as diverged:
        trainer.fit()
    message = str(diverged.value)
    assert "epoch 2, step 3" in message or "epoch 2, steps 3-4" in message, message
    assert "checkpoints/last.ckpt keeps the state at the end of epoch 1" in message

    fresh = make_trainer(None, epochs=1)
    fresh.train_step = lambda x, y, weight=1.0: Trainer.train_step(fresh, x * float("nan"), y, weight)
    with pytest.raises(Diverged, match="no checkpoint was saved before it"):
        fresh.fit()


def test_nan_policy_skip_skips_and_gives_up():
    trainer = make_trainer(None, epochs=1, nan_policy="skip", max_skipped_batches=1)
    real_step = Trainer.train_step
    trainer.train_step = lambda x, y, weight=1.0: real_step(trainer, x * float("nan"), y, weight)
    with pytest.raises(Diverged, match="train.max_skipped_batches=1"):
        trainer.fit()
    assert trainer.skipped_batches == 2


# ------------------------------------------------------------- evaluation
def test_evaluate_sums_over_the_whole_split_and_counts_the_confusion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))
    x, y = data(50)
    batches = DeviceBatches(x, y, 16, BatchTransform(), train=False)  # 16+16+16+2: a last partial batch
    result = evaluate(model, batches, nn.CrossEntropyLoss(), torch.device("cpu"), num_classes=4, keep_wrong=5)
    inputs = BatchTransform()(x)
    logits = model(inputs).detach()
    assert result.samples == 50
    assert result.loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert result.acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(y.tolist(), logits.argmax(1).tolist()):
        expected[t, p] += 1
    assert torch.equal(result.confusion, expected)
    wrong_x, wrong_pred, wrong_true = result.wrong
    assert len(wrong_pred) == min(5, int((logits.argmax(1) != y).sum()))
    assert bool((wrong_pred != wrong_true).all())
    assert model.training  # put back as it was


# ------------------------------------------------------------ EarlyStopping
@pytest.mark.parametrize("mode, values, patience, min_delta, stops_after, best", [
    ("max", [0.5, 0.6, 0.6, 0.59], 2, 0.0, 4, 0.6),
    ("max", [0.5, 0.505, 0.51, 0.52], 2, 0.01, 3, 0.5),   # gains below min_delta do not count
    ("min", [1.0, 0.9, 0.95, 0.97, 0.8], 2, 0.0, 4, 0.9),
    ("max", [0.5, 0.4, 0.3, 0.2], 0, 0.0, None, 0.5),      # patience 0: never stops
])
def test_early_stopping(mode, values, patience, min_delta, stops_after, best):
    es = EarlyStopping("val/acc", mode, patience, min_delta)
    stopped = None
    for epoch, value in enumerate(values, start=1):
        es.update(value, epoch)
        if es.should_stop:
            stopped = epoch
            break
    assert stopped == stops_after and es.best == best


# ---------------------------------------------------------------- schedules
def _lrs(name: str, steps: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, _ = schedules.build(name, opt, lr=0.1, epochs=1, steps_per_epoch=steps, interval="step", **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warms_up_then_decays_to_min_lr():
    lrs = _lrs("cosine", 10, warmup_epochs=0.2, min_lr=0.01)
    assert lrs[:2] == pytest.approx([0.05, 0.1])  # linear warm-up over 2 steps
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[-1] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_onecycle_peaks_at_the_runs_lr():
    lrs = _lrs("onecycle", 20, pct_start=0.25)
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and lrs.index(max(lrs)) in (4, 5)
    assert lrs[-1] < lrs[0]


@pytest.mark.parametrize("cycle", [False, True])
def test_onecycle_keeps_the_optimizers_momentum_unless_told_to_cycle_it(cycle):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.5)
    sched, _ = schedules.build("onecycle", opt, lr=0.1, epochs=1, steps_per_epoch=8, interval="step",
                               cycle_momentum=cycle)
    seen = set()
    for _ in range(8):
        seen.add(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert (seen == {0.5}) is not cycle
    assert schedules.changes_momentum("onecycle", cycle) is cycle and not schedules.changes_momentum("cosine", True)


def test_rescale_changes_the_lr_from_here_on_schedule_included():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, _ = schedules.build("cosine", opt, lr=0.1, epochs=1, steps_per_epoch=10, interval="step")
    for _ in range(3):
        opt.step()
        sched.step()
    before = opt.param_groups[0]["lr"]
    schedules.rescale(opt, sched, 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(before * 0.5)
    opt.step()
    sched.step()
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    ref_sched, _ = schedules.build("cosine", reference, lr=0.05, epochs=1, steps_per_epoch=10, interval="step")
    for _ in range(4):
        reference.step()
        ref_sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])
