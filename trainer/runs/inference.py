"""Using a trained model outside training: rebuild it from a run's checkpoint.

Shared by `trainer-eval` and `trainer-predict`. A checkpoint carries the run's
resolved config as a plain dict (`state["config"]`), turned back into the
typed config once (build.saved_config, which also upgrades older
checkpoints); the model, the eval-time transform and the loss are rebuilt
from it by the same factories training uses (trainer.runs.build), so no flag
of the original run needs repeating and nothing is derived twice.

Which checkpoint a path means is checkpoint.find's rule: a run directory
means checkpoints/best.ckpt if present (the epoch that was best on the run's
early_stopping.monitor), else checkpoints/last.ckpt; `which` picks one; a
.ckpt file means itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.core import checkpoint, runtime
from trainer.core.config import TrainerConfig
from trainer.core.data import dataset_info
from trainer.core.errors import CheckpointError, UserError, first_line
from trainer.runs import build
from trainer.runs.record import read


def describe_position(state: dict) -> str:
    """'after epoch 3' for an epoch-end checkpoint, 'epoch 4, step 120' mid-epoch."""
    pos = state.get("position") or {}
    epoch, step = int(pos.get("epoch", 1)), int(pos.get("step", 0))
    return f"after epoch {epoch - 1}" if step == 0 else f"epoch {epoch}, step {step} (mid-epoch)"


@dataclass
class LoadedRun:
    """A trained model ready for inference, with what it needs around it."""

    checkpoint: Path          # the .ckpt file
    run_dir: Path             # <run>/ (the folder holding checkpoints/)
    state: dict               # the whole checkpoint (position, history, ...)
    config: TrainerConfig     # the run's resolved config
    model: nn.Module          # in eval mode, on `device`
    transform: Any            # trainer.core.pipeline.BatchTransform
    device: torch.device
    classes: tuple[str, ...]

    @property
    def dataset(self) -> str:
        return self.config.data.name

    @property
    def precision(self) -> str:
        return self.config.precision

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, 28, 28] (any device) -> float32 logits [N, C] on the device."""
        x = self.transform(images.to(self.device), None, train=False)
        with runtime.autocast(self.device, self.precision):
            return self.model(x).float()


def model_folder(path: Path) -> Path:
    """The run folder whose model a path means: a cross-validation means its
    refit (the one model trained on all the training data); without one it
    is refused, naming the fold folders to pass instead."""
    record = read(path) if path.is_dir() else None
    if record is None or record.get("kind") != "cv":
        return path
    if (path / "refit" / "checkpoints").is_dir():
        return path / "refit"
    folds = sorted((p.name for p in path.glob("fold_*") if p.is_dir()), key=lambda n: int(n[5:] or 0))
    shown = f"{path / folds[0]}" + (f" ... {path / folds[-1]}" if len(folds) > 1 else "") if folds else "none yet"
    raise UserError(f"{path} is a cross-validation without a refit: it has one model per fold ({shown}); "
                    "pass one of those folders, or train one model on all the data with cv.refit=true")


def load_run(path: str | Path, which: str | None = None, device: str = "auto") -> LoadedRun:
    """Rebuild a run's model (weights loaded, eval mode) and transform from a
    run directory or checkpoint file."""
    ckpt = checkpoint.find(model_folder(Path(path)), which, prefer=("best", "last"))
    dev = runtime.pick_device(device)
    state = checkpoint.load(ckpt)  # CheckpointError: missing, corrupt, unsafe, not ours
    config = build.saved_config(ckpt, state)
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {ckpt} holds no model weights; use a checkpoint written by trainer")
    info = dataset_info(config.data.name)
    model = build.make_model(config.model, config.seed, load_weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt}: the weights do not fit the model its config describes "
                              f"({first_line(e)})") from e
    transform = build.make_transform(config.transform, config.data.name)
    return LoadedRun(checkpoint=ckpt, run_dir=checkpoint.run_dir_of(ckpt), state=state, config=config,
                     model=model.to(dev).eval(), transform=transform, device=dev, classes=info.classes)
