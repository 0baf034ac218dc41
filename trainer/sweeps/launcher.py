"""Parallel sweep jobs on this machine, each in a process of its own (the
work of trainer's Hydra launcher, hydra_plugins/trainer_launcher).

A job is `python -m trainer <its overrides> hydra.run.dir=<its folder>`:
by default forked from a warm template process that has imported
everything and read the data once (trainer.sweeps.forkserver), with
`hydra.launcher.warm=false` started as that command line. Either way one
that dies, killed by hand or by the OOM killer, takes no other job with it:
it is recorded as killed, the others go on, and the sweep ends with its
summary. SIGINT or SIGTERM to the sweep reaches every running job exactly
once (each finishes its step, saves and records `interrupted`), no job is
started after it; a job whose sweep process dies gets SIGTERM (Linux), so
none is left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.core.display import JOB_LABEL, plural
from trainer.core.errors import say
from trainer.core.process import die_with_parent, forwarding_signals
from trainer.runs.folder import RunFolder
from trainer.sweeps import forkserver

PLAIN_COMMAND = [sys.executable, "-m", "trainer"]
# What sys.argv[0] is in `python -m trainer`: a forked job is given the same.
TRAINER_MAIN = str(Path(__file__).resolve().parents[1] / "__main__.py")


@dataclass
class JobSpec:
    """One job, in plain values: what it runs and where."""

    num: int
    overrides: list[str]          # the job's own overrides (its record names them)
    run_dir: Path
    argv: list[str]               # the arguments of its `trainer` command line
    dataset: dict | None = None   # data.preload's arguments: decoded once by the template
    threads: int = 0              # the job's `threads` key (0: its share of the cores)


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
    """Runs jobs `n_jobs` at a time until done or stopped by a signal."""

    def __init__(self, n_jobs: int, warm: bool = True):
        self.cores = os.cpu_count() or 1
        self.n_jobs = self.cores if n_jobs is None or n_jobs < 1 else int(n_jobs)
        self.warm = warm
        self.template: forkserver.Template | None = None
        self.stop_signal = 0
        self.announced = False  # an Optuna sweep calls run() once per batch: one line per sweep
        self.running: list[tuple[JobSpec, object]] = []

    def prepare(self, job: JobSpec) -> None:
        """Before the jobs are all described: the template reads the first one's data."""
        if self.warm and job.dataset:
            try:
                self._template().preload(job.dataset)
            except forkserver.TemplateGone:
                pass  # found again, and said, when a job is started

    def run(self, jobs: list[JobSpec]) -> int:
        """Run them all; returns the signal that stopped the sweep (0: none)."""
        if not jobs:
            return 0
        threads = threads_per_job(self.cores, self.n_jobs, dict(os.environ))
        if not self.announced:
            print(plan_line(self.n_jobs, jobs[0].threads if jobs[0].threads > 0 else threads, self.cores, self.warm),
                  flush=True)
            self.announced = True
        with forwarding_signals(self._on_signal, jobs=lambda: [p.pid for _, p in self.running if p.pid]):
            self._loop(list(jobs), threads)
        return self.stop_signal

    def _loop(self, waiting: list[JobSpec], threads: int) -> None:
        while waiting or self.running:
            while waiting and len(self.running) < self.n_jobs and not self.stop_signal:
                job = waiting.pop(0)
                self.running.append((job, self._start(job, threads)))
            for job, process in [(j, p) for j, p in self.running if p.poll() is not None]:
                self.running.remove((job, process))
                if process.returncode < 0:  # died by a signal: it never recorded an outcome
                    RunFolder(job.run_dir).mark_killed(job.overrides, -process.returncode)
            if self.stop_signal and not self.running:
                break
            time.sleep(0.05)

    def _start(self, job: JobSpec, threads: int):
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        env["TRAINER_SWEEP_JOB"] = "1"  # a brief console: a few lines per job
        if self.n_jobs > 1:  # jobs side by side: each line says whose it is
            env[JOB_LABEL] = job.run_dir.name
        if self.warm:
            try:
                return self._template().start([TRAINER_MAIN, *job.argv], env, os.getcwd(), threads,
                                              " ".join([*PLAIN_COMMAND, *job.argv]), job.dataset)
            except forkserver.TemplateGone as e:  # killed from outside: the sweep goes on without it
                say(f"{e}; the remaining jobs start as fresh processes")
                self.warm = False
        # Its own session: a Ctrl-C in the terminal reaches the sweep alone, which passes it on once.
        return subprocess.Popen([*PLAIN_COMMAND, *job.argv], env=env, start_new_session=True,
                                preexec_fn=die_with_parent)

    def _template(self) -> forkserver.Template:
        if self.template is None:
            self.template = forkserver.early() or forkserver.Template.spawn()
        return self.template

    def _on_signal(self, signum: int) -> None:
        first = not self.stop_signal
        self.stop_signal = self.stop_signal or signum
        if first:
            print(file=sys.stderr)  # after the progress line the signal cut
            say(f"{signal.Signals(signum).name} received: stopping the sweep's running jobs (each saves a "
                "checkpoint); no new job starts")
