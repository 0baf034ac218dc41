"""Writing a file so that a crash at any moment leaves the old file or the
new one, never a torn one: temp file in the same folder, fsync, rename.

A temp file is named after the file it becomes and the process writing it
(`.last.ckpt.<pid>.<random>.tmp`): a process cleans up only temp files whose
writer is gone, never another live process's.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call `write(f)` on a temp file beside `path`, then move it into place.

    Raises OSError as the writing does (full disk, read-only folder); the
    temp file is removed and `path` keeps its previous content.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are for everyone
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: str | Path) -> str:
    """A regular file's text. Anything else (a FIFO, a device, a folder)
    raises OSError without blocking: a FIFO named like one of our files
    would otherwise hang the reader forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read().decode("utf-8")
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def remove_stale_temps(path: str | Path) -> None:
    """Temp files left beside `path` by writers that died mid-write (killed):
    removed. A live process's temp file (another run, or this one) stays."""
    path = Path(path)
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def _fsync_dir(folder: Path) -> None:
    # The rename itself must reach the disk, or a power cut could lose it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
