"""`hparams_search=optuna`: an Optuna search as a Hydra sweeper (README: Search).

Thin: the keys of hydra.sweeper and the command line become plain values
(trainer.sweeps.search.Search) and the search runs there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.trainer_launcher.local_launcher import job_dataset, job_threads
from trainer.core.engine import direction as mode_of
from trainer.core.errors import UserError
from trainer.sweeps import search, search_space, study as studies
from trainer.sweeps.pruning import PRUNERS

DIRECTIONS = ("maximize", "minimize")


class OptunaSweeper(Sweeper):
    # A plain class: Hydra imports plugin modules in a way @dataclass cannot work with.
    def __init__(self, sampler: Any = None, direction: str | None = None, n_trials: int = 20, n_jobs: int = 1,
                 study_name: str = "trainer", storage: str | None = None, pruner: str = "none",
                 heartbeat_interval: int = 10, grace_period: int = 60, params: Any = None, warm: bool = True,
                 **unknown: Any) -> None:
        if unknown:
            raise UserError(f"hydra.sweeper has no key {', '.join(sorted(unknown))}; its keys: sampler, direction, "
                            "n_trials, n_jobs, study_name, storage, pruner, heartbeat_interval, grace_period, "
                            "params, warm")
        self.sampler, self.direction, self.n_trials, self.n_jobs = sampler, direction, n_trials, n_jobs
        self.study_name, self.storage, self.pruner = study_name, storage, str(pruner).lower()
        self.heartbeat_interval, self.grace_period, self.warm = heartbeat_interval, grace_period, bool(warm)
        self.params = _plain(params)
        self.sampler = _plain(sampler)
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config

    def sweep(self, arguments: list[str]) -> None:
        config = self.config
        if self.pruner not in PRUNERS:
            raise UserError(f"hydra.sweeper.pruner={self.pruner} is not a pruner; use one of {', '.join(PRUNERS)}")
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        plan = search.Search(
            sweep_dir=sweep_dir, study_name=str(self.study_name),
            storage=studies.location(self.storage, sweep_dir), direction=self._direction(config),
            n_trials=int(self.n_trials), n_jobs=int(self.n_jobs), space=search_space.parse(self.params, arguments),
            hydra_overrides=[str(o) for o in OmegaConf.to_container(config.hydra.overrides.hydra)],
            pruner=self.pruner, heartbeat_interval=int(self.heartbeat_interval or 0),
            grace_period=int(self.grace_period or 0), resume="resume=auto" in arguments, warm=self.warm,
            # The search's config is every trial's but for the searched keys: its data is theirs.
            dataset=job_dataset(config), threads=job_threads(config))
        search.run(plan, self.sampler)

    def _direction(self, config: DictConfig) -> str:
        """hydra.sweeper.direction, else the monitor's mode (a loss is minimised)."""
        if self.direction:
            if str(self.direction) not in DIRECTIONS:
                raise UserError(f"hydra.sweeper.direction={self.direction} is not a direction; use maximize or "
                                "minimize (or leave it out: the monitor's mode decides)")
            return str(self.direction)
        es = config.get("early_stopping") or {}
        mode = str(es.get("mode", "auto"))
        if mode == "auto":
            mode = mode_of(str(es.get("monitor", "val/acc")))
        return "minimize" if mode == "min" else "maximize"


def _plain(node: Any) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
