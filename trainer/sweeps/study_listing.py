"""`trainer-summary --study <storage> <name>`: every trial of an Optuna
study, whichever machine ran it: its number, state, value, parameters, the
machine and the job folder (each machine's sweep summary lists only its own
job folders)."""
from __future__ import annotations

from pathlib import Path

from trainer.core import display
from trainer.core.errors import UserError
from trainer.sweeps import study as studies

COLUMNS = ("trial", "state", "value", "params", "host", "folder")


def trials(storage: str, name: str) -> list:
    """The study's trials, in trial order. `storage`: a database URL, a journal
    file, or a sweep folder (its own journal)."""
    if not studies.is_database(storage):
        path = Path(storage)
        if path.is_dir():
            path = path / studies.JOURNAL
        if not path.is_file():
            raise UserError(f"no study storage at {storage}: give a database URL, a journal file, or the sweep "
                            "folder of a search that used the default storage")
        storage = str(path)
    return studies.load(studies.open_storage(storage), name).get_trials(deepcopy=False)


def rows(held: list) -> list[dict]:
    """One row per trial."""
    out = []
    for t in held:
        state = t.state.name.lower()
        status = t.user_attrs.get("status")
        if t.user_attrs.get(studies.OVER_BUDGET):
            state = "fail (over budget)"
        elif status and status not in ("completed", "pruned"):
            state = f"{state} ({status})"
        if t.system_attrs.get("failed_trial") is not None:
            state += f", retry of {t.system_attrs['failed_trial']}"
        out.append({"trial": t.number, "state": state, "value": t.value,
                    "params": " ".join(f"{k}={display.value(v) if isinstance(v, float) else v}"
                                       for k, v in sorted(t.params.items())),
                    "host": t.user_attrs.get("host"), "folder": t.user_attrs.get("dir")})
    return out


def text(storage: str, name: str) -> str:
    held = trials(storage, name)
    table = rows(held)
    cells = [[_cell(row[c]) for c in COLUMNS] for row in table]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return f"Study '{name}': {studies.census(held)}\n" + "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return display.value(value) if isinstance(value, float) else str(value)
