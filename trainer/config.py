"""The config schema: typed dataclasses registered with Hydra's ConfigStore.

Hydra merges every YAML file onto these, so a misspelt key or a value of the
wrong type fails while composing, before any work. What types cannot say
(ranges, cross-field rules) is checked by `validate()` in one step, also
before any data is touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# ----------------------------------------------------------------- groups
@dataclass
class DataConfig:
    name: str = MISSING                   # mnist | fashion_mnist
    root: str = "data"                    # holds <Name>/raw/ in torchvision's layout
    val_split: float = 0.0                # fraction (<1) or count (>=1) of train held out, seeded
    subset: int = 0                       # use only the first N training samples (0 = all)
    test_subset: int = 0                  # use only the first N test samples (0 = all)
    search_paths: list[str] = field(default_factory=list)  # local copies tried before downloading
    download: bool = True                 # fall back to torchvision's download
    verify: bool = True                   # SHA-256 of the raw files
    hflip_ok: bool = False                # horizontal flips keep the class (Fashion yes, digits no)


@dataclass
class TransformConfig:
    _target_: str = "trainer.pipeline.BatchTransform"
    scale: bool = True                    # ToTensor(): uint8 0..255 -> float 0..1
    mean: Optional[float] = None          # Normalize(mean, std); None = no normalisation
    std: Optional[float] = None
    shift: int = 0                        # random translation by up to N pixels
    hflip: Any = 0.0                      # flip probability, or "auto" (0.5 where the dataset allows)
    erase: float = 0.0                    # random-erasing probability


@dataclass
class MLPConfig:
    _target_: str = "trainer.models.MLP"
    in_features: int = 784
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    num_classes: int = 10
    activation: str = "relu"
    dropout: float = 0.0
    batchnorm: bool = False


@dataclass
class ConvConfig:
    _target_: str = "trainer.models.ConvNet"
    in_channels: int = 1
    image_size: int = 28
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    kernel_size: int = 3
    padding: Optional[int] = None
    pool: str = "max"
    pool_every: int = 2
    batchnorm: bool = True
    activation: str = "relu"
    dropout: float = 0.0
    head_hidden: list[int] = field(default_factory=lambda: [128])
    head_dropout: float = 0.0
    global_pool: bool = False
    num_classes: int = 10


@dataclass
class LossConfig:
    _target_: str = MISSING
    label_smoothing: float = 0.0          # cross_entropy only


@dataclass
class PlainLossConfig:
    _target_: str = MISSING


@dataclass
class MultiMarginConfig:
    _target_: str = "trainer.losses.MultiMargin"
    p: int = 1
    margin: float = 1.0


@dataclass
class PairwiseLossConfig:
    _target_: str = "trainer.losses.PairwiseOnly"
    name: str = MISSING
    needs: str = MISSING


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    lr: float = "${lr}"  # type: ignore[assignment]
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    lr: float = "${lr}"  # type: ignore[assignment]
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class AdagradConfig:
    _target_: str = "torch.optim.Adagrad"
    lr: float = "${lr}"  # type: ignore[assignment]
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    eps: float = 1e-10


@dataclass
class RMSpropConfig:
    _target_: str = "torch.optim.RMSprop"
    lr: float = "${lr}"  # type: ignore[assignment]
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    weight_decay: float = 0.0


@dataclass
class AdadeltaConfig:
    _target_: str = "torch.optim.Adadelta"
    lr: float = "${lr}"  # type: ignore[assignment]
    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    # The scheduler's own keyword arguments; `interval` says when it steps,
    # `name` picks the builder in trainer.schedules.
    name: str = "none"                    # none | step | cosine | onecycle
    interval: str = "epoch"               # epoch | step
    step_size: int = 1                    # step: decay every N epochs
    gamma: float = 0.1                    # step: decay factor
    warmup_epochs: float = 0.0            # cosine: linear warm-up first
    min_lr: float = 0.0                   # cosine: floor
    max_lr: Optional[float] = None        # onecycle: peak (default: lr)
    pct_start: float = 0.25               # onecycle: fraction of steps rising


# -------------------------------------------------------------- top level
@dataclass
class TrainConfig:
    shuffle: bool = False                 # the seed's quickstart does not shuffle
    log_every_n_steps: int = 100
    eval_batch_size: int = 2000
    grad_clip: float = 0.0
    nan_policy: str = "stop"              # stop | skip
    max_skipped_batches: int = 10
    drop_last: bool = False


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val/acc"              # with no val split the per-epoch eval is on test
    mode: str = "max"
    patience: int = 0                     # 0 = off
    min_delta: float = 0.0


@dataclass
class CheckpointConfig:
    every_n_steps: int = 0                # also save inside epochs (0 = at epoch ends only)
    save_best: bool = True


@dataclass
class TrackingConfig:
    tensorboard: bool = True
    images_every_n_epochs: int = 1        # 0 = no images
    histograms_every_n_epochs: int = 1    # 0 = no histograms
    graph: bool = True


@dataclass
class LoaderConfig:
    num_workers: int = 0
    pin_memory: bool = True


@dataclass
class TrainerConfig:
    data: DataConfig = MISSING
    transform: TransformConfig = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: SchedulerConfig = MISSING
    seed: int = 0
    deterministic: bool = False
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    device: str = "auto"                  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"               # fp32 | bf16 | fp16
    compile: bool = False
    channels_last: bool = False
    threads: int = 0                      # torch intra-op threads (0 = torch's default)
    pipeline: str = "device"              # device | loader
    resume: Optional[str] = None          # a run directory or a checkpoint file
    train: TrainConfig = field(default_factory=TrainConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)


SCHEMAS = {
    "data": DataConfig,
    "transform": TransformConfig,
    "scheduler": SchedulerConfig,
    "model/mlp": MLPConfig,
    "model/conv": ConvConfig,
    "loss/with_smoothing": LossConfig,
    "loss/plain": PlainLossConfig,
    "loss/multi_margin": MultiMarginConfig,
    "loss/pairwise": PairwiseLossConfig,
    "optimizer/sgd": SGDConfig,
    "optimizer/adam": AdamConfig,
    "optimizer/adamw": AdamWConfig,
    "optimizer/adagrad": AdagradConfig,
    "optimizer/rmsprop": RMSpropConfig,
    "optimizer/adadelta": AdadeltaConfig,
}


def register() -> None:
    """Make the schemas visible to the YAML files' defaults lists (`/schema/...`)."""
    cs = ConfigStore.instance()
    cs.store(name="trainer_schema", node=TrainerConfig)
    for path, node in SCHEMAS.items():
        group, _, name = path.rpartition("/")
        cs.store(group=f"schema/{group}" if group else "schema", name=name, node=node)
