"""A sweep from start to summary (Hydra callback), whatever the launcher.

At the start (before any job): a sweep folder that already holds jobs is
refused unless the sweep is continued with `resume=auto`; the plan (every
job the sweep will run, in order) is written to `<sweep>/sweep.json`, so a
summary can list the jobs that never started; job folders are named by
number and by the overrides that vary (`3_optimizer=rmsprop`); and SIGINT /
SIGTERM are passed on to jobs running in processes of their own.

At the end, or when the sweep is stopped: the summary (trainer.sweeps.summary)
from the job folders, and a non-zero exit naming the jobs that failed.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import signal
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from trainer.core import display, streams
from trainer.core.errors import UserError, say
from trainer.core.files import read_text, write_text
from trainer.runs.folder import RunFolder, refused_by_name
from trainer.sweeps.plan import NOT_IN_NAMES, PLAN, duplicates_error
from trainer.core.process import forward, wait_for_children
from trainer.sweeps import summary
from trainer.sweeps.ranking import counts as count_statuses, failure_line
from trainer.sweeps.rows import collect, find_jobs

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.trainer_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# A continued search may change its budget and pace: the study counts its trials, whoever ran them.
_BUDGET = ("hydra.sweeper.n_trials=", "hydra.sweeper.n_jobs=")
# The sweep's header (`Sweep: 2 jobs into <folder>`), said by announce() once every job's config
# has been checked: a sweep refused before (lr=abc,1e-3) says its one error line alone.
_header: list[str] = []


def announce() -> None:
    """Say the sweep's header now, if it has not been said: when its launcher
    has composed every job's config (trainer's launcher, the Optuna search once
    its study is open), or Hydra starts its first job in this process."""
    while _header:
        streams.write(_header.pop())


class SweepCallback(Callback):
    """Configured for single runs too, where it does nothing."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.ended = False

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = [str(o) for o in config.hydra.overrides.task]
        planned = plan(config, overrides)
        refuse_duplicate_points(planned)
        refuse_a_used_folder(sweep_dir, overrides)
        _name_jobs_by_what_varies(config, overrides)
        if not sweep_dir.exists():
            # Hydra calls no callback when its launcher refuses (hydra/launcher=slurm without srun): at exit.
            created = next(p for p in reversed([sweep_dir, *sweep_dir.parents]) if not p.exists())
            atexit.register(self._remove_unless_a_job_started, sweep_dir, created)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._lock_for_the_sweep(sweep_dir)
        write_text(sweep_dir / PLAN, json.dumps(planned, indent=2) + "\n")
        _stop_with_the_jobs(sweep_dir)
        _quiet_search_logging(planned["sweeper"])
        count = display.plural(len(planned["jobs"]), "job") if planned["jobs"] is not None else "jobs"
        if planned["sweeper"] == OPTUNA_SWEEPER:  # the study's budget, whoever runs its trials
            count = f"an Optuna search of {display.plural(int(config.hydra.sweeper.n_trials), 'trial')}"
        varies = f"; varies: {', '.join(planned['varies'])}" if planned["varies"] else ""
        _header[:] = [f"Sweep: {count} into {sweep_dir}{varies}"]

    def on_job_start(self, config, **kwargs: Any) -> None:
        # A job of a launcher in this process (Hydra's basic one): its sweeper checked every job first.
        announce()

    def _lock_for_the_sweep(self, sweep_dir: Path) -> None:
        """One sweep per folder: a second one started alongside (same
        hydra.sweep.dir) would train the same jobs and overwrite the summary.
        Held until this process exits; job processes lock their own folders."""
        try:
            self.lock = RunFolder(sweep_dir, setting="hydra.sweep.dir").hold_lock()
        except UserError as e:
            say(f"error: {e}")
            raise SystemExit(1) from e

    def _remove_unless_a_job_started(self, sweep_dir: Path, created: Path) -> None:
        """A sweep refused before its first job started leaves no folder
        behind (a command that fails changes nothing), nor the parents it
        made (outputs/sweeps); one that ran a job keeps it, for the summary
        and resume=auto."""
        if self.ended or not sweep_dir.is_dir():
            return
        if any(not p.name.startswith(".") and p.is_dir() for p in sweep_dir.iterdir()):
            return
        shutil.rmtree(sweep_dir, ignore_errors=True)
        for parent in sweep_dir.parents:
            if parent == created.parent:
                break
            with contextlib.suppress(OSError):  # not empty: something else writes there now
                parent.rmdir()

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        self.ended = True
        announce()  # a launcher whose jobs run elsewhere (submitit) did not say it
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = summary.summarize_or_say_why(sweep_dir, quiet=self.quiet)
        line = failure_line(rows or [], details=True)
        if line:
            say(line)
            raise SystemExit(1)


# ------------------------------------------------------------------ start
def refuse_duplicate_points(planned: dict) -> None:
    """`seed=0,0,1` or `lr=1e-3,0.001` would train one run twice and count it
    twice in a seed group: refused before any folder is made."""
    problem = duplicates_error([job["overrides"] for job in planned["jobs"] or []])
    if problem:
        say(f"error: {problem}")
        raise SystemExit(1)


def refuse_a_used_folder(sweep_dir: Path, overrides: list[str]) -> None:
    """Jobs already there would be trained again over their own files: only
    `resume=auto` may continue a sweep. The root, home and current folders
    are refused by name, whatever they hold (as a run's are)."""
    name = refused_by_name(sweep_dir)
    if name:
        say(f"error: hydra.sweep.dir={sweep_dir} is {name}; a sweep needs a folder of its own, "
            "such as hydra.sweep.dir=outputs/sweeps/my_sweep")
        raise SystemExit(1)
    if not sweep_dir.is_dir():
        return
    if "resume=auto" in overrides:
        _refuse_another_plan(sweep_dir, overrides)
        return
    jobs = find_jobs(sweep_dir)
    if not jobs:
        return
    counts = count_statuses(collect(sweep_dir))
    held = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    say(f"error: {sweep_dir} already holds {display.plural(len(jobs), 'job')} ({held}); continue the "
        "sweep with the same arguments and resume=auto (finished jobs are kept, the others continue or start), "
        "or choose a new hydra.sweep.dir")
    raise SystemExit(1)


def _refuse_another_plan(sweep_dir: Path, overrides: list[str]) -> None:
    """resume=auto continues the sweep that was started in this folder: other
    arguments would be refused by every job, and its plan rewritten first."""
    try:
        started = json.loads(read_text(sweep_dir / PLAN))["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no plan to hold it to (a sweep from before sweep.json)
    before, now = (sorted(o for o in items if o != "resume=auto" and not o.startswith(_BUDGET))
                   for items in (started, overrides))
    if before == now:
        return
    differ = [f"+{o}" for o in now if o not in before] + [f"-{o}" for o in before if o not in now]
    say(f"error: resume=auto continues the sweep in {sweep_dir} as it was started, and these arguments "
        f"differ ({' '.join(differ)}); run it again with its own arguments ({' '.join(before)} resume=auto), "
        "or choose a new hydra.sweep.dir")
    raise SystemExit(1)


def plan(config, overrides: list[str]) -> dict:
    """Every job the sweep will run, in job order, where that is known
    before it starts (the basic sweeper's grid; an Optuna search's count)."""
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    out: dict[str, Any] = {"sweeper": target, "command": overrides, "varies": sorted(_swept(config, overrides)),
                           "jobs": None}
    if target == BASIC_SWEEPER:
        out["jobs"] = [{"num": i, "overrides": job} for i, job in enumerate(_grid(config, overrides))]
    elif "n_trials" in sweeper and target != OPTUNA_SWEEPER:  # the study numbers our search's trials
        out["jobs"] = [{"num": i, "overrides": None} for i in range(int(sweeper.n_trials))]
    return out


def _grid(config, overrides: list[str]) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


def _name_jobs_by_what_varies(config, overrides: list[str]) -> None:
    """Hydra names job folders by every override (override_dirname): keep
    only those that vary from job to job, so the folder (and TensorBoard
    run) name says what differs. Applied to each job through the sweep's
    own Hydra overrides, which every launcher re-applies per job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict, read_write

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = {o.key_or_group for o in parsed} - _swept(config, overrides)
    exclude = sorted(fixed | set(NOT_IN_NAMES) | set(config.hydra.job.config.override_dirname.exclude_keys))
    with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
        config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]")


def _swept(config, overrides: list[str]) -> set[str]:
    return swept_keys(config.hydra.sweeper.get("params"), overrides)


def swept_keys(params, overrides) -> set[str]:
    """The keys a sweep varies: those given several values on the command
    line, and a search's own parameters (Optuna's hydra.sweeper.params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides or []])
    fixed = {o.key_or_group for o in parsed if not o.is_sweep_override()}  # these pin a search's own parameter
    searched = set(params or {}) - fixed
    return {o.key_or_group for o in parsed if o.is_sweep_override()} | searched


def _quiet_search_logging(sweeper: str) -> None:
    """Optuna logs every trial to stderr in colour (escape codes in a log file
    too): its warnings stay, the rest is what the summary shows."""
    if "optuna" not in sweeper:
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()  # warnings then reach Python's own last-resort handler, uncoloured


# ------------------------------------------------------------------- stop
def _stop_with_the_jobs(sweep_dir: Path) -> None:
    """SIGINT/SIGTERM to the sweep: passed on to jobs running in processes
    of their own (joblib/local, submitit_local), which save and record
    `interrupted`; then the summary and exit 130/143. A job running in this
    process (the basic launcher) handles the signal itself while it trains."""
    def handle(signum, frame):
        forward(signum)
        wait_for_children(timeout=300)  # each job saves its step, then exits
        stopped(sweep_dir, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, handle)
        except ValueError:  # not the main thread
            pass


def stopped(sweep_dir: Path, signum: int) -> None:
    """The sweep was stopped by a signal: summary, how to continue, exit 128+signal."""

    summary.summarize_or_say_why(sweep_dir)
    say(f"sweep stopped by {signal.Signals(signum).name}; continue it with the same arguments and "
        f"resume=auto hydra.sweep.dir={sweep_dir}")
    raise SystemExit(128 + signum)
