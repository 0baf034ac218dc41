"""Checkpoints: written atomically, loaded safely.

A checkpoint is a plain dict of tensors and builtins, so it loads with
`torch.load(weights_only=True)`: a file that would run code is refused.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from trainer.core import paths
from trainer.core.errors import CheckpointError, UserError, first_line
from trainer.core.files import atomic_write, remove_stale_temps

FORMAT = "trainer-checkpoint/1"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
NAMES = ("best", "last")  # checkpoints/best.ckpt (best epoch by the monitor), checkpoints/last.ckpt


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` to `path` atomically (trainer.core.files): a kill at any moment
    leaves the previous checkpoint or the new one, never a torn one.

    Serialised in memory first, then written as bytes: a full disk is then
    an OSError that says so (torch's own zip writer reports it as
    'unexpected pos'), and the previous checkpoint is untouched."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    try:
        atomic_write(path, lambda f: f.write(buffer.getbuffer()), binary=True)
    except OSError as e:
        kept = "the previous checkpoint is intact" if path.is_file() else "no earlier checkpoint was saved"
        raise UserError(paths.os_error_line(e, f"could not write checkpoint {path}",
                                            f"choose a writable output folder (hydra.run.dir=...); {kept}")) from e
    remove_stale_temps(path)  # left by a process killed mid-write


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save`, or explain in one line why not."""
    path = paths.check_path(path, "file", "checkpoint", fix="pass a run directory or a .ckpt file",
                            error=CheckpointError)
    with path.open("rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (0 bytes); use another checkpoint")
    if head != ZIP_MAGIC:  # a JSON, text or image file, a bare pickle: say what it is not, not that it is evil
        raise CheckpointError(f"{path} is not a trainer checkpoint (not the zip archive torch.save writes); "
                              "resume from a run directory made by trainer, or its checkpoints/last.ckpt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = first_line(e)
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects that would run code on load "
                "(only tensors and plain values are allowed); use a checkpoint written by trainer"
            ) from e
        raise CheckpointError(f"checkpoint {path} is corrupt ({reason}); use another checkpoint") from e
    except Exception as e:  # torch's unpickler fails in many ways on a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({first_line(e)}); "
                              "use another checkpoint") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a trainer checkpoint (no '{FORMAT}' marker); resume from a run directory made by trainer")
    return state


def find(path: str | Path, which: str | None = None, prefer: tuple[str, ...] = ("last",)) -> Path:
    """The checkpoint file a path means. A file means itself; a run directory
    means checkpoints/<which>.ckpt, or without `which` the first of `prefer`
    it has (resume: last; trainer-eval and trainer-predict: best, then last)."""
    path = Path(path).expanduser()
    if which is not None and which not in NAMES:
        raise UserError(f"checkpoint {which} is not a choice; use {' or '.join(NAMES)}")
    if paths.problem(path, "dir") is None:
        names = (which,) if which else prefer
        for name in names:
            candidate = path / "checkpoints" / f"{name}.ckpt"
            why = paths.problem(candidate, "file")
            if why is None:
                return candidate
            if why != "missing":  # a folder, a pipe, a symlink to nothing where the checkpoint belongs
                raise CheckpointError(f"checkpoint {candidate} {why}; remove it, or pass a .ckpt file")
        if which == "best" and (path / "checkpoints" / "last.ckpt").is_file():
            raise CheckpointError(f"run directory {path} has no checkpoints/best.ckpt (the run had "
                                  "checkpoint.save_best=false); use the last checkpoint")
        wanted = " or ".join(f"checkpoints/{n}.ckpt" for n in names)
        raise CheckpointError(f"run directory {path} has no {wanted}: it never finished a checkpoint; "
                              "pass a run directory that did, or a .ckpt file")
    # Never opened unless a regular file: a FIFO or a device would block or stream forever.
    paths.check_path(path, "file", "checkpoint", fix="pass a run directory or a .ckpt file", error=CheckpointError)
    if which is not None:
        raise UserError(f"choosing the {which} checkpoint only applies to a run directory; {path} is already a file")
    return path


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (<run>/checkpoints/x.ckpt)."""
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
