"""The order of a summary's rows (trainer.sweeps.rows), the sweep's monitor,
its counts and the line that names its failed jobs.

A row is ranked by the metric its record states it monitored; a `val/...`
metric asked of a run without a validation split is the split its epochs
were evaluated on (its stated `eval_split`, by trainer.core.engine.monitored).
One function (ranked_value) picks each row's number, its best epoch's or its
final one, and the tables' "ranked by ..." is made from the same choice.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from trainer.core.engine import monitored
from trainer.sweeps.rows import COMPLETED, STATUSES, mode_of, natural_key, number

DEFAULT_MONITOR, DEFAULT_MODE = "val/acc", "max"
FAILURES = ("failed", "diverged")  # what makes a sweep's exit status non-zero
# What the runs of any folder are ranked by: the first of these every completed one has.
COMMON = ("test/acc", "val/acc", "cv/mean")


def sweep_settings(rows: list[dict]) -> tuple[str, str]:
    """(monitor, mode) of the sweep: from the first completed job that records
    them, else any job that does (a job that failed early records defaults),
    else val/acc max."""
    for wanted in (True, False):
        for row in rows:
            if row.get("monitor") and (row.get("status") == COMPLETED) == wanted:
                return row["monitor"], mode_of(row.get("mode") or DEFAULT_MODE)
    return DEFAULT_MONITOR, DEFAULT_MODE


def common_metric(rows: list[dict], monitor: str) -> str | None:
    """The monitor when every completed row has it, else the first of COMMON
    that every completed row has as a final number; None when there is none
    (a CV without a refit beside runs: the table is then grouped by kind)."""
    done = [r for r in rows if r.get("status") == COMPLETED]
    for metric in (monitor, *COMMON):
        if all(ranked_value(r, metric, strict=True)[0] is not None for r in done):
            return metric
    return None


def by_kind(rows: list[dict]) -> list[tuple[str, list[dict], str, str]]:
    """(kind, its rows, monitor, mode) for each kind present, cv, run, refit,
    fold in that order: how a folder without a common metric is ranked."""
    order = {k: i for i, k in enumerate(("cv", "run", "refit", "fold"))}
    out = []
    for kind in sorted({r.get("kind") or "run" for r in rows}, key=lambda k: order.get(k, 9)):
        same = [r for r in rows if (r.get("kind") or "run") == kind]
        out.append((kind, same, *sweep_settings(same)))
    return out


def sort_by_kind(rows: list[dict]) -> list[dict]:
    """Rows of any folder without a common metric: kind by kind, each ranked by its own monitor."""
    return [row for _, same, monitor, mode in by_kind(rows) for row in sort_rows(same, monitor, mode)]


def by_kind_label(rows: list[dict]) -> str:
    """'by kind: cv ranked by cv/mean (max); run ranked by best test/acc (max)': what sort_by_kind did."""
    return "by kind: " + "; ".join(f"{kind} {ranking_label(same, monitor, mode)}"
                                   for kind, same, monitor, mode in by_kind(rows))


def _evaluated(row: dict, monitor: str) -> str:
    """The metric `monitor` names for this row: val/... is the split its epochs were evaluated on."""
    return monitored(monitor, row.get("eval_split") != "test")


def ranked_value(row: dict, monitor: str, strict: bool = False) -> tuple[float | int | None, str]:
    """The number a row is ranked by, and what that number is: its best
    epoch's value ('best test/acc') when the job monitored that metric, else
    its final value ('final test/acc'). Strict: that metric only (a val/acc
    monitor without a validation split has test/acc values). The one place
    that picks the value, so the order and the label that names it agree."""
    metric = monitor if strict else _evaluated(row, monitor)
    best = metric == row.get("best_metric") and row.get("best_value") is not None
    value = row["best_value"] if best else number(row.get(metric))
    if metric == "cv/mean":  # a cross-validation's mean is one number: it has no epochs to be the best of
        return value, metric
    return value, f"{'best' if best else 'final'} {metric}"


def ranking_label(rows: list[dict], monitor: str, mode: str, strict: bool = False) -> str:
    """'ranked by best test/acc (max)': the values sort_rows ranks the completed
    rows by, named by ranked_value; 'best val/acc for 3, final test/acc for 1'
    where they differ; job order where no completed row has one."""
    names = Counter(name for value, name in (ranked_value(r, monitor, strict) for r in rows
                                             if r.get("status") == COMPLETED) if value is not None)
    if not names:
        return "in job order (no completed job has a value to rank by)"
    if len(names) == 1:
        return f"ranked by {next(iter(names))} ({mode_of(mode)})"
    return f"ranked by {', '.join(f'{name} for {n}' for name, n in names.most_common())} ({mode_of(mode)})"


def sort_rows(rows: list[dict], monitor: str = DEFAULT_MONITOR, mode: str = DEFAULT_MODE,
              strict: bool = False) -> list[dict]:
    """Completed jobs first, best monitored value first (job order breaks ties,
    jobs without a value last); then every other job, in job order."""
    sign = 1 if mode_of(mode) == "min" else -1

    def key(row):
        job = natural_key(str(row.get("job", "")))
        if row.get("status") != COMPLETED:
            return (2, 0.0, job)
        value, _ = ranked_value(row, monitor, strict)
        return (1, 0.0, job) if value is None else (0, sign * value, job)

    return sorted(rows, key=key)


def counts(rows: Iterable[dict]) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out


def failures(rows: Iterable[dict]) -> list[dict]:
    return sorted((r for r in rows if r.get("status") in FAILURES), key=lambda r: natural_key(str(r.get("job", ""))))


def shared_overrides(rows: list[dict]) -> str:
    """Overrides every job has (epochs=2 in `-m optimizer=a,b epochs=2`): they
    tell the jobs apart no better than the defaults, so the tables say them
    once and each row shows only what differs."""
    lists = [(row.get("overrides") or "").split() for row in rows]
    if len(lists) < 2:
        return ""
    shared = set.intersection(*map(set, lists))
    return " ".join(o for o in lists[0] if o in shared)


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
