"""A run folder: the one owner of a run's files.

    folder = RunFolder(path, kind="run")
    folder.check_ours()        # new, empty, or a trainer run: anything else is refused, nothing written
    with folder.locked():      # one process per folder
        folder.claim()         # the marker: from now on the folder is a trainer run's
        folder.write_record(data)

A folder becomes a run's when it is claimed: the marker file `.trainer-run`
(what the run is, when it was made) is written first. Only a folder that
is new, empty, or marked (or, for runs made before the marker, holds our
metrics.json and .hydra/) is ever written; the user's own folder is
refused in one line naming a file it holds. metrics.json is written here
only, whoever asks: the run's record, a cross-validation, the launcher
that saw the process killed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from trainer.core.errors import UserError
from trainer.core.files import atomic_write, read_text
from trainer.core.process import process_start_time

MARKER = ".trainer-run"
RECORD = "metrics.json"
KINDS = ("run", "cv", "fold", "refit")
# What a failed job returns to a sweep (an Optuna search): the worst there is, by the monitor's mode.
WORST = {"max": -math.inf, "min": math.inf}

# The run-folder locks this process holds. A process forked from it (a
# DataLoader worker) would share each flock and keep the folder locked after
# this process dies, until its own watchdog notices: it closes its copies
# at once (closing releases nothing while this process holds the lock).
_HELD: set[int] = set()


def _forget_inherited_locks() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_inherited_locks)


def worst_value(mode: str | None) -> float:
    return WORST.get(mode or "max", -math.inf)


def read_json(path: Path) -> dict | None:
    """A JSON object from a regular file, or None (missing, unreadable, not
    JSON, or not a regular file: a FIFO named metrics.json is never opened)."""
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data) -> None:
    text = json.dumps(_jsonable(data), indent=2, allow_nan=True) + "\n"
    atomic_write(path, lambda f: f.write(text))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def refused_by_name(path: Path) -> str | None:
    """Folders no run may ever use, whatever they hold."""
    where = path.expanduser().resolve()
    for name, folder in (("the root folder", Path("/")), ("your home folder", Path.home()),
                         ("the current folder", Path.cwd())):
        if where == folder.resolve():
            return name
    return None


def _is_legacy_run(path: Path) -> bool:
    """A run made before the marker: our metrics.json beside our .hydra/."""
    data = read_json(path / RECORD)
    return data is not None and "status" in data and "hparams" in data and (path / ".hydra").is_dir()


class RunFolder:
    """The folder of one run (a single run, a cross-validation, one of its folds, its refit).

    `main=False` (a DDP rank other than 0) writes nothing."""

    def __init__(self, path: Path, kind: str = "run", main: bool = True, setting: str = "hydra.run.dir"):
        self.path = Path(path)
        self.kind = kind
        self.main = main
        self.setting = setting  # what to choose instead, in a refusal
        self._lock_fd: int | None = None

    # ---------------------------------------------------------- what it is
    @property
    def record_path(self) -> Path:
        return self.path / RECORD

    def is_ours(self) -> bool:
        return (self.path / MARKER).is_file() or _is_legacy_run(self.path)

    def is_empty(self) -> bool:
        """Nothing in it but, perhaps, its marker (or it does not exist yet)."""
        try:
            return not [name for name in os.listdir(self.path) if name != MARKER]
        except FileNotFoundError:
            return True

    def read_record(self) -> dict | None:
        return read_json(self.record_path)

    def usable(self) -> bool:
        """New, empty or a trainer run's: a folder this process may write."""
        try:
            self.check_ours()
        except UserError:
            return False
        return True

    def check_ours(self) -> None:
        """Refuse, before anything is written, a folder that is not new, empty or a trainer run's."""
        path = self.path
        name = refused_by_name(path)
        if name:
            raise UserError(f"{self.setting}={path} is {name}; a run needs a folder of its own, "
                            f"such as {self.setting}=outputs/runs/my_run")
        if not os.path.lexists(path):
            return
        if not path.is_dir():
            what = "a file" if path.is_file() else "not a folder"
            raise UserError(f"{self.setting}={path} is {what}; choose a new or empty folder")
        try:
            entries = sorted(os.listdir(path))
        except OSError as e:
            raise UserError(f"cannot read the folder {path} ({e.strerror}); choose another {self.setting}") from e
        if not entries or self.is_ours():
            return
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise UserError(f"{path} is not a trainer run folder (it holds {shown}); choose a new or empty folder "
                        f"with {self.setting}=..., nothing was written")

    # -------------------------------------------------------------- writes
    def claim(self) -> None:
        """The marker, before any other file: the folder is a trainer run's from now on."""
        if not self.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        marker = self.path / MARKER
        if not marker.is_file():
            write_json(marker, {"kind": self.kind})

    def write_record(self, data: dict) -> None:
        if self.main:
            write_json(self.record_path, {**data, "kind": self.kind})

    def mark_killed(self, overrides: list[str], signum: int, then: str, by_sweep: bool = False) -> None:
        """The record of a run whose process was killed (SIGKILL, the OOM
        killer) before it could say so itself, with `then`: what becomes of
        it, which only whoever ran it knows (a sweep: resume=auto continues
        it; a search: it tries the trial again). `by_sweep`: the signal was
        its sweep's own stop, passed on while the job was still starting
        (before it could catch it): the job was interrupted, as its sweep
        was. A record that already tells how the run ended is left alone."""
        data = self.read_record()
        if data is not None and data.get("status") not in (None, "running"):
            return
        data = data or {"overrides": overrides, "hparams": {}, "final": {}, "best": {}, "history": [], "timing": {}}
        history = data.get("history") or []
        where = f"during epoch {history[-1]['epoch'] + 1}" if history else "before its first epoch ended"
        name = signal.Signals(signum).name
        if by_sweep:
            data.update(status="interrupted", error=f"stopped by {name} with its sweep {where}, before it could save; "
                                                    "resume=auto runs it again")
        else:
            data.update(status="failed", error=f"killed by {name} {where} (out of memory, or stopped from outside); "
                                               f"{then}")
        self.claim()
        self.write_record(data)

    def remove_if_made_now(self, stop_at: Path | None = None) -> None:
        """A refused run leaves no folder behind: this folder (and parents up
        to `stop_at`), when empty and made by this process (Hydra makes the
        run folder before any of our code runs)."""
        started = process_start_time() - 1.0
        folder, stop_at = self.path.resolve(), (stop_at or Path.cwd()).resolve()
        while folder != stop_at and stop_at in folder.parents:
            try:
                if os.listdir(folder) or os.stat(folder).st_mtime < started:
                    return
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # ---------------------------------------------------------------- lock
    @contextlib.contextmanager
    def locked(self) -> Iterator["RunFolder"]:
        """One process per run folder: an flock on the folder itself (no file
        is made), released when the process exits, however it exits (its
        forked children do not keep it)."""
        if not self.main:
            yield self
            return
        self._lock()
        try:
            yield self
        finally:
            self.unlock()

    def _lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise UserError(f"cannot open the run folder {self.path} ({e.strerror}); "
                            f"choose another with {self.setting}=...") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(f"{self.path} is in use by another trainer process; wait for it to finish "
                                f"(or stop it) first, or choose another {self.setting}") from e
            raise
        self._lock_fd = fd
        _HELD.add(fd)

    def hold_lock(self) -> "RunFolder":
        """Lock until this process exits (a sweep's folder, for the whole sweep)."""
        self._lock()
        return self

    def unlock(self) -> None:
        if self._lock_fd in _HELD:  # not a copy a forked child was given (closed then)
            _HELD.discard(self._lock_fd)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
        self._lock_fd = None
