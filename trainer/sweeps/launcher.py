"""Sweep jobs on this machine, each in a process of its own: the one piece of
code that starts a job and watches it, for trainer's Hydra launcher
(hydra_plugins/trainer_launcher) and its Optuna sweeper (trainer.sweeps.search).

A job is `python -m trainer <its overrides> hydra.run.dir=<its folder>`:
by default forked from a warm template process that has imported
everything and read the data once (trainer.sweeps.forkserver), with
`warm=false` started as that command line. Either way one that dies,
killed by hand or by the OOM killer, takes no other job with it: it is
recorded as killed, the others go on, and the sweep ends with its summary.
SIGINT or SIGTERM to the sweep reaches every running job exactly once (each
finishes its step, saves and records `interrupted`), no job is started after
it; a job whose sweep process dies gets SIGTERM (Linux), so none is left
behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer.core import streams
from trainer.core.display import JOB_LABEL, plural
from trainer.core.errors import say
from trainer.core.process import die_with_parent, forward, forwarding_signals
from trainer.report import figures
from trainer.runs.folder import RunFolder
from trainer.runs.resume import quote
from trainer.sweeps import forkserver

PLAIN_COMMAND = [sys.executable, "-m", "trainer"]
# What sys.argv[0] is in `python -m trainer`: a forked job is given the same.
TRAINER_MAIN = str(Path(__file__).resolve().parents[1] / "__main__.py")
# The sweep's own Hydra settings a job must not get: they would make it a sweep again.
SWEEP_ONLY = ("hydra.mode=", "hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper", "hydra.sweep.",
              "hydra.run.dir=", "hydra.job.num=")


@dataclass
class JobSpec:
    """One job, in plain values: what it runs and where."""

    num: int
    overrides: list[str]          # the job's own overrides (its record names them)
    run_dir: Path
    argv: list[str]               # the arguments of its `trainer` command line
    dataset: dict | None = None   # data.preload's arguments: decoded once by the template
    threads: int = 0              # the job's `threads` key (0: its share of the cores)
    env: dict[str, str] = field(default_factory=dict)  # added to the sweep's environment
    # What its record says becomes of it, should it be killed (the search retries a trial itself).
    if_killed: str = "continue the sweep with its arguments and resume=auto"


def job_argv(overrides: list[str], sweep_hydra_overrides: list[str], run_dir: Path, num: int) -> list[str]:
    """A job's `trainer` arguments: its overrides, the sweep's own Hydra
    settings less those that would make it a sweep again, and its folder."""
    hydra = [o for o in sweep_hydra_overrides if not o.startswith(SWEEP_ONLY)]
    return [*overrides, *hydra, f"hydra.run.dir={quote(str(run_dir))}", f"hydra.job.num={num}"]


def threads_per_job(cores: int, slots: int, env: dict[str, str]) -> int:
    """Each running job's share of the cores (as joblib does), unless the
    environment already says (OMP_NUM_THREADS)."""
    given = env.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else max(1, cores // max(1, slots))


def plan_line(slots: int, threads: int, cores: int, warm: bool) -> str:
    """The sweep's one line about how it uses the machine."""
    used = slots * threads
    fit = "" if used == cores else f" (the machine has {plural(cores, 'core')})"
    how = "each forked from one warm process that read the data once" if warm else "each a fresh process"
    return (f"Jobs: {slots} at a time × {plural(threads, 'thread')} = {plural(used, 'thread')} on "
            f"{plural(min(used, cores), 'core')}{fit}; {how}")


class JobRunner:
    """Keeps up to `n_jobs` job processes running: starts each (forked warm,
    or plain), watches them end, passes SIGINT/SIGTERM on. `run()` runs a
    list of jobs; a caller with its own loop (the Optuna search) uses
    `free()`, `start()` and `finished()` inside `signals()`."""

    def __init__(self, n_jobs: int, warm: bool = True):
        self.cores = os.cpu_count() or 1
        self.n_jobs = self.cores if n_jobs is None or n_jobs < 1 else int(n_jobs)
        self.threads = threads_per_job(self.cores, self.n_jobs, dict(os.environ))
        self.warm = warm
        self.template: forkserver.Template | None = None
        self.stop_signal = 0
        self.announced = False  # an Optuna sweep calls run() once per batch: one line per sweep
        self.running: list[tuple[JobSpec, object]] = []  # (job, subprocess.Popen or forkserver.ForkedJob)
        self.signalled: set[int] = set()  # pids the stop signal was passed on to

    def prepare(self, dataset: dict | None) -> None:
        """Before the jobs are all described: the template reads their data."""
        if self.warm and dataset:
            try:
                self._template().preload(dataset)
            except forkserver.TemplateGone:
                pass  # found again, and said, when a job is started

    def announce(self, threads_key: int = 0) -> None:
        """The sweep's line on jobs × threads = cores, once (`threads_key`: the jobs' `threads=`)."""
        if not self.announced:
            streams.write(plan_line(self.n_jobs, threads_key if threads_key > 0 else self.threads, self.cores,
                                    self.warm))
            self.announced = True

    def run(self, jobs: list[JobSpec]) -> int:
        """Run them all; returns the signal that stopped the sweep (0: none)."""
        if not jobs:
            return 0
        self.announce(jobs[0].threads)
        waiting = list(jobs)
        with self.signals(stopping("the sweep's running jobs", "job")):
            while waiting or self.running:
                while waiting and self.free():
                    self.start(waiting.pop(0))
                self.finished()
                if self.stop_signal and not self.running:
                    break
                time.sleep(0.05)
        figures.wait_for_warm_up()  # not left importing when the sweep process ends
        return self.stop_signal

    def free(self) -> bool:
        """Whether a job may start now: a slot is free and no signal stopped the sweep. A forked job
        frees its slot when its results are known, while it writes its last files and exits."""
        holding = [p for _, p in self.running if _holds_slot(p)]
        return len(holding) < self.n_jobs and not self.stop_signal

    def start(self, job: JobSpec):
        """Start the job; returns its process (a Popen, or a ForkedJob asked the same way)."""
        process = self._process(job)
        if self.warm:
            # Idle while its jobs run, the sweep process readies its summary's curves.png meanwhile (not
            # with plain processes: a fork while a thread imports can deadlock the child before its exec).
            figures.warm_up_meanwhile()
        self.running.append((job, process))
        if self.stop_signal and process.pid and process.pid not in self.signalled:
            forward(self.stop_signal, [process.pid])  # the signal came while it was being started
            self.signalled.add(process.pid)
        return process

    def finished(self) -> list[tuple[JobSpec, object]]:
        """The jobs that ended since last asked; one killed by a signal is
        recorded as killed in its folder (it could not say so itself), or as
        interrupted when the signal was the sweep's own stop."""
        ended = [(job, process) for job, process in self.running if process.poll() is not None]
        for job, process in ended:
            self.running.remove((job, process))
            if process.returncode < 0:
                RunFolder(job.run_dir).mark_killed(job.overrides, -process.returncode, job.if_killed,
                                                   self.stopped_by_sweep(process))
        return ended

    def stopped_by_sweep(self, process) -> bool:
        """Whether a job killed by a signal died of the sweep's own stop,
        passed on while it was still starting (before it could catch it)."""
        return -process.returncode == self.stop_signal and process.pid in self.signalled

    def signals(self, on_stop: Callable[[int], None]) -> forwarding_signals:
        """While jobs run: each SIGINT/SIGTERM goes on to every running job
        once, no job starts after it, and `on_stop` says so on the first."""
        def stopped(signum: int) -> None:
            first = not self.stop_signal
            self.stop_signal = self.stop_signal or signum
            if first:
                on_stop(signum)
        return forwarding_signals(stopped, jobs=self._pids_to_signal)

    def _pids_to_signal(self) -> list[int]:
        # Not a job that has handed its slot on: its results are known, it is only writing its files.
        pids = [process.pid for _, process in self.running if process.pid and _holds_slot(process)]
        self.signalled.update(pids)
        return pids

    def _process(self, job: JobSpec):
        env = {**os.environ, **job.env}
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        env["TRAINER_SWEEP_JOB"] = "1"  # a brief console: a few lines per job
        if self.n_jobs > 1:  # jobs side by side: each line says whose it is
            env[JOB_LABEL] = job.run_dir.name
        if self.warm:
            try:
                return self._template().start([TRAINER_MAIN, *job.argv], env, os.getcwd(), self.threads,
                                              " ".join([*PLAIN_COMMAND, *job.argv]), job.dataset)
            except forkserver.TemplateGone as e:  # killed from outside: the sweep goes on without it
                say(f"{e}; the remaining jobs start as fresh processes")
                self.warm = False
        figures.wait_for_warm_up()  # no other thread at a fork (see start)
        # Its own session: a Ctrl-C in the terminal reaches the sweep alone, which passes it on once.
        return subprocess.Popen([*PLAIN_COMMAND, *job.argv], env=env, start_new_session=True,
                                preexec_fn=die_with_parent)

    def _template(self) -> forkserver.Template:
        if self.template is None:
            self.template = forkserver.early() or forkserver.Template.spawn()
        return self.template


def _holds_slot(process) -> bool:
    """A plain process holds its slot until it ends; a forked job until it says its results are known."""
    return not isinstance(process, forkserver.ForkedJob) or process.holds_slot()


def stopping(running: str, one: str) -> Callable[[int], None]:
    """What a sweep says once when a signal stops it: `running` (what it
    stops) and `one` (what no longer starts) name its jobs its own way."""
    def say_stopping(signum: int) -> None:
        streams.write("", sys.stderr)  # after the progress line the signal cut
        say(f"{signal.Signals(signum).name} received: stopping {running} (each saves a checkpoint); "
            f"no new {one} starts")
    return say_stopping
