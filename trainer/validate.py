"""Checks the schema's types cannot express (ranges, cross-field rules),
all in one step before any data is touched. Each failure is one line naming
the key, the bad value and what would be valid."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
PIPELINES = ("device", "loader")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
NAN_POLICIES = ("stop", "skip")
MODES = ("max", "min")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu")
POOLS = ("max", "avg", "none")


@dataclass
class Settings:
    """What validation derives from the config for the build step."""

    monitor: str
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _choice(key: str, value, allowed) -> None:
    _check(value in allowed, f"{key}={value} is not valid; choose one of: {', '.join(map(str, allowed))}")


def validate(cfg) -> Settings:
    """Raise UserError on the first problem; return derived settings."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        # Every interpolation resolved and every value present, once, here:
        # `lr=${nope}` or `~epochs` fails now naming its key, not mid-run.
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return _validate(cfg)
    except OmegaConfBaseException as e:
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        key = getattr(e, "full_key", None) or "the config"
        raise UserError(f"{key}: {reason}; check its value (trainer --cfg job shows the whole config)") from e


def _validate(cfg) -> Settings:
    _check(cfg.epochs >= 1, f"epochs={cfg.epochs} must be at least 1")
    _check(cfg.batch_size >= 1, f"batch_size={cfg.batch_size} must be at least 1")
    _check(cfg.lr > 0, f"lr={cfg.lr} must be positive (for example lr=1e-3)")
    _check(cfg.threads >= 0, f"threads={cfg.threads} must be 0 (torch's default) or a positive count")
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("pipeline", cfg.pipeline, PIPELINES)
    _check(cfg.device in ("auto", "cpu", "cuda", "mps") or str(cfg.device).startswith("cuda:")
           and str(cfg.device)[5:].isdigit(),
           f"device={cfg.device} is not a device; use auto, cpu, cuda, cuda:N or mps")
    from trainer.runtime import pick_device

    pick_device(cfg.device)  # an unavailable cuda:7 fails here, before any data

    d = cfg.data
    from trainer.data import DATASETS

    _choice("data.name", d.name, tuple(DATASETS))
    _check(d.val_split >= 0 and math.isfinite(d.val_split), f"data.val_split={d.val_split} must be 0 (none), a fraction below 1, or a count")
    _check(d.subset >= 0 and d.test_subset >= 0, "data.subset and data.test_subset must be 0 (all) or a positive count")
    n_train = d.subset or 60000
    n_val = int(round(d.val_split * n_train)) if d.val_split < 1 else int(d.val_split)
    _check(n_val < n_train, f"data.val_split={d.val_split} leaves no training data ({n_val} of {n_train} held out)")

    t = cfg.transform
    _check(t.shift >= 0, f"transform.shift={t.shift} must be 0 or a positive number of pixels")
    _check(t.hflip == "auto" or _is_prob(t.hflip), f"transform.hflip={t.hflip} must be a probability in [0, 1] or auto")
    _check(_is_prob(t.erase), f"transform.erase={t.erase} must be a probability in [0, 1]")
    _check(t.std is None or t.std > 0, f"transform.std={t.std} must be positive")

    m = cfg.model
    if "hidden" in m:
        _check(all(h >= 1 for h in m.hidden), f"model.hidden={list(m.hidden)}: every hidden size must be at least 1")
    if "channels" in m:
        _check(len(m.channels) >= 1 and all(c >= 1 for c in m.channels),
               f"model.channels={list(m.channels)}: give at least one block, each with at least 1 channel")
        _check(m.kernel_size >= 1, f"model.kernel_size={m.kernel_size} must be at least 1")
        _check(all(h >= 1 for h in m.head_hidden), f"model.head_hidden={list(m.head_hidden)}: sizes must be at least 1")
        _choice("model.pool", m.pool, POOLS)
        _check(m.pool_every >= 1, f"model.pool_every={m.pool_every} must be at least 1")
        size = m.image_size
        padding = m.kernel_size // 2 if m.padding is None else m.padding
        for i in range(len(m.channels)):
            size = size + 2 * padding - m.kernel_size + 1
            if m.pool != "none" and (i + 1) % m.pool_every == 0:
                size //= 2
            _check(size >= 1, f"model.channels has {len(m.channels)} blocks, but the image shrinks to nothing "
                              f"after block {i + 1}; use fewer blocks, padding or model.pool_every")
    for key in ("dropout", "head_dropout"):
        if key in m:
            _check(0 <= m[key] < 1, f"model.{key}={m[key]} must be in [0, 1)")
    if "activation" in m:
        _choice("model.activation", m.activation, ACTIVATIONS)
    if "num_classes" in m:
        _check(m.num_classes == 10, f"model.num_classes={m.num_classes}: both datasets have 10 classes")
    # Both datasets are 1x28x28: any other input shape fails at the first batch.
    for key, fits in (("in_features", 28 * 28), ("in_channels", 1), ("image_size", 28)):
        if key in m:
            _check(m[key] == fits, f"model.{key}={m[key]}: the images are 1x28x28, so it must be {fits}")

    o = cfg.optimizer
    for key in ("momentum", "weight_decay", "dampening", "lr_decay"):
        if key in o:
            _check(o[key] >= 0, f"optimizer.{key}={o[key]} must not be negative")
    if o.get("nesterov"):
        _check(o.momentum > 0 and o.dampening == 0,
               "optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0")
    if "betas" in o:
        _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optimizer.betas={list(o.betas)} must be two values in [0, 1)")
    if "label_smoothing" in cfg.loss:
        _check(0 <= cfg.loss.label_smoothing < 1, f"loss.label_smoothing={cfg.loss.label_smoothing} must be in [0, 1)")

    s = cfg.scheduler
    _choice("scheduler.name", s.name, SCHEDULERS)
    _choice("scheduler.interval", s.interval, ("epoch", "step"))
    _check(s.step_size >= 1, f"scheduler.step_size={s.step_size} must be at least 1")
    _check(s.gamma > 0, f"scheduler.gamma={s.gamma} must be positive")
    _check(0 < s.pct_start < 1, f"scheduler.pct_start={s.pct_start} must be in (0, 1)")
    _check(s.warmup_epochs >= 0, f"scheduler.warmup_epochs={s.warmup_epochs} must not be negative")

    tr = cfg.train
    _check(tr.log_every_n_steps >= 1, f"train.log_every_n_steps={tr.log_every_n_steps} must be at least 1")
    _check(tr.eval_batch_size >= 1, f"train.eval_batch_size={tr.eval_batch_size} must be at least 1")
    _check(tr.grad_clip >= 0, f"train.grad_clip={tr.grad_clip} must be 0 (off) or positive")
    _choice("train.nan_policy", tr.nan_policy, NAN_POLICIES)
    _check(tr.max_skipped_batches >= 0, f"train.max_skipped_batches={tr.max_skipped_batches} must not be negative")
    _check(cfg.checkpoint.every_n_steps >= 0, f"checkpoint.every_n_steps={cfg.checkpoint.every_n_steps} must be 0 (off) or positive")
    _check(cfg.tracking.images_every_n_epochs >= 0 and cfg.tracking.histograms_every_n_epochs >= 0,
           "tracking.images_every_n_epochs and tracking.histograms_every_n_epochs must be 0 (off) or positive")
    _check(cfg.loader.num_workers >= 0, f"loader.num_workers={cfg.loader.num_workers} must not be negative")

    es = cfg.early_stopping
    _choice("early_stopping.mode", es.mode, MODES)
    _check(es.patience >= 0, f"early_stopping.patience={es.patience} must be 0 (off) or positive")
    split, _, metric = str(es.monitor).partition("/")
    _check(split in ("val", "test", "train") and metric in ("acc", "loss"),
           f"early_stopping.monitor={es.monitor} is not a metric; use val/acc, val/loss, train/loss or train/acc")
    monitor = es.monitor
    if split == "val" and not n_val:
        monitor = f"test/{metric}"  # the quickstart evaluates on test every epoch
    # One multi-tensor kernel per op instead of a loop over parameters (same
    # numbers, fewer dispatches); every optimizer in the config tree has it.
    return Settings(monitor=monitor, optimizer_kwargs={"foreach": True})


def _is_prob(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
