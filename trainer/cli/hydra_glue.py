"""Everything trainer asks of Hydra, in one place: the schemas and resolvers
the YAML tree needs, the composed config turned into typed objects once,
and Hydra's own error printing replaced by our one line.

Nothing here runs on import: `register()` is called by the entry point and
by the Python API before they compose.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import sys

from hydra import compose, initialize_config_module
from hydra._internal.hydra import Hydra
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer.core import config as schema
from trainer.core.distributed import job_gpu
from trainer.core.errors import UserError, first_line, report
from trainer.cli.hydra_errors import describe, is_lr_elsewhere, lr_elsewhere, suggest
from trainer.sweeps.callback import swept_keys
from trainer.sweeps.plan import job_dir_name, run_dir_name, sweep_dir_name

_registered = False


def register() -> None:
    """The schemas the YAML files' defaults lists name (`/schema/...`) and the
    resolvers they use. Once per process."""
    global _registered
    if _registered:
        return
    store = ConfigStore.instance()
    store.store(name="trainer_schema", node=schema.composition_schema())
    for path, node in schema.SCHEMAS.items():
        group, _, name = path.rpartition("/")
        store.store(group=f"schema/{group}" if group else "schema", name=name, node=node)
    # A random suffix for run and sweep folders: two runs started in the same
    # second (a sweep on several machines, a script) never share a directory.
    # Cached, so every place that resolves it in this process sees one value.
    OmegaConf.register_new_resolver("trainer_unique", lambda kind="run": secrets.token_hex(3), use_cache=True)
    # `device=${trainer_gpu:}`: parallel sweep jobs on one machine each take a
    # GPU, cuda:(job number % visible GPUs). See docs/scaling.md.
    OmegaConf.register_new_resolver("trainer_gpu", _job_gpu)
    # Folder names that say what varies first (trainer.sweeps.plan): a run's
    # `model=conv-<date>_<time>_<random>`, a sweep's `lr+optimizer-<date>_...`,
    # a sweep job's `3_optimizer=rmsprop`.
    OmegaConf.register_new_resolver("trainer_run_dir", run_dir_name)
    # Cached like `now`: Hydra copies the sweep's resolver cache into each job's
    # config, whose own overrides (optimizer=sgd) no longer say what the sweep varies.
    OmegaConf.register_new_resolver(
        "trainer_sweep_dir", lambda task, params, stamp, unique: sweep_dir_name(swept_keys(params, task), stamp, unique),
        use_cache=True)
    OmegaConf.register_new_resolver("trainer_job_dir", lambda num, dirname="": job_dir_name(num, dirname))
    # `trainer --help`: the groups a user can choose (config.yaml's hydra.help.template).
    OmegaConf.register_new_resolver("trainer_groups", choosable_groups)
    _registered = True


def warm_up() -> None:
    """In a sweep's template process (trainer.sweeps.forkserver): compose the
    config once, so that every job forked from it finds Hydra's first-use
    costs paid (its plugins found, the override and interpolation grammars'
    caches built) and composes in a third of the time. Hydra is left
    uninitialised, as the jobs expect it."""
    register()
    try:
        with initialize_config_module("trainer.conf", version_base=None):
            compose("config", overrides=["epochs=1", "hydra.job.num=0"], return_hydra_config=True)
    except Exception:  # noqa: BLE001 - a warm-up only: each job composes its own config and says what is wrong
        GlobalHydra.instance().clear()


def skip_mode_probe() -> None:
    """`hydra.main` composes the whole config a second time only to read
    hydra.mode from it (in a warm sweep job, half its start-up). For a
    command line that already says its mode it is told nothing: a sweep job
    is a run by construction (its sweep wrote it, without hydra.mode), and
    `-m` is a multirun whatever a config says. Hydra has no switch for this;
    its answer is made what it is for every trainer config (no mode set), so
    Hydra goes on exactly as before."""
    Hydra.get_mode = lambda self, config_name, overrides: None


def choosable_groups() -> str:
    """`group: option, option` a line, for each group of the config tree a
    user picks from: not Hydra's own (`hydra/...`, trainer --hydra-help lists
    them), not the schemas the YAML files are checked against (`schema/...`)."""
    loader = GlobalHydra.instance().config_loader()
    lines = [f"{group}: {', '.join(sorted(loader.get_group_options(group)))}"
             for group in sorted(loader.list_groups("")) if group not in ("hydra", "schema")]
    return "\n".join(lines)


def _job_gpu(num=None) -> str:
    if num is None:  # the running Hydra job's number (0 outside a sweep)
        try:
            num = HydraConfig.get().job.get("num", 0)
        except ValueError:  # no Hydra job (a plain compose)
            num = 0
    return job_gpu(num)


def typed(cfg: DictConfig) -> schema.TrainerConfig:
    """The composed config as the schema's dataclasses, every interpolation
    resolved: `lr=${nope}` or `~epochs` fails here, naming its key."""
    try:
        composed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "the config"
        raise UserError(f"{key}: {first_line(e)}; check its value (trainer --cfg job shows the whole config)") from e
    _refuse_extra_keys(cfg, composed, "")
    return schema.from_composed(composed)


def _refuse_extra_keys(node: DictConfig, obj, prefix: str) -> None:
    """A key added with `+` that the schema does not have would be dropped
    without a word (`+optimizer.lr=0.5`): refuse it, naming it."""
    if not dataclasses.is_dataclass(obj):
        return
    fields = {f.name for f in dataclasses.fields(obj)}
    for key in node:
        full = f"{prefix}{key}"
        if key not in fields:
            if is_lr_elsewhere(full):
                raise UserError(lr_elsewhere(full, str(node[key])))
            raise UserError(f"unknown config key '{full}'{suggest(full, accepted=sorted(fields))}")
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            _refuse_extra_keys(value, getattr(obj, key), f"{full}.")


def install_error_reporter() -> None:
    """Hydra prints composition errors over several lines (and tracebacks for
    others); a user gets one line naming the key, the value and the fix.

    Hydra has no public hook for this: `hydra.main` hands every error to
    `hydra._internal.utils.run_and_report`, so that function is the one
    replaced (for this console process only; the Python API composes with
    hydra.compose and catches the errors itself)."""
    from hydra._internal import utils as hydra_utils

    def run_and_report(func):
        def described():
            try:
                return func()
            except (UserError, SystemExit, KeyboardInterrupt, BrokenPipeError):
                raise
            except Exception as e:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                raise UserError(describe(e, sys.argv[1:])) from e

        return report("trainer", described)

    hydra_utils.run_and_report = run_and_report
