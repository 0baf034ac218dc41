"""The Trainer: one loop, top to bottom.

    for epoch:
        for batch:  forward, loss, backward, step      (no host sync per step)
        evaluate on the eval split, log, checkpoint, early-stop
    test

It takes everything ready-made (model, loss, optimizer, scheduler, batches,
tracker) and never reads a config. Its whole state, down to the position
inside an epoch and the RNG states, round-trips through state_dict(), which
is what makes resume exact.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import checkpoint, distributed
from trainer.errors import UserError


class Diverged(UserError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); a checkpoint has been saved."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


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


@dataclass
class Trainer:
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    train_batches: Any
    eval_batches: dict[str, Any]  # {"val": ...} and/or {"test": ...}
    device: torch.device
    epochs: int
    scheduler: Any = None
    scheduler_interval: str = "epoch"  # "epoch" or "step"
    tracker: Any = field(default_factory=NullTracker)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    checkpoint_dir: Path | None = None
    checkpoint_every_n_steps: int = 0
    save_best: bool = True
    log_every_n_steps: int = 100
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    grad_clip: float = 0.0
    nan_policy: str = "stop"  # "stop" | "skip"
    max_skipped_batches: int = 10
    stop_requested: Callable[[], int] = lambda: 0  # returns a signal number when a stop was asked for
    extra_state: dict = field(default_factory=dict)  # saved verbatim in checkpoints (the run's config)
    on_epoch_end: Callable[[int, int], None] | None = None  # (epoch, global step): dashboards

    def __post_init__(self):
        self.position = Position()
        self.history: list[dict] = []
        self.skipped_batches = 0
        self.partial: dict | None = None  # sums of a part-trained epoch, for mid-epoch checkpoints
        self.first_step_time: float | None = None  # wall clock after this process's first step
        self.first_step_seconds: float | None = None
        self.eval_split = "val" if "val" in self.eval_batches else "test"
        self.eval_samples: dict[str, int] = {}  # samples counted by the last evaluation of each split
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.autocast = (
            torch.autocast(self.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, float]:
        while self.position.epoch <= self.epochs:
            epoch = self.position.epoch
            train_metrics = self.train_epoch(epoch, start_step=self.position.step)
            eval_metrics = self.evaluate(self.eval_batches[self.eval_split], self.eval_split)
            row = {"epoch": epoch, "step": self.position.global_step, **train_metrics, **eval_metrics}
            self.history.append(row)
            monitored = row.get(self.early_stopping.monitor)
            is_best = monitored is not None and self.early_stopping.update(monitored, epoch)
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            self.position = Position(epoch + 1, 0, self.position.global_step)
            self.tracker.log_epoch(row, is_best=is_best)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, self.position.global_step)
            self.save("last.ckpt")
            if is_best and self.save_best:
                self.save("best.ckpt")
            signum = self.agreed_stop(check=True)
            if signum:
                raise Interrupted(signum)
            if self.early_stopping.should_stop:
                self.tracker.message(
                    f"early stopping: {self.early_stopping.monitor} has not improved for "
                    f"{self.early_stopping.patience} epochs (best {self.early_stopping.best:.4f} at epoch {self.early_stopping.best_epoch})"
                )
                break
        return self.test()

    def train_epoch(self, epoch: int, start_step: int = 0) -> dict[str, float]:
        """One pass over the training batches, from `start_step` (mid-epoch resume)."""
        self.model.train()
        total_steps = len(self.train_batches)
        # Running sums stay on the device: reading them forces a sync, so we
        # only do that at logging points.
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, seconds = 0, 0.0
        if start_step and self.partial is not None:
            # Resuming mid-epoch: carry on the sums of the part already trained.
            # They are totals over all ranks, so only rank 0 adds them (any world size).
            if distributed.is_main():
                loss_sum += self.partial["loss_sum"].to(self.device)
                correct += self.partial["correct"].to(self.device)
                seen = self.partial["seen"]
            seconds = self.partial["seconds"]
        world = distributed.world_size()
        window_loss = torch.zeros((), device=self.device)
        window_steps = 0
        progress = self.tracker.progress(epoch, self.epochs, total_steps, start_step)
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(self.train_batches.epoch(epoch, start_step), start=start_step):
            # DDP averages gradients over ranks; weighting each rank's mean loss by
            # world * local / global size makes that average the global batch's
            # mean even when the parts differ (a last partial batch).
            weight = world * len(y) / self.train_batches.global_size(step) if world > 1 else 1.0
            loss, logits = self.train_step(x, y, weight)
            if loss is None:  # a skipped non-finite batch
                continue
            if self.first_step_time is None:
                self.sync()
                self.first_step_time = time.time()
                # The first step pays for compilation (compile=true) and lazy
                # initialisation: reported apart as warm-up.
                self.first_step_seconds = time.perf_counter() - t0
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            window_loss += loss
            window_steps += 1
            self.position.step = step + 1
            self.position.global_step += 1
            if self.scheduler is not None and self.scheduler_interval == "step":
                self.scheduler.step()
            last = step + 1 == total_steps
            if self.position.global_step % self.log_every_n_steps == 0 or last:
                mean_loss = (window_loss / window_steps).item()
                self.check_finite(mean_loss, epoch, step + 1, since=step + 2 - window_steps)
                self.tracker.log_step(self.position.global_step, {"train/loss": mean_loss, "lr": self.lr})
                progress.update(step + 1, mean_loss)
                window_loss.zero_()
                window_steps = 0
            if last:
                continue  # a complete epoch is evaluated and saved by fit()
            periodic = self.checkpoint_every_n_steps and self.position.global_step % self.checkpoint_every_n_steps == 0
            signum = self.agreed_stop(check=periodic or self.position.global_step % self.log_every_n_steps == 0)
            if signum or periodic:
                self.check_finite(loss.item(), epoch, step + 1)
                self.partial = {"loss_sum": distributed.all_reduce_sum(loss_sum).clone(),
                                "correct": distributed.all_reduce_sum(correct).clone(),
                                "seen": int(distributed.all_reduce_sum(torch.tensor(seen, device=self.device)).item()),
                                "seconds": seconds + time.perf_counter() - t0}
                self.save("last.ckpt")
                if signum:
                    progress.close()
                    raise Interrupted(signum)
        self.sync()
        seconds += time.perf_counter() - t0
        progress.close()
        self.partial = None
        samples = distributed.all_reduce_sum(torch.tensor([float(seen)], device=self.device)).item()
        totals = distributed.all_reduce_sum(torch.stack([loss_sum.float(), correct.float()]))
        metrics = {
            "train/loss": totals[0].item() / max(samples, 1),
            "train/acc": totals[1].item() / max(samples, 1),
            "lr": self.lr,
            "epoch_seconds": seconds,
            "samples_per_second": samples / seconds if seconds > 0 else float("nan"),
        }
        self.check_finite(metrics["train/loss"], epoch, self.position.step)
        return metrics

    def train_step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0):
        """One optimisation step. `weight` scales the loss for backward only (DDP, see train_epoch)."""
        with self.autocast:
            logits = self.model(x)
            # An empty share of a global batch (DDP, fewer samples than ranks)
            # still joins the gradient all-reduce, with a zero loss.
            loss = self.loss_fn(logits, y) if len(y) else logits.sum() * 0.0
        if self.nan_policy == "skip" and not self._all_finite(loss):
            # Skipping needs to know now, so this policy syncs every step.
            self.skipped_batches += 1
            self.tracker.message(f"skipped a batch with non-finite loss ({self.skipped_batches}/{self.max_skipped_batches})")
            if self.skipped_batches > self.max_skipped_batches:
                raise Diverged(
                    f"loss was non-finite in more than train.max_skipped_batches={self.max_skipped_batches} batches "
                    f"(epoch {self.position.epoch}, step {self.position.step + 1}); lower lr or check the data"
                )
            self.optimizer.zero_grad(set_to_none=True)
            return None, None
        self.optimizer.zero_grad(set_to_none=True)
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
        return loss.detach(), logits.detach()

    @torch.inference_mode()
    def evaluate(self, batches, split: str) -> dict[str, Any]:
        """Loss and accuracy summed over the whole split (and over DDP ranks), then divided once."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        for x, y in batches.epoch(0):  # every rank runs every batch, even an empty share
            with self.autocast:
                logits = self.model(x)
                loss = self.loss_fn(logits, y) if len(y) else logits.sum() * 0.0
            pred = logits.argmax(1)
            loss_sum += loss.float() * len(y)
            correct += (pred == y).sum()
            count += len(y)
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, correct, count]))
        self.eval_samples[split] = int(totals[2].item())  # over all ranks: the split's size
        n = max(totals[2].item(), 1)
        metrics: dict[str, Any] = {f"{split}/loss": totals[0].item() / n, f"{split}/acc": totals[1].item() / n}
        return metrics

    def test(self) -> dict[str, float]:
        """Final metrics: the last epoch's train/eval numbers plus the test split."""
        final = {k: v for k, v in self.history[-1].items() if "/" in k} if self.history else {}
        if "test" in self.eval_batches and self.eval_split != "test":
            final.update(self.evaluate(self.eval_batches["test"], "test"))
        if "test" in self.eval_samples:
            final["test_samples"] = self.eval_samples["test"]
        final["epochs"] = self.history[-1]["epoch"] if self.history else 0
        final["train_seconds"] = sum(row["epoch_seconds"] for row in self.history)
        return final

    # ---------------------------------------------------------------- checks
    def check_finite(self, value: float, epoch: int, step: int, since: int | None = None) -> None:
        """`since`: the first step of the window `value` averages (the loss is
        only read back at logging points, so that is as close as it gets)."""
        if not math.isfinite(value):
            where = f"step {step}" if since is None or since >= step else f"steps {since}-{step}"
            raise Diverged(
                f"loss became {value} at epoch {epoch}, {where}; the last good checkpoint is kept. "
                "Lower lr, add grad clipping (train.grad_clip=1.0), or set train.nan_policy=skip"
            )

    def agreed_stop(self, check: bool) -> int:
        """The stop signal (0 = none). Under DDP every rank must stop at the same
        step, so a signal is acted on only where all ranks look (`check`:
        logging points, checkpoint points, epoch ends) and is shared by all."""
        signum = self.stop_requested()
        if distributed.world_size() == 1:
            return signum
        if not check:
            return 0
        return int(distributed.all_reduce_max(torch.tensor(signum, device=self.device)).item())

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank: DDP ranks must skip a batch together."""
        bad = (~torch.isfinite(loss.detach())).to(torch.int32)
        return not distributed.all_reduce_max(bad).item()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        model = self.model.module if hasattr(self.model, "module") else self.model
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        state = {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "position": vars(self.position).copy(),
            "early_stopping": self.early_stopping.state_dict(),
            "history": self.history,
            "skipped_batches": self.skipped_batches,
            "partial": self.partial,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
        }
        state.update(self.extra_state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self.model.module if hasattr(self.model, "module") else self.model
        model = getattr(model, "_orig_mod", model)
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.position = Position(**state["position"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.skipped_batches = state.get("skipped_batches", 0)
        self.partial = state.get("partial")
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save(self, name: str) -> None:
        if self.checkpoint_dir is None or not distributed.is_main():
            return
        # Events logged so far reach the disk with the checkpoint: after a
        # kill, resume (which purges later steps) then has no gap.
        self.tracker.flush()
        checkpoint.save(self.state_dict(), self.checkpoint_dir / name)
