"""An Optuna study in its storage: opened, created once, its budget counted
and its trials listed. Every process of a search (the sweeper on each
machine, a trial that reports epochs for pruning, trainer-summary --study)
opens the storage here.

Storage: a journal file (the default, `<sweep>/optuna.journal`: no server),
or a database URL (`sqlite:///study.db`, `postgresql+psycopg://user@host:port/db`)
whose running trials send heartbeats: a trial silent for `grace_period`
seconds (its machine was lost) is failed and tried again once.
"""
from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

from trainer.core.display import plural
from trainer.core.errors import UserError

JOURNAL = "optuna.journal"
# Finished trials that do not count against n_trials: a killed one tried again, one asked past the budget.
OVER_BUDGET = "over_budget"


def is_database(storage: str) -> bool:
    return "://" in storage


def location(storage: str | None, sweep_dir: Path) -> str:
    """The storage a search uses: a database URL, or a journal file's absolute path."""
    if not storage:
        return str((Path(sweep_dir) / JOURNAL).resolve())
    return storage if is_database(storage) else str(Path(storage).expanduser().resolve())


def open_storage(storage: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """The Optuna storage object; heartbeats (and the retry of a trial whose
    heartbeat went stale) only where asked, on a database."""
    import optuna

    _quiet_experimental()
    if not is_database(storage):
        from optuna.storages.journal import JournalFileBackend

        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    beats = {}
    if heartbeat_interval:
        beats = dict(heartbeat_interval=int(heartbeat_interval), grace_period=int(grace_period or 0) or None,
                     heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    for attempt in range(5):  # several machines creating the tables of a fresh database at once
        try:
            return optuna.storages.RDBStorage(storage, **beats)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors, or a missing driver
            if attempt == 4 or not _race(e):
                raise UserError(f"hydra.sweeper.storage={redacted(storage)}: cannot open it ({_first(e)}); check "
                                "the URL, that the server is running, and that psycopg is installed "
                                "(pip install 'trainer[sweep]')") from e
            time.sleep(0.2 + attempt * 0.3)


def create(storage, name: str, direction: str, sampler=None, pruner=None):
    """The study, created once by whichever process comes first, loaded by the
    others (Optuna's own create_study(load_if_exists=True) races on a fresh
    database: optuna#4621)."""
    import optuna

    for attempt in range(5):
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                        pruner=pruner, load_if_exists=True)
            break
        except Exception as e:  # noqa: BLE001
            if attempt == 4 or not _race(e):
                raise
            time.sleep(0.2 + attempt * 0.3)
    held = study.direction.name.lower()
    if held != direction:
        raise UserError(f"the study '{name}' in its storage {held}s its value, and this search would {direction} "
                        f"it; set hydra.sweeper.direction={held}, or choose another hydra.sweeper.study_name")
    return study


def load(storage, name: str, pruner=None):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    except KeyError as e:
        raise UserError(f"no study named '{name}' in that storage; check the name (hydra.sweeper.study_name)") from e


def retried(trials) -> set[int]:
    """Numbers of failed trials that were tried again (by their retry's record)."""
    out = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history") or [])
    return out


def counted(trials) -> list:
    """The trials that use the budget (n_trials): all but failed ones tried
    again and ones asked past the budget (two machines asking at once)."""
    again = retried(trials)
    return [t for t in trials if t.number not in again and not t.user_attrs.get(OVER_BUDGET)]


def census(trials, n_trials: int | None = None) -> str:
    """What a study holds, said alike by a search's last line and
    `trainer-summary --study`: every trial by state, and, where they differ,
    how many count against the budget: '3 trials (2 complete, 1 fail); 2
    count against n_trials=2 (not 1 failed and tried again)'."""
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    text = f"{plural(len(trials), 'trial')} ({', '.join(f'{n} {s}' for s, n in states.items()) or 'none'})"
    budget = f"n_trials={n_trials}" if n_trials is not None else "n_trials"
    spent = counted(trials)
    if len(spent) == len(trials):
        return text + (f" of {budget}" if n_trials is not None else "")
    again = retried(trials)
    tried_again = sum(t.number in again for t in trials)
    why = [f"{tried_again} failed and tried again"] if tried_again else []
    if len(trials) - len(spent) > tried_again:
        why.append(f"{len(trials) - len(spent) - tried_again} asked past the budget")
    return f"{text}; {len(spent)} count against {budget} (not {', '.join(why)})"


def budget_left(study, n_trials: int) -> int:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return max(1, n_trials - len(counted(trials)))  # a retry waits: whoever asks next runs it
    return n_trials - len(counted(trials))


def within_budget(study, number: int, n_trials: int) -> bool:
    """Was trial `number` asked within the budget? Trial numbers are the
    storage's, so every machine sees the same order."""
    below = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < number]
    return len(below) < n_trials


def _race(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(word in text for word in ("integrity", "duplicate", "already exists", "unique", "locked",
                                         "deadlock", "could not serialize"))


def _first(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def redacted(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _quiet_experimental() -> None:
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
