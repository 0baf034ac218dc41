"""What a path is, said in one line, before anything opens it.

    check_path(root, "dir", "data.root", missing_ok=True)   # a folder, or nothing yet
    check_path(ckpt, "file", "resume")                        # a readable regular file

A path is classified from `lstat`/`stat` alone, so a FIFO is never opened
(opening one would wait for a writer forever) and a device is never read.
Each kind has one line: missing, a symlink to nothing (an unmounted drive),
a symlink loop, a folder where a file belongs or the other way round, a
pipe, socket or device, unreadable, or a path through a file. `os_error_line`
says the same of an OSError raised later, with the fix its errno calls for.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from trainer.core.errors import UserError, first_line

WANTS = ("dir", "file")
_NOUN = {"dir": "a folder", "file": "a file"}


def kind(mode: int) -> str:
    """What a stat mode is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file or a folder"


def problem(path: str | os.PathLike, want: str) -> str | None:
    """Why `path` is not a usable `want` ("dir" or "file"), as the end of a
    sentence about it; "missing" when nothing is there; None when it is fine."""
    if want not in WANTS:
        raise ValueError(f"want={want!r}: choose one of {WANTS}")
    path = Path(path)
    try:
        link = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return _missing(path)
    except OSError as e:
        return _stat_failure(e)
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop (it points back to itself)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR) and stat.S_ISLNK(link.st_mode):
            return f"is a symlink to {os.readlink(path)}, which does not exist (an unmounted drive?)"
        return _stat_failure(e)
    if want == "dir" and not stat.S_ISDIR(st.st_mode) or want == "file" and not stat.S_ISREG(st.st_mode):
        return f"is {kind(st.st_mode)}, not {_NOUN[want]}"
    if not os.access(path, os.R_OK | (os.X_OK if want == "dir" else 0)):
        return f"is {_NOUN[want].split()[1]} that cannot be read (permission denied)"
    return None


def _missing(path: Path) -> str:
    """"missing", or why it cannot be made: it lies inside a symlink to nothing, a file, ..."""
    for parent in path.parents:
        if os.path.lexists(parent):
            why = problem(parent, "dir")
            return "missing" if why is None else f"is inside {parent}, which {why}"
    return "missing"


def _stat_failure(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "missing"
    if e.errno == errno.ENOTDIR:
        return "runs through a file as if it were a folder"
    if e.errno == errno.ELOOP:
        return "runs through a symlink loop"
    if e.errno == errno.EACCES:
        return "is inside a folder that cannot be read (permission denied)"
    if e.errno == errno.ENAMETOOLONG:
        return "is too long a name for the file system"
    return f"cannot be looked at ({e.strerror or e})"


def check_path(path: str | os.PathLike, want: str, role: str, *, fix: str = "", missing_ok: bool = False,
               error: type[UserError] = UserError) -> Path:
    """`path` if it is a usable `want`, else `error` in one line naming the
    role (a config key or what the path is for), the path and what it is."""
    why = problem(path, want)
    if why is None or (why == "missing" and missing_ok):
        return Path(path)
    what = "does not exist" if why == "missing" else why
    raise error(f"{role} {path} {what}" + (f"; {fix}" if fix else ""))


# errno -> what to do about it, for an OSError met while reading or writing a path.
_FIXES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space (the disk quota is full)",
    errno.EACCES: "fix its permissions",
    errno.EPERM: "fix its permissions",
    errno.EROFS: "use a writable file system",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.ELOOP: "fix the symlink loop",
    errno.ENOTDIR: "remove the file that stands where a folder belongs",
    errno.EISDIR: "remove the folder that stands where a file belongs",
    errno.EIO: "check the disk",
}


# An OSError of the disk or its permissions (not a bug): said in one line, not as an internal error.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP,
               errno.EIO)


def is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


def os_error_line(e: OSError, what: str, other: str) -> str:
    """One line for an OSError met on `what` (its action and path, e.g.
    "could not write outputs/x"): its reason, and the fix its errno calls
    for, then `other` (another way out, e.g. "choose another output folder")."""
    fix = _FIXES.get(e.errno or 0)
    return f"{what}: {e.strerror or first_line(e)}; " + (f"{fix}, or {other}" if fix else other)
