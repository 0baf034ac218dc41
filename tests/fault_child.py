"""Runs `python -m trainer ARGS` with one fault patched in, for the tests that
need something to happen at an exact point of training. The trainer itself
has no test hooks: this file patches the process from outside.

    python tests/fault_child.py ARGS...      with TRAINER_TEST_FAULT set (JSON),
    or install(fault) in a forked `trainer` process (tests/cli_template.py):

  kill_after_step: N      SIGKILL right after step N is logged (events flushed first,
                          as if the OS had written them: resume must drop them)
  torn_write_at_step: N   the checkpoint of global step N gets half its bytes, then SIGKILL
  slow_from_step: N       from step N on, touch `ready` and sleep `slow_seconds`
                          (default 0.25) per step; the test then signals the process
                          from outside
  nan_at_calls: [i, ...]  the i-th training batches (1-based) become NaN
  disk_full_after_step: N after step N every temp-file creation fails with ENOSPC
  slow_prepare: true      data preparation touches `ready`, then sleeps (start-up)
  slow_curves: S          drawing curves.png takes S seconds more (a job's last files)
"""
import errno
import io
import json
import os
import runpy
import signal
import sys
import tempfile
import time

import torch

import trainer
from trainer.core import checkpoint, data, engine
from trainer.report import tracking
from trainer.runs import record

FAULT = "TRAINER_TEST_FAULT"
fault: dict = {}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


real_log_step = tracking.Tracker.log_step


def log_step(self, step, values):
    real_log_step(self, step, values)
    if step == fault.get("kill_after_step"):
        self.writer.flush()
        die()
    if step >= fault.get("slow_from_step", float("inf")):
        open(fault["ready"], "a").close()
        time.sleep(fault.get("slow_seconds", 0.25))
    if step == fault.get("disk_full_after_step"):
        tempfile.mkstemp = no_space


real_save = torch.save
serialised_step = [None]  # the global step of the checkpoint being written


def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict):
        serialised_step[0] = obj.get("position", {}).get("global_step")
    return real_save(obj, f, *args, **kwargs)


real_atomic_write = checkpoint.atomic_write


def atomic_write(path, write, binary=False):
    if not (binary and serialised_step[0] == fault.get("torn_write_at_step")):
        return real_atomic_write(path, write, binary)

    def torn(f):
        buf = io.BytesIO()
        write(buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        die()

    return real_atomic_write(path, torn, binary)


calls = [0]
real_train_step = engine.Trainer.train_step


def train_step(self, x, *args, **kwargs):
    calls[0] += 1
    if calls[0] in fault.get("nan_at_calls", ()):
        x = x * float("nan")
    return real_train_step(self, x, *args, **kwargs)


real_draw_curves = record.RunRecord._draw_curves


def draw_curves(self, *args, **kwargs):
    time.sleep(fault.get("slow_curves", 0))
    return real_draw_curves(self, *args, **kwargs)


def slow_prepare(*args, **kwargs):
    open(fault["ready"], "a").close()
    time.sleep(60)


def install(what: dict) -> None:
    """Patch this process so that `what` happens."""
    fault.update(what)
    tracking.Tracker.log_step = log_step
    torch.save = save
    checkpoint.atomic_write = atomic_write
    engine.Trainer.train_step = train_step
    record.RunRecord._draw_curves = draw_curves
    if fault.get("slow_prepare"):
        data.prepare = slow_prepare


if __name__ == "__main__":
    install(json.loads(os.environ[FAULT]))
    sys.argv[0] = os.path.join(os.path.dirname(trainer.__file__), "__main__.py")
    runpy.run_module("trainer", run_name="__main__", alter_sys=True)
