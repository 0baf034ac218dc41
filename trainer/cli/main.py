"""`trainer`: compose the config, turn it into typed objects once, run the job.

The command-line layer (with trainer.cli.api for notebooks) is the only one
that sees a DictConfig; everything below it takes plain objects.

    trainer                                    # the seed's quickstart
    trainer model=conv optimizer=adam lr=1e-3  # swap any group
    trainer -m optimizer=sgd,adam,rmsprop      # a sweep
    trainer resume=outputs/runs/<run>          # continue a run where it stopped
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainer.cli import hydra_glue
from trainer.core import distributed, streams
from trainer.core.errors import UserError, report, say
from trainer.runs import resume
from trainer.runs.job import Job, describe_failure, refuse
from trainer.sweeps import callback as sweep
from trainer.sweeps import forkserver, orchestrate, pruning, search
from trainer.sweeps.plan import job_number


@hydra.main(version_base=None, config_path="pkg://trainer.conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """One job. Returns the monitored metric (what an Optuna sweep optimises).

    A failure is recorded in the job's metrics.json; a single run then exits
    non-zero with one line, a multirun job returns the worst value (-inf, or
    +inf for a minimised monitor) so the sweep goes on.
    """
    hc = HydraConfig.get()
    try:
        config = hydra_glue.typed(cfg)
    except UserError as e:
        job = _job(hc)
        outcome = refuse(job, str(e))
    else:
        job = _job(hc, epoch_end=_search_reporter(config.epochs, config.early_stopping.monitor))
        outcome = orchestrate.run(config, job)
    if outcome.status != "completed":
        if distributed.is_main() or outcome.status != "interrupted":  # torchrun: rank 0 alone says where to resume
            say(describe_failure(outcome))
        if outcome.status == "interrupted" and job.multirun:  # a stopped sweep stops whole, with its summary
            sweep.stopped(Path(str(hc.sweep.dir)), outcome.signum)
        if outcome.status == "interrupted" or not job.multirun:
            sys.exit(outcome.exit_code)
    return outcome.value


def _job(hc, epoch_end=None) -> Job:
    """The job as Hydra knows it, with `epoch_end` (a search's pruning reports) when its config could be read."""
    return Job(run_dir=Path(hc.runtime.output_dir),
               # As typed, unresolved: the record re-applies them on resume.
               overrides=list(OmegaConf.to_container(hc.overrides.task, resolve=False)),
               choices=dict(hc.runtime.choices), multirun=hc.mode == RunMode.MULTIRUN,
               # A job of trainer's own launcher runs as a plain run in a process of its own.
               in_sweep=hc.mode == RunMode.MULTIRUN or os.environ.get("TRAINER_SWEEP_JOB") == "1",
               hydra_yaml=OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})), belongs=_sweep_of(hc),
               epoch_end=epoch_end)


def _sweep_of(hc) -> dict:
    """Which sweep a job belongs to: Hydra's own multirun job, or a job of our
    process launcher (a run in a folder of the sweep, named by its number)."""
    if hc.mode == RunMode.MULTIRUN:
        return {"sweep": {"dir": str(hc.sweep.dir), "num": int(hc.job.num)}}
    if os.environ.get("TRAINER_SWEEP_JOB") == "1":
        run_dir = Path(hc.runtime.output_dir)
        return {"sweep": {"dir": str(run_dir.parent), "num": job_number(run_dir.name)}}
    return {}


def _search_reporter(epochs: int, monitor: str):
    """A trial of an Optuna search with a pruner (trainer.sweeps.search starts
    it with these variables): its epochs are reported to the study."""
    env = os.environ
    if not env.get(search.ENV_TRIAL):
        return None
    return pruning.Reporter(env[search.ENV_STORAGE], env[search.ENV_STUDY], int(env[search.ENV_TRIAL]),
                            env.get(search.ENV_PRUNER, "median"), epochs, monitor)


def main() -> None:
    """Console script: Hydra's entry point with one-line errors and resume."""
    if forkserver.wanted(sys.argv[1:]):
        # Before Hydra starts: the sweep's jobs are forked from this copy of the
        # process, which has imported everything and never initialised Hydra.
        forkserver.fork_early(entry=main, warm_up=hydra_glue.warm_up)
    if os.environ.get("TRAINER_SWEEP_JOB") == "1" or "-m" in sys.argv[1:] or "--multirun" in sys.argv[1:]:
        hydra_glue.skip_mode_probe()
    # Progress lines reach a pipe or log file as they happen, not in blocks.
    sys.stdout.reconfigure(line_buffering=True)
    hydra_glue.register()
    hydra_glue.install_error_reporter()
    # Hydra's entry point reads its arguments from sys.argv only: `resume=<run>`
    # is expanded there, in this console process, into the run's own overrides.
    sys.argv = [sys.argv[0], *report("trainer", resume.expand, sys.argv[1:])]
    if not distributed.is_main():
        # torchrun: only rank 0 writes outputs; the others get a scratch dir.
        sys.argv += [f"hydra.run.dir={resume.quote(tempfile.mkdtemp(prefix='trainer-rank'))}"]
    try:
        run()
    except BrokenPipeError:  # Hydra's own print() of --help, outside its error reporting
        streams.end_if_reader_gone()
        raise  # another pipe than the console's
