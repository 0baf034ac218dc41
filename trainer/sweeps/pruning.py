"""A search's trial, seen from inside its own process: after every epoch it
reports the monitored metric to the study (through the storage, so a pruner
compares it with trials on any machine) and stops, as `pruned`, when the
pruner says so.

    trainer -m hparams_search=optuna hydra.sweeper.pruner=median
"""
from __future__ import annotations

import math
import warnings

from trainer.core.engine import Pruned
from trainer.core.errors import UserError
from trainer.sweeps import study as studies

PRUNERS = ("none", "median", "hyperband")


def make_pruner(name: str, epochs: int):
    """The Optuna pruner a name stands for (None for none). An epoch is the resource."""
    import optuna

    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name} is not a pruner; use one of {', '.join(PRUNERS)}")
    if name == "median":
        # After 3 trials have finished an epoch, a trial below their median at that epoch stops.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, int(epochs)))
    return optuna.pruners.NopPruner()


class Reporter:
    """Called after every epoch with (epoch, monitored value): reports it,
    and raises Pruned when the pruner stops the trial."""

    def __init__(self, storage: str, study_name: str, trial_id: int, pruner: str, epochs: int, monitor: str = ""):
        import optuna

        self.pruner_name, self.monitor = pruner, monitor
        study = studies.load(studies.open_storage(storage), study_name, pruner=make_pruner(pruner, epochs))
        self.trial = optuna.trial.Trial(study, int(trial_id))

    def __call__(self, epoch: int, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return  # a diverged epoch stops the run on its own
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resumed trial reports its last epoch again: Optuna keeps the first
            self.trial.report(float(value), int(epoch))
        if self.trial.should_prune():
            raise Pruned(f"pruned at epoch {epoch} by the {self.pruner_name} pruner ({self.monitor or 'value'} "
                         f"{value:.4g}: behind the other trials at that epoch)")
