"""Parallel sweep jobs on this machine, each in a fresh process of its own
(trainer's Hydra launcher; Hydra finds launchers only under hydra_plugins).

    trainer -m hydra/launcher=joblib hydra.launcher.n_jobs=2 optimizer=sgd,adam,rmsprop,adagrad

(`hydra/launcher=local` is the same launcher under its own name; the joblib
name keeps joblib's `n_jobs` key.) A job is `python -m trainer <its
overrides> hydra.run.dir=<its folder>`, so one that dies, killed by hand or
by the OOM killer, takes no other job with it: it is recorded as killed,
the others go on, and the sweep ends with its summary. SIGINT or SIGTERM to
the sweep reaches every running job exactly once (each finishes its step,
saves and records `interrupted`), no job is started after it, and the
sweep writes its summary and exits 130 / 143; a job whose sweep process
dies gets SIGTERM (Linux), so none is left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from trainer.runs import record
from trainer.runs.folder import RunFolder
from trainer.core.process import die_with_parent, forwarding_signals
from trainer.runs.resume import quote


_SWEEP_ONLY = ("hydra.mode=", "hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper", "hydra.sweep.",
               "hydra.run.dir=", "hydra.job.num=")


class _Job:
    # A plain class: Hydra imports plugin modules in a way @dataclass cannot work with.
    def __init__(self, num: int, overrides: list[str], run_dir: Path, config: DictConfig):
        self.num, self.overrides, self.run_dir, self.config = num, overrides, run_dir, config
        self.process: subprocess.Popen | None = None


class LocalLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, **joblib_keys: Any) -> None:
        # joblib's other keys (backend, prefer, ...) mean nothing here: one process per job.
        cores = os.cpu_count() or 1
        self.n_jobs = cores if n_jobs is None or n_jobs < 1 else int(n_jobs)
        self.config: DictConfig | None = None
        self.hydra_context = None
        self.stop_signal = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from trainer.sweeps import callback as sweep

        jobs = [self._job(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        with forwarding_signals(self._on_signal):
            self._run(jobs)
        if self.stop_signal:
            sweep.stopped(Path(str(self.config.hydra.sweep.dir)), self.stop_signal)
        return [self._result(job) for job in jobs]

    # ------------------------------------------------------------------ jobs
    def _job(self, num: int, overrides: list[str]) -> _Job:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = num
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        return _Job(num, overrides, run_dir, config)

    def _run(self, jobs: list[_Job]) -> None:
        waiting, running = list(jobs), []
        while waiting or running:
            while waiting and len(running) < self.n_jobs and not self.stop_signal:
                job = waiting.pop(0)
                job.process = self._start(job)
                running.append(job)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                if job.process.returncode < 0:  # died by a signal: it never recorded an outcome
                    RunFolder(job.run_dir).mark_killed(job.overrides, -job.process.returncode)
            if self.stop_signal and not running:
                break
            time.sleep(0.05)

    def _start(self, job: _Job) -> subprocess.Popen:
        # The sweep's own Hydra settings, but not the ones that would make the job a sweep again.
        hydra_overrides = [o for o in OmegaConf.to_container(self.config.hydra.overrides.hydra)
                           if not o.startswith(_SWEEP_ONLY)]
        command = [sys.executable, "-m", "trainer", *job.overrides, *hydra_overrides,
                   f"hydra.run.dir={quote(str(job.run_dir))}", f"hydra.job.num={job.num}"]
        env = dict(os.environ)
        # As joblib does: the cores shared out between the jobs running at once.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.n_jobs)))
        env["TRAINER_SWEEP_JOB"] = "1"  # a brief console: a few lines per job
        # Its own session: a Ctrl-C in the terminal reaches the sweep alone, which passes it on once.
        return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=die_with_parent)

    def _on_signal(self, signum: int) -> None:
        first = not self.stop_signal
        self.stop_signal = self.stop_signal or signum
        if first:
            print(f"\ntrainer: {signal.Signals(signum).name} received: stopping the sweep's running jobs "
                  "(each saves a checkpoint); no new job starts", file=sys.stderr, flush=True)

    def _result(self, job: _Job) -> JobReturn:
        data = record.read(job.run_dir) or {}
        task = OmegaConf.masked_copy(job.config, [k for k in job.config if k != "hydra"])
        return JobReturn(overrides=job.overrides, cfg=task, hydra_cfg=job.config, working_dir=os.getcwd(),
                         task_name="trainer", status=JobStatus.COMPLETED, _return_value=record.sweep_value(data))
