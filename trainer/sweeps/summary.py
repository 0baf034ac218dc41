"""A sweep's summary, rebuilt from the job folders alone.

    trainer -m optimizer=sgd,adam lr=1e-3,1e-2   # written when the sweep ends (trainer.sweeps.callback)
    trainer-summary outputs/sweeps/<sweep>       # rebuild and print it at any time
    trainer-summary outputs/runs                 # any folder of runs: a table, read-only

A sweep folder (Hydra's `hydra.sweep.dir`) holds one folder per job, each
with `.hydra/overrides.yaml` and the `metrics.json` the job rewrites
atomically as it goes, and the sweep's plan (`sweep.json`: every job it
was to run). Nothing here depends on the process that ran the jobs: the
summary is rebuilt from those files, so a sweep that was stopped, a job
that was killed, or a job that never started all show up, with a status
that says so.

The summary lands at the sweep root as summary.csv, summary.md and
summary.json (each written atomically). A sweep with a failed or diverged
job exits non-zero, from the multirun and from `trainer-summary`, with one
line that names those jobs; jobs interrupted or not yet run are not
failures (`resume=auto` continues them).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from trainer.core import display
from trainer.report import hparams
from trainer.runs import record
from trainer.sweeps import groups, study_listing
from trainer.sweeps.plan import elsewhere, point
from trainer.core.errors import UserError, report, say, warn
from trainer.core.files import atomic_write, read_text
from trainer.report.tracking import wide_console
from trainer.runs.resume import is_cross_validation
from trainer.sweeps.plan import PLAN, job_number

if TYPE_CHECKING:  # rich is imported when a table is drawn, not when Hydra loads the callback
    from rich.console import Console
    from rich.table import Table

DEFAULT_MONITOR, DEFAULT_MODE = "val/acc", "max"
COMPLETED = "completed"
# Every status a row can have, in the order counts are reported. A job's
# "running" becomes "incomplete": the summary cannot tell a job that crashed
# hard from one still going, and either way it has no final numbers.
STATUSES = (COMPLETED, "pruned", "failed", "diverged", "interrupted", "incomplete", "missing")
FAILURES = ("failed", "diverged")  # what makes a sweep's exit status non-zero
# The row's columns, in the order of summary.csv / summary.json.
METRICS = ("test/acc", "test/loss", "val/acc", "val/loss")
COLUMNS = ("job", "kind", "path", "overrides", "status", "error", "monitor", "mode", *METRICS,
           "best_epoch", "best_value", "best_metric", "epochs", "seconds", "cv/mean", "cv/std", "cv/metric",
           "startup_seconds", "fit_seconds", "final_eval_seconds", "pictures_seconds")
# Where a job's time went (its metrics.json `timing`), in the order it spends it.
TIME_PARTS = {"startup_seconds": "start-up", "fit_seconds": "fit", "final_eval_seconds": "final evaluation",
              "pictures_seconds": "pictures"}
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.json")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    rows = [_row(root, job) for job in find_jobs(root)]
    return rows + _missing(root, rows)


# Folders under a run or sweep that never hold a run of their own.
NOT_RUNS = ("checkpoints", "seed_groups")


def _every_run(root: Path) -> list[dict]:
    """Every folder with metrics.json under root (not root itself), and the
    planned jobs of each sweep under it that never started."""
    rows, sweeps = [], []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in NOT_RUNS)
        here = Path(folder)
        if here != root and "metrics.json" in files:
            rows.append(_row(root, here))
        if "sweep.json" in files:
            sweeps.append(here)
    for sweep in sweeps:
        own = [{**row, "job": Path(row["path"]).relative_to(sweep.resolve()).as_posix()} for row in rows
               if row.get("path") and Path(row["path"]).is_relative_to(sweep.resolve())]
        where = sweep.relative_to(root).as_posix()
        rows += [{**row, "job": f"{where}/{row['job']}" if where != "." else row["job"]}
                 for row in _missing(sweep, own)]
    return sorted(rows, key=lambda row: _natural_key(row["job"]))


def _missing(root: Path, rows: list[dict]) -> list[dict]:
    """Planned jobs (sweep.json) without a folder: they never started."""

    try:
        planned = json.loads(read_text(root / PLAN)).get("jobs") or []
    except (OSError, ValueError, AttributeError):
        return []
    started = {job_number(row["job"].split("/")[0]) for row in rows}
    out = []
    for job in planned:
        if job.get("num") in started:
            continue
        row = dict.fromkeys(COLUMNS)
        row.update(job=str(job["num"]), kind="run", path=None, status="missing", error="never started",
                   overrides=" ".join(job.get("overrides") or []))
        out.append(row)
    return out


def shared_overrides(rows: list[dict]) -> str:
    """Overrides every job has (epochs=2 in `-m optimizer=a,b epochs=2`): they
    tell the jobs apart no better than the defaults, so the tables say them
    once and each row shows only what differs."""
    lists = [(row.get("overrides") or "").split() for row in rows]
    if len(lists) < 2:
        return ""
    shared = set.intersection(*map(set, lists))
    return " ".join(o for o in lists[0] if o in shared)


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
    return sorted(jobs, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:
        return []


def _is_job(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() or (folder / ".hydra").is_dir()


def _natural_key(text: str) -> tuple:
    """'2' before '10'; numbers compare as numbers, the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def _row(root: Path, job: Path) -> dict:
    record, problem = _read_metrics(job / "metrics.json")
    overrides = _read_overrides(job / ".hydra" / "overrides.yaml")
    if overrides is None:
        overrides = [str(o) for o in record.get("overrides") or []]
    # How a job was continued, not what it is: a resumed seed stays in its group.
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("resume=")]
    final = _dict(record.get("final"))
    best = _dict(record.get("best"))
    history = [h for h in record.get("history") or [] if isinstance(h, dict)]
    declared = str(record["monitor"]) if record.get("monitor") else None
    monitor = declared or DEFAULT_MONITOR
    mode = _mode(record.get("mode"))

    status = str(record.get("status") or "").strip().lower()
    error = _one_line(record.get("error"))
    if problem == "missing":
        status, error = "missing", "no metrics.json: the job never started"
    elif problem:
        status, error = "incomplete", problem
    elif status in ("running", ""):
        status = "incomplete"
        done = f" after epoch {history[-1].get('epoch')}" if history else ""
        error = error or f"stopped{done} without final metrics: killed or crashed (or still running)"
    elif status == COMPLETED:
        error = None

    # The last epoch stands in for the final numbers of a job that stopped early.
    last = final or (history[-1] if history else {})
    best_epoch, best_value, best_metric = _best(best, history, monitor, mode)
    if best_epoch is None:
        best_epoch = _number(final.get("best_epoch"))
    epochs = _number(final.get("epochs"))
    if epochs is None and history:
        epochs = _number(history[-1].get("epoch"))
    seconds = _number(final.get("train_seconds"))
    if seconds is None and history:
        seconds = sum(_number(h.get("epoch_seconds")) or 0.0 for h in history)

    row = {
        "job": job.relative_to(root).as_posix(),
        "kind": kind_of(job, record),
        "path": str(job.resolve()),
        "overrides": " ".join(overrides),
        "status": status,
        "error": error,
        "monitor": declared,
        "mode": mode if record.get("mode") else None,
    }
    for key in METRICS:
        row[key] = _number(last.get(key))
    row.update(best_epoch=_int(best_epoch), best_value=best_value, best_metric=best_metric, epochs=_int(epochs),
               seconds=None if seconds is None else round(seconds, 3),
               **{key: _number(final.get(key)) for key in ("cv/mean", "cv/std")})
    row["cv/metric"] = final.get("cv/metric")
    timing = _dict(record.get("timing"))
    row.update({key: _number(timing.get(key)) for key in TIME_PARTS})
    return row


KINDS = ("run", "cv", "fold", "refit")


def kind_of(job: Path, record: dict) -> str:
    """What a run folder is: its record's `kind`, else its HParams kind, else
    read from where it is (fold_2/, refit/ inside a cross-validation)."""
    for said in (record.get("kind"), _dict(record.get("hparams")).get("kind")):
        if said in KINDS:
            return said
    if record.get("monitor") == "cv/mean" or (job / "fold_1").is_dir():
        return "cv"
    if re.fullmatch(r"fold_\d+", job.name):
        return "fold"
    return "refit" if job.name == "refit" and (job.parent / "fold_1").is_dir() else "run"


def time_line(rows: list[dict]) -> str | None:
    """Where the sweep's time went, summed over its jobs: start-up, fit, final evaluation, pictures."""
    timed = [r for r in rows if any(r.get(key) is not None for key in TIME_PARTS)]
    if not timed:
        return None
    parts = [f"{name} {sum(r.get(key) or 0.0 for r in timed):.1f} s" for key, name in TIME_PARTS.items()]
    return f"Time, summed over {display.plural(len(timed), 'job')}: {', '.join(parts)}"


def _read_metrics(path: Path) -> tuple[dict, str | None]:
    if not path.is_file():
        return {}, "missing"
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError) as e:
        return {}, f"metrics.json unreadable ({_one_line(e)})"
    if not isinstance(data, dict):
        return {}, "metrics.json unreadable (not an object)"
    return data, None


def _read_overrides(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(read_text(path))
    except (OSError, yaml.YAMLError):
        return None
    if data is None:
        return []
    return [str(o) for o in data] if isinstance(data, list) else None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _mode(value) -> str:
    return "min" if str(value).lower() == "min" else "max"


def _one_line(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _number(value) -> float | int | None:
    """A finite number, or None (NaN, inf, text, bool and missing alike)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _int(value) -> int | None:
    return None if value is None else int(value)


def _fallback(monitor: str) -> str | None:
    """Without a validation split the per-epoch evaluation is on test: val/acc means test/acc."""
    split, sep, metric = monitor.partition("/")
    return f"test/{metric}" if split == "val" and sep else None


def _lookup(values: dict, monitor: str):
    """values[monitor], else values[test/...] for a val/... monitor; None if neither is a number."""
    for key in (monitor, _fallback(monitor)):
        if key is not None and _number(values.get(key)) is not None:
            return values[key]
    return None


def _best(best: dict, history: list[dict], monitor: str, mode: str) -> tuple[Any, Any, str | None]:
    """(epoch, value, metric) of the best epoch: as recorded, else from the history."""
    value = _lookup(best, monitor)
    if value is not None:
        return _number(best.get("epoch")), value, _found_key(best, monitor)
    epoch, value = _best_of_history(history, monitor, mode)
    return epoch, value, next((_found_key(h, monitor) for h in history if _found_key(h, monitor)), None)


def _found_key(values: dict, monitor: str) -> str | None:
    """Which key _lookup reads: val/acc, or test/acc for a run without a validation split."""
    return next((key for key in (monitor, _fallback(monitor)) if key and _number(values.get(key)) is not None), None)


def _best_of_history(history: list[dict], monitor: str, mode: str) -> tuple[Any, Any]:
    """(epoch, value) of the best epoch so far, for a job with no `best`."""
    best = (None, None)
    for entry in history:
        value = _lookup(entry, monitor)
        if value is not None and (best[1] is None or (value < best[1] if mode == "min" else value > best[1])):
            best = (_number(entry.get("epoch")), value)
    return best


# --------------------------------------------------------------------- sort
def sweep_settings(rows: list[dict]) -> tuple[str, str]:
    """(monitor, mode) of the sweep: from the first completed job that records
    them, else any job that does (a job that failed early records defaults),
    else val/acc max."""
    for wanted in (True, False):
        for row in rows:
            if row.get("monitor") and (row.get("status") == COMPLETED) == wanted:
                return row["monitor"], _mode(row.get("mode") or DEFAULT_MODE)
    return DEFAULT_MONITOR, DEFAULT_MODE


# What the runs of any folder are ranked by: the first of these every completed one has.
COMMON = ("test/acc", "val/acc", "cv/mean")


def common_metric(rows: list[dict], monitor: str) -> str | None:
    """The monitor when every completed row has it, else the first of COMMON
    that every completed row has as a final number; None when there is none
    (a CV without a refit beside runs: the table is then grouped by kind)."""
    done = [r for r in rows if r.get("status") == COMPLETED]
    for metric in (monitor, *COMMON):
        if all(monitored_value(r, metric, strict=True) is not None for r in done):
            return metric
    return None


def sort_by_kind(rows: list[dict]) -> list[dict]:
    """Rows of any folder without a common metric: kind by kind (cv, run,
    refit, fold), each ranked by its own best monitored value."""
    order = {k: i for i, k in enumerate(("cv", "run", "refit", "fold"))}
    ranked = []
    for kind in sorted({r.get("kind") or "run" for r in rows}, key=lambda k: order.get(k, 9)):
        same = [r for r in rows if (r.get("kind") or "run") == kind]
        ranked += sort_rows(same, *sweep_settings(same))
    return ranked


def monitored_value(row: dict, monitor: str, strict: bool = False):
    """The row's number for `monitor`: its best epoch's value when the job
    monitored that metric, else its final value. Strict: that metric only
    (a val/acc monitor without a validation split has test/acc values)."""
    if strict:
        value = row["best_value"] if row.get("best_metric") == monitor else row.get(monitor)
        return _number(value)
    if monitor in (row.get("best_metric"), row.get("monitor")) and row.get("best_value") is not None:
        return row["best_value"]
    for key in (monitor, _fallback(monitor)):
        if key is not None and _number(row.get(key)) is not None:
            return row[key]
    return None


def sort_rows(rows: list[dict], monitor: str = DEFAULT_MONITOR, mode: str = DEFAULT_MODE,
              strict: bool = False) -> list[dict]:
    """Completed jobs first, best monitored value first (job order breaks ties,
    jobs without a value last); then every other job, in job order."""
    sign = 1 if _mode(mode) == "min" else -1

    def key(row):
        job = _natural_key(str(row.get("job", "")))
        if row.get("status") != COMPLETED:
            return (2, 0.0, job)
        value = monitored_value(row, monitor, strict)
        return (1, 0.0, job) if value is None else (0, sign * value, job)

    return sorted(rows, key=key)


def counts(rows: Iterable[dict]) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out


def failures(rows: Iterable[dict]) -> list[dict]:
    return sorted((r for r in rows if r.get("status") in FAILURES), key=lambda r: _natural_key(str(r.get("job", ""))))


def failure_line(rows: Iterable[dict], *, details: bool = False) -> str | None:
    """'failed jobs: 2_lr=-1, 4_optimizer=adam' ('failed job: ...' for one), or None when none failed.
    A job named by number only gets the overrides that set it apart. With
    details, each job also gets its status and error line."""
    rows = list(rows)
    bad = failures(rows)
    if not bad:
        return None
    shared = set(shared_overrides(rows).split())
    parts = []
    for row in bad:
        part = str(row["job"])
        if part.isdigit():
            own = [o for o in (row.get("overrides") or "").split() if o not in shared]
            part += f" ({' '.join(own) or 'defaults'})"
        if details:
            part += f" {row['status']}" + (f": {row['error']}" if row.get("error") else "")
        parts.append(part)
    return ("failed jobs: " if len(parts) > 1 else "failed job: ") + ("; " if details else ", ").join(parts)


# -------------------------------------------------------------------- write
def public(row: dict) -> dict:
    """The row as written: the COLUMNS, in order."""
    return {key: row.get(key) for key in COLUMNS}


def write_summary(sweep_dir, rows: list[dict], monitor: str | None = None, mode: str | None = None) -> list[Path]:
    """summary.csv, summary.md and summary.json at the sweep root, each written
    atomically (temp file + os.replace); returns their paths."""
    root = Path(sweep_dir)
    if monitor is None or mode is None:
        found_monitor, found_mode = sweep_settings(rows)
        monitor, mode = monitor or found_monitor, mode or found_mode
    table = [public(r) for r in rows]
    found = groups.find(rows)
    document = {
        "sweep_dir": str(root.resolve()),
        "monitor": monitor,
        "mode": mode,
        "jobs": len(table),
        "counts": counts(rows),
        "rows": table,
        "groups": found,
    }
    paths = [root / name for name in SUMMARY_FILES]
    _write_atomic(paths[0], _csv_text(table))
    _write_atomic(paths[1], _markdown_text(root, rows, monitor, mode, found))
    _write_atomic(paths[2], json.dumps(document, indent=2, allow_nan=False) + "\n")
    try:
        if groups.draw_curves(root, rows, found, set(shared_overrides(rows).split())):
            paths.append(root / "curves.png")
    except Exception as e:  # noqa: BLE001 - a picture is never a reason to lose the summary
        warn(f"curves.png not drawn ({type(e).__name__}: {e})", "trainer-summary")
    return paths


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def _csv_text(table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def _display_columns(rows: list[dict], monitor: str) -> list[tuple[str, str]]:
    """(header, key) of what the table and summary.md show: a metric column
    only where some row has that metric, a kind column where kinds differ.
    No overrides column where every job's folder name already says what sets
    it apart (3_optimizer=rmsprop)."""
    named = all(not str(r.get("job", "")).isdigit() and "=" in str(r.get("job", "")) for r in rows)
    kinds = {r.get("kind") or "run" for r in rows}
    columns = [("job", "job"), *([("kind", "kind")] if len(kinds) > 1 else []), ("status", "status"),
               *([] if named else [("overrides", "overrides")])]
    for key in METRICS:
        if any(r.get(key) is not None for r in rows):
            columns.append((key.replace("/", " "), key))
    if any(r.get("cv/mean") is not None for r in rows):
        cv_metric = next(r["cv/metric"] for r in rows if r.get("cv/metric"))
        columns.append((f"cv {cv_metric} mean ± std", "cv/mean"))
    columns += [("best epoch", "best_epoch")]
    best = {_best_unit(r) for r in rows if r.get("best_value") is not None}
    if best and best != {"cv/mean"}:  # a cross-validation's best is its mean, in the column before
        columns.append((f"best {best.pop()}" if len(best) == 1 else "best", "best_value"))
    columns += [("epochs", "epochs"), ("time", "seconds")]
    if any(r.get("error") for r in rows):
        columns.append(("error", "error"))
    return columns


def _best_unit(row: dict) -> str:
    """The metric a row's best value is of (test/acc for a val/acc monitor without a validation split)."""
    return row.get("best_metric") or row.get("monitor") or DEFAULT_MONITOR


def ranked_by(rows: list[dict], monitor: str) -> str:
    """The metric the ranking really used: test/acc for val/acc when no job had a val split."""
    fallback = _fallback(monitor)
    if fallback and monitor in METRICS and all(r.get(monitor) is None for r in rows) \
            and any(r.get(fallback) is not None for r in rows):
        return fallback
    return monitor


def _cell(row: dict, key: str, monitor: str) -> str:
    value = row.get(key)
    if key == "overrides":
        return " ".join(display.override(o) for o in telling(row, set(row.get("_shared", "").split()))) \
            or "(defaults)"
    if value is None:
        return "" if key == "error" else "-"
    if key == "cv/mean":  # in its metric's unit, with the spread over the folds
        metric = row.get("cv/metric") or "val/acc"
        std = row.get("cv/std")
        return display.metric(metric, value) + (f" ± {display.metric(metric, std).rstrip('%')}" if std else "")
    if key == "best_value":  # in its own metric's unit; named where the rows' metrics differ
        metric = _best_unit(row)
        if metric == "cv/mean":
            return display.metric(row.get("cv/metric") or DEFAULT_MONITOR, value)
        return display.metric(metric, value) if row.get("_one_best", True) else \
            f"{metric} {display.metric(metric, value)}"
    return display.metric(key, value)


def telling(row: dict, shared: set[str]) -> list[str]:
    """The overrides that tell a row apart: not those every row has, not those
    its folder's name says already (3_optimizer=adam), not where things are
    or how they are logged (data.root, tracking.*)."""
    named = set(re.split(r",(?=[\w.+~/-]+=)", re.sub(r"^\d+_", "", Path(str(row.get("job", ""))).name)))
    return [o for o in (row.get("overrides") or "").split()
            if o not in shared and display.override(o) not in named and not elsewhere(o.split("=", 1)[0])]


def _counts_text(rows: list[dict]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts(rows).items() if n) or "no jobs"


def _title(rows: list[dict], monitor: str, mode: str) -> str:
    return f"{display.plural(len(rows), 'job')} ({_counts_text(rows)}), ranked by {ranked_by(rows, monitor)} ({mode})"


_TEXT_KEYS = ("job", "kind", "status", "overrides", "error")


def _markdown_text(root: Path, rows: list[dict], monitor: str, mode: str, found: list[dict] = ()) -> str:
    columns = _display_columns(rows, monitor)
    shared = shared_overrides(rows)
    rows = _with_context(rows)

    def line(cells):
        return "| " + " | ".join(c.replace("\\", "\\\\").replace("|", "\\|") for c in cells) + " |"

    out = [f"# Sweep `{root.resolve()}`", "", f"{_title(rows, monitor, mode)}.",
           *([f"Every job: `{shared}`."] if shared else []), "",
           line([header for header, _ in columns]),
           "| " + " | ".join("---" if key in _TEXT_KEYS else "---:" for _, key in columns) + " |"]
    out += [line([_cell(row, key, monitor) for _, key in columns]) for row in rows]
    out += groups.markdown(list(found), set(shared.split()))
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------- print
_STYLES = {COMPLETED: "green", "pruned": "cyan", "failed": "red", "diverged": "red", "interrupted": "yellow",
           "incomplete": "yellow", "missing": "dim"}


# Dropped first, in this order, when the table is wider than the console.
_DROPPABLE = ("epochs", "best_epoch", "val/loss", "test/loss", "seconds", "val/acc", "error")


def fitting_columns(rows: list[dict], monitor: str, width: int | None) -> list[tuple[str, str]]:
    """The columns that fit in `width`: the least useful go first; the error
    column last of all (it is then printed below the table, one line a job)."""
    columns = _display_columns(rows, monitor)
    context = _with_context(rows)

    def needed(cols):
        total = 1
        for header, key in cols:
            cell = max([len(header)] + [len(_cell(r, key, monitor)) for r in context])
            total += 3 + (min(cell, 30) if key in ("overrides", "error") else cell)
        return total

    for key in _DROPPABLE if width else ():
        if needed(columns) <= width:
            break
        columns = [c for c in columns if c[1] != key]
    return columns


def _with_context(rows: list[dict]) -> list[dict]:
    """Rows with what their cells need to know of the others: the overrides
    every job has, and whether the best values are all of one metric."""
    shared = shared_overrides(rows)
    one_best = len({_best_unit(r) for r in rows if r.get("best_value") is not None}) <= 1
    return [{**row, "_shared": shared, "_one_best": one_best} for row in rows]


def render_table(rows: list[dict], monitor: str | None = None, mode: str | None = None, title: str | None = None,
                 width: int | None = None) -> "Table":
    """The console table: one line per job, accuracies as percentages. With a
    width (the console's), the least useful columns go until it fits, so the
    overrides stay readable."""
    from rich.table import Table

    if monitor is None or mode is None:
        found_monitor, found_mode = sweep_settings(rows)
        monitor, mode = monitor or found_monitor, mode or found_mode
    columns = fitting_columns(rows, monitor, width)
    rows = _with_context(rows)
    table = Table(title=title or f"Sweep: {_title(rows, monitor, mode)}", title_justify="left")
    for header, key in columns:
        if key in ("job", "kind", "status"):
            table.add_column(header, no_wrap=True, min_width=max(len(header), max(len(str(r.get(key))) for r in rows)))
        elif key == "overrides":
            table.add_column(header, overflow="fold", min_width=20)
        elif key == "error":
            table.add_column(header, overflow="fold", min_width=20, max_width=60)
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for row in rows:
        style = _STYLES.get(row.get("status"), "red")
        cells = []
        for _, key in columns:
            text = _cell(row, key, monitor)
            cells.append(f"[{style}]{_escape(text)}[/]" if key == "status" else _escape(text))
        table.add_row(*cells)
    return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def is_sweep(folder) -> bool:
    """A sweep's own folder (it has the sweep's plan or Hydra's multirun.yaml),
    as opposed to any folder that happens to hold runs (outputs/runs)."""

    folder = Path(folder)
    return (folder / PLAN).is_file() or (folder / "multirun.yaml").is_file() or is_cross_validation(folder)


def summarize(sweep_dir, console: "Console | None" = None, write: bool | None = None) -> list[dict]:
    """Collect the jobs, rank them, print the table and (for a sweep's own
    folder, or when `write`) write the summary files. Any other folder
    (outputs/) lists every run under it, ranked by a metric they all have.
    Raises SweepError when the folder does not exist or holds no job."""
    console = console or wide_console()
    own = is_sweep(sweep_dir)
    rows = collect(sweep_dir, every=not own)
    if not rows:
        if (Path(sweep_dir) / "metrics.json").is_file():
            raise SweepError(f"{sweep_dir} is a single run's folder, not a sweep; its numbers are in "
                             f"{Path(sweep_dir) / 'metrics.json'}")
        raise SweepError(f"{sweep_dir} holds no job folders (subfolders with metrics.json or .hydra/); "
                         "pass a sweep folder (hydra.sweep.dir) or a folder of runs")
    monitor, mode = sweep_settings(rows)
    rows, title = _ranked(Path(sweep_dir), rows, monitor, mode, own)
    paths = []
    if write if write is not None else own:
        try:
            paths = write_summary(sweep_dir, rows, monitor, mode)
            _write_hparams_groups(Path(sweep_dir), rows, groups.find(rows))
        except OSError as e:
            warn(f"could not write the summary in {sweep_dir}: {e.strerror or e}", "trainer-summary")
    console.print(render_table(rows, monitor, mode, title=title, width=console.width))
    if "error" not in {key for _, key in fitting_columns(rows, monitor, console.width)}:
        for row in (r for r in rows if r.get("error")):  # too narrow for the column: one line each
            console.print(f"{row['job']}: {row['status']}: {row['error']}", highlight=False, markup=False)
    shared = shared_overrides(rows)
    found = groups.find(rows)
    if found:
        console.print(groups.table(found, set(shared.split())))
    if shared:  # on a line of its own: a path in it must not be cut by the table's wrapping
        console.print(f"Every job: {' '.join(display.override(o) for o in shared.split())}", highlight=False,
                      soft_wrap=True)
    if time_line(rows):
        console.print(time_line(rows), highlight=False)
    if paths:
        console.print(f"Summary: {', '.join(p.name for p in paths)} in {Path(sweep_dir)}", highlight=False)
    return [public(row) for row in rows]


def _ranked(folder: Path, rows: list[dict], monitor: str, mode: str, own: bool) -> tuple[list[dict], str]:
    """The rows in the table's order and its title: a sweep's jobs by its
    monitor; a cross-validation's folds; any other folder's runs by a metric
    every completed run has, else kind by kind."""

    if own:
        rows = sort_rows(rows, monitor, mode)
        if is_cross_validation(folder):
            return rows, f"Cross-validation: {_title(rows, monitor, mode).replace('job', 'run')}"
        return rows, f"Sweep: {_title(rows, monitor, mode)}"
    counted = f"{display.plural(len(rows), 'run')} ({_counts_text(rows)})"
    metric = common_metric(rows, monitor)
    if metric is None:
        return sort_by_kind(rows), f"Runs in {folder}: {counted}, by kind, each ranked by its own best value"
    order = mode if metric == monitor else ("min" if metric.endswith("loss") else "max")
    return sort_rows(rows, metric, order, strict=True), f"Runs in {folder}: {counted}, ranked by {metric} ({order})"


def _write_hparams_groups(sweep_dir: Path, rows: list[dict], found: list[dict]) -> None:
    """TensorBoard's HParams view of the sweep's seed groups: one session each
    (trainer.report.hparams.write_group_session) in seed_groups/, beside the
    jobs' own. No experiment file: TensorBoard builds it from every session
    under its logdir, so several sweeps compare in one table."""
    hparams.remove_experiment(sweep_dir)
    folder = sweep_dir / GROUPS_FOLDER
    if folder.is_dir():
        for old in folder.glob("*/events.out.tfevents.*"):
            old.unlink(missing_ok=True)
    paths = {row["job"]: row.get("path") for row in rows}
    for group in found:
        if group["folds"] or not group["n"] or not any(Path(p).glob("events.out.tfevents.*")
                                                       for p in filter(None, map(paths.get, group["jobs"]))):
            continue  # a CV's folds (the CV is their row), or no completed run, or no TensorBoard
        first = record.read(Path(paths[group["jobs"][0]])) or {}
        shared = {k: v for k, v in (first.get("hparams") or {}).items() if k not in ("seed", "kind")}
        seeds = [point(r.split()).get("seed") for r in (_overrides_of(rows, j) for j in group["jobs"])]
        name = re.sub(r"[^\w.,=+\-]", "_", groups.label(group, set(shared_overrides(rows).split()))) or "defaults"
        hparams.write_group_session(folder / name, shared, {group["metric"]: group["mean"]},
                                    f"mean of {group['n']}: " + ",".join(_seed_text(s) for s in seeds))


GROUPS_FOLDER = "seed_groups"


def _overrides_of(rows: list[dict], job: str) -> str:
    return next((row.get("overrides") or "" for row in rows if row["job"] == job), "")


def _seed_text(seed) -> str:
    return str(int(seed)) if isinstance(seed, float) and seed.is_integer() else str(seed)


def summarize_or_say_why(sweep_dir: Path, quiet: bool = False) -> list[dict] | None:
    """The sweep's summary at its end (or when it was stopped); a line instead
    when there is nothing to summarise. Never raises: the sweep's own result
    comes first."""
    if not Path(sweep_dir).is_dir():
        say(f"sweep summary skipped: {sweep_dir} does not exist")
        return None
    try:
        return summarize(sweep_dir, console=wide_console(quiet), write=True)
    except SweepError as e:
        say(f"sweep summary skipped: {e}")
        return None


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """`trainer-summary <folder> [--write] [--quiet]`: the summary of a sweep
    (rebuilt and written) or of any folder of runs (printed; written with
    --write). Exit 1 if a job failed or diverged, 2 if the folder holds no run."""
    parser = argparse.ArgumentParser(
        prog="trainer-summary",
        description="Summarise a sweep (summary.csv, summary.md, summary.json rebuilt from its job folders) or "
                    "list the runs in any folder of runs, such as outputs/runs.")
    parser.add_argument("sweep_dir", metavar="folder", nargs="?",
                        help="a sweep folder (hydra.sweep.dir, e.g. outputs/sweeps/<sweep>) or a folder of runs")
    parser.add_argument("--study", nargs=2, metavar=("STORAGE", "NAME"),
                        help="list every trial of an Optuna study, whichever machine ran it (STORAGE: a database "
                             "URL, a journal file, or a search's sweep folder; NAME: hydra.sweeper.study_name)")
    parser.add_argument("--write", action="store_true",
                        help="also write the summary files into a folder that is not a sweep's own")
    parser.add_argument("--quiet", "-q", action="store_true", help="write the files without printing the table")
    args = parser.parse_args(argv)
    if args.study:
        print(report("trainer-summary", study_listing.text, *args.study))
        return EXIT_OK
    if args.sweep_dir is None:
        parser.error("give a sweep folder, or --study STORAGE NAME")

    rows = report("trainer-summary", summarize, args.sweep_dir, wide_console(args.quiet),
                  True if args.write else None)
    line = failure_line(rows)
    if line:
        print(line, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
