"""The config schema as plain dataclasses, and its validation.

Hydra merges every YAML file onto these (cli.py registers them), so a
misspelt key or a value of the wrong type fails while composing. cli.py then
turns the composed config into these objects once; nothing below it sees
Hydra or OmegaConf.

Ranges live beside the fields they constrain (`at_least`, `in_range`,
`one_of`); `validate()` walks every field once and checks them, plus the few
rules that span fields. Facts that another module owns (the activations, the
scheduler names, the datasets) are asked of that module, and checks a
constructor makes itself (a conv stack that shrinks to nothing, torch's
optimizer arguments) are left to the constructor: build.py turns its error
into the same one-line message.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from trainer.core import data, display, engine, models, pipeline, runtime, schedules
from trainer.core.errors import UserError

MISSING = "???"  # OmegaConf's mark for a value the YAML must give


# ------------------------------------------------------------ field helpers
def at_least(low, default=MISSING, hint: str = ""):
    return field(default=default, metadata={"min": low, "hint": hint})


def in_range(low, high, default=MISSING, *, high_open: bool = False, low_open: bool = False, hint: str = ""):
    return field(default=default, metadata={"min": low, "max": high, "low_open": low_open,
                                            "high_open": high_open, "hint": hint})


def greater_than(low, default=MISSING, hint: str = ""):
    return in_range(low, math.inf, default, low_open=True, hint=hint)


def one_of(choices, default=MISSING):
    """`choices`: the values, or a function that returns them when a value is checked."""
    return field(default=default, metadata={"choices": choices if callable(choices) else tuple(choices)})


def each_at_least(low, default_factory, *, min_items: int = 0, hint: str = ""):
    return field(default_factory=default_factory, metadata={"item_min": low, "min_items": min_items, "hint": hint})


# ------------------------------------------------------------------- groups
@dataclass
class DataConfig:
    name: str = one_of(data.DATASETS)
    root: str = "data"                    # holds <Name>/raw/ in torchvision's layout
    val_split: float = at_least(0, 0.0)   # fraction (<1) or count (>=2) of train held out, seeded
    subset: int = at_least(0, 0)          # use only the first N training samples (0 = all)
    test_subset: int = at_least(0, 0)     # use only the first N test samples (0 = all)
    search_paths: list[str] = field(default_factory=list)  # local copies tried before downloading
    download: bool = True                 # fall back to torchvision's download
    verify: bool = True                   # SHA-256 of the raw files


@dataclass
class TransformConfig:
    _target_: str = "trainer.core.pipeline.BatchTransform"
    scale: bool = True                    # ToTensor(): uint8 0..255 -> float 0..1
    mean: Optional[float] = None          # Normalize(mean, std); None = no normalisation
    std: Optional[float] = greater_than(0, None)
    shift: int = in_range(0, 27, 0)       # random translation by up to N pixels
    hflip: Any = 0.0                      # flip probability, or "auto" (0.5 where the dataset allows)
    erase: float = in_range(0, 1, 0.0)    # random-erasing probability


@dataclass
class MLPConfig:
    _target_: str = "trainer.core.models.MLP"
    in_features: int = 784
    hidden: list[int] = each_at_least(1, lambda: [512, 512])
    num_classes: int = 10
    activation: str = one_of(models.ACTIVATIONS, "relu")
    dropout: float = in_range(0, 1, 0.0, high_open=True)
    batchnorm: bool = False


@dataclass
class ConvConfig:
    _target_: str = "trainer.core.models.ConvNet"
    in_channels: int = 1
    image_size: int = 28
    channels: list[int] = each_at_least(1, lambda: [32, 32, 64, 64], min_items=1,
                                        hint="for example model.channels=[32,64]; model=mlp has no convolutions")
    kernel_size: int = in_range(1, 28, 3)
    padding: Optional[int] = in_range(0, 28, None)
    pool: str = one_of(models.POOLS, "max")
    pool_every: int = at_least(1, 2)
    batchnorm: bool = True
    activation: str = one_of(models.ACTIVATIONS, "relu")
    dropout: float = in_range(0, 1, 0.0, high_open=True)
    head_hidden: list[int] = each_at_least(1, lambda: [128])
    head_dropout: float = in_range(0, 1, 0.0, high_open=True)
    global_pool: bool = False
    num_classes: int = 10


def torchvision_archs() -> tuple[str, ...]:
    # Imported here, not at the top: vision_models imports torchvision, which is
    # half of every command's start-up, and only model=torchvision needs it.
    from trainer.core import vision_models

    return vision_models.ARCHS


@dataclass
class TorchvisionConfig:
    _target_: str = "trainer.core.vision_models.torchvision_model"
    arch: str = one_of(torchvision_archs, "resnet18")
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    resize: int = in_range(0, 1024, 0, hint="0 keeps 28x28")  # scale inputs up inside the model
    small_stem: bool = True               # ResNets: 3x3 stride-1 stem, no max-pool
    pretrained: bool = False              # torchvision's default weights, from torch's local cache
    weights_path: Optional[str] = None    # or any local state dict / trainer checkpoint
    freeze: bool = False                  # train only the classifier head


@dataclass
class SmoothedLossConfig:
    _target_: str = MISSING
    label_smoothing: float = in_range(0, 1, 0.0, high_open=True)  # cross_entropy only


@dataclass
class PlainLossConfig:
    _target_: str = MISSING


@dataclass
class MultiMarginConfig:
    _target_: str = "trainer.core.losses.MultiMargin"
    p: int = one_of((1, 2), 1)
    margin: float = at_least(0, 1.0)


@dataclass
class PairwiseLossConfig:
    _target_: str = "trainer.core.losses.PairwiseOnly"
    name: str = MISSING
    needs: str = MISSING


# The optimizers take no `lr`: the learning rate is the top-level `lr`, one
# value that the optimizer, the scheduler and the record all read.
@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    # momentum 1 or more adds up every gradient without forgetting any: the steps grow without bound.
    momentum: float = in_range(0, 1, 0.0, high_open=True)
    dampening: float = in_range(0, 1, 0.0)
    nesterov: bool = False
    weight_decay: float = at_least(0, 0.0)


@dataclass
class AdamConfig:  # also AdamW: optimizer/adamw.yaml names torch.optim.AdamW and its weight decay
    _target_: str = "torch.optim.Adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = greater_than(0, 1e-8)
    weight_decay: float = at_least(0, 0.0)
    amsgrad: bool = False


@dataclass
class AdagradConfig:
    _target_: str = "torch.optim.Adagrad"
    lr_decay: float = at_least(0, 0.0)
    weight_decay: float = at_least(0, 0.0)
    eps: float = greater_than(0, 1e-10)


@dataclass
class RMSpropConfig:
    _target_: str = "torch.optim.RMSprop"
    # alpha 1 never updates the squared-gradient average: it stays 0, and every step divides by eps alone.
    alpha: float = in_range(0, 1, 0.99, high_open=True)
    eps: float = greater_than(0, 1e-8)
    momentum: float = in_range(0, 1, 0.0, high_open=True)
    centered: bool = False
    weight_decay: float = at_least(0, 0.0)


@dataclass
class AdadeltaConfig:
    _target_: str = "torch.optim.Adadelta"
    rho: float = in_range(0, 1, 0.9)
    eps: float = greater_than(0, 1e-6)
    weight_decay: float = at_least(0, 0.0)


@dataclass
class SchedulerConfig:
    # `name` picks the builder in trainer.core.schedules, `interval` when it steps.
    name: str = one_of(schedules.NAMES, "none")
    interval: str = one_of(schedules.INTERVALS, "epoch")
    step_size: int = at_least(1, 1)       # step: decay every N epochs
    gamma: float = greater_than(0, 0.1)  # step: decay factor
    warmup_epochs: float = at_least(0, 0.0)  # cosine: linear warm-up first
    min_lr: float = at_least(0, 0.0)      # cosine: floor
    pct_start: float = in_range(0, 1, 0.25, low_open=True, high_open=True)  # onecycle: fraction rising
    cycle_momentum: bool = False          # onecycle: momentum (Adam: beta1) cycles 0.95-0.85 against the lr


# What each group may hold. OmegaConf 2.3 refuses a Union of structured
# configs, so Hydra composes onto `composition_schema()` (these fields as Any)
# and `from_composed()` checks once that each holds one of its union's members.
ModelConfig = Union[MLPConfig, ConvConfig, TorchvisionConfig]
LossConfig = Union[SmoothedLossConfig, PlainLossConfig, MultiMarginConfig, PairwiseLossConfig]
OptimizerConfig = Union[SGDConfig, AdamConfig, AdagradConfig, RMSpropConfig, AdadeltaConfig]


# ---------------------------------------------------------------- top level
@dataclass
class TrainConfig:
    shuffle: bool = False                 # the seed's quickstart does not shuffle
    log_every_n_steps: int = at_least(1, 100)
    eval_batch_size: int = at_least(1, 2000)
    grad_clip: float = at_least(0, 0.0, hint="0 turns it off")
    nan_policy: str = one_of(engine.NAN_POLICIES, "stop")
    max_skipped_batches: int = at_least(0, 10)
    drop_last: bool = False


@dataclass
class EarlyStoppingConfig:
    monitor: str = one_of(engine.MONITORS, "val/acc")  # with no val split the per-epoch eval is on test
    mode: str = one_of(engine.MODES, "auto")  # auto: min for a loss, max for an accuracy
    patience: int = at_least(0, 0, hint="0 turns it off")
    min_delta: float = at_least(0, 0.0)

    def __post_init__(self):
        # Resolved once, where the config is built: everything downstream reads max or min.
        if self.monitor in engine.MONITORS and self.mode == "auto":
            self.mode = engine.direction(self.monitor)


@dataclass
class CheckpointConfig:
    every_n_steps: int = at_least(0, 0, hint="0 saves at epoch ends only")
    save_best: bool = True


@dataclass
class TrackingConfig:
    tensorboard: bool = True
    images_every_n_epochs: int = at_least(0, 1, hint="0 turns them off")
    histograms_every_n_epochs: int = at_least(0, 1, hint="0 turns them off")
    graph: bool = True


@dataclass
class LoaderConfig:
    num_workers: int = in_range(0, 64, 0)
    pin_memory: bool = True


@dataclass
class CVConfig:
    folds: int = in_range(0, 100, 0, hint="0 turns it off; k-fold cross-validation needs at least 2")
    fold: int = at_least(0, 0, hint="0 runs every fold; N trains fold N alone")
    refit: bool = False                   # then train once on the whole training set and report the test set


@dataclass
class TrainerConfig:
    data: DataConfig = MISSING  # type: ignore[assignment]
    transform: TransformConfig = MISSING  # type: ignore[assignment]
    model: ModelConfig = MISSING  # type: ignore[assignment]
    loss: LossConfig = MISSING  # type: ignore[assignment]
    optimizer: OptimizerConfig = MISSING  # type: ignore[assignment]
    scheduler: SchedulerConfig = MISSING  # type: ignore[assignment]
    seed: int = in_range(0, 2**63 - 1, 0)
    deterministic: bool = False
    epochs: int = at_least(1, 5)
    batch_size: int = at_least(1, 64)
    lr: float = greater_than(0, 1e-3, hint="for example lr=1e-3")
    device: str = "auto"                  # auto | cpu | cuda | cuda:N | mps (runtime.pick_device)
    precision: str = one_of(runtime.PRECISIONS, "fp32")
    compile: bool = False
    cuda_graph: Any = "auto"              # auto | true | false (trainer.core.capture)
    channels_last: bool = False
    threads: int = in_range(0, 1024, 0, hint="0 keeps torch's default")
    pipeline: str = one_of(pipeline.PIPELINES, "device")
    resume: Optional[str] = None          # a run directory or a checkpoint file
    train: TrainConfig = field(default_factory=TrainConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    cv: CVConfig = field(default_factory=CVConfig)


# The groups a run picks one option of (`model=conv`), in the order they are shown,
# and the groups of presets over them.
GROUPS = ("data", "transform", "model", "loss", "optimizer", "scheduler")
PRESET_GROUPS = ("experiment", "hparams_search")

SCHEMAS = {
    "data": DataConfig,
    "transform": TransformConfig,
    "scheduler": SchedulerConfig,
    "model/mlp": MLPConfig,
    "model/conv": ConvConfig,
    "model/torchvision": TorchvisionConfig,
    "loss/with_smoothing": SmoothedLossConfig,
    "loss/plain": PlainLossConfig,
    "loss/multi_margin": MultiMarginConfig,
    "loss/pairwise": PairwiseLossConfig,
    "optimizer/sgd": SGDConfig,
    "optimizer/adam": AdamConfig,
    "optimizer/adagrad": AdagradConfig,
    "optimizer/rmsprop": RMSpropConfig,
    "optimizer/adadelta": AdadeltaConfig,
}


# --------------------------------------------------------------- validation
def validate(config: TrainerConfig) -> None:
    """Raise UserError (one line naming the key) on the first bad value."""
    _check_fields(config, "")
    _check_cross_fields(config)
    check_applies(config)


def _check_fields(node, prefix: str) -> None:
    for f in dataclasses.fields(node):
        key, value = f"{prefix}{f.name}", getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{key}.")
        elif isinstance(value, list):
            if len(value) < f.metadata.get("min_items", 0):
                hint = f" ({f.metadata['hint']})" if f.metadata.get("hint") else ""
                raise UserError(f"{key}={display.typed(value)} must hold at least {f.metadata['min_items']} value{hint}",
                                key=key)
            for item in value:
                _check_value(key, item, f.metadata.get("item_min"), None, f.metadata, shown=value)
        else:
            _check_value(key, value, f.metadata.get("min"), f.metadata.get("max"), f.metadata)


FLOAT32_MAX = 3.4028234663852886e38  # every float reaches a float32 tensor somewhere
INT64_MAX = 2**63 - 1


def _check_value(key: str, value, low, high, meta, shown=None) -> None:
    """One value against its field's rule; `shown` is the whole list for a list's item."""
    text = display.typed(value if shown is None else shown)
    choices = meta.get("choices")
    choices = choices() if callable(choices) else choices
    if choices is not None and value not in choices:
        raise UserError(f"{key}={text} is not valid; choose one of: {', '.join(map(str, choices))}", key=key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}={text} must be a finite number", key=key)
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        raise UserError(f"{key}={text} is too large: the tensors it reaches hold at most 3.4e38", key=key)
    if isinstance(value, int) and abs(value) > INT64_MAX:
        raise UserError(f"{key}={text} is too large; a whole number must be below 2**63", key=key)
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
    if not (too_low or too_high):
        return
    hint = f" ({meta['hint']})" if meta.get("hint") else ""
    subject = f"{key}={text}" + (": each value" if shown is not None else "")
    if high is None or high == math.inf:
        bound = ("positive" if low == 0 else f"greater than {display.typed(low)}") if meta.get("low_open") \
            else f"at least {display.typed(low)}"
        raise UserError(f"{subject} must be {bound}{hint}", key=key)
    left, right = "(" if meta.get("low_open") else "[", ")" if meta.get("high_open") else "]"
    raise UserError(f"{subject} must be in {left}{display.typed(low)}, {display.typed(high)}{right}{hint}", key=key)


def accepts(key: str, value) -> bool:
    """Whether a top-level key's own rule accepts a value (for advice that
    must never suggest a value that is then refused)."""
    f = next((f for f in dataclasses.fields(TrainerConfig) if f.name == key), None)
    if f is None:
        return False
    try:
        _check_value(key, value, f.metadata.get("min"), f.metadata.get("max"), f.metadata)
    except UserError:
        return False
    return True


def _check_cross_fields(c: TrainerConfig) -> None:
    _check_cv(c)
    held_out = c.data.val_split
    # Below 1 a fraction, from 2 on a count of images: 1.5 is neither, and 1 (or 1.0) reads as "all" but
    # would hold out a single image.
    if held_out >= 1 and (held_out == 1 or not float(held_out).is_integer()):
        shown = display.typed(held_out)
        raise UserError(f"data.val_split={shown} is neither a fraction below 1 (0.1 holds out 10%) nor a "
                        "number of images (5000); write one of those", key="data.val_split")
    if c.data.subset and held_out:  # known before the data is read
        data.held_out(held_out, c.data.subset)
    _check_monitor(c)
    if not (isinstance(c.cuda_graph, bool) or c.cuda_graph == "auto"):
        raise UserError(f"cuda_graph={c.cuda_graph} must be auto, true or false", key='cuda_graph')
    hflip = c.transform.hflip
    if hflip != "auto" and not (isinstance(hflip, (int, float)) and not isinstance(hflip, bool) and 0 <= hflip <= 1):
        raise UserError(f"transform.hflip={hflip} must be a probability in [0, 1] or auto", key="transform.hflip")
    _check_model_fits_the_images(c.model)
    s = c.scheduler
    if s.name == "cosine" and s.warmup_epochs >= c.epochs:
        raise UserError(f"scheduler.warmup_epochs={display.typed(s.warmup_epochs)} is not shorter than the run "
                        f"(epochs={c.epochs}), so the cosine decay would never start; use a shorter warm-up "
                        "or more epochs", key="scheduler.warmup_epochs")
    if isinstance(c.model, TorchvisionConfig) and c.model.pretrained and c.transform.mean is not None:
        raise UserError(f"model.pretrained=true normalises its inputs with the weights' own (ImageNet) statistics, "
                        f"and transform.mean={display.typed(c.transform.mean)} would normalise them twice: set "
                        "transform.mean=null", key="transform.mean")
    if isinstance(c.optimizer, AdamConfig):
        betas = c.optimizer.betas
        if not (len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise UserError(f"optimizer.betas={display.typed(betas)} must be two values in [0, 1)",
                            key="optimizer.betas")


def _check_monitor(c: TrainerConfig) -> None:
    es = c.early_stopping
    better = engine.direction(es.monitor)
    if es.mode != better:
        raise UserError(f"early_stopping.mode={es.mode} with early_stopping.monitor={es.monitor} would keep the "
                        f"worst epoch; use early_stopping.mode={better} (or auto)", key='early_stopping.mode')
    split, _, metric = es.monitor.partition("/")
    if split == "test" and (c.data.val_split or c.cv.folds):
        raise UserError(f"early_stopping.monitor={es.monitor}: with a validation split the per-epoch evaluation is "
                        f"on val (the test set is only reported at the end); use early_stopping.monitor=val/{metric}",
                        key='early_stopping.monitor')


def _check_cv(c: TrainerConfig) -> None:
    cv = c.cv
    if cv.folds == 1:
        raise UserError("cv.folds=1 is not cross-validation: use cv.folds=0 (off) or at least 2 folds", key='cv.folds')
    if cv.fold and not cv.folds:
        raise UserError(f"cv.fold={cv.fold} picks one fold of a cross-validation: set cv.folds too "
                        "(for example cv.folds=5)", key='cv.fold')
    if cv.fold > cv.folds:
        raise UserError(f"cv.fold={cv.fold}: there are only cv.folds={cv.folds} folds; choose 1 to {cv.folds} "
                        "(or 0 for all of them)", key='cv.fold')
    if cv.folds and c.data.val_split:
        raise UserError(f"cv.folds={cv.folds} and data.val_split={display.typed(c.data.val_split)} both hold out "
                        "validation data; with cross-validation each fold is the validation split: set data.val_split=0",
                        key='cv.folds')
    if cv.folds and c.data.subset:  # known before the data is read: refused once, not in every fold
        data.check_folds(cv.folds, c.data.subset)
    if cv.refit and not cv.folds:
        raise UserError("cv.refit=true retrains after cross-validation: set cv.folds too (for example cv.folds=5)",
                        key='cv.refit')


def _check_model_fits_the_images(model: ModelConfig) -> None:
    """Both datasets hold 1x28x28 images in 10 classes: anything else fails at the first batch."""
    channels, height, width = data.IMAGE_SHAPE
    if isinstance(model, MLPConfig):
        fixed = {"in_features": (model.in_features, channels * height * width)}
    else:
        fixed = {"in_channels": (model.in_channels, channels), "image_size": (model.image_size, height)}
    fixed["num_classes"] = (model.num_classes, data.NUM_CLASSES)
    for key, (value, fits) in fixed.items():
        if value != fits:
            raise UserError(f"model.{key}={value}: the images are {channels}x{height}x{width} "
                            f"in {data.NUM_CLASSES} classes, so it must be {fits}", key=f"model.{key}")


# ------------------------------------------------ keys that apply with some choices
# The optimizers whose momentum (SGD, RMSprop) or first beta (Adam, AdamW) a one-cycle schedule can cycle.
WITH_MOMENTUM = (SGDConfig, RMSpropConfig, AdamConfig)


def _has_momentum(c) -> bool:
    return isinstance(c.optimizer, WITH_MOMENTUM)


def _has_hidden_layers(model: ModelConfig) -> bool:
    """A conv stack always has (model.channels holds at least one); an MLP where model.hidden is not empty."""
    return isinstance(model, ConvConfig) or (isinstance(model, MLPConfig) and bool(model.hidden))


@dataclass(frozen=True)
class Applies:
    """A key that does something only with certain other choices: set to
    anything but its default (or an `off` value) without them, it would be
    ignored, so it is refused, naming what it needs."""
    key: str
    needs: str
    when: Any                             # TrainerConfig -> bool
    off: tuple = ()                       # values that ask for nothing (0 = off)


APPLIES_ONLY = (
    Applies("scheduler.interval", "scheduler=cosine or scheduler=onecycle (step and none change at epoch ends)",
            lambda c: c.scheduler.name in schedules.SPANS_THE_RUN),
    Applies("scheduler.step_size", "scheduler=step", lambda c: c.scheduler.name == "step"),
    Applies("scheduler.gamma", "scheduler=step", lambda c: c.scheduler.name == "step"),
    Applies("scheduler.warmup_epochs", "scheduler=cosine", lambda c: c.scheduler.name == "cosine"),
    Applies("scheduler.min_lr", "scheduler=cosine", lambda c: c.scheduler.name == "cosine"),
    Applies("scheduler.pct_start", "scheduler=onecycle", lambda c: c.scheduler.name == "onecycle"),
    Applies("scheduler.cycle_momentum", "scheduler=onecycle and an optimizer with a momentum or betas "
            "(sgd, rmsprop, adam, adamw)", lambda c: c.scheduler.name == "onecycle" and _has_momentum(c)),
    # onecycle with cycle_momentum writes the momentum every step, over the optimizer's own.
    Applies("optimizer.momentum", "scheduler.cycle_momentum=false (onecycle cycles the momentum itself)",
            lambda c: not schedules.changes_momentum(c.scheduler.name, c.scheduler.cycle_momentum)),
    Applies("optimizer.dampening", "optimizer.momentum above 0", lambda c: c.optimizer.momentum > 0),
    Applies("optimizer.nesterov", "optimizer.momentum above 0 and optimizer.dampening=0",
            lambda c: c.optimizer.momentum > 0 and c.optimizer.dampening == 0),
    Applies("model.dropout", "hidden layers (model.hidden not empty)", lambda c: _has_hidden_layers(c.model), off=(0,)),
    Applies("model.batchnorm", "hidden layers (model.hidden not empty)", lambda c: _has_hidden_layers(c.model)),
    Applies("model.head_dropout", "a hidden head layer (model.head_hidden not empty)",
            lambda c: bool(c.model.head_hidden), off=(0,)),
    Applies("model.pool", "a pooled block (model.pool_every at most the number of model.channels)",
            lambda c: c.model.pool_every <= len(c.model.channels)),
    Applies("model.pool_every", "pooling (model.pool=max or avg)", lambda c: c.model.pool != "none"),
    Applies("transform.std", "transform.mean (std divides after the mean is subtracted)",
            lambda c: c.transform.mean is not None),
    Applies("train.max_skipped_batches", "train.nan_policy=skip", lambda c: c.train.nan_policy == "skip"),
    Applies("tracking.images_every_n_epochs", "tracking.tensorboard=true", lambda c: c.tracking.tensorboard,
            off=(0,)),
    Applies("tracking.histograms_every_n_epochs", "tracking.tensorboard=true", lambda c: c.tracking.tensorboard,
            off=(0,)),
    Applies("loader.num_workers", "pipeline=loader", lambda c: c.pipeline == "loader"),
    Applies("loader.pin_memory", "pipeline=loader", lambda c: c.pipeline == "loader"),
)


def check_applies(config: TrainerConfig, table=APPLIES_ONLY) -> None:
    """Refuse (one line) a key set to do something that its other choices ignore."""
    groups = fields_of(config)
    for rule in table:
        group, _, name = rule.key.rpartition(".")
        node = groups[group]
        declared = fields_of(node)
        if name not in declared:
            continue  # this choice of the group has no such key
        value = declared[name]
        if value in rule.off or value == _default(type(node), name) or rule.when(config):
            continue
        raise UserError(f"{rule.key}={display.typed(value)} only applies with {rule.needs}; remove it, or set that too",
                        key=rule.key)


def fields_of(node) -> dict[str, Any]:
    """A config node's own fields by name, one level deep: what its dataclass
    declares, whichever member of a group's union it is (model=torchvision
    has no `dropout`). Anything that is not a config dataclass is refused."""
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}


def _default(cls, name: str):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# ------------------------------------------------- into and out of the schema
def as_dict(config) -> dict:
    """The config as plain builtins (what checkpoints and the record keep)."""
    return dataclasses.asdict(config)


def composition_schema() -> type:
    """TrainerConfig as OmegaConf 2.3 can hold it, for Hydra to compose onto:
    the same fields, with the group unions (which it refuses: "Unions of
    containers are not supported") as Any. Each group's YAML still merges onto
    its own dataclass (`/schema/model/mlp`), so keys and types are checked."""
    hints = get_type_hints(TrainerConfig)
    return dataclasses.make_dataclass("TrainerConfig", [
        (f.name, Any if _group_union(hints[f.name]) else hints[f.name],
         field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
        for f in dataclasses.fields(TrainerConfig)])


def from_composed(composed) -> TrainerConfig:
    """The typed config of what OmegaConf built on `composition_schema()`,
    each group checked against its union once, here."""
    config = TrainerConfig(**{f.name: getattr(composed, f.name) for f in dataclasses.fields(TrainerConfig)})
    hints = get_type_hints(TrainerConfig)
    for f in dataclasses.fields(TrainerConfig):
        members, value = _group_union(hints[f.name]), getattr(config, f.name)
        if members and not isinstance(value, members):
            schemas = ", ".join(f"/schema/{path}" for path, cls in SCHEMAS.items() if cls in members)
            raise UserError(f"{f.name} is not one of the {f.name} schemas: a {f.name} YAML file starts from one "
                            f"in its defaults list ({schemas})")
    return config


# Modules whose classes a checkpoint's `_target_` may name under an older path.
MOVED = {"trainer.models.": "trainer.core.models.", "trainer.losses.": "trainer.core.losses.",
         "trainer.pipeline.": "trainer.core.pipeline."}


def from_dict(values: dict) -> TrainerConfig:
    """The typed config of the plain dict a checkpoint keeps, upgraded from
    older checkpoints: a `_target_` under a module path that moved names its
    new one, a key the schema no longer has is dropped, one it gained takes
    its default. Not validated: the run was trained with these values."""
    return _node(TrainerConfig, values, "")


def _node(cls: type, values, prefix: str):
    if not isinstance(values, dict):
        raise UserError(f"its saved config holds {display.typed(values)} where {prefix.rstrip('.') or 'the config'} "
                        "should be; use a checkpoint written by trainer")
    hints, kwargs = get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, kinds = values[f.name], _group_union(hints[f.name]) or _dataclass(hints[f.name])
        if kinds:
            value = _node(_member(kinds, value), value, f"{prefix}{f.name}.")
        elif f.name == "_target_" and isinstance(value, str):
            value = _upgraded(value)
        kwargs[f.name] = value
    node = cls(**kwargs)
    unset = [name for name, value in fields_of(node).items() if value == MISSING]
    if unset:
        raise UserError(f"its saved config has no {prefix}{unset[0]}; use a checkpoint written by trainer")
    return node


def _upgraded(target: str) -> str:
    return next((new + target[len(old):] for old, new in MOVED.items() if target.startswith(old)), target)


def _group_union(kind) -> tuple[type, ...]:
    """The dataclasses a group union allows; () for any other type."""
    members = get_args(kind) if get_origin(kind) is Union else ()
    return tuple(m for m in members if dataclasses.is_dataclass(m))


def _dataclass(kind) -> tuple[type, ...]:
    return (kind,) if dataclasses.is_dataclass(kind) else ()


def _member(members: tuple[type, ...], values) -> type:
    """Which of a group's dataclasses a saved node (every key of its group, as
    as_dict wrote it) is: the one whose default `_target_` it names, else the
    one holding most of its keys, the fewest others on a tie (`loss/plain`
    for NLL, `loss/with_smoothing` for cross-entropy, `optimizer/adam` for AdamW)."""
    if len(members) == 1:
        return members[0]
    target = values.get("_target_") if isinstance(values, dict) else None
    for cls in members:
        if target is not None and _default(cls, "_target_") in (target, _upgraded(target)):
            return cls
    keys = set(values) if isinstance(values, dict) else set()
    return max(members, key=lambda cls: (len(keys & _names(cls)), -len(_names(cls))))


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


