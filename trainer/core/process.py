"""This process and its children: when it started (for the start-up figure),
which children it has, and signals passed on to them."""
from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any

_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """Wall-clock time at which the OS started this process (Linux: its age
    from /proc, to 10 ms), else the time this module was imported."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat: starttime, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


# When each job of this process began its start-up (job_start_time).
_job_starts: list[float] = []


def begin_job() -> None:
    """A job of this process begins. The first began with the process (the
    interpreter and its imports are its start-up; a forked sweep job's
    process began at its fork); a later one (a sequential sweep's next job,
    a fold of a cross-validation) begins now."""
    _job_starts.append(time.time() if _job_starts else process_start_time())


def started_before_any_job() -> None:
    """This process was started for something else (trainer.run in a
    notebook): its jobs begin when they are asked for, not with it."""
    _job_starts.append(time.time())


def job_start_time() -> float:
    """When the running job of this process began its start-up."""
    return _job_starts[-1] if _job_starts else process_start_time()


class forwarding_signals:
    """While the sweep runs, SIGINT/SIGTERM go on to every running job (once
    per signal received) and `callback` learns of them. `jobs` lists the job
    processes (by default this process's children)."""

    def __init__(self, callback, jobs=None):
        self.callback = callback
        self.jobs = jobs or live_children
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        forward(signum, self.jobs())
        self.callback(signum)


def forward(signum: int, pids: list[int] | None = None) -> None:
    """Send `signum` to each of `pids` (by default every child process of this one)."""
    for pid in live_children() if pids is None else pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def wait_for_children(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while live_children() and time.monotonic() < deadline:
        time.sleep(0.1)


def live_children() -> list[int]:
    """This process's child processes (Linux /proc; empty elsewhere)."""
    me, children = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            children.append(int(entry))
    return children


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In the child, before exec: `signum` when the sweep process dies (Linux
    prctl PR_SET_PDEATHSIG), so a killed sweep leaves no job behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)
    except (OSError, AttributeError):
        pass


# A warm sweep job's slot (trainer.sweeps.forkserver sets it in the forked
# job): a pipe's write end, written to or closed when the job no longer needs
# its core. Not in the environment: a process the job starts is not the job.
slot_fd: int | None = None


def release_slot() -> None:
    """A sweep job whose results are known frees its core: the sweep starts
    its next job while this one writes its last files (curves.png, the
    TensorBoard files, metrics.json) and exits. Once; nothing outside a warm sweep."""
    global slot_fd
    fd, slot_fd = slot_fd, None
    if fd is None:
        return
    try:
        os.write(fd, b"\n")
        os.close(fd)
    except OSError:
        pass  # the template is gone: the job's end frees the slot as well


def hold_slot() -> None:
    """A job that trains several runs (a cross-validation's folds and refit)
    keeps its slot until its process ends: its first run's end is not its own."""
    global slot_fd
    slot_fd = None
