"""Using a trained model outside training: rebuild it from a run's checkpoint.

Shared by `trainer-eval` and `trainer-predict`. A checkpoint carries the run's
fully resolved config as a plain dict (`state["config"]`), so the model, the
eval-time transform and the loss are rebuilt from it and no flag of the
original run needs repeating:

    model      config["model"]      `_target_` + keyword arguments, weights from state["model"]
    transform  config["transform"]  BatchTransform(scale, mean, std, ...); never augments here
    loss       config["loss"]       the run's own loss (what test/loss in metrics.json used)
    classes    config["data"]["name"] -> trainer.data.DATASETS[name].classes

Which checkpoint a path means:

    <run dir>                  checkpoints/best.ckpt if present (the epoch that was best
                               on the run's early_stopping.monitor), else checkpoints/last.ckpt
    <run dir> + which="best"   checkpoints/best.ckpt, an error if the run saved none
    <run dir> + which="last"   checkpoints/last.ckpt (the final weights, or the latest of an
                               interrupted run)
    <file.ckpt>                that file (`which` must then be None)

Everything here works on plain dicts and raises `UserError` (one line) for
anything the user can fix; no DictConfig is involved.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import checkpoint
from trainer.errors import CheckpointError, UserError, first_line

CHECKPOINT_CHOICES = ("best", "last")


# ------------------------------------------------------------- checkpoints
def resolve_checkpoint(path: str | Path, which: str | None = None) -> Path:
    """The checkpoint file a user's path means (see the module docstring)."""
    path = Path(path).expanduser()
    if which is not None and which not in CHECKPOINT_CHOICES:
        raise UserError(f"--checkpoint {which} is not a choice; use best or last")
    if path.is_dir():
        folder = path / "checkpoints"
        names = [f"{which}.ckpt"] if which else ["best.ckpt", "last.ckpt"]
        for name in names:
            if (folder / name).is_file():
                return folder / name
        if which == "best" and (folder / "last.ckpt").is_file():
            raise CheckpointError(f"run directory {path} has no checkpoints/best.ckpt (the run had "
                                  "checkpoint.save_best=false); use --checkpoint last")
        raise CheckpointError(f"run directory {path} has no checkpoints/{' or '.join(names)}; "
                              "pass a run directory made by trainer or a .ckpt file")
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run directory or a .ckpt file")
    if which is not None:
        raise UserError(f"--checkpoint {which} only applies to a run directory; {path} is already a checkpoint file")
    return path


def describe_position(state: dict) -> str:
    """'after epoch 3' for an epoch-end checkpoint, 'epoch 4, step 120' mid-epoch."""
    pos = state.get("position") or {}
    epoch, step = int(pos.get("epoch", 1)), int(pos.get("step", 0))
    return f"after epoch {epoch - 1}" if step == 0 else f"epoch {epoch}, step {step} (mid-epoch)"


# ---------------------------------------------------------------- building
def instantiate(node: dict, what: str, source: Path | str = "", **kwargs) -> Any:
    """Call the object named by node["_target_"] with the node's other keys.

    The plain-dict counterpart of hydra.utils.instantiate for the flat nodes
    trainer writes (model, transform, loss): keys starting with '_' are
    Hydra's own and are dropped.
    """
    from hydra.utils import get_object

    if not isinstance(node, dict) or not node.get("_target_"):
        raise CheckpointError(f"checkpoint {source} has no {what}._target_ in its saved config; "
                              "use a checkpoint written by trainer")
    target = node["_target_"]
    args = {k: v for k, v in node.items() if not str(k).startswith("_")}
    args.update(kwargs)
    try:
        factory = get_object(target)
    except Exception as e:  # ImportError, AttributeError, hydra's own errors
        raise UserError(f"cannot rebuild the {what} of {source}: {target} cannot be imported "
                        f"({first_line(e)}); is this the trainer version that wrote it?") from e
    try:
        return factory(**args)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot rebuild the {what} of {source} ({target}): {first_line(e)}") from e


def build_model(config: dict, source: Path | str = "") -> nn.Module:
    return instantiate(config.get("model"), "model", source)


def build_transform(config: dict, source: Path | str = ""):
    """The run's BatchTransform. Only its deterministic part (scale, mean, std)
    is ever applied here: callers pass train=False, so shift/hflip/erase are
    inert; hflip="auto" (resolved by the CLI at training time) becomes 0."""
    node = dict(config.get("transform") or {})
    node.setdefault("_target_", "trainer.pipeline.BatchTransform")
    if node.get("hflip") == "auto":
        node["hflip"] = 0.0
    return instantiate(node, "transform", source)


def build_loss(config: dict, source: Path | str = "") -> nn.Module:
    return instantiate(config.get("loss"), "loss", source)


# ----------------------------------------------------------------- loading
@dataclass
class LoadedRun:
    """A trained model ready for inference, with what it needs around it."""

    checkpoint: Path          # the .ckpt file
    run_dir: Path             # <run>/ (the folder holding checkpoints/)
    state: dict               # the whole checkpoint (position, history, ...)
    config: dict              # the run's resolved config, a plain dict
    model: nn.Module          # in eval mode, on `device`
    transform: Any            # trainer.pipeline.BatchTransform
    device: torch.device
    dataset: str              # config["data"]["name"]
    classes: tuple[str, ...]

    @property
    def precision(self) -> str:
        return str(self.config.get("precision", "fp32"))

    def autocast(self):
        """The run's mixed precision, so the numbers match its metrics.json.
        fp16 is kept on CUDA only (on a CPU it would be slow or unsupported)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None or (dtype is torch.float16 and self.device.type != "cuda"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, 28, 28] (any device) -> float32 logits [N, C] on the device."""
        x = self.transform(images.to(self.device), None, train=False)
        with self.autocast():
            return self.model(x).float()


def load_run(path: str | Path, which: str | None = None, device: str = "auto") -> LoadedRun:
    """Rebuild a run's model (weights loaded, eval mode) and transform from a
    run directory or checkpoint file."""
    from trainer.data import dataset_info
    from trainer.runtime import pick_device

    ckpt = resolve_checkpoint(path, which)
    dev = pick_device(device)
    state = checkpoint.load(ckpt)  # CheckpointError: missing, corrupt, unsafe, not ours
    config = state.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {ckpt} holds no run config, so its model cannot be rebuilt; "
                              "use a checkpoint written by trainer")
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {ckpt} holds no model weights; use a checkpoint written by trainer")
    data_cfg = config.get("data") or {}
    info = dataset_info(data_cfg.get("name", ""))
    model = build_model(config, ckpt)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt}: the weights do not fit the model its config describes "
                              f"({first_line(e)})") from e
    model = model.to(dev).eval()
    transform = build_transform(config, ckpt)
    return LoadedRun(checkpoint=ckpt, run_dir=checkpoint.run_dir_of(ckpt), state=state, config=config,
                     model=model, transform=transform, device=dev, dataset=data_cfg["name"], classes=info.classes)

