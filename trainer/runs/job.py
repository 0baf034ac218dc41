"""One job from start to outcome: its run folder (checked, locked), build,
fit, and what the record says when it stops early. The orchestrators above
(a single run, a cross-validation's folds and refit, a sweep's jobs) all
come here.

Every failure ends as an Outcome with a status and one line; a job never
raises for something that went wrong in it, so a sweep goes on.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer.core import display, distributed, paths, process, streams
from trainer.core.config import GROUPS, TrainerConfig, as_dict, validate
from trainer.core.engine import Diverged, Interrupted, Pruned
from trainer.core.errors import UserError, first_line, internal, say
from trainer.report import hparams
from trainer.report.tracking import Output
from trainer.runs import resume
from trainer.runs.build import build, fit
from trainer.runs.folder import RunFolder, worst_value
from trainer.runs.record import RunRecord, sweep_value

EXIT_FAILED = 1
log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Job:
    """Where and as what a job runs: what Hydra knows about it, as plain values.
    Finished when built: a fold or a refit is a new Job (dataclasses.replace)."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    choices: dict = field(default_factory=dict)
    multirun: bool = False            # Hydra's -m: a failure returns the worst value instead of exiting
    in_sweep: bool = False            # a sweep's job (in this process or its own): a brief console
    hydra_yaml: str | None = None
    kind: str = "run"                 # run | cv | fold | refit (trainer.runs.folder.KINDS)
    belongs: dict = field(default_factory=dict)  # {"sweep": {"dir", "num"}} or {"cv": {"dir", "fold"}}
    epoch_end: Callable | None = None  # (epoch, monitored value) after each epoch: a search's pruning reports

    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir, self.kind, main=distributed.is_main(),
                         setting="hydra.sweep.dir" if self.multirun else "hydra.run.dir")

    def record(self, config: TrainerConfig | None) -> RunRecord:
        """The job's record, the one writer of its run folder's files (every
        kind of run has an HParams session); a single run refused at its
        start records nothing (its folder goes)."""
        return RunRecord(self.folder(), overrides=self.overrides,
                         hparams=hparams.of(config, self.choices, self.kind) if config is not None else {},
                         config=as_dict(config) if config is not None else {}, hydra_yaml=self.hydra_yaml,
                         belongs=self.belongs,
                         record_refusals=self.in_sweep or self.kind in ("fold", "refit"))

    def header(self) -> str:
        """The line a job starts with: the group choices, then what was set on the command line
        (a sweep's job: its folder name, which says what sets it apart)."""
        groups = " · ".join(str(self.choices[g]) for g in GROUPS if self.choices.get(g) not in (None, "none"))
        if self.choices.get("experiment"):
            groups = f"experiment={self.choices['experiment']}: {groups}"
        if self.in_sweep:  # a label before every line (a parallel sweep) names the job already
            return f"── {groups}" if os.environ.get(display.JOB_LABEL) else f"── {self.run_dir.name} ── {groups}"
        given = [display.override(o) for o in self.overrides
                 if o.split("=", 1)[0].lstrip("+~") not in (*GROUPS, "experiment", "hparams_search")
                 and not o.startswith("resume=")]
        return f"Run: {groups}" + (f" ({' '.join(given)})" if given else "")


@dataclass(frozen=True)
class Outcome:
    status: str                  # completed | failed | diverged | interrupted | pruned
    error: str | None
    value: float                 # the monitored metric; the worst possible one when the job failed
    run_dir: Path
    signum: int = 0
    key: str | None = None       # the config key a refusal is about (UserError.key)

    @property
    def exit_code(self) -> int:
        if self.status in ("completed", "pruned"):  # pruned: a search's verdict, not an error
            return 0
        return 128 + self.signum if self.status == "interrupted" else EXIT_FAILED


def execute(config: TrainerConfig, job: Job, output: Output | None = None) -> Outcome:
    """Run one job to its outcome; its record says the same. Every handler
    and hook it installs is restored when it returns (trainer.run in a notebook)."""
    process.begin_job()
    output = output or Output(brief=job.in_sweep)
    record = job.record(config)
    with _process_hooks(), output.held():
        if record.main:  # held until the run starts: a refusal is its one line
            output.say(job.header())
        if job.in_sweep:
            output.release()  # a sweep's job names itself first, even when it is refused
        outcome = _run(config, job, record, output)
    if outcome.status != "completed":
        leave_no_trace(job, record)
    return outcome


def leave_no_trace(job: Job, record: RunRecord) -> None:
    """A new run or cross-validation refused before it started leaves no
    folder behind (a sweep's job keeps its record of why; a fold or refit is
    part of its cross-validation's folder)."""
    if not record.started and not job.in_sweep and job.kind in ("run", "cv"):
        record.folder.remove_if_made_now()


def _run(config: TrainerConfig, job: Job, record: RunRecord, output: Output) -> Outcome:
    worst = worst_value(config.early_stopping.mode)
    stop, run = StopFlag(record), None
    try:
        with stop.at_startup():
            validate(config)  # a bad value first, whatever the folder holds
            record.folder.check_ours()
            with record.folder.locked():
                done = completed_already(config, record.previous, job.run_dir, output)
                if done is not None:
                    output.release()
                    return Outcome("completed", None, done, job.run_dir)
                refuse_to_overwrite(config, record.previous, job)
                run = build(config, job.run_dir, record, output, stop, epoch_end=job.epoch_end)
                output.release()
                with stop.installed():
                    value = fit(run)
        return Outcome("completed", None, value if not math.isnan(value) else worst, job.run_dir)
    except Exception as e:  # noqa: BLE001 - every way a job ends early, said in one line
        outcome, traceback_text = _failure(e, job, record, run, worst)
    except KeyboardInterrupt:  # Ctrl-C before the training loop took over SIGINT
        outcome, traceback_text = Outcome("interrupted", "stopped by SIGINT before training started", worst,
                                          job.run_dir, signal.SIGINT), None
    record.fail(outcome.status, outcome.error, traceback_text, key=outcome.key)
    return outcome


def _failure(e: Exception, job: Job, record: RunRecord, run, worst: float) -> tuple[Outcome, str | None]:
    """The outcome of a job that stopped early, and a traceback for a bug."""
    if isinstance(e, Interrupted):
        # A sweep's job is continued by its sweep (every job of it, once), not on its own.
        how = "its sweep's command with resume=auto continues it" if job.in_sweep else f"continue with resume={job.run_dir}"
        where = (f"at epoch {run.trainer.position.epoch}, step {run.trainer.position.step}; checkpoint saved, {how}"
                 if run is not None else "before training started")
        return Outcome("interrupted", f"stopped by {signal.Signals(e.signum).name} {where}", worst, job.run_dir,
                       e.signum), None
    if isinstance(e, Diverged):
        return Outcome("diverged", str(e), worst, job.run_dir), None
    if isinstance(e, Pruned):
        return Outcome("pruned", str(e), worst, job.run_dir), None
    if isinstance(e, UserError):
        return Outcome("failed", str(e), worst, job.run_dir, key=e.key), None
    outcome = Outcome("failed", _unexpected(e, record), worst, job.run_dir)
    bug = outcome.error.startswith("internal error")
    return outcome, "".join(traceback.format_exception(e)) if bug else None


@contextlib.contextmanager
def _process_hooks():
    """SIGINT/SIGTERM handlers and threading.excepthook as they were before the
    job, whatever it installed (a second Ctrl-C during clean-up still works
    inside it). TensorBoard's writer thread: its error goes to trainer.log,
    and the loop meets the same error on its next write and says it in one line."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    hook = threading.excepthook
    threading.excepthook = _log_thread_error
    try:
        yield
    finally:
        threading.excepthook = hook
        with contextlib.suppress(ValueError):  # not the main thread: nothing was installed
            for signum, handler in saved.items():
                signal.signal(signum, handler)


def _log_thread_error(args) -> None:
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    # A disk error after the record closed would reach the console through Python's last-resort handler.
    (log.info if issubclass(args.exc_type, OSError) else log.error)(text)


def refuse(job: Job, error: str) -> Outcome:
    """A job whose config could not even be read: a sweep's job is recorded
    like any failure; a single run leaves nothing behind."""
    record = job.record(None)
    record.fail("failed", error)
    if not job.in_sweep and job.kind == "run":
        record.folder.remove_if_made_now()
    return Outcome("failed", error, worst_value(None), job.run_dir)


def completed_already(config: TrainerConfig, previous: dict | None, run_dir: Path, output: Output) -> float | None:
    """A resume into a folder that holds a run, before any file is touched:
    first the changes against what the run recorded (resume.check_record).
    Then a completed run with nothing left to train stays as it is and
    reports what it recorded; more epochs than it trained continue it. A
    change asked of it that could only apply to epochs not trained is
    refused (resume=auto, a sweep or a cross-validation continued, keeps it)."""
    if not config.resume or previous is None:
        return None
    changes = resume.check_record(run_dir, previous, as_dict(config), auto=config.resume == "auto")
    if previous.get("status") != "completed":
        return None
    trained = int(previous["trained"]["epochs"] or 0)
    planned = int((previous.get("hparams") or {}).get("epochs") or trained)
    resume.check_epochs(config.epochs, trained, run_dir if config.resume == "auto" else None)
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
    """A new run never starts over a run that is there (or whose record is lost)."""
    if config.resume or job.folder().is_empty():
        return
    if previous is None:
        how = (f"continue it with resume={job.run_dir}" if (job.run_dir / "checkpoints" / "last.ckpt").is_file()
               else "it has no checkpoint to continue from")
        raise UserError(f"{job.run_dir} holds a trainer run whose metrics.json is missing or unreadable; {how}, "
                        f"or choose another {job.folder().setting}")
    if job.multirun:
        how = "continue the sweep with resume=auto, or choose another hydra.sweep.dir"
    elif previous.get("kind") == "cv" or (job.run_dir / "checkpoints" / "last.ckpt").is_file():
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
            streams.write("", sys.stderr)  # after the progress line the signal cut
            say(f"stopped at once by a second {name}")
            os._exit(128 + signum)
        self.signum = signum
        streams.write("", sys.stderr)  # after the progress line the signal cut
        say(f"{name} received: finishing this step and saving a checkpoint (press Ctrl-C again to stop at once)")


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
    """The console line for a job that did not complete (after `trainer: `)."""
    word = "error" if outcome.status == "failed" else outcome.status
    return f"{word}: {outcome.error}"

