"""Learning-rate schedules by name: none, step, cosine (with warm-up), onecycle."""
from __future__ import annotations

import math

import torch

NAMES = ("none", "step", "cosine", "onecycle")
INTERVALS = ("epoch", "step")
# Schedules laid out over the whole run when it starts: their shape depends
# on the number of epochs and steps, so a resume cannot change those.
SPANS_THE_RUN = ("cosine", "onecycle")


class WarmupCosine:
    """Multiplier for LambdaLR: linear warm-up, then cosine decay to min_ratio.

    A class rather than a closure so LambdaLR.state_dict() can save it.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float):
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, warmup_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_steps(total: int, warmup: float) -> int:
    """A warm-up of `warmup` steps (a fraction of an epoch may be one) on
    whole steps: at least one when asked for, and one step short of the run
    at most, so the decay always has a step of its own."""
    if warmup <= 0 or total < 2:
        return 0
    return min(max(1, int(round(warmup))), total - 1)


def peak_step(total: int, pct_start: float) -> int:
    """The step at which onecycle reaches its peak: the rise and the fall each
    at least one step long where the run has room (3 steps or more); a run of
    one or two steps starts at the peak and only falls."""
    if total < 3:
        return 0
    return min(max(1, int(round(pct_start * total)) - 1), total - 2)


class OneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """torch's OneCycleLR (same state, same lr and momentum bounds) with its
    two phases on whole steps around `peak_step`: torch puts the peak at
    pct_start * total - 1, a phase of no length on a short run, and divides
    by that length (ZeroDivisionError)."""

    def __init__(self, optimizer, *, max_lr: float, total_steps: int, pct_start: float, cycle_momentum: bool):
        self.peak = peak_step(total_steps, pct_start)  # read by get_lr, which torch's __init__ calls
        super().__init__(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
                         cycle_momentum=cycle_momentum)

    def get_lr(self):
        # Past the last step (the step() after the final batch) the lr stays at the end of the fall.
        step, last = min(self.last_epoch, self.total_steps - 1), self.total_steps - 1
        if step <= self.peak:
            ends, pct = ("initial_lr", "max_lr", "max_momentum", "base_momentum"), step / self.peak if self.peak else 1.0
        else:
            ends, pct = ("max_lr", "min_lr", "base_momentum", "max_momentum"), (step - self.peak) / (last - self.peak)
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal_func(group[ends[0]], group[ends[1]], pct))
            if self.cycle_momentum:
                momentum = self._anneal_func(group[ends[2]], group[ends[3]], pct)
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


def build(name: str, optimizer: torch.optim.Optimizer, *, lr: float, epochs: int, steps_per_epoch: int,
          interval: str = "epoch", step_size: int = 1, gamma: float = 0.1, warmup_epochs: float = 0.0,
          min_lr: float = 0.0, pct_start: float = 0.25, cycle_momentum: bool = False):
    """The scheduler and when it steps ("epoch" or "step"); (None, "epoch") for a constant lr.
    onecycle peaks at `lr` (the run's one learning rate); it shapes the lr only, unless cycle_momentum: then torch's OneCycleLR
    also sets the momentum (Adam: beta1) every step, 0.95 down to 0.85 and
    back, in place of the optimizer's own."""
    if name == "none":
        return None, "epoch"
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch"
    units = steps_per_epoch if interval == "step" else 1
    total = max(1, epochs * units)
    if name == "cosine":
        schedule = WarmupCosine(total, warmup_steps(total, warmup_epochs * units), min_lr / lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        # With a tensor lr (a captured step) the bases are tensor copies, and
        # each step would read one back to the host: keep plain numbers.
        scheduler.base_lrs = [float(base) for base in scheduler.base_lrs]
        return scheduler, interval
    if name == "onecycle":
        return OneCycle(optimizer, max_lr=lr, total_steps=total, pct_start=pct_start,
                        cycle_momentum=cycle_momentum), interval
    raise ValueError(f"name={name} is not a schedule; choose one of: {', '.join(NAMES)}")


def changes_momentum(name: str, cycle_momentum: bool) -> bool:
    """Whether the schedule rewrites the momentum (SGD) or beta1 (Adam) as a
    host number every step, as onecycle does unless cycle_momentum=false."""
    return name == "onecycle" and cycle_momentum


def rescale(optimizer: torch.optim.Optimizer, scheduler, factor: float) -> None:
    """Multiply the learning rate by `factor` from here on, schedule included
    (a resume with a new `lr`): the current lr and every base the scheduler
    computes from. A tensor lr (a captured step) is scaled in place."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):  # the last three: OneCycleLR
            if key in group:
                group[key] *= factor
    if scheduler is not None:
        scheduler.base_lrs = [float(base) * factor for base in scheduler.base_lrs]
        scheduler._last_lr = [float(group["lr"]) for group in optimizer.param_groups]


# How an optimizer runs, not what it has learned: a resume keeps its own.
_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


def _plain(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def with_float_lrs(state: dict) -> dict:
    """An optimizer's or scheduler's state_dict with one-element tensor
    hyper-parameters (a captured step's lr) as floats."""
    if "param_groups" in state:
        groups = [{k: v if k == "params" else _plain(v) for k, v in g.items()} for g in state["param_groups"]]
        return {**state, "param_groups": groups}
    return {k: _plain(v) for k, v in state.items()}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict, keeping how this optimizer runs (fused,
    capturable, ...) and the tensors it reads its learning rate from, filled
    with the saved values: a checkpoint from an eager run resumes captured,
    and the other way round."""
    current = optimizer.param_groups
    groups = [{**saved, **{k: group[k] for k in _IMPLEMENTATION if k in group}}
              for saved, group in zip(state["param_groups"], current)]
    tensors = [{k: v for k, v in group.items() if k != "params" and isinstance(v, torch.Tensor)}
               for group in current]
    optimizer.load_state_dict({**state, "param_groups": groups})
    for group, kept in zip(optimizer.param_groups, tensors):
        for key, tensor in kept.items():
            tensor.fill_(float(group[key]))
            group[key] = tensor
