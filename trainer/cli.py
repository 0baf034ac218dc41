"""`trainer`: compose the config, turn it into typed objects once, run the job.

This is the only module that sees a DictConfig (with api.py, which composes
the same tree for notebooks); everything below it takes plain objects.

    trainer                                    # the seed's quickstart
    trainer model=conv optimizer=adam lr=1e-3  # swap any group
    trainer -m optimizer=sgd,adam,rmsprop      # a sweep
    trainer resume=outputs/runs/<run>          # continue a run where it stopped
"""
from __future__ import annotations

import os
import secrets
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer import config as schema
from trainer import resume
from trainer.errors import UserError, first_line, report
from trainer.job import Job, describe_failure, execute, refuse


def register() -> None:
    """Make the schemas visible to the YAML files' defaults lists (`/schema/...`)."""
    store = ConfigStore.instance()
    store.store(name="trainer_schema", node=schema.TrainerConfig)
    for path, node in schema.SCHEMAS.items():
        group, _, name = path.rpartition("/")
        store.store(group=f"schema/{group}" if group else "schema", name=name, node=node)


register()
# hydra/launcher=joblib is trainer's own launcher (conf/hydra/launcher/joblib.yaml); Hydra 1.3 then
# merges it with joblib's schema of the same name (harmless: the launcher takes joblib's keys)
# and warns about that deprecated matching on every run.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
# A random suffix for run and sweep folders: two runs started in the same
# second (a sweep on several machines, a script) never share a directory.
# Cached, so every place that resolves it in this process sees one value.
OmegaConf.register_new_resolver("trainer_unique", lambda kind="run": secrets.token_hex(3), use_cache=True)


def _job_gpu(num=None) -> str:
    from trainer.distributed import job_gpu

    if num is None:  # the running Hydra job's number (0 outside a sweep)
        try:
            num = HydraConfig.get().job.get("num", 0)
        except ValueError:  # no Hydra job (a plain compose)
            num = 0
    return job_gpu(num)


# `device=${trainer_gpu:}`: parallel sweep jobs on one machine each take a GPU,
# cuda:(job number % visible GPUs). See docs/scaling.md.
OmegaConf.register_new_resolver("trainer_gpu", _job_gpu)
# A sweep job's folder: `3_optimizer=rmsprop` (trainer.sweep.job_dir_name).
OmegaConf.register_new_resolver("trainer_job_dir", lambda num, dirname="": _sweep().job_dir_name(num, dirname))


def _sweep():
    from trainer import sweep

    return sweep


def typed(cfg: DictConfig) -> schema.TrainerConfig:
    """The composed config as the schema's dataclasses, every interpolation
    resolved: `lr=${nope}` or `~epochs` fails here, naming its key."""
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "the config"
        raise UserError(f"{key}: {first_line(e)}; check its value (trainer --cfg job shows the whole config)") from e
    _refuse_extra_keys(cfg, config, "")
    return config


def _refuse_extra_keys(node: DictConfig, obj, prefix: str) -> None:
    """A key added with `+` that the schema does not have would be dropped
    without a word (`+optimizer.lr=0.5`): refuse it, naming it."""
    import dataclasses

    from trainer.hydra_errors import is_lr_elsewhere, lr_elsewhere, suggest

    if not dataclasses.is_dataclass(obj):
        return
    fields = {f.name for f in dataclasses.fields(obj)}
    for key in node:
        full = f"{prefix}{key}"
        if key not in fields:
            if is_lr_elsewhere(full):
                raise UserError(lr_elsewhere(full, str(node[key])))
            raise UserError(f"unknown config key '{full}'{suggest(full)}")
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            _refuse_extra_keys(value, getattr(obj, key), f"{full}.")


# --------------------------------------------------------------------- entry
@hydra.main(version_base=None, config_path="conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """One job. Returns the monitored metric (what an Optuna sweep maximises).

    A failure is recorded in the job's metrics.json; a single run then exits
    non-zero with one line, a multirun job returns the worst value (-inf, or
    +inf for early_stopping.mode=min) so the sweep goes on. Not NaN: Optuna
    2.10 refuses a NaN and hydra-optuna-sweeper 1.3 then ends the whole search.
    """
    hc = HydraConfig.get()
    job = Job(run_dir=Path(hc.runtime.output_dir),
              # As typed, unresolved: the record re-applies them on resume.
              overrides=list(OmegaConf.to_container(hc.overrides.task, resolve=False)),
              choices=dict(hc.runtime.choices), multirun=hc.mode == RunMode.MULTIRUN,
              # A job of trainer's own launcher runs as a plain run in a process of its own.
              in_sweep=hc.mode == RunMode.MULTIRUN or os.environ.get("TRAINER_SWEEP_JOB") == "1",
              hydra_yaml=OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    try:
        config = typed(cfg)
    except UserError as e:
        outcome = refuse(job, str(e))
    else:
        outcome = execute(config, job)
    if outcome.status != "completed":
        if _is_rank0() or outcome.status != "interrupted":  # torchrun: rank 0 alone says where to resume
            print(describe_failure(outcome), file=sys.stderr, flush=True)
        if outcome.status == "interrupted" and job.multirun:  # a stopped sweep stops whole, with its summary
            _sweep().stopped(Path(str(hc.sweep.dir)), outcome.signum)
        if outcome.status == "interrupted" or not job.multirun:
            sys.exit(outcome.exit_code)
    return outcome.value


def main() -> None:
    """Console script: Hydra's entry point with one-line errors and resume."""
    # Progress lines reach a pipe or log file as they happen, not in blocks.
    sys.stdout.reconfigure(line_buffering=True)
    _install_error_reporter()
    sys.argv = [sys.argv[0], *report("trainer", resume.expand, sys.argv[1:])]
    if not _is_rank0():
        # torchrun: only rank 0 writes outputs; the others get a scratch dir.
        import tempfile

        sys.argv += [f"hydra.run.dir={resume.quote(tempfile.mkdtemp(prefix='trainer-rank'))}"]
    run()


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _install_error_reporter() -> None:
    """Hydra prints composition errors over several lines (and tracebacks for
    others); a user gets one line naming the key, the value and the fix."""
    from hydra._internal import utils as hydra_utils

    def run_and_report(func):
        from trainer.hydra_errors import describe

        def described():
            try:
                return func()
            except (UserError, SystemExit, KeyboardInterrupt):
                raise
            except Exception as e:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                raise UserError(describe(e, sys.argv[1:])) from e

        return report("trainer", described)

    hydra_utils.run_and_report = run_and_report
