"""A folder of runs read back as rows: one per job folder, what its record
states (an older record upgraded once, trainer.runs.record.upgrade), and one
per planned job that never started. The summary's tables, ranking and
files are made of these rows (trainer.sweeps.summary).

A job folder holds `.hydra/overrides.yaml` and the `metrics.json` the job
rewrites atomically as it goes; nothing here depends on the process that
ran it, so a job that was stopped, killed or never started still shows up,
with a status that says so.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import yaml

from trainer.core.errors import UserError
from trainer.core.files import read_text
from trainer.runs import record
from trainer.sweeps.plan import PLAN, job_number, planned_job_name

COMPLETED = "completed"
# Every status a row can have, in the order counts are reported. A job's
# "running" becomes "incomplete": the summary cannot tell a job that crashed
# hard from one still going, and either way it has no final numbers.
STATUSES = (COMPLETED, "pruned", "failed", "diverged", "interrupted", "incomplete", "missing")
# The row's columns, in the order of summary.csv / summary.json.
METRICS = ("test/acc", "test/loss", "val/acc", "val/loss")
COLUMNS = ("job", "kind", "path", "overrides", "status", "error", "monitor", "mode", "eval_split", *METRICS,
           "best_epoch", "best_value", "best_metric", "epochs", "seconds", "cv/mean", "cv/std", "cv/metric",
           "startup_seconds", "fit_seconds", "final_eval_seconds", "pictures_seconds", "sessions", "timed_sessions")
# Where a job's time went (its metrics.json `timing`: every session of a resumed run), in the order it spends it.
TIME_PARTS = {"startup_seconds": "start-up", "fit_seconds": "fit", "final_eval_seconds": "final evaluation",
              "pictures_seconds": "pictures"}
EXIT_USAGE = 2
# Folders under a run or sweep that never hold a run of their own.
NOT_RUNS = ("checkpoints", "seed_groups")


class SweepError(UserError):
    """The folder is not a sweep: it does not exist or holds no job."""

    exit_code = EXIT_USAGE


# ------------------------------------------------------------------ collect
def collect(sweep_dir, every: bool = False) -> list[dict]:
    """One row per job folder under sweep_dir, in job order (0, 1, ..., 10),
    and one per planned job that has no folder yet (`missing`). With `every`
    (a folder that is not one sweep's own, such as outputs/): every run at
    any depth, sweep jobs, folds and refits included."""
    root = Path(sweep_dir)
    if not root.exists():
        raise SweepError(f"sweep folder {root} does not exist")
    if not root.is_dir():
        raise SweepError(f"{root} is not a folder; pass a sweep folder (hydra.sweep.dir)")
    if every:
        return _every_run(root)
    rows = [row_of(root, job) for job in find_jobs(root)]
    return rows + _missing(root, rows)


def _every_run(root: Path) -> list[dict]:
    """Every folder with metrics.json under root (not root itself), and the
    planned jobs of each sweep under it that never started."""
    rows, sweeps = [], []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in NOT_RUNS)
        here = Path(folder)
        if here != root and "metrics.json" in files:
            rows.append(row_of(root, here))
        if "sweep.json" in files:
            sweeps.append(here)
    for sweep in sweeps:
        own = [{**row, "job": Path(row["path"]).relative_to(sweep.resolve()).as_posix()} for row in rows
               if row.get("path") and Path(row["path"]).is_relative_to(sweep.resolve())]
        where = sweep.relative_to(root).as_posix()
        rows += [{**row, "job": f"{where}/{row['job']}" if where != "." else row["job"]}
                 for row in _missing(sweep, own)]
    return sorted(rows, key=lambda row: natural_key(row["job"]))


def _missing(root: Path, rows: list[dict]) -> list[dict]:
    """Planned jobs (sweep.json) without a folder: they never started. Each
    is named as its folder will be, with its planned overrides."""
    try:
        plan = json.loads(read_text(root / PLAN))
        planned, varies = plan.get("jobs") or [], plan.get("varies") or []
    except (OSError, ValueError, AttributeError):
        return []
    started = {job_number(row["job"].split("/")[0]) for row in rows}
    out = []
    for job in planned:
        if job.get("num") in started:
            continue
        overrides = [str(o) for o in job.get("overrides") or []]
        row = dict.fromkeys(COLUMNS)
        row.update(job=planned_job_name(job["num"], overrides, varies), kind="run", path=None, status="missing",
                   error="never started", overrides=" ".join(overrides))
        out.append(row)
    return out


def find_jobs(root: Path) -> list[Path]:
    """Job folders: direct subfolders with metrics.json or .hydra/, or, where a
    subfolder is not one, its own subfolders that are (one level deeper).
    Folders whose name starts with '.' (.submitit, .hydra) are never jobs."""
    jobs = []
    for child in _subdirs(root):
        if _is_job(child):
            jobs.append(child)
        else:
            jobs.extend(grandchild for grandchild in _subdirs(child) if _is_job(grandchild))
    return sorted(jobs, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:
        return []


def _is_job(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() or (folder / ".hydra").is_dir()


def natural_key(text: str) -> tuple:
    """'2' before '10'; numbers compare as numbers, the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


# ---------------------------------------------------------------------- row
def row_of(root: Path, job: Path) -> dict:
    """A job folder as a row: what its record states, nothing worked out here."""
    data, problem = _read_record(job)
    best, trained, final = _dict(data.get("best")), _dict(data.get("trained")), _dict(data.get("final"))
    history = [h for h in data.get("history") or [] if isinstance(h, dict)]
    status, error = _status(data, problem, trained)
    monitor = str(data["monitor"]) if data.get("monitor") else None
    best_value = number(best.get("value"))
    seconds = number(trained.get("train_seconds"))
    # A job that stopped early has no final numbers: its last epoch's are shown.
    last = final or (history[-1] if history else {})
    row = {"job": job.relative_to(root).as_posix(), "kind": data.get("kind") or "run", "path": str(job.resolve()),
           "overrides": " ".join(_overrides(job, data)), "status": status, "error": error, "monitor": monitor,
           "mode": mode_of(data["mode"]) if data.get("mode") else None, "eval_split": data.get("eval_split"),
           **{key: number(last.get(key)) for key in METRICS},
           "best_epoch": _int(number(best.get("epoch"))), "best_value": best_value,
           "best_metric": monitor if best_value is not None else None, "epochs": _int(number(trained.get("epochs"))),
           "seconds": None if seconds is None else round(seconds, 3),
           **{key: number(final.get(key)) for key in ("cv/mean", "cv/std")}, "cv/metric": final.get("cv/metric")}
    timing = _dict(data.get("timing"))
    # How many sessions the job ran (a resumed run's are more than one), and how many of them its times cover.
    sessions = {"sessions": int(data.get("resumed") or 0) + 1, "timed_sessions": _int(number(timing.get("sessions")))} \
        if data else {}
    return {**{key: row.get(key) for key in COLUMNS}, **{key: number(timing.get(key)) for key in TIME_PARTS},
            **sessions}


def _status(data: dict, problem: str | None, trained: dict) -> tuple[str, str | None]:
    """The row's status and its one-line error."""
    status = str(data.get("status") or "").strip().lower()
    error = one_line(data.get("error"))
    if problem == "missing":
        return "missing", "no metrics.json: the job never started"
    if problem:
        return "incomplete", problem
    if status in ("running", ""):
        done = f" after epoch {trained['epochs']}" if trained.get("epochs") else ""
        return "incomplete", error or f"stopped{done} without final metrics: killed or crashed (or still running)"
    return status, None if status == COMPLETED else error


def _read_record(job: Path) -> tuple[dict, str | None]:
    """The job's record in today's shape, or why there is none ('missing', or unreadable and why)."""
    path = job / "metrics.json"
    if not path.is_file():
        return {}, "missing"
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError) as e:
        return {}, f"metrics.json unreadable ({one_line(e)})"
    if not isinstance(data, dict):
        return {}, "metrics.json unreadable (not an object)"
    return record.upgrade(data, job), None


def _overrides(job: Path, data: dict) -> list[str]:
    """The job's overrides (.hydra's, else its record's), less how it was
    continued: a resumed seed stays in its group."""
    overrides = _read_overrides(job / ".hydra" / "overrides.yaml")
    if overrides is None:
        overrides = [str(o) for o in data.get("overrides") or []]
    return [o for o in overrides if not o.lstrip("+~").startswith("resume=")]


def _read_overrides(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(read_text(path))
    except (OSError, yaml.YAMLError):
        return None
    if data is None:
        return []
    return [str(o) for o in data] if isinstance(data, list) else None


# ------------------------------------------------------------------ values
def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def mode_of(value) -> str:
    return "min" if str(value).lower() == "min" else "max"


def one_line(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def number(value) -> float | int | None:
    """A finite number, or None (NaN, inf, text, bool and missing alike)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _int(value) -> int | None:
    return None if value is None else int(value)
