"""Statistics over repeated runs: jobs of a sweep that differ only in their
seed (a seed group), or the folds of a cross-validation, as mean ± sample
standard deviation, and the curves of a sweep or a cross-validation with
each group drawn as its mean and a min-max band.

    trainer -m seed=0,1,2 optimizer=sgd,adam epochs=5   # two groups of 3 in the summary

Built from the job folders' own files, like the rest of the summary, so
`trainer-summary` rebuilds them.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from trainer.core import display

from trainer.runs import record
from trainer.sweeps.plan import elsewhere, job_number, point
from trainer.report import figures

# Overrides that repeat an experiment rather than change it.
REPEATS = ("seed", "cv.fold")


def find(rows: list[dict]) -> list[dict]:
    """Groups of two or more distinct runs whose overrides are the same but
    for their seed (or fold), each with the mean and std of its metric over
    the completed ones: the test accuracy (a cross-validation's mean for CV
    jobs), or for the folds of one cross-validation their best monitored value.
    A job that repeats a point another job has (seed=0 twice, lr=1e-3 and
    lr=0.001) is counted once: the first in job order."""
    by_key: dict[tuple, dict[tuple, dict]] = {}
    for row in sorted(rows, key=lambda r: _job_order(str(r.get("job", "")))):
        overrides = point((row.get("overrides") or "").split())
        if not any(key in overrides for key in REPEATS):
            continue
        rest = tuple(sorted(((k, v) for k, v in overrides.items() if k not in REPEATS), key=_by_key))
        repeat = tuple(overrides.get(k) for k in REPEATS)
        where = Path(str(row.get("job", ""))).parent.as_posix()  # one sweep's (or CV's) repeats, not another's
        by_key.setdefault((where, rest), {}).setdefault(repeat, row)
    groups = [{**_statistics(_as_dict(members[0]["overrides"], dict(rest)), members), "where": where}
              for (where, rest), distinct in by_key.items() if len(members := list(distinct.values())) >= 2]
    return sorted(groups, key=lambda g: -(g["mean"] if g["mean"] is not None else float("-inf")))


def _by_key(item: tuple) -> str:
    return item[0]


def _statistics(overrides: dict, members: list[dict]) -> dict:
    """The group's numbers; `jobs` and `values` pair up (None: no value, not counted)."""
    folds = all("cv.fold" in _as_dict(m.get("overrides") or "") for m in members)
    metric = ("best_value" if folds else
              "cv/mean" if any(m.get("cv/mean") is not None for m in members) else "test/acc")
    each = [m[metric] if m.get("status") == "completed" and isinstance(m.get(metric), (int, float)) else None
            for m in members]
    values = [v for v in each if v is not None]
    shown = (members[0].get("monitor") or "val/acc") if metric == "best_value" else metric
    return {"overrides": overrides, "folds": folds, "n": len(values), "metric": shown,
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None, "max": max(values) if values else None,
            "values": each, "jobs": [m["job"] for m in members],
            "failed": [m["job"] for m, v in zip(members, each) if v is None]}


def _epochs_of(run_dir: Path) -> list[list[dict]]:
    """The per-epoch histories a job folder holds: its own, or for a
    cross-validation, each fold's (drawn as their mean and band)."""
    data = record.read(run_dir) or {}
    own = [row for row in data.get("history") or [] if "epoch" in row]
    if own or data.get("kind") != "cv":
        return [own] if own else []
    folds = sorted(run_dir.glob("fold_*"), key=lambda p: _job_order(p.name.replace("fold_", "")))
    return [h for h in (_epochs_of(fold)[0] if _epochs_of(fold) else [] for fold in folds) if h]


def _job_order(name: str):
    number = job_number(name.split("/")[-1])
    return (number if number is not None else float("inf"), name)


def _as_dict(overrides: str, keep: dict | None = None) -> dict:
    """key -> value as written (the first job's spelling), for the keys in `keep` if given."""
    out = {}
    for item in overrides.split():
        key, eq, value = item.partition("=")
        if eq and (keep is None or key.lstrip("+~") in keep):
            out[key.lstrip("+~")] = value
    return out


def describe(group: dict) -> str:
    """'84.12% ± 0.31 (n=3)'"""
    metric, mean, std = group["metric"], group["mean"], group["std"]
    if mean is None:
        return "-"
    spread = f" ± {display.metric(metric, std).rstrip('%')}" if std is not None else ""
    return f"{display.metric(metric, mean)}{spread} (n={group['n']})"


def label(group: dict, shared: set[str]) -> str:
    """What sets a group apart: its overrides, less those every job has."""
    own = [f"{k}={v}" for k, v in group["overrides"].items() if f"{k}={v}" not in shared and not elsewhere(k)]
    text = " ".join(display.override(o) for o in own)
    where = f"{group['where']}: " if group.get("where", ".") != "." else ""
    if group.get("folds"):
        return f"{where}folds".strip()
    return where + (text or "(defaults)")


def _leaf(job: str) -> str:
    return job.rsplit("/", 1)[-1]


def table(groups: list[dict], shared: set[str]):
    from rich.table import Table

    folds = all(g.get("folds") for g in groups)
    out = Table(title="Folds: mean ± std" if folds else "Seed groups: mean ± std over repeats", title_justify="left")
    for name in ("group", "metric", "mean ± std", "min", "max", "jobs"):
        out.add_column(name, justify="left" if name in ("group", "metric", "jobs") else "right",
                       overflow="fold")
    for g in groups:
        out.add_row(label(g, shared), g["metric"], describe(g), display.metric(g["metric"], g["min"]),
                    display.metric(g["metric"], g["max"]), ", ".join(map(_leaf, g["jobs"])))
    return out


def markdown(groups: list[dict], shared: set[str]) -> list[str]:
    if not groups:
        return []
    title = "Folds (mean ± std)" if all(g.get("folds") for g in groups) else "Seed groups (mean ± std over repeats)"
    lines = ["", f"## {title}", "",
             "| group | metric | mean ± std | min | max | jobs |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for g in groups:
        lines.append(f"| {label(g, shared)} | {g['metric']} | {describe(g)} | {display.metric(g['metric'], g['min'])} "
                     f"| {display.metric(g['metric'], g['max'])} | {', '.join(map(_leaf, g['jobs']))} |")
    return lines


# A picture of many runs names the best few (the summary's order) and draws the rest grey:
# a legend of 50 names, or 50 colours, reads as none.
NAMED_CURVES = 8
LABEL_CHARS = 28  # a job whose folder name is longer is named by its number (the summary lists it)


def draw_curves(folder: Path, rows: list[dict], groups: list[dict], shared: set[str]) -> bool:
    """curves.png of a sweep or a cross-validation: each group as its mean
    with a min-max band, every other job as a line of its own, the best
    NAMED_CURVES of them (rows in the summary's order) named, the rest grey.
    False when no job has an epoch to draw."""

    runs = {row["job"]: _epochs_of(Path(row["path"])) for row in rows if row.get("path")}
    grouped = {job for g in groups for job in g["jobs"]}
    split = "val" if any(row.get("eval_split") == "val" for row in rows if runs.get(row["job"])) else "test"
    alone = [row for row in rows if row["job"] not in grouped and len(runs.get(row["job"], [])) == 1
             and any(f"{split}/acc" in h for h in runs[row["job"]][0])]  # one split on one axis
    labels, title = curve_labels(alone)
    lines = [(labels[row["job"]], runs[row["job"]][0]) for row in alone]
    bands = [(_shortened(f"{job} folds"), found) for job, found in runs.items() if job not in grouped and len(found) > 1]
    bands += [(_shortened(label(g, shared)), [h for j in g["jobs"] for h in runs.get(j, [])]) for g in groups]
    bands = [(name, histories) for name, histories in bands if histories]
    if not (lines or bands):
        return False
    absent = [f"{row['job']} ({row.get('status')})" for row in rows if not runs.get(row["job"])]
    note = f"no curve (no epoch finished): {_some(absent)}" if absent else ""
    image = figures.overlay(lines, bands, f"{Path(folder).name}: {split} loss and accuracy per epoch", split, note,
                            title)
    figures.save_png(image, Path(folder) / "curves.png")
    return True


def curve_labels(rows: list[dict]) -> tuple[dict[str, str | None], str | None]:
    """Each row's legend label (rows in the summary's order), and the
    legend's title: the first NAMED_CURVES named, the others None (grey);
    by folder name where every one named fits LABEL_CHARS, else by job
    number (a search's `17_batch_size=64,lr=...`: 17); a job that did not
    complete says how it ended."""
    named = rows[:NAMED_CURVES]
    by_number = any(len(_leaf(row["job"])) > LABEL_CHARS for row in named) and \
        all(job_number(_leaf(row["job"])) is not None for row in named)
    labels: dict[str, str | None] = {row["job"]: None for row in rows}
    for row in named:
        text = str(job_number(_leaf(row["job"]))) if by_number else _shortened(row["job"])
        labels[row["job"]] = text if row.get("status") == "completed" else f"{text} ({row.get('status')})"
    if len(rows) > len(named):
        return labels, ("job, " if by_number else "") + f"best {len(named)} of {len(rows)}"
    return labels, "job" if by_number else None


def _shortened(text: str) -> str:
    """At most LABEL_CHARS characters, its middle left out."""
    if len(text) <= LABEL_CHARS:
        return text
    front = (LABEL_CHARS - 1) // 2
    return f"{text[:front]}…{text[-(LABEL_CHARS - 1 - front):]}"


def _some(names: list[str], shown: int = 6) -> str:
    """'a, b, c' or 'a, b, c, ... and 12 more'."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
