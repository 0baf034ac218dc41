"""The Trainer: one loop, top to bottom.

    for epoch:
        for batch:  forward, loss, backward, step      (no host sync per step)
        evaluate on the eval split, log, checkpoint, early-stop
    test

It takes everything ready-made (model, loss, optimizer, scheduler, batches,
tracker) and never reads a config. Its whole state, down to the position
inside an epoch and the RNG states, round-trips through state_dict(), which
is what makes resume exact. `evaluate()` is the one evaluation pass: the
Trainer, the dashboards and trainer-eval all call it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.core import checkpoint, distributed, runtime, schedules
from trainer.core.errors import UserError
from trainer.core.models import unwrap

NAN_POLICIES = ("stop", "skip")
MODES = ("auto", "max", "min")  # auto: min for a loss, max for an accuracy (direction())
MONITORS = ("val/acc", "val/loss", "train/acc", "train/loss", "test/acc", "test/loss")


class Diverged(UserError):
    """The loss became NaN or infinite."""


class Pruned(Exception):
    """A search's pruner stopped the run after an epoch (raised by an
    on_epoch_end callback, after that epoch's checkpoint is saved)."""


class Interrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM). `message` says what was saved."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"interrupted by signal {signum}")
        self.signum = signum


def eval_split(has_val: bool) -> str:
    """The split evaluated after every epoch: val when there is one, else test
    (the quickstart's own choice)."""
    return "val" if has_val else "test"


def monitored(monitor: str, has_val: bool) -> str:
    """What `early_stopping.monitor` really watches: val/... means the
    per-epoch evaluation split, which is test when there is no val split."""
    split, _, metric = monitor.partition("/")
    return f"{eval_split(has_val)}/{metric}" if split == "val" else monitor


def direction(monitor: str) -> str:
    """max or min: which way `monitor` improves (a loss falls, an accuracy rises): what mode=auto means."""
    return "min" if monitor.endswith("loss") else "max"


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by `min_delta` for `patience` evaluations (0 = never)."""

    monitor: str = "val/acc"
    mode: str = "max"
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record an evaluation; True when this is a new best."""
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]

    def replay(self, history: list[dict]) -> None:
        """The state the recorded epochs give under this monitor, mode and
        min_delta: a resumed run that watches another metric compares with
        that metric's own best, never with the old one's."""
        rows = [row for row in history if "epoch" in row]
        missing = [row["epoch"] for row in rows if not isinstance(row.get(self.monitor), (int, float))]
        if missing:
            raise UserError(f"early_stopping.monitor={self.monitor}: the run's recorded epochs have no "
                            f"{self.monitor} (epoch {missing[0]}); resume with the monitor the run had")
        self.best, self.best_epoch, self.bad_epochs = None, 0, 0
        for row in rows:
            self.update(row[self.monitor], row["epoch"])


@dataclass
class Position:
    """Where training stands: `epoch` is the one in progress (1-based), `step` the batches done in it."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0


class NullTracker:
    """Tracker that records nothing (non-zero DDP ranks, tests)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def progress(self, *args, **kwargs) -> "NullTracker":
        return self  # its update() and close() do nothing too


# ------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """Sums over a whole split (and over DDP ranks when asked), divided once."""

    loss: float
    acc: float
    samples: int
    confusion: torch.Tensor | None = None        # [true, predicted] counts, when asked for
    wrong: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (x, predicted, true)

    def metrics(self, split: str) -> dict[str, float]:
        return {f"{split}/loss": self.loss, f"{split}/acc": self.acc}


@torch.inference_mode()
def evaluate(model: nn.Module, batches, loss_fn: nn.Module, device: torch.device, precision: str = "fp32", *,
             num_classes: int = 0, keep_wrong: int = 0, across_ranks: bool = True) -> Evaluation:
    """Loss and accuracy of `model` over every batch of `batches`; with
    `num_classes` also the confusion matrix, with `keep_wrong` the first N
    misclassified inputs. `across_ranks`: every DDP rank runs its share and
    the sums are added up (rank 0 alone, e.g. for pictures: False)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device) if num_classes else None
    wrong: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    kept = 0
    try:
        for x, y in batches.epoch(0):  # every rank runs every batch, even an empty share
            with runtime.autocast(device, precision):
                logits = model(x)
                loss = loss_fn(logits, y) if len(y) else logits.sum() * 0.0
            pred = logits.argmax(1)
            loss_sum += loss.float() * len(y)
            correct += (pred == y).sum()
            seen += len(y)
            if confusion is not None:
                confusion += confusion_matrix(pred, y, num_classes)
            if kept < keep_wrong:  # one host sync per batch, only until enough are found
                idx = (pred != y).nonzero().flatten()[: keep_wrong - kept]
                if len(idx):
                    wrong.append((x[idx].cpu(), pred[idx].cpu(), y[idx].cpu()))
                    kept += len(idx)
    finally:
        model.train(was_training)
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=device).double()])
    if across_ranks:
        totals = distributed.all_reduce_sum(totals)
        if confusion is not None:
            confusion = distributed.all_reduce_sum(confusion)
    loss_total, correct_total, seen_total = totals.tolist()
    n = max(seen_total, 1)
    return Evaluation(loss_total / n, correct_total / n, int(seen_total), confusion,
                      tuple(torch.cat(parts) for parts in zip(*wrong)) if wrong else None)


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [C, C] counts, rows = true class, columns = predicted class.

    Works on any device and returns on the inputs' device. Pairs where either
    value falls outside 0..C-1 are ignored (as sklearn does with labels=range(C)).
    """
    preds = preds.reshape(-1).long()
    targets = targets.reshape(-1).long().to(preds.device)
    if preds.numel() != targets.numel():
        raise ValueError(f"preds ({preds.numel()}) and targets ({targets.numel()}) differ in length")
    c = int(num_classes)
    valid = (preds >= 0) & (preds < c) & (targets >= 0) & (targets < c)
    index = targets[valid] * c + preds[valid]
    return torch.bincount(index, minlength=c * c).view(c, c)


# ------------------------------------------------------- the training step
class Running:
    """An epoch's loss and accuracy sums, on the device. A captured step adds
    to the same tensors in place, so they are zeroed, never replaced."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.window_loss = torch.zeros((), device=device)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.window_loss += loss

    def zero_(self) -> "Running":
        for t in (self.loss_sum, self.correct, self.window_loss):
            t.zero_()
        return self


@dataclass
class TrainStep:
    """What is trained, and the one training step: forward, loss, backward,
    clipping, the optimizer step and the epoch's running sums. The eager loop
    (Trainer.train_step) and the captured one (capture.StaticStep) both call
    it, so they cannot drift apart."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: str = "fp32"  # runtime.PRECISIONS
    grad_clip: float = 0.0   # 0 = off

    def __post_init__(self):
        self.scaler = runtime.grad_scaler(self.device, self.precision)  # fp16 only
        self.running = Running(self.device)  # added to inside the step, captured or not

    def __call__(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0, *,
                 keep: Callable[[torch.Tensor], bool] | None = None, keep_grads: bool = False,
                 autocast_cache: bool = True) -> torch.Tensor | None:
        """One step on (x, y); its detached loss, or None where `keep(loss)`
        turned the batch down (nothing stepped). `weight` scales the loss for
        backward only (DDP, see Trainer.train_epoch). `keep_grads`: gradients
        zeroed in place, not dropped (a graph keeps their addresses)."""
        with runtime.autocast(self.device, self.precision, cache=autocast_cache):
            logits = self.model(x)
            # An empty share of a global batch (DDP, fewer samples than ranks)
            # still joins the gradient all-reduce, with a zero loss.
            loss = self.loss_fn(logits, y) if len(y) else logits.sum() * 0.0
        if keep is not None and not keep(loss):
            return None
        self.optimizer.zero_grad(set_to_none=not keep_grads)
        objective = loss * weight if weight != 1.0 else loss
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            if self.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            objective.backward()
            if self.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
        loss = loss.detach()
        self.running.add(loss, logits.detach(), y)
        return loss


# ---------------------------------------------------------------- Trainer
@dataclass(frozen=True)
class Schedule:
    """How long the run trains and what paces it."""

    epochs: int
    scheduler: Any = None
    scheduler_interval: str = "epoch"  # "epoch" or "step"
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    log_every_n_steps: int = 100


@dataclass(frozen=True)
class Checkpointing:
    """Where and when the state is saved; `folder` None saves nothing (DDP ranks but 0, tests)."""

    folder: Path | None = None
    every_n_steps: int = 0  # also inside epochs (0 = at epoch ends only)
    save_best: bool = True
    extra_state: dict = field(default_factory=dict)  # saved verbatim in checkpoints (the run's config)


@dataclass(frozen=True)
class Safety:
    """What stops a run: a non-finite loss, or a signal."""

    nan_policy: str = "stop"  # NAN_POLICIES
    max_skipped_batches: int = 10
    stop_requested: Callable[[], int] = lambda: 0  # returns a signal number when a stop was asked for


@dataclass
class Trainer:
    step: TrainStep
    train_batches: Any
    eval_batches: dict[str, Any]  # {"val": ...} and/or {"test": ...}
    schedule: Schedule
    checkpointing: Checkpointing = field(default_factory=Checkpointing)
    safety: Safety = field(default_factory=Safety)
    tracker: Any = field(default_factory=NullTracker)
    on_epoch_end: Callable[[int, int], None] | None = None  # (epoch, global step): dashboards, a search's pruning
    static_step: Any = None  # capture.StaticStep over `step`: full batches over static buffers (a CUDA graph)

    def __post_init__(self):
        self.position = Position()
        self.history: list[dict] = []
        self.skipped_batches = 0
        self.partial: dict | None = None  # sums of a part-trained epoch, for mid-epoch checkpoints
        self.first_step_time: float | None = None  # wall clock after this process's first step
        self.first_step_seconds: float | None = None
        self.final_eval_seconds = 0.0  # the test pass after the last epoch, timed apart from training
        self.last_saved: Position | None = None  # where the newest last.ckpt stands
        self.eval_split = eval_split("val" in self.eval_batches)
        self.test_samples: int | None = None

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, float]:
        schedule = self.schedule
        while self.position.epoch <= schedule.epochs:
            epoch = self.position.epoch
            train_metrics = self.train_epoch(epoch, start_step=self.position.step)
            evaluation = self.evaluate(self.eval_split)
            row = {"epoch": epoch, "step": self.position.global_step, **train_metrics,
                   **evaluation.metrics(self.eval_split)}
            self.history.append(row)
            monitored_value = row.get(schedule.early_stopping.monitor)
            is_best = monitored_value is not None and schedule.early_stopping.update(monitored_value, epoch)
            if schedule.scheduler is not None and schedule.scheduler_interval == "epoch":
                schedule.scheduler.step()
            self.position = Position(epoch + 1, 0, self.position.global_step)
            self.tracker.log_epoch(row, is_best=is_best)
            self.save("last.ckpt")
            if is_best and self.checkpointing.save_best:
                self.save("best.ckpt")
            if self.on_epoch_end is not None:  # after the saves: a run it stops (Pruned) keeps this epoch
                self.on_epoch_end(epoch, self.position.global_step)
            signum = self.agreed_stop(check=True)
            if signum:
                raise Interrupted(signum)
            if schedule.early_stopping.should_stop:
                es = schedule.early_stopping
                self.tracker.message(f"early stopping: {es.monitor} has not improved for "
                                     f"{es.patience} epoch{'s' if es.patience != 1 else ''} "
                                     f"(best {self.tracker.format_metric(es.monitor, es.best)} at epoch {es.best_epoch})")
                break
        t0 = time.perf_counter()
        final = self.test()
        self.final_eval_seconds = time.perf_counter() - t0
        return final

    def train_epoch(self, epoch: int, start_step: int = 0) -> dict[str, float]:
        """One pass over the training batches, from `start_step` (mid-epoch resume)."""
        self.step.model.train()
        sums = _EpochSums.start(self.step.running, self.partial if start_step else None)
        world = distributed.world_size()
        progress = self.tracker.progress(epoch, self.schedule.epochs, len(self.train_batches), start_step)
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(self.train_batches.epoch(epoch, start_step), start=start_step):
            # DDP averages gradients over ranks; weighting each rank's mean loss by
            # world * local / global size makes that average the global batch's
            # mean even when the parts differ (a last partial batch).
            weight = world * len(y) / self.train_batches.global_size(step) if world > 1 else 1.0
            loss = self._train_batch(x, y, weight, sums)
            if loss is None:  # a skipped non-finite batch
                continue
            if self.first_step_time is None:
                self._first_step_done(t0)
            self.position.step = step + 1
            self.position.global_step += 1
            progress.advance(step + 1)  # a count, no sync: a live bar redraws on its own timer
            if self.schedule.scheduler is not None and self.schedule.scheduler_interval == "step":
                self.schedule.scheduler.step()
            if self.position.global_step % self.schedule.log_every_n_steps == 0 or step + 1 == len(self.train_batches):
                self._log_window(sums, epoch, step + 1, progress)
            if step + 1 < len(self.train_batches):  # a complete epoch is evaluated and saved by fit()
                self._maybe_checkpoint(sums, loss, epoch, step + 1, time.perf_counter() - t0, progress)
        self.sync()
        seconds = sums.seconds + time.perf_counter() - t0
        progress.close()
        self.partial = None
        loss_sum, correct, samples = sums.totals()
        metrics = {
            "train/loss": loss_sum / max(samples, 1),
            "train/acc": correct / max(samples, 1),
            "lr": self.lr,
            "epoch_seconds": seconds,
            "samples_per_second": samples / seconds if seconds > 0 else float("nan"),
        }
        self.check_finite(metrics["train/loss"], epoch, self.position.step)
        return metrics

    def _first_step_done(self, t0: float) -> None:
        # The first step pays for compilation (compile=true) and lazy
        # initialisation: reported apart as warm-up.
        self.sync()
        self.first_step_time = time.time()
        self.first_step_seconds = time.perf_counter() - t0

    def _log_window(self, sums: "_EpochSums", epoch: int, step: int, progress) -> None:
        mean_loss = sums.take_window()
        self.check_finite(mean_loss, epoch, step, since=step + 1 - sums.last_window_steps)
        self.tracker.log_step(self.position.global_step, {"train/loss": mean_loss, "lr": self.lr})
        progress.update(step, mean_loss)

    def _maybe_checkpoint(self, sums: "_EpochSums", loss, epoch: int, step: int, seconds: float, progress) -> None:
        """Mid-epoch: save at `checkpoint.every_n_steps` and when a stop was asked for."""
        g, every = self.position.global_step, self.checkpointing.every_n_steps
        periodic = bool(every) and g % every == 0
        signum = self.agreed_stop(check=periodic or g % self.schedule.log_every_n_steps == 0)
        if not (signum or periodic):
            return
        self.check_finite(loss.item(), epoch, step)
        self.partial = sums.snapshot(seconds)
        self.save("last.ckpt")
        if signum:
            progress.close()
            raise Interrupted(signum)

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor, weight: float, sums: "_EpochSums"):
        """One step (which adds to the epoch's sums); its loss, or None when skipped."""
        if self.static_step is not None and self.static_step.takes(y):
            loss = self.static_step(x, y)
        else:
            loss = self.train_step(x, y, weight)
        if loss is not None:
            sums.count(len(y))
        return loss

    def train_step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0) -> torch.Tensor | None:
        """The step, eagerly: its loss, or None for a batch skipped by train.nan_policy=skip."""
        # A static step's graph keeps the gradients' addresses: zeroed, not dropped.
        return self.step(x, y, weight, keep=self._finite if self.safety.nan_policy == "skip" else None,
                         keep_grads=self.static_step is not None)

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether to step on this loss (train.nan_policy=skip): a non-finite one
        is skipped, up to train.max_skipped_batches times. It needs to know now,
        so this policy syncs every step."""
        if self._all_finite(loss):
            return True
        limit = self.safety.max_skipped_batches
        self.skipped_batches += 1
        self.tracker.message(f"skipped a batch with non-finite loss ({self.skipped_batches}/{limit})")
        if self.skipped_batches > limit:
            raise Diverged(f"loss was non-finite in more than train.max_skipped_batches={limit} "
                           f"batches (epoch {self.position.epoch}, step {self.position.step + 1}); "
                           f"{self._kept()}. Lower lr or check the data")
        self.step.optimizer.zero_grad(set_to_none=True)
        return False

    def evaluate(self, split: str) -> Evaluation:
        s = self.step
        evaluation = evaluate(s.model, self.eval_batches[split], s.loss_fn, s.device, s.precision)
        if split == "test":
            self.test_samples = evaluation.samples
        return evaluation

    def test(self) -> dict[str, float]:
        """Final metrics: the last epoch's train/eval numbers plus the test split."""
        final = {k: v for k, v in self.history[-1].items() if "/" in k} if self.history else {}
        if "test" in self.eval_batches and self.eval_split != "test":
            final.update(self.evaluate("test").metrics("test"))
        if self.test_samples is not None:
            final["test_samples"] = self.test_samples
        final["epochs"] = self.history[-1]["epoch"] if self.history else 0
        final["train_seconds"] = sum(row["epoch_seconds"] for row in self.history)
        return final

    # ---------------------------------------------------------------- checks
    def check_finite(self, value: float, epoch: int, step: int, since: int | None = None) -> None:
        """`since`: the first step of the window `value` averages (the loss is
        only read back at logging points, so that is as close as it gets)."""
        if not math.isfinite(value):
            where = f"step {step}" if since is None or since >= step else f"steps {since}-{step}"
            raise Diverged(f"loss became {value} at epoch {epoch}, {where}; {self._kept()}. Lower lr, add "
                           "grad clipping (train.grad_clip=1.0), or set train.nan_policy=skip")

    def _kept(self) -> str:
        """What a diverged run leaves to resume from, said truthfully."""
        at = self.last_saved
        if at is None:
            return "no checkpoint was saved before it"
        where = f"the end of epoch {at.epoch - 1}" if at.step == 0 else f"epoch {at.epoch}, step {at.step}"
        return f"checkpoints/last.ckpt keeps the state at {where}"

    def agreed_stop(self, check: bool) -> int:
        """The stop signal (0 = none). Under DDP every rank must stop at the same
        step, so a signal is acted on only where all ranks look (`check`:
        logging points, checkpoint points, epoch ends) and is shared by all."""
        signum = self.safety.stop_requested()
        if distributed.world_size() == 1:
            return signum
        if not check:
            return 0
        return int(distributed.all_reduce_max(torch.tensor(signum, device=self.step.device)).item())

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank: DDP ranks must skip a batch together."""
        bad = (~torch.isfinite(loss.detach())).to(torch.int32)
        return not distributed.all_reduce_max(bad).item()

    def sync(self) -> None:
        if self.step.device.type == "cuda":
            torch.cuda.synchronize(self.step.device)

    @property
    def lr(self) -> float:
        return float(self.step.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        step, scheduler = self.step, self.schedule.scheduler
        state = {
            "model": unwrap(step.model).state_dict(),
            # Learning rates as floats, whether the optimizer reads a tensor (a
            # captured step) or not: a checkpoint resumes either way.
            "optimizer": schedules.with_float_lrs(step.optimizer.state_dict()),
            "scheduler": schedules.with_float_lrs(scheduler.state_dict()) if scheduler is not None else None,
            "scaler": step.scaler.state_dict() if step.scaler is not None else None,
            "position": vars(self.position).copy(),
            "early_stopping": self.schedule.early_stopping.state_dict(),
            "history": self.history,
            "skipped_batches": self.skipped_batches,
            "partial": self.partial,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if step.device.type == "cuda" else [],
            },
        }
        state.update(self.checkpointing.extra_state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        step, scheduler = self.step, self.schedule.scheduler
        unwrap(step.model).load_state_dict(state["model"])
        schedules.load_optimizer_state(step.optimizer, state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if step.scaler is not None and state.get("scaler") is not None:
            step.scaler.load_state_dict(state["scaler"])
        self.position = Position(**state["position"])
        self.last_saved = Position(**state["position"])
        self.schedule.early_stopping.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.schedule.early_stopping.replay(self.history)
        self.skipped_batches = state.get("skipped_batches", 0)
        self.partial = state.get("partial")
        torch.set_rng_state(state["rng"]["torch"])
        if step.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save(self, name: str) -> None:
        folder = self.checkpointing.folder
        if folder is None or not distributed.is_main():
            return
        # Events logged so far reach the disk with the checkpoint: after a
        # kill, resume (which purges later steps) then has no gap.
        self.tracker.flush()
        checkpoint.save(self.state_dict(), folder / name)
        if name == "last.ckpt":
            self.last_saved = Position(**vars(self.position))


class _EpochSums:
    """An epoch's running sums (`Running`) and the host-side counts. Reading
    the sums forces a sync, so that happens only at logging points."""

    def __init__(self, running: Running):
        self.device = running.loss_sum.device
        self.running = running.zero_()
        self.seen = 0
        self.seconds = 0.0  # trained before a mid-epoch resume
        self.window_steps = 0
        self.last_window_steps = 0

    @classmethod
    def start(cls, running: Running, partial: dict | None) -> "_EpochSums":
        sums = cls(running)
        device = sums.device
        if partial is not None:
            # Resuming mid-epoch: carry on the sums of the part already trained.
            # They are totals over all ranks, so only rank 0 adds them (any world size).
            if distributed.is_main():
                sums.running.loss_sum += partial["loss_sum"].to(device)
                sums.running.correct += partial["correct"].to(device)
                sums.seen = partial["seen"]
            sums.seconds = partial["seconds"]
        return sums

    def count(self, samples: int) -> None:
        """A step done (TrainStep added its sums on the device already)."""
        self.seen += samples
        self.window_steps += 1

    def take_window(self) -> float:
        """The mean loss of the steps since the last call (one host sync)."""
        mean = (self.running.window_loss / max(self.window_steps, 1)).item()
        self.running.window_loss.zero_()
        self.last_window_steps, self.window_steps = self.window_steps, 0
        return mean

    def snapshot(self, seconds: float) -> dict:
        """The sums over all ranks, for a mid-epoch checkpoint."""
        r = self.running
        return {"loss_sum": distributed.all_reduce_sum(r.loss_sum).clone(),
                "correct": distributed.all_reduce_sum(r.correct).clone(),
                "seen": int(distributed.all_reduce_sum(torch.tensor(self.seen, device=self.device)).item()),
                "seconds": self.seconds + seconds}

    def totals(self) -> tuple[float, float, float]:
        """(loss sum, correct, samples) over all ranks."""
        r = self.running
        samples = distributed.all_reduce_sum(torch.tensor([float(self.seen)], device=self.device)).item()
        totals = distributed.all_reduce_sum(torch.stack([r.loss_sum.float(), r.correct.float()]))
        return totals[0].item(), totals[1].item(), samples
