"""One job from start to outcome: the run folder's lock, build, fit, and what
the record says when it stops early. The orchestrators above (a single run,
a cross-validation's folds and refit, a sweep's jobs) all come here.

Every failure ends as an Outcome with a status and one line; a job never
raises for something that went wrong in it, so a sweep goes on.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.core import display, distributed, paths

from trainer.report import hparams

from trainer.runs import resume
from trainer.core.config import TrainerConfig, as_dict, validate
from trainer.core.engine import Diverged, Interrupted
from trainer.core.errors import UserError, first_line, internal
from trainer.runs.record import RunRecord, sweep_value
from trainer.report.tracking import Output

EXIT_FAILED = 1
GROUP_NAMES = ("data", "transform", "model", "loss", "optimizer", "scheduler", "experiment", "hparams_search")
log = logging.getLogger("trainer")


@dataclass
class Job:
    """Where and as what a job runs: what Hydra knows about it, as plain values."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    choices: dict = field(default_factory=dict)
    multirun: bool = False            # Hydra's -m: a failure returns the worst value instead of exiting
    in_sweep: bool = False            # a sweep's job (in this process or its own): a brief console
    hydra_yaml: str | None = None
    hparams_session: bool = True      # a fold of a cross-validation: its CV run holds the HParams session

    def header(self) -> str:
        """The line a job starts with: the group choices, then what was set on the command line
        (a sweep's job: its folder name, which says what sets it apart)."""
        groups = " · ".join(str(self.choices[g]) for g in ("data", "transform", "model", "loss", "optimizer",
                                                          "scheduler") if self.choices.get(g) not in (None, "none"))
        if self.choices.get("experiment"):
            groups = f"experiment={self.choices['experiment']}: {groups}"
        if self.in_sweep:
            return f"── {self.run_dir.name} ── {groups}"
        given = [display.override(o) for o in self.overrides
                 if o.split("=", 1)[0].lstrip("+~") not in GROUP_NAMES and not o.startswith("resume=")]
        return f"Run: {groups}" + (f" ({' '.join(given)})" if given else "")


@dataclass
class Outcome:
    status: str                  # completed | failed | diverged | interrupted
    error: str | None
    value: float                 # the monitored metric; the worst possible one when the job failed
    run_dir: Path
    signum: int = 0

    @property
    def exit_code(self) -> int:
        if self.status == "completed":
            return 0
        return 128 + self.signum if self.status == "interrupted" else EXIT_FAILED


def execute(config: TrainerConfig, job: Job, output: Output | None = None) -> Outcome:
    """Run one job to its outcome; its record says the same."""
    from trainer.runs.build import build, fit

    output = output or Output(brief=job.in_sweep)
    main = distributed.is_main()  # torchrun: rank 0 alone writes the record
    record = RunRecord(job.run_dir, overrides=job.overrides, hparams=hparams.of(config, job.choices),
                       config=as_dict(config), hydra_yaml=job.hydra_yaml, main=main, session=job.hparams_session)
    if main:  # said once the record holds the log: trainer.log starts with it
        output.say(job.header())
    worst = worst_value(config)
    stop, run, traceback_text = StopFlag(record), None, None
    threading.excepthook = _log_thread_error  # TensorBoard's writer thread: its error reaches the loop anyway
    try:
        with stop.at_startup(), (RunLock(job.run_dir) if main else contextlib.nullcontext()):
            validate(config)  # a bad value first, whatever the folder holds
            done = completed_already(config, record.previous, job.run_dir, output)
            if done is not None:
                return Outcome("completed", None, done, job.run_dir)
            refuse_to_overwrite(config, record.previous, job)
            run = build(config, job.run_dir, record, output, stop)
            with stop.installed():
                value = fit(run)
        return Outcome("completed", None, value if not math.isnan(value) else worst, job.run_dir)
    except Interrupted as e:
        where = (f"at epoch {run.trainer.position.epoch}, step {run.trainer.position.step}; checkpoint saved, "
                 f"continue with resume={job.run_dir}") if run is not None else "before training started"
        outcome = Outcome("interrupted", f"stopped by {signal.Signals(e.signum).name} {where}", worst, job.run_dir,
                          e.signum)
    except Diverged as e:
        outcome = Outcome("diverged", str(e), worst, job.run_dir)
    except UserError as e:
        outcome = Outcome("failed", str(e), worst, job.run_dir)
    except KeyboardInterrupt:  # Ctrl-C before the training loop took over SIGINT
        outcome = Outcome("interrupted", "stopped by SIGINT before training started", worst, job.run_dir,
                          signal.SIGINT)
    except Exception as e:  # noqa: BLE001 - a bug, or the machine (a full disk): one line either way
        outcome = Outcome("failed", _unexpected(e, record), worst, job.run_dir)
        if outcome.error.startswith("internal error"):
            traceback_text = "".join(traceback.format_exception(e))
    record.fail(outcome.status, outcome.error, traceback_text)
    return outcome


def worst_value(config: TrainerConfig) -> float:
    """What a job that did not complete returns to a sweep (an Optuna search): the worst there is."""
    return math.inf if config.early_stopping.mode == "min" else -math.inf


def _log_thread_error(args) -> None:
    """A background thread's exception (TensorBoard's writer on a full disk)
    goes to trainer.log, not as a traceback on the console: the training
    loop meets the same error on its next write and says it in one line."""
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    # A disk error after the record closed would reach the console through Python's last-resort handler.
    (log.info if issubclass(args.exc_type, OSError) else log.error)(text)


def refuse(job: Job, error: str) -> Outcome:
    """A job whose config could not even be read: recorded like any failure."""
    record = RunRecord(job.run_dir, overrides=job.overrides, hparams={}, config={}, hydra_yaml=job.hydra_yaml,
                       main=distributed.is_main())
    record.fail("failed", error)
    return Outcome("failed", error, -math.inf, job.run_dir)


def completed_already(config: TrainerConfig, previous: dict | None, run_dir: Path, output: Output) -> float | None:
    """A resume into a folder that holds a run, before any file is touched:
    first the changes against what the run recorded (resume.check_record).
    Then a completed run with nothing left to train stays as it is and
    reports what it recorded; more epochs than it trained continue it. A
    change asked of it that could only apply to epochs not trained is
    refused (resume=auto, a sweep or a cross-validation continued, keeps it)."""
    if not config.resume or previous is None:
        return None
    changes = resume.check_record(run_dir, previous, as_dict(config))
    if previous.get("status") != "completed":
        return None
    trained = int((previous.get("final") or {}).get("epochs") or 0)
    planned = int((previous.get("hparams") or {}).get("epochs") or trained)
    if trained == planned and config.epochs > trained:  # not stopped early, and asked for more
        return None
    unused = {k: v for k, v in changes.items() if k != "epochs"}
    if unused and config.resume != "auto":
        more = (f"add epochs={trained + 1} or more to train on with it" if trained == planned else
                f"it stopped early at epoch {trained} (early_stopping); start a new run to train with it")
        raise UserError(f"{run_dir} has completed its training, so {resume.describe(unused)} would change "
                        f"nothing; {more}")
    output.say(f"Already completed: {run_dir} (left as it is)")
    return sweep_value(previous)


def refuse_to_overwrite(config: TrainerConfig, previous: dict | None, job: Job) -> None:
    if previous is None or config.resume:
        return
    if job.multirun:
        how = "continue the sweep with resume=auto, or choose another hydra.sweep.dir"
    elif (job.run_dir / "checkpoints" / "last.ckpt").is_file():
        how = f"continue it with resume={job.run_dir}, or choose another hydra.run.dir"
    else:  # it stopped before its first checkpoint: nothing to continue from
        how = "it has no checkpoint to continue from; choose another hydra.run.dir (or delete the folder)"
    status = previous.get("status", "unknown")
    if status == "running":  # we hold its folder's lock, so no process is training in it
        status = "running when its process was killed"
    raise UserError(f"{job.run_dir} already holds a run ({status}); {how}")


def _unexpected(e: Exception, record: RunRecord) -> str:
    """The one line for an exception that is not a UserError."""
    if _out_of_memory(e):
        return (f"out of memory ({first_line(e)[:160]}); make the model smaller (model.hidden, model.channels) "
                "or lower batch_size and train.eval_batch_size")
    if paths.is_disk_error(e):  # the line says the path and the fix its errno calls for, not a guess
        return paths.os_error_line(e, str(e.filename or record.run_dir),
                                   "choose another output folder with hydra.run.dir=...")
    writable = record.started or record.previous is None
    return internal(e, str(record.run_dir / "trainer.log") if writable and record.main else None)


def _out_of_memory(e: BaseException) -> bool:
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


class RunLock:
    """One process per run folder: an flock on the folder itself (no file is
    made), released when the process exits, however it exits."""

    def __init__(self, run_dir: Path, other: str = "run folder"):
        self.run_dir = Path(run_dir)
        self.other = other  # what to choose instead, in the refusal
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)  # Hydra made it already, the folds of a CV run not
            self.fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise UserError(f"cannot open the run folder {self.run_dir} ({e.strerror}); "
                            "choose another with hydra.run.dir=...") from e
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(f"{self.run_dir} is in use by another trainer process; wait for it to finish "
                                f"(or stop it) first, or choose another {self.other}") from e
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class StopFlag:
    """SIGINT/SIGTERM. Before the loop there is nothing to save: stop at once,
    as `interrupted`. In the loop the first signal asks it to stop after this
    step (and save); a second one exits at once."""

    def __init__(self, record: RunRecord):
        self.signum = 0
        self.record = record

    def __call__(self) -> int:
        return self.signum

    @contextlib.contextmanager
    def at_startup(self):
        def handle(signum, frame):
            raise Interrupted(signum)

        with _handlers(handle, (signal.SIGTERM,), keep=lambda: bool(self.signum)):
            yield

    @contextlib.contextmanager
    def installed(self):
        with _handlers(self._handle, (signal.SIGINT, signal.SIGTERM), keep=lambda: bool(self.signum)):
            yield

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum:
            with contextlib.suppress(Exception):
                self.record.fail("interrupted", f"stopped at once by a second {name}; the last checkpoint is "
                                 "from before it")
            print(f"\ntrainer: stopped at once by a second {name}", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\ntrainer: {name} received: finishing this step and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _handlers(handler, signums, keep=lambda: False):
    """Install `handler` for `signums` in this block (main thread only: an
    in-process launcher's thread keeps the defaults). `keep()` true at the
    end leaves it installed: a second signal during clean-up must still work."""
    previous = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        if not keep():
            for signum, old in previous.items():
                signal.signal(signum, old)


def describe_failure(outcome: Outcome) -> str:
    """The console line for a job that did not complete."""
    word = "error" if outcome.status == "failed" else outcome.status
    return f"trainer: {word}: {outcome.error}"

