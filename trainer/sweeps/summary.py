"""A sweep's summary, rebuilt from the job folders alone.

    trainer -m optimizer=sgd,adam lr=1e-3,1e-2   # written when the sweep ends (trainer.sweeps.callback)
    trainer-summary outputs/sweeps/<sweep>       # rebuild and print it at any time
    trainer-summary outputs/runs                 # any folder of runs: a table, read-only

A sweep folder (Hydra's `hydra.sweep.dir`) holds one folder per job and
the sweep's plan (`sweep.json`: every job it was to run). The summary is
rebuilt from those files alone: trainer.sweeps.rows reads each job's record
into a row (a job stopped, killed or never started included),
trainer.sweeps.ranking orders them, trainer.sweeps.tables shows them; this
module puts those together, writes the files and is `trainer-summary`.

The summary lands at the sweep root as summary.csv, summary.md and
summary.json (each written atomically). A sweep with a failed or diverged
job exits non-zero, from the multirun and from `trainer-summary`, with one
line that names those jobs; jobs interrupted or not yet run are not
failures (`resume=auto` continues them).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.core import display, streams
from trainer.core.errors import report, say, warn
from trainer.core.files import atomic_write
from trainer.report import hparams
from trainer.report.tracking import wide_console
from trainer.runs import record
from trainer.runs.resume import is_cross_validation
from trainer.sweeps import groups, study_listing
from trainer.sweeps.plan import PLAN, point
from trainer.sweeps.ranking import by_kind_label, common_metric, counts, failure_line, ranking_label, \
    shared_overrides, sort_by_kind, sort_rows, sweep_settings
from trainer.sweeps.rows import SweepError, collect
from trainer.sweeps.tables import counts_text, csv_text, fitting_columns, heading, markdown_text, public, \
    render_table, time_line

if TYPE_CHECKING:
    from rich.console import Console

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.json")
EXIT_OK, EXIT_FAILED = 0, 1


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
    _write_atomic(paths[0], csv_text(table))
    _write_atomic(paths[1], markdown_text(root, rows, monitor, mode, found))
    _write_atomic(paths[2], json.dumps(document, indent=2, allow_nan=False) + "\n")
    try:
        if groups.draw_curves(root, rows, found, set(shared_overrides(rows).split())):
            paths.append(root / "curves.png")
    except Exception as e:  # noqa: BLE001 - a picture is never a reason to lose the summary
        warn(f"curves.png not drawn ({type(e).__name__}: {e})", "trainer-summary")
    return paths


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


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
    # A table lays itself out to the width (its title wraps between words), unlike a line of text.
    console.print(render_table(rows, monitor, mode, title=title, width=console.width), soft_wrap=False)
    if "error" not in {key for _, key in fitting_columns(rows, monitor, console.width)}:
        for row in (r for r in rows if r.get("error")):  # too narrow for the column: one line each
            console.print(f"{row['job']}: {row['status']}: {row['error']}", highlight=False, markup=False,
                          soft_wrap=True)
    shared = shared_overrides(rows)
    found = groups.find(rows)
    if found:
        console.print(groups.table(found, set(shared.split())), soft_wrap=False)
    if shared:  # on a line of its own: a path in it must not be cut by the table's wrapping
        console.print(f"Every job: {' '.join(display.override(o) for o in shared.split())}", highlight=False,
                      markup=False, soft_wrap=True)
    if time_line(rows):
        console.print(time_line(rows), highlight=False)
    if paths:
        console.print(f"Summary: {', '.join(p.name for p in paths)} in {Path(sweep_dir)}", highlight=False,
                      markup=False, soft_wrap=True)
    return [public(row) for row in rows]


def _ranked(folder: Path, rows: list[dict], monitor: str, mode: str, own: bool) -> tuple[list[dict], str]:
    """The rows in the table's order and its title: a sweep's jobs by its
    monitor; a cross-validation's folds; any other folder's runs by a metric
    every completed run has, else kind by kind."""

    if own:
        rows = sort_rows(rows, monitor, mode)
        if is_cross_validation(folder):
            return rows, f"Cross-validation: {heading(rows, monitor, mode).replace('job', 'run')}"
        return rows, f"Sweep: {heading(rows, monitor, mode)}"
    counted = f"{display.plural(len(rows), 'run')} ({counts_text(rows)})"
    metric = common_metric(rows, monitor)
    if metric is None:
        return sort_by_kind(rows), f"Runs in {folder}: {counted}, {by_kind_label(rows)}"
    order = mode if metric == monitor else ("min" if metric.endswith("loss") else "max")
    label = ranking_label(rows, metric, order, strict=True)
    return sort_rows(rows, metric, order, strict=True), f"Runs in {folder}: {counted}, {label}"


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
        streams.write(report("trainer-summary", study_listing.text, *args.study))
        return EXIT_OK
    if args.sweep_dir is None:
        parser.error("give a sweep folder, or --study STORAGE NAME")

    rows = report("trainer-summary", summarize, args.sweep_dir, wide_console(args.quiet),
                  True if args.write else None)
    line = failure_line(rows)
    if line:
        streams.write(line, sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
