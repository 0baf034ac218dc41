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
from trainer.sweeps.plan import elsewhere, name_says
from trainer.sweeps.ranking import DEFAULT_MONITOR, counts, ranking_label, shared_overrides, sweep_settings
from trainer.sweeps.rows import COLUMNS, COMPLETED, METRICS, TIME_PARTS

if TYPE_CHECKING:  # rich is imported when a table is drawn, not when Hydra loads the callback
    from rich.table import Table


def time_line(rows: list[dict]) -> str | None:
    """Where the sweep's time went, summed over the jobs that record times:
    start-up, fit, final evaluation, pictures (each where some job records
    it), over every session of a resumed job; the sessions that left no
    times (killed before they ended, or recorded before a record summed its
    sessions) are said to be missing from the sums."""
    timed = [r for r in rows if any(r.get(key) is not None for key in TIME_PARTS)]
    if not timed:
        return None
    parts = [f"{name} {sum(r.get(key) or 0.0 for r in timed):.1f} s" for key, name in TIME_PARTS.items()
             if any(r.get(key) is not None for r in timed)]
    ran = sum(r.get("sessions") or 1 for r in timed)
    counted = sum(r["timed_sessions"] if r.get("timed_sessions") is not None else 1 for r in timed)
    over = display.plural(len(timed), "job")
    if counted < ran:
        over += (f", {counted} of their {ran} sessions ({display.plural(ran - counted, 'session')} "
                 "left no times: killed before it ended, or recorded by an older trainer)")
    elif ran > len(timed):
        over += f" and all {ran} of their sessions"
    return f"Time, summed over {over}: {', '.join(parts)}"


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


def _display_columns(rows: list[dict], monitor: str, names_whole: bool = True) -> list[tuple[str, str]]:
    """(header, key) of what the table and summary.md show: a metric column
    only where some row has that metric, a kind column where kinds differ.
    No overrides column where every job's folder name, shown whole, already
    says what sets it apart (3_optimizer=rmsprop)."""
    shared = set(shared_overrides(rows).split())
    named = names_whole and all(all(name_says(_leaf(r), o) for o in own_overrides(r, shared)) for r in rows)
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
    if key == "overrides":  # its own, also where its name says them: the name may be shortened, or not say them all
        return " ".join(display.override(o) for o in own_overrides(row, set(row.get("_shared", "").split()))) \
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


def own_overrides(row: dict, shared: set[str]) -> list[str]:
    """The overrides that set a row apart: not those every row has, nor
    where things are or how they are logged (data.root, tracking.*)."""
    return [o for o in (row.get("overrides") or "").split()
            if o not in shared and not elsewhere(o.split("=", 1)[0].lstrip("+~"))]


def _leaf(row: dict) -> str:
    return Path(str(row.get("job", ""))).name


def counts_text(rows: list[dict]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts(rows).items() if n) or "no jobs"


def heading(rows: list[dict], monitor: str, mode: str) -> str:
    return f"{display.plural(len(rows), 'job')} ({counts_text(rows)}), {ranking_label(rows, monitor, mode)}"


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
# Dropped first, in this order, when the table is wider than the console; a
# metric column (cv/mean, test/acc) only while the best column still holds
# each row's ranked value.
_DROPPABLE = ("epochs", "best_epoch", "val/loss", "test/loss", "seconds", "val/acc", "error", "cv/mean", "test/acc",
              "kind")
_METRIC_COLUMNS = ("cv/mean", "test/acc")
JOB_WANT = 40   # the job column's width that other columns make way for (a sweep's own job names fit whole)
JOB_FLOOR = 16  # never narrower: a name cut shorter says too little to tell jobs apart
FOLDED = 24     # what a folding column (overrides, error) is counted at when the table must fit
ERROR_WIDTH = 60  # the error column's widest: a longer error wraps between its words
ELLIPSIS = "…"


def fitting_columns(rows: list[dict], monitor: str, width: int | None) -> list[tuple[str, str]]:
    """The columns that fit in `width` (fit_table)."""
    return fit_table(rows, monitor, width)[0]


def fit_table(rows: list[dict], monitor: str, width: int | None) -> tuple[list[tuple[str, str]], int | None]:
    """_fit_table; an error with a word wider than the error column (a path,
    a command to paste) sends the column below the table, where each error
    is a line of its own: the column would break the word. (summary.md keeps
    the column: a markdown cell is not cut.)"""
    columns, job_width = _fit_table(rows, monitor, width)
    if any(len(word) > ERROR_WIDTH for r in rows for word in str(r.get("error") or "").split()):
        columns = [c for c in columns if c[1] != "error"]
    return columns, job_width


def _fit_table(rows: list[dict], monitor: str, width: int | None) -> tuple[list[tuple[str, str]], int | None]:
    """The columns that fit in `width`, and the job column's width (None:
    every name whole). The least useful columns go first (the error column
    is then printed below the table, one line a job), until the job names
    get JOB_WANT characters (or fit whole); then the job column takes what
    is left, JOB_FLOOR at least, its names shortened (short_names). Where
    names are shortened, the overrides column shows what they no longer say."""
    context = _with_context(rows)
    names = [str(r.get("job", "")) for r in rows]
    longest = max(map(len, names), default=0)
    for names_whole in (True, False):
        columns = _display_columns(context, monitor, names_whole)
        if not width:
            return columns, None
        columns = _drop_to_fit(columns, context, monitor, width - 3 - min(longest, JOB_WANT))
        job_width = max(JOB_FLOOR, min(longest, width - 3 - _needed(columns, context, monitor)))
        if job_width >= longest:
            return columns, None
        if ("overrides", "overrides") in columns:
            break
    shown = max(map(len, short_names(names, job_width)))  # wider where two names would read the same
    return _drop_to_fit(columns, context, monitor, width - 3 - shown), job_width


def _drop_to_fit(columns: list[tuple[str, str]], context: list[dict], monitor: str, room: int) -> list:
    """Columns less the least useful ones, until all but the job column fit
    in `room`; then any dropped one that fits in what is left comes back
    (the error column goes for its width, and leaves room for a narrow one)."""
    kept, dropped = [key for _, key in columns], []
    for key in _DROPPABLE:
        if _needed([c for c in columns if c[1] in kept], context, monitor) <= room:
            break
        if key in _METRIC_COLUMNS and "best_value" not in kept:
            continue  # the only column with the rows' numbers
        if key in kept:
            kept.remove(key)
            dropped.append(key)
    for key in reversed(dropped):
        if _needed([c for c in columns if c[1] in (*kept, key)], context, monitor) <= room:
            kept.append(key)
    return [c for c in columns if c[1] in kept]


def _needed(columns: list[tuple[str, str]], context: list[dict], monitor: str) -> int:
    """The width of the table's columns but the job's, borders and padding included (3 a column, 1 at the end)."""
    total = 1
    for header, key in columns:
        if key == "job":
            continue
        cell = max([len(header)] + [len(_cell(r, key, monitor)) for r in context])
        total += 3 + (min(cell, FOLDED) if key in ("overrides", "error") else cell)
    return total


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters, the ellipsis where text was left
    out: whole where it fits; else the folder it is in cut in its middle
    and its own name whole (`runs/model=co…c54c81/fold_2`); else a sweep
    job's number and the start of what it varies, after as much of its
    folder as fits (`sweeps/lr+o…c01b28/3_lr=0.…`: the overrides column has
    the values); else its start and end (`runs/model=co…41-36_c54c81`: a
    run's date and random suffix tell it apart)."""
    if len(text) <= width:
        return text
    head, slash, leaf = text.rpartition("/")
    if head and width - len(leaf) - 1 >= 8:  # a few characters of each end of the folder
        return f"{_middle(head, width - len(leaf) - 1)}/{leaf}"
    number = re.match(r"\d+_", leaf)
    # The folder gets half the width at most; the job its number and an ellipsis at least.
    head_width = min(len(head), max(8, width // 2), width - len(slash) - number.end() - len(ELLIPSIS)) \
        if number else 0
    if number and head_width >= min(8, len(head)):
        rest = width - head_width - len(slash)
        return f"{_middle(head, head_width)}{slash}{leaf[:rest - len(ELLIPSIS)]}{ELLIPSIS}"
    return _middle(text, width)


def _middle(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    front = (width - len(ELLIPSIS)) // 2
    back = width - len(ELLIPSIS) - front
    return text[:front] + ELLIPSIS + (text[-back:] if back else "")


def short_names(names: list[str], width: int | None) -> list[str]:
    """Each name shortened to `width` (shorten), or as much wider as it takes
    for no two of them to read the same."""
    if width is None:
        return list(names)
    for wide in range(width, max(map(len, names), default=0) + 1):
        shown = [shorten(name, wide) for name in names]
        if len(set(shown)) == len(set(names)):
            return shown
    return list(names)


def _with_context(rows: list[dict]) -> list[dict]:
    """Rows with what their cells need to know of the others: the overrides
    every job has, and whether the best values are all of one metric."""
    shared = shared_overrides(rows)
    one_best = len({_best_unit(r) for r in rows if r.get("best_value") is not None}) <= 1
    return [{**row, "_shared": shared, "_one_best": one_best} for row in rows]


def render_table(rows: list[dict], monitor: str | None = None, mode: str | None = None, title: str | None = None,
                 width: int | None = None) -> "Table":
    """The console table: one line per job, accuracies as percentages. With a
    width (the console's), it fits (fit_table): every column it shows is
    readable, none squeezed to nothing."""
    from rich.table import Table

    if monitor is None or mode is None:
        found_monitor, found_mode = sweep_settings(rows)
        monitor, mode = monitor or found_monitor, mode or found_mode
    columns, job_width = fit_table(rows, monitor, width)
    rows = _with_context(rows)
    names = dict(zip((str(r.get("job", "")) for r in rows), short_names([str(r.get("job", "")) for r in rows],
                                                                         job_width)))
    table = Table(title=title or f"Sweep: {heading(rows, monitor, mode)}", title_justify="left")
    for header, key in columns:
        if key == "job":
            table.add_column(header, no_wrap=True, min_width=max(len(header), *map(len, names.values())))
        elif key in ("kind", "status"):
            table.add_column(header, no_wrap=True, min_width=max(len(header), max(len(str(r.get(key))) for r in rows)))
        elif key == "overrides":
            table.add_column(header, overflow="fold", min_width=min(20, FOLDED))
        elif key == "error":
            table.add_column(header, overflow="fold", min_width=min(20, FOLDED), max_width=ERROR_WIDTH)
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for row in rows:
        style = _STYLES.get(row.get("status"), "red")
        cells = []
        for _, key in columns:
            text = names[str(row.get("job", ""))] if key == "job" else _cell(row, key, monitor)
            cells.append(f"[{style}]{_escape(text)}[/]" if key == "status" else _escape(text))
        table.add_row(*cells)
    return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
