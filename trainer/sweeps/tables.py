"""How a summary's rows (trainer.sweeps.rows, in trainer.sweeps.ranking's
order) are shown: the console table (columns that fit the console's
width), summary.md, summary.csv, and the line that says where the time went.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.core import display
from trainer.sweeps import groups
from trainer.sweeps.plan import elsewhere
from trainer.sweeps.ranking import DEFAULT_MONITOR, counts, ranked_by, shared_overrides, sweep_settings
from trainer.sweeps.rows import COLUMNS, COMPLETED, METRICS, TIME_PARTS

if TYPE_CHECKING:  # rich is imported when a table is drawn, not when Hydra loads the callback
    from rich.table import Table


def time_line(rows: list[dict]) -> str | None:
    """Where the sweep's time went, summed over its jobs: start-up, fit, final evaluation, pictures."""
    timed = [r for r in rows if any(r.get(key) is not None for key in TIME_PARTS)]
    if not timed:
        return None
    parts = [f"{name} {sum(r.get(key) or 0.0 for r in timed):.1f} s" for key, name in TIME_PARTS.items()]
    return f"Time, summed over {display.plural(len(timed), 'job')}: {', '.join(parts)}"


def public(row: dict) -> dict:
    """The row as written: the COLUMNS, in order."""
    return {key: row.get(key) for key in COLUMNS}


def csv_text(table: list[dict]) -> str:
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
    """The metric a row's best value is of: the monitor its record states (test/acc without a validation split)."""
    return row.get("best_metric") or row.get("monitor") or DEFAULT_MONITOR


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
            if o not in shared and display.override(o) not in named
            and not elsewhere(o.split("=", 1)[0].lstrip("+~"))]


def counts_text(rows: list[dict]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts(rows).items() if n) or "no jobs"


def heading(rows: list[dict], monitor: str, mode: str) -> str:
    return f"{display.plural(len(rows), 'job')} ({counts_text(rows)}), ranked by {ranked_by(rows, monitor)} ({mode})"


_TEXT_KEYS = ("job", "kind", "status", "overrides", "error")


def markdown_text(root: Path, rows: list[dict], monitor: str, mode: str, found: list[dict] = ()) -> str:
    columns = _display_columns(rows, monitor)
    shared = shared_overrides(rows)
    rows = _with_context(rows)

    def line(cells):
        return "| " + " | ".join(c.replace("\\", "\\\\").replace("|", "\\|") for c in cells) + " |"

    out = [f"# Sweep `{root.resolve()}`", "", f"{heading(rows, monitor, mode)}.",
           *([f"Every job: `{shared}`."] if shared else []), "",
           line([header for header, _ in columns]),
           "| " + " | ".join("---" if key in _TEXT_KEYS else "---:" for _, key in columns) + " |"]
    out += [line([_cell(row, key, monitor) for _, key in columns]) for row in rows]
    out += groups.markdown(list(found), set(shared.split()))
    return "\n".join(out) + "\n"


_STYLES = {COMPLETED: "green", "pruned": "cyan", "failed": "red", "diverged": "red", "interrupted": "yellow",
           "incomplete": "yellow", "missing": "dim"}
# Dropped first, in this order, when the table is wider than the console.
_DROPPABLE = ("epochs", "best_epoch", "val/loss", "test/loss", "seconds", "val/acc", "error")
ERROR_WIDTH = 60  # the error column's widest: a longer error wraps between its words


def fitting_columns(rows: list[dict], monitor: str, width: int | None) -> list[tuple[str, str]]:
    """The columns that fit in `width`: the least useful go first; the error
    column last of all (it is then printed below the table, one line a job).
    An error with a word wider than its column (a path, a command to paste)
    goes below the table too: the column would break it."""
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
    if any(len(word) > ERROR_WIDTH for r in rows for word in str(r.get("error") or "").split()):
        columns = [c for c in columns if c[1] != "error"]
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
    table = Table(title=title or f"Sweep: {heading(rows, monitor, mode)}", title_justify="left")
    for header, key in columns:
        if key in ("job", "kind", "status"):
            table.add_column(header, no_wrap=True, min_width=max(len(header), max(len(str(r.get(key))) for r in rows)))
        elif key == "overrides":
            table.add_column(header, overflow="fold", min_width=20)
        elif key == "error":
            table.add_column(header, overflow="fold", min_width=20, max_width=ERROR_WIDTH)
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
