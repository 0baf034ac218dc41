"""Parallel sweep jobs on this machine, each in a process of its own
(trainer's Hydra launcher; Hydra finds launchers only under hydra_plugins).

    trainer -m hydra/launcher=joblib hydra.launcher.n_jobs=2 optimizer=sgd,adam,rmsprop,adagrad

(`hydra/launcher=local` is the same launcher under its own name; the joblib
name keeps joblib's `n_jobs` key.) This file turns Hydra's configs into
plain job descriptions and back; trainer.sweeps.launcher runs the jobs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from trainer.runs import record
from trainer.sweeps import callback as sweep
from trainer.sweeps.launcher import JobRunner, JobSpec, job_argv


class LocalLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, warm: bool = True, **joblib_keys: Any) -> None:
        # joblib's other keys (backend, prefer, ...) mean nothing here: one process per job.
        self.runner = JobRunner(n_jobs, warm=bool(warm))
        self.config: DictConfig | None = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        # The sweeper's context is this one: its check of each batch now keeps the configs it composes,
        # and the template reads the first job's data meanwhile.
        hydra_context.config_loader = ComposedOnce(hydra_context.config_loader,
                                                   first=lambda config: self.runner.prepare(job_dataset(config)))
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # Every job's config was composed before any job starts (a bad value
        # stops the sweep with nothing run), by the sweeper's check.
        configs = [self._job_config(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        jobs = [self._spec(config, list(overrides)) for config, overrides in zip(configs, job_overrides)]
        sweep.announce()  # every job's config read: the sweep runs
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stop_signal = self.runner.run(jobs)
        if stop_signal:
            sweep.stopped(sweep_dir, stop_signal)
        return [self._result(job, config) for job, config in zip(jobs, configs)]

    def _job_config(self, num: int, overrides: list[str]) -> DictConfig:
        config = self.hydra_context.config_loader.take(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = num
        return config

    def _spec(self, config: DictConfig, overrides: list[str]) -> JobSpec:
        num = int(config.hydra.job.num)
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        argv = job_argv(overrides, list(OmegaConf.to_container(self.config.hydra.overrides.hydra)), run_dir, num)
        return JobSpec(num, overrides, run_dir, argv, job_dataset(config), job_threads(config))

    def _result(self, job: JobSpec, config: DictConfig) -> JobReturn:
        data = record.read(job.run_dir) or {}
        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        return JobReturn(overrides=job.overrides, cfg=task, hydra_cfg=config, working_dir=os.getcwd(),
                         task_name="trainer", status=JobStatus.COMPLETED, _return_value=record.sweep_value(data))


class ComposedOnce:
    """Hydra's config loader, keeping each job's config until the launcher takes it.

    Hydra's sweeper composes every job's config of a batch to check it
    (`validate_batch_is_legal`) and throws them away; the launcher would
    compose each again, which doubled the seconds before a sweep's first job.
    """

    def __init__(self, loader, first: Callable[[DictConfig], None]) -> None:
        self.loader, self.first = loader, first  # `first`: called with the sweep's first composed config
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = tuple(sweep_overrides)
        if key not in self.composed:
            self.composed[key] = self.loader.load_sweep_config(master_config, list(sweep_overrides))
            self.first, first = None, self.first
            if first is not None:
                first(self.composed[key])
        return self.composed[key]

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The job's config, composed now or by the sweeper's check; forgotten here."""
        config = self.composed.pop(tuple(sweep_overrides), None)
        return config if config is not None else self.loader.load_sweep_config(master_config, list(sweep_overrides))

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


def job_dataset(config: DictConfig) -> dict | None:
    """The job's dataset, for the template to decode once; None when it
    cannot be told here (the job then reads it itself, and says what is wrong).
    The Optuna sweeper asks it of the search's config too."""
    try:
        d = config.data
        return {"name": str(d.name), "root": os.path.abspath(os.path.expanduser(str(d.root))),
                "search_paths": [str(p) for p in d.search_paths or []], "verify": bool(d.verify)}
    except (OmegaConfBaseException, AttributeError, TypeError, ValueError):
        return None


def job_threads(config: DictConfig) -> int:
    """The job's `threads=` (0: its share of the cores)."""
    try:
        return int(config.threads or 0)
    except (OmegaConfBaseException, TypeError, ValueError):
        return 0
