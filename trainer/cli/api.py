"""`trainer.run(...)`: the same experiment from Python (a notebook, a script).

    import trainer
    result = trainer.run("model=conv", "optimizer=adam", "lr=1e-3", "epochs=1")
    result["final"]["test/acc"], result["run_dir"]

It composes the same config tree as the command line, runs the same job
(build, fit, the run record) into `outputs/runs/<date>_<time>_<random>` (or
`run_dir=`), and returns the run's metrics.json content with its folder. A
bad override or a run that does not complete raises `trainer.UserError`
with the same one line the CLI prints.
"""
from __future__ import annotations

import copy
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import open_dict, read_write

from trainer.cli import hydra_glue
from trainer.cli.hydra_errors import describe
from trainer.core import process
from trainer.core.errors import UserError
from trainer.report.tracking import Output
from trainer.runs import record, resume
from trainer.runs.job import Job
from trainer.sweeps import orchestrate


class RunFailed(UserError):
    """The run started but did not complete; `.result` is its metrics.json content."""

    def __init__(self, message: str, result: dict | None):
        super().__init__(message)
        self.result = result


def compose(*overrides: str, hydra_config: bool = False):
    """The composed config for these overrides, as the schema's dataclasses
    (with `hydra_config`: the raw DictConfig with Hydra's node, for the caller
    that needs the run folder)."""
    hydra_glue.register()
    try:
        with initialize_config_module("trainer.conf", version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_config)
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors, said in one line
        raise UserError(describe(e, list(overrides))) from e
    if hydra_config:
        return cfg
    return hydra_glue.typed(cfg)


def run(*overrides: str, run_dir: str | Path | None = None, quiet: bool = False) -> dict:
    """Train one run; returns its metrics.json content plus "run_dir"."""
    odd = [o for o in overrides if not isinstance(o, str)]
    if odd:
        raise UserError(f"trainer.run takes overrides as strings such as \"lr=0.01\"; got {odd[0]!r}")
    if run_dir is not None and not isinstance(run_dir, (str, Path)):
        raise UserError(f"run_dir= takes a folder path (a str or pathlib.Path); got {run_dir!r}")
    # resume=<run folder or .ckpt>: the run's own overrides and folder, as on the command line.
    overrides = tuple(resume.expand(list(overrides)))
    if run_dir is not None and any(o.startswith("resume=") and o != "resume=auto" for o in overrides):
        raise UserError("resume= continues a run in its own folder; leave out run_dir=")
    cfg = compose(*overrides, hydra_config=True)
    folder = Path(run_dir if run_dir is not None else str(cfg.hydra.run.dir))
    choices = dict(cfg.hydra.runtime.choices)
    task = copy.deepcopy(cfg)  # the job's config is the tree without Hydra's node, as Hydra does it
    with read_write(task), open_dict(task):
        del task["hydra"]
    config = hydra_glue.typed(task)
    process.started_before_any_job()  # the interpreter's age is not this run's start-up
    outcome = orchestrate.run(config, Job(run_dir=folder, overrides=list(overrides), choices=choices),
                              Output(quiet=quiet))
    result = record.read(folder)
    if outcome.status != "completed":
        raise RunFailed(outcome.error or outcome.status, result)
    return {**(result or {}), "run_dir": str(folder)}
