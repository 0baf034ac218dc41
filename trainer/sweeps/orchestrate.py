"""Which orchestrator a job needs: a cross-validation (`cv.folds=K`, its
folds and refit) or one run. The command line, the Python API and every
sweep job start here."""
from __future__ import annotations

from trainer.core.config import TrainerConfig
from trainer.report.tracking import Output
from trainer.runs.job import Job, Outcome, execute
from trainer.sweeps import cv


def run(config: TrainerConfig, job: Job, output: Output | None = None) -> Outcome:
    if config.cv.folds and not config.cv.fold:
        return cv.run(config, job, output or Output(brief=job.in_sweep))
    return execute(config, job, output)
