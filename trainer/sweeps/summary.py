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

from trainer.sweeps import groups
from trainer.core.errors import UserError, report
from trainer.core.files import atomic_write, read_text
from trainer.report.tracking import wide_console

if TYPE_CHECKING:  # rich is imported when a table is drawn, not when Hydra loads the callback
    from rich.console import Console
    from rich.table import Table

DEFAULT_MONITOR, DEFAULT_MODE = "val/acc", "max"
COMPLETED = "completed"
# Every status a row can have, in the order counts are reported. A job's
# "running" becomes "incomplete": the summary cannot tell a job that crashed
# hard from one still going, and either way it has no final numbers.
STATUSES = (COMPLETED, "failed", "diverged", "interrupted", "incomplete", "missing")
FAILURES = ("failed", "diverged")  # what makes a sweep's exit status non-zero
# The row's columns, in the order of summary.csv / summary.json.
METRICS = ("test/acc", "test/loss", "val/acc", "val/loss")
COLUMNS = ("job", "path", "overrides", "status", "error", "monitor", "mode", *METRICS,
           "best_epoch", "best_value", "epochs", "seconds", "cv/mean", "cv/std", "cv/metric")
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.json")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class SweepError(UserError):
    """The folder is not a sweep: it does not exist or holds no job."""

    exit_code = EXIT_USAGE


# ------------------------------------------------------------------ collect
def collect(sweep_dir) -> list[dict]:
    """One row per job folder under sweep_dir, in job order (0, 1, ..., 10),
    and one per planned job that has no folder yet (`missing`)."""
    root = Path(sweep_dir)
    if not root.exists():
        raise SweepError(f"sweep folder {root} does not exist")
    if not root.is_dir():
        raise SweepError(f"{root} is not a folder; pass a sweep folder (hydra.sweep.dir)")
    rows = [_row(root, job) for job in find_jobs(root)]
    return rows + _missing(root, rows)


def _missing(root: Path, rows: list[dict]) -> list[dict]:
    """Planned jobs (sweep.json) without a folder: they never started."""
    from trainer.sweeps.plan import PLAN, job_number

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
        row.update(job=str(job["num"]), path=None, status="missing", error="never started",
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
    best_value = _lookup(best, monitor)
    best_epoch = _number(best.get("epoch")) if best_value is not None else None
    if best_value is None:
        best_epoch, best_value = _best_of_history(history, monitor, mode)
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
        "path": str(job.resolve()),
        "overrides": " ".join(overrides),
        "status": status,
        "error": error,
        "monitor": declared,
        "mode": mode if record.get("mode") else None,
    }
    for key in METRICS:
        row[key] = _number(last.get(key))
    row.update(best_epoch=_int(best_epoch), best_value=best_value, epochs=_int(epochs),
               seconds=None if seconds is None else round(seconds, 3),
               **{key: _number(final.get(key)) for key in ("cv/mean", "cv/std")})
    row["cv/metric"] = final.get("cv/metric")
    return row


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


def _same_metric(a: str | None, b: str) -> bool:
    return a is not None and (a == b or a == _fallback(b) or b == _fallback(a))


def monitored_value(row: dict, monitor: str):
    """The row's number for `monitor`: its best epoch's value when the job
    monitored that metric, else its final value."""
    if _same_metric(row.get("monitor") or DEFAULT_MONITOR, monitor) and row.get("best_value") is not None:
        return row["best_value"]
    for key in (monitor, _fallback(monitor)):
        if key is not None and _number(row.get(key)) is not None:
            return row[key]
    return None


def sort_rows(rows: list[dict], monitor: str = DEFAULT_MONITOR, mode: str = DEFAULT_MODE) -> list[dict]:
    """Completed jobs first, best monitored value first (job order breaks ties,
    jobs without a value last); then every other job, in job order."""
    sign = 1 if _mode(mode) == "min" else -1

    def key(row):
        job = _natural_key(str(row.get("job", "")))
        if row.get("status") != COMPLETED:
            return (2, 0.0, job)
        value = monitored_value(row, monitor)
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
        print(f"trainer-summary: warning: curves.png not drawn ({type(e).__name__}: {e})", file=sys.stderr)
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
    """(header, key) of what the table and summary.md show. No overrides column
    where every job's folder name already says what sets it apart (3_optimizer=rmsprop)."""
    named = all(not str(r.get("job", "")).isdigit() and "=" in str(r.get("job", "")) for r in rows)
    columns = [("job", "job"), ("status", "status"), *([] if named else [("overrides", "overrides")]),
               ("test acc", "test/acc"), ("test loss", "test/loss")]
    if any(r.get("val/acc") is not None for r in rows):
        columns.append(("val acc", "val/acc"))
    if any(r.get("val/loss") is not None for r in rows):
        columns.append(("val loss", "val/loss"))
    if any(r.get("cv/mean") is not None for r in rows):
        cv_metric = next(r["cv/metric"] for r in rows if r.get("cv/metric"))
        columns.append((f"cv {cv_metric} mean ± std", "cv/mean"))
    columns += [("best epoch", "best_epoch")]
    if monitor != "cv/mean":  # a cross-validation's best is its mean, in the column before
        columns.append((f"best {ranked_by(rows, monitor)}", "best_value"))
    columns += [("epochs", "epochs"), ("time", "seconds")]
    if any(r.get("error") for r in rows):
        columns.append(("error", "error"))
    return columns


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
        shared = set(row.get("_shared", "").split())
        return " ".join(display.override(o) for o in (value or "").split() if o not in shared) or "(defaults)"
    if value is None:
        return "" if key == "error" else "-"
    if key == "cv/mean":  # in its metric's unit, with the spread over the folds
        metric = row.get("cv/metric") or "val/acc"
        std = row.get("cv/std")
        return display.metric(metric, value) + (f" ± {display.metric(metric, std).rstrip('%')}" if std else "")
    metric = (row.get("monitor") or monitor) if key == "best_value" else key
    return display.metric(metric, value)


def _counts_text(rows: list[dict]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts(rows).items() if n) or "no jobs"


def _title(rows: list[dict], monitor: str, mode: str) -> str:
    return f"{display.plural(len(rows), 'job')} ({_counts_text(rows)}), ranked by {ranked_by(rows, monitor)} ({mode})"


_TEXT_KEYS = ("job", "status", "overrides", "error")


def _markdown_text(root: Path, rows: list[dict], monitor: str, mode: str, found: list[dict] = ()) -> str:
    columns = _display_columns(rows, monitor)
    shared = shared_overrides(rows)
    rows = [{**row, "_shared": shared} for row in rows]

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
_STYLES = {COMPLETED: "green", "failed": "red", "diverged": "red", "interrupted": "yellow",
           "incomplete": "yellow", "missing": "dim"}


# Dropped first, in this order, when the table is wider than the console.
_DROPPABLE = ("epochs", "best_epoch", "val/loss", "test/loss", "seconds", "val/acc", "error")


def render_table(rows: list[dict], monitor: str | None = None, mode: str | None = None, title: str | None = None,
                 width: int | None = None) -> "Table":
    """The console table: one line per job, accuracies as percentages. With a
    width (the console's), the least useful columns go until it fits, so the
    overrides stay readable."""
    from rich.table import Table

    if monitor is None or mode is None:
        found_monitor, found_mode = sweep_settings(rows)
        monitor, mode = monitor or found_monitor, mode or found_mode
    columns = _display_columns(rows, monitor)
    if width:
        def needed(cols):
            total = 1
            for header, key in cols:
                cell = max([len(header)] + [len(_cell(r, key, monitor)) for r in rows])
                total += 3 + (min(cell, 30) if key in ("overrides", "error") else cell)
            return total

        for key in _DROPPABLE:
            if needed(columns) <= width:
                break
            columns = [c for c in columns if c[1] != key]
    shared = shared_overrides(rows)
    rows = [{**row, "_shared": shared} for row in rows]
    table = Table(title=title or f"Sweep: {_title(rows, monitor, mode)}", title_justify="left")
    for header, key in columns:
        if key in ("job", "status"):
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
    from trainer.runs.resume import is_cross_validation
    from trainer.sweeps.plan import PLAN

    folder = Path(folder)
    return (folder / PLAN).is_file() or (folder / "multirun.yaml").is_file() or is_cross_validation(folder)


def summarize(sweep_dir, console: "Console | None" = None, write: bool | None = None) -> list[dict]:
    """Collect the jobs, rank them, print the table and (for a sweep's own
    folder, or when `write`) write the summary files.
    Raises SweepError when the folder does not exist or holds no job."""
    console = console or wide_console()
    rows = collect(sweep_dir)
    if not rows:
        if (Path(sweep_dir) / "metrics.json").is_file():
            raise SweepError(f"{sweep_dir} is a single run's folder, not a sweep; its numbers are in "
                             f"{Path(sweep_dir) / 'metrics.json'}")
        raise SweepError(f"{sweep_dir} holds no job folders (subfolders with metrics.json or .hydra/); "
                         "pass a sweep folder (hydra.sweep.dir) or a folder of runs")
    monitor, mode = sweep_settings(rows)
    rows = sort_rows(rows, monitor, mode)
    paths = []
    if write if write is not None else is_sweep(sweep_dir):
        try:
            paths = write_summary(sweep_dir, rows, monitor, mode)
            _write_hparams_experiment(Path(sweep_dir), rows)
        except OSError as e:
            print(f"trainer-summary: warning: could not write the summary in {sweep_dir}: {e.strerror or e}",
                  file=sys.stderr)
    console.print(render_table(rows, monitor, mode, width=console.width))
    shared = shared_overrides(rows)
    found = groups.find(rows)
    if found:
        console.print(groups.table(found, set(shared.split())))
    if shared:  # on a line of its own: a path in it must not be cut by the table's wrapping
        console.print(f"Every job: {' '.join(display.override(o) for o in shared.split())}", highlight=False,
                      soft_wrap=True)
    if paths:
        console.print(f"Summary: {', '.join(p.name for p in paths)} in {Path(sweep_dir)}", highlight=False)
    return [public(row) for row in rows]


def _write_hparams_experiment(sweep_dir: Path, rows: list[dict]) -> None:
    """TensorBoard's HParams view of the sweep, written at its root: the
    knobs that vary first, the metrics the jobs have (trainer.report.hparams)."""
    from trainer.report import hparams
    from trainer.runs import record
    from trainer.sweeps.plan import PLAN, varying_keys

    if not ((sweep_dir / PLAN).is_file() or (sweep_dir / "multirun.yaml").is_file()):
        return  # a cross-validation's folds: its own run holds the HParams session
    runs = [Path(row["path"]) for row in rows if row.get("path")]
    if not any(run.glob("events.out.tfevents.*") for run in runs):
        return  # no job has a TensorBoard run (tracking.tensorboard=false)
    hparams.write_experiment(sweep_dir, [r for r in map(record.read, runs) if r is not None], varying_keys(sweep_dir))


def summarize_or_say_why(sweep_dir: Path, quiet: bool = False) -> list[dict] | None:
    """The sweep's summary at its end (or when it was stopped); a line instead
    when there is nothing to summarise. Never raises: the sweep's own result
    comes first."""
    if not Path(sweep_dir).is_dir():
        print(f"trainer: sweep summary skipped: {sweep_dir} does not exist", file=sys.stderr)
        return None
    try:
        return summarize(sweep_dir, console=wide_console(quiet), write=True)
    except SweepError as e:
        print(f"trainer: sweep summary skipped: {e}", file=sys.stderr)
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
    parser.add_argument("sweep_dir", metavar="folder",
                        help="a sweep folder (hydra.sweep.dir, e.g. outputs/sweeps/<sweep>) or a folder of runs")
    parser.add_argument("--write", action="store_true",
                        help="also write the summary files into a folder that is not a sweep's own")
    parser.add_argument("--quiet", "-q", action="store_true", help="write the files without printing the table")
    args = parser.parse_args(argv)

    rows = report("trainer-summary", summarize, args.sweep_dir, wide_console(args.quiet),
                  True if args.write else None)
    line = failure_line(rows)
    if line:
        print(line, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
