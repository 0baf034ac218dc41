"""trainer.sweeps.summary (rows, ranking, tables): a sweep's summary, rebuilt from hand-made job folders."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from trainer.runs.folder import RunFolder
from trainer.runs.record import RunRecord, best_of
from trainer.report import figures
from trainer.sweeps import groups, summary
from trainer.sweeps.callback import SweepCallback
from trainer.sweeps.ranking import by_kind_label, ranked_value, ranking_label, sort_rows, sweep_settings
from trainer.sweeps.rows import COLUMNS, collect
from trainer.sweeps.summary import main, summarize, write_summary
from trainer.sweeps.tables import render_table, short_names, shorten, time_line


# ------------------------------------------------------------------ helpers
def _history(epochs: int, acc: float, loss: float, split: str = "test") -> list[dict]:
    return [{"epoch": e, "step": 938 * e, "train/loss": loss + 0.1, "train/acc": acc - 0.01,
             f"{split}/acc": acc - 0.05 * (epochs - e), f"{split}/loss": loss + 0.05 * (epochs - e),
             "epoch_seconds": 1.5, "samples_per_second": 40000.0, "lr": 0.01}
            for e in range(1, epochs + 1)]


def make_job(root: Path, name: str, overrides: list[str], status: str | None = "completed", *,
             acc: float = 0.9, loss: float = 0.3, error: str | None = None, monitor: str | None = "val/acc",
             mode: str | None = "max", val: bool = False, final: bool | None = None, epochs: int = 2,
             train_seconds: bool = True) -> Path:
    """A job folder as a multirun of the first record format left it (the monitor as
    declared, val/acc, even where the epochs were evaluated on test): every test
    here reads it through trainer.runs.record.upgrade. status=None: only .hydra
    (never started)."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if status is None:
        return job
    split = "val" if val else "test"
    history = _history(epochs, acc, loss, split)
    record = {"status": status, "error": error, "overrides": overrides, "hparams": {}, "device": "cpu",
              "final": {}, "best": {}, "history": history, "timing": {"startup_seconds": 3.1}}
    if monitor is not None:
        record.update(monitor=monitor, mode=mode)
    if final if final is not None else status == "completed":
        record["final"] = {"test/acc": acc, "test/loss": loss, "train/loss": loss - 0.1, "train/acc": acc + 0.02,
                           "epochs": epochs, "best_epoch": epochs}
        if train_seconds:
            record["final"]["train_seconds"] = 12.3
        if val:
            record["final"].update({"val/acc": acc, "val/loss": loss})
        # As cli.train writes it: the monitored key as resolved (test/... without a val split).
        key = (monitor or "val/acc").replace("val/", f"{split}/")
        best_value = history[-1][key] if key in history[-1] else None
        record["best"] = {"epoch": epochs, key: best_value,
                          **{k: v for k, v in history[-1].items() if "/" in k}}
    (job / "metrics.json").write_text(json.dumps(record))
    return job


@pytest.fixture
def mixed_sweep(tmp_path) -> Path:
    """2 completed (test/acc 0.80 and 0.91), 1 failed, 1 'running' leftover, 1 never started."""
    root = tmp_path / "sweep"
    root.mkdir()
    make_job(root, "0", ["optimizer=sgd", "lr=0.01"], acc=0.80, loss=0.55)
    make_job(root, "1", ["optimizer=adam", "lr=0.01"], acc=0.91, loss=0.25)
    make_job(root, "2", ["optimizer=adam", "lr=-1"], "failed", error="optimizer.lr=-1 must be > 0\nsecond line",
             final=False, epochs=0)
    make_job(root, "3", ["optimizer=rmsprop", "lr=0.01"], "running", acc=0.7, epochs=1, final=False)
    make_job(root, "4", ["optimizer=adamw", "lr=0.01"], None)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    (root / ".submitit").mkdir()  # launcher bookkeeping: never a job
    (root / ".submitit" / "metrics.json").write_text("{}")
    return root


@pytest.fixture
def good_sweep(tmp_path) -> Path:
    root = tmp_path / "good"
    root.mkdir()
    make_job(root, "0", ["lr=0.1"], acc=0.85, loss=0.4)
    make_job(root, "1", ["lr=0.01"], acc=0.88, loss=0.35)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def _by_job(rows):
    return {row["job"]: row for row in rows}


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


# ------------------------------------------------------------------ collect
def test_collect_rows_and_statuses(mixed_sweep):
    rows = collect(mixed_sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4"]
    jobs = _by_job(rows)
    assert {j: r["status"] for j, r in jobs.items()} == {
        "0": "completed", "1": "completed", "2": "failed", "3": "incomplete", "4": "missing"}
    assert jobs["1"]["overrides"] == "optimizer=adam lr=0.01"
    assert jobs["1"]["test/acc"] == pytest.approx(0.91)
    assert jobs["1"]["test/loss"] == pytest.approx(0.25)
    assert jobs["1"]["val/acc"] is None  # no val split
    assert jobs["1"]["epochs"] == 2 and jobs["1"]["best_epoch"] == 2
    assert jobs["1"]["seconds"] == pytest.approx(12.3)
    assert jobs["1"]["error"] is None
    assert jobs["2"]["error"] == "optimizer.lr=-1 must be > 0 second line"  # one line
    assert jobs["3"]["error"] and "\n" not in jobs["3"]["error"]
    assert jobs["3"]["seconds"] == pytest.approx(1.5)  # sum of the epochs it finished
    assert jobs["4"]["error"] and "metrics.json" in jobs["4"]["error"]
    assert jobs["4"]["overrides"] == "optimizer=adamw lr=0.01"  # from .hydra alone
    assert Path(jobs["0"]["path"]) == (mixed_sweep / "0").resolve()
    assert all(list(r) == list(COLUMNS) for r in rows)


def test_an_old_record_monitoring_val_acc_without_a_val_split_is_read_as_test_acc(mixed_sweep):
    """monitor val/acc without a val split watched test/acc: the upgraded record says so, as a record of today does."""
    jobs = _by_job(collect(mixed_sweep))
    assert (jobs["1"]["monitor"], jobs["1"]["eval_split"], jobs["1"]["best_metric"]) == ("test/acc", "test", "test/acc")
    assert jobs["1"]["best_value"] == pytest.approx(0.91)
    assert jobs["0"]["best_value"] == pytest.approx(0.80)
    assert ranking_label(list(jobs.values()), "val/acc", "max") == "ranked by best test/acc (max)"


def test_val_split_uses_val_acc(tmp_path):
    make_job(tmp_path, "0", ["data.val_split=0.1"], acc=0.93, val=True)
    (row,) = collect(tmp_path)
    assert row["val/acc"] == pytest.approx(0.93) and row["best_value"] == pytest.approx(0.93)
    assert ranking_label([row], "val/acc", "max") == "ranked by best val/acc (max)"


def test_seconds_from_history_without_train_seconds(tmp_path):
    make_job(tmp_path, "0", [], epochs=3, train_seconds=False)
    (row,) = collect(tmp_path)
    assert row["seconds"] == pytest.approx(4.5) and row["overrides"] == ""


def test_nested_layout_natural_order_and_hidden_dirs(tmp_path):
    for name in ("10", "2", "1"):
        make_job(tmp_path / "array", name, [f"seed={name}"])
    (tmp_path / ".submitit" / "x").mkdir(parents=True)
    (tmp_path / "notes").mkdir()  # neither a job nor holding one
    make_job(tmp_path / "array", ".hidden", [])
    assert [r["job"] for r in collect(tmp_path)] == ["array/1", "array/2", "array/10"]


def test_unreadable_metrics_is_incomplete(tmp_path):
    job = make_job(tmp_path, "0", ["lr=1"])
    (job / "metrics.json").write_text("{not json")
    (row,) = collect(tmp_path)
    assert row["status"] == "incomplete" and "unreadable" in row["error"]


def test_monitor_and_mode_from_jobs(mixed_sweep, tmp_path):
    assert sweep_settings(collect(mixed_sweep)) == ("test/acc", "max")  # no val split: the epochs were on test
    make_job(tmp_path / "a", "0", ["lr=1"], monitor="val/loss", mode="min")
    assert sweep_settings(collect(tmp_path / "a")) == ("test/loss", "min")
    make_job(tmp_path / "b", "0", ["lr=1"], monitor="val/loss", mode="min", val=True)
    assert sweep_settings(collect(tmp_path / "b")) == ("val/loss", "min")
    assert sweep_settings([]) == ("val/acc", "max")


# --------------------------------------------------------------------- sort
def test_sort_max_completed_first(mixed_sweep):
    rows = sort_rows(collect(mixed_sweep), "val/acc", "max")
    assert [r["job"] for r in rows] == ["1", "0", "2", "3", "4"]


def test_sort_min_with_loss_monitor(tmp_path):
    make_job(tmp_path, "0", ["lr=0.1"], acc=0.80, loss=0.20, monitor="val/loss", mode="min")
    make_job(tmp_path, "1", ["lr=0.2"], acc=0.90, loss=0.60, monitor="val/loss", mode="min")
    make_job(tmp_path, "2", ["lr=0.3"], acc=0.85, loss=0.40, monitor="val/loss", mode="min")
    make_job(tmp_path, "3", ["lr=9"], "diverged", error="loss is nan at step 3", final=False)
    rows = collect(tmp_path)
    monitor, mode = sweep_settings(rows)
    assert (monitor, mode) == ("test/loss", "min")  # no val split: the epochs were on test
    ranked = sort_rows(rows, monitor, mode)
    assert [r["job"] for r in ranked] == ["0", "2", "1", "3"]
    assert [r["best_value"] for r in ranked[:3]] == pytest.approx([0.20, 0.40, 0.60])
    # The same rows by accuracy, best first.
    assert [r["job"] for r in sort_rows(rows, "test/acc", "max")] == ["1", "2", "0", "3"]


def _ranked_row(job, best_metric=None, best=None, **final):
    return {"job": job, "status": "completed", "eval_split": "test", "best_metric": best_metric, "best_value": best,
            "test/acc": final.get("acc"), "val/acc": final.get("val"), "cv/mean": final.get("cv")}


@pytest.mark.parametrize("rows, monitor, strict, order, label", [
    # The best epoch's value where the job monitored the metric: ranked, and named, by it (not its final value).
    ([_ranked_row("0", "test/acc", 0.90, acc=0.70), _ranked_row("1", "test/acc", 0.80, acc=0.85)],
     "test/acc", False, ["0", "1"], "ranked by best test/acc (max)"),
    # Runs that monitored another metric: their final value, and the label says so.
    ([_ranked_row("0", "val/acc", 0.99, acc=0.70), _ranked_row("1", "val/acc", 0.50, acc=0.85)],
     "test/acc", True, ["1", "0"], "ranked by final test/acc (max)"),
    # Some of each: the label counts each kind of value.
    ([_ranked_row("0", "test/acc", 0.60, acc=0.95), _ranked_row("1", "val/acc", 0.99, acc=0.70),
      _ranked_row("2", "val/acc", 0.99, acc=0.65)],
     "test/acc", True, ["1", "2", "0"], "ranked by final test/acc for 2, best test/acc for 1 (max)"),
    # val/acc asked of a run without a validation split: its epochs were on test.
    ([_ranked_row("0", "test/acc", 0.90, acc=0.70)], "val/acc", False, ["0"], "ranked by best test/acc (max)"),
    # A cross-validation's mean is one number, neither a best epoch's nor a final one.
    ([_ranked_row("0", "cv/mean", 0.80, cv=0.80), _ranked_row("1", "cv/mean", 0.90, cv=0.90)],
     "cv/mean", False, ["1", "0"], "ranked by cv/mean (max)"),
    # Nothing completed with a value: job order, said as such.
    ([{**_ranked_row("1"), "status": "failed"}, {**_ranked_row("0"), "status": "missing"}],
     "test/acc", False, ["0", "1"], "in job order (no completed job has a value to rank by)"),
])
def test_the_ranking_label_names_the_value_the_rows_are_ranked_by(rows, monitor, strict, order, label):
    assert [r["job"] for r in sort_rows(rows, monitor, "max", strict)] == order
    assert ranking_label(rows, monitor, "max", strict) == label
    # The label is made of the very values the order uses.
    named = {ranked_value(r, monitor, strict)[1] for r in rows if ranked_value(r, monitor, strict)[0] is not None}
    assert all(name in label for name in named)


def test_the_sweep_table_says_it_ranks_by_the_best_epoch(mixed_sweep):
    console = _quiet()
    summarize(mixed_sweep, console)
    text = console.file.getvalue()
    assert "ranked by best test/acc (max)" in text and "ranked by test/acc" not in text
    assert "ranked by best test/acc (max)." in (mixed_sweep / "summary.md").read_text()


def test_sort_is_deterministic_on_ties(tmp_path):
    for name in ("3", "1", "2"):
        make_job(tmp_path, name, [f"seed={name}"], acc=0.5)
    rows = collect(tmp_path)
    assert [r["job"] for r in sort_rows(rows)] == ["1", "2", "3"]
    assert [r["job"] for r in sort_rows(list(reversed(rows)))] == ["1", "2", "3"]


# -------------------------------------------------------------------- write
def test_summary_files_agree(mixed_sweep):
    rows = sort_rows(collect(mixed_sweep), "val/acc", "max")
    paths = write_summary(mixed_sweep, rows)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "summary.json", "curves.png"]
    assert all(p.is_file() and p.parent == mixed_sweep for p in paths)
    assert not list(mixed_sweep.glob(".summary*"))  # no temp files left

    document = json.loads((mixed_sweep / "summary.json").read_text())
    assert document["sweep_dir"] == str(mixed_sweep.resolve())
    assert document["monitor"] == "test/acc" and document["mode"] == "max"
    assert document["counts"]["completed"] == 2 and document["counts"]["failed"] == 1
    assert document["counts"]["incomplete"] == 1 and document["counts"]["missing"] == 1
    assert [r["job"] for r in document["rows"]] == ["1", "0", "2", "3", "4"]

    with open(mixed_sweep / "summary.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in document["rows"]]
    assert csv_rows == as_text

    md = (mixed_sweep / "summary.md").read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + len(rows)  # header, separator, one line per job
    assert set(table[1].replace("|", "").split()) <= {"---", "---:"}
    assert "91.00%" in table[2] and "| 1 |" in table[2]
    assert all(line.count("|") == table[0].count("|") for line in table)  # the error's '|'-free, escaped


def test_markdown_escapes_pipes(tmp_path):
    make_job(tmp_path, "0", ["lr=1"], "failed", error="bad | value", final=False)
    write_summary(tmp_path, collect(tmp_path))
    assert "bad \\| value" in (tmp_path / "summary.md").read_text()


def test_render_table_shows_percentages(mixed_sweep):
    rows = sort_rows(collect(mixed_sweep), "val/acc", "max")
    console = Console(file=io.StringIO(), width=250)
    console.print(render_table(rows))
    text = console.file.getvalue()
    assert "91.00%" in text and "80.00%" in text
    assert "0.2500" in text
    assert "best test/acc" in text
    assert "missing" in text and "incomplete" in text


def test_summarize_returns_sorted_rows(mixed_sweep):
    rows = summarize(mixed_sweep, console=_quiet())
    assert [r["job"] for r in rows] == ["1", "0", "2", "3", "4"]
    assert (mixed_sweep / "summary.json").is_file()


# ---------------------------------------------------------------------- CLI
def test_main_all_completed(good_sweep, capsys):
    assert main([str(good_sweep)]) == 0
    out = capsys.readouterr()
    assert "88.00%" in out.out and out.err == ""


def test_main_failed_job(mixed_sweep, capsys):
    assert main([str(mixed_sweep), "--quiet"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    # Failures only: the leftover `running` job 3 and never-started job 4 are not failures (resume=auto continues them).
    assert lines == ["failed job: 2 (optimizer=adam lr=-1)"]


def test_unfinished_jobs_alone_are_not_a_failure(good_sweep, capsys):
    make_job(good_sweep, "2", ["lr=0.001"], "interrupted", error="stopped by SIGTERM", final=False, epochs=1)
    make_job(good_sweep, "3", ["lr=0.0001"], None)
    assert main([str(good_sweep), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    counts = json.loads((good_sweep / "summary.json").read_text())["counts"]
    assert (counts["completed"], counts["interrupted"], counts["missing"]) == (2, 1, 1)


def test_planned_jobs_that_never_started_are_listed(good_sweep):
    (good_sweep / "sweep.json").write_text(json.dumps({"jobs": [
        {"num": 0, "overrides": ["lr=0.1"]}, {"num": 1, "overrides": ["lr=0.01"]},
        {"num": 2, "overrides": ["lr=0.001"]}, {"num": 3, "overrides": ["lr=0.0001"]}]}))
    rows = _by_job(collect(good_sweep))
    assert sorted(rows) == ["0", "1", "2", "3"]
    assert rows["3"]["status"] == rows["2"]["status"] == "missing"
    assert rows["3"]["overrides"] == "lr=0.0001" and rows["3"]["path"] is None


def test_main_one_failed(good_sweep, capsys):
    make_job(good_sweep, "2", ["lr=-1"], "failed", error="lr must be positive", final=False)
    assert main([str(good_sweep), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == "failed job: 2 (lr=-1)"


@pytest.mark.parametrize("which", ["missing", "empty", "file"])
def test_main_not_a_sweep(tmp_path, capsys, which):
    target = tmp_path / "nope"
    if which == "empty":
        target.mkdir()
        (target / "stray").mkdir()
    elif which == "file":
        target.write_text("x")
    with pytest.raises(SystemExit) as exited:
        main([str(target)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainer-summary: error:") and str(target) in err[0]
    if which == "empty":
        assert not (target / "summary.json").exists()


def test_main_twice_is_identical(mixed_sweep, capsys):
    assert main([str(mixed_sweep), "--quiet"]) == 1
    first = {name: (mixed_sweep / name).read_bytes() for name in summary.SUMMARY_FILES}
    assert main([str(mixed_sweep), "--quiet"]) == 1  # the summary files themselves are not jobs
    second = {name: (mixed_sweep / name).read_bytes() for name in summary.SUMMARY_FILES}
    assert first == second


def test_main_rebuilds_from_files_alone(mixed_sweep, capsys):
    summarize(mixed_sweep, console=_quiet())
    expected = (mixed_sweep / "summary.json").read_text()
    for name in summary.SUMMARY_FILES:
        (mixed_sweep / name).unlink()
    assert main([str(mixed_sweep), "--quiet"]) == 1
    assert (mixed_sweep / "summary.json").read_text() == expected


# ----------------------------------------------------------------- callback
def _config(sweep_dir) -> object:
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_failed_job_exits_1(mixed_sweep, capsys):
    with pytest.raises(SystemExit) as exc:
        SweepCallback().on_multirun_end(config=_config(mixed_sweep), config_name="config")
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "2 (optimizer=adam lr=-1) failed: optimizer.lr=-1 must be > 0 second line" in err[0]
    assert "4 (" not in err[0]  # never started: listed in the summary, not a failure
    assert (mixed_sweep / "summary.json").is_file()


def test_callback_all_completed_returns(good_sweep, capsys):
    assert SweepCallback().on_multirun_end(config=_config(good_sweep)) is None
    assert capsys.readouterr().err == ""
    assert json.loads((good_sweep / "summary.json").read_text())["counts"]["completed"] == 2


def test_callback_missing_or_empty_sweep_dir(tmp_path, capsys):
    SweepCallback().on_multirun_end(config=_config(tmp_path / "absent"))
    SweepCallback().on_multirun_end(config=_config(tmp_path))
    assert capsys.readouterr().err.count("sweep summary skipped") == 2


def test_callback_instantiates_from_hydra_config():
    from hydra.utils import instantiate

    assert isinstance(instantiate({"_target_": "trainer.sweeps.callback.SweepCallback"}), SweepCallback)


def test_single_run_folder_is_not_a_sweep(tmp_path, capsys):
    job = make_job(tmp_path, "run", ["lr=1"])
    (job / "checkpoints").mkdir()
    with pytest.raises(SystemExit) as exited:
        main([str(job)])
    assert exited.value.code == 2
    assert "single run" in capsys.readouterr().err


def test_table_escapes_markup_and_fits_narrow_consoles(tmp_path):
    make_job(tmp_path, "0", ["model.hidden=[256,128]", "lr=0.1"], acc=0.5)
    make_job(tmp_path, "1", ["lr=-1"], "failed", error="[bold]not markup[/bold]", final=False)
    rows = sort_rows(collect(tmp_path))
    wide = Console(file=io.StringIO(), width=250)
    wide.print(render_table(rows, width=250))
    text = wide.file.getvalue()
    assert "model.hidden=[256,128]" in text and "[bold]not markup[/bold]" in text and "epochs" in text

    narrow = Console(file=io.StringIO(), width=70)
    narrow.print(render_table(rows, width=70))
    text = narrow.file.getvalue()
    assert "overrides" in text and "lr=0.1" in text and "50.00%" in text
    assert "epochs" not in text  # dropped so the overrides stay readable
    assert max(len(line) for line in text.splitlines()) <= 70


def test_overrides_every_job_shares_are_said_once(tmp_path):
    make_job(tmp_path, "0", ["optimizer=sgd", "epochs=2"])
    make_job(tmp_path, "1", ["optimizer=adam", "epochs=2"])
    summarize(tmp_path, _quiet(), write=True)
    md = (tmp_path / "summary.md").read_text()
    assert "Every job: `epochs=2`." in md
    assert "| optimizer=sgd |" in md and "| optimizer=adam |" in md
    # The files keep each job's full overrides.
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert sorted(r["overrides"] for r in rows) == ["optimizer=adam epochs=2", "optimizer=sgd epochs=2"]


def test_a_folder_of_runs_is_listed_read_only(tmp_path, capsys):
    """trainer-summary outputs/runs: a table of the runs, no file written there."""
    make_job(tmp_path, "2026-11-28_10-00-00_aaaaaa", ["optimizer=sgd"], acc=0.61)
    make_job(tmp_path, "2026-11-28_11-00-00_bbbbbb", ["optimizer=adam"], acc=0.85)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "optimizer=adam" in out and "85.00%" in out and out.index("optimizer=adam") < out.index("optimizer=sgd")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert main([str(tmp_path), "--write", "--quiet"]) == 0
    assert (tmp_path / "summary.json").is_file()


# ----------------------------------------------------- any folder of runs (outputs/)
def _cross_validation(root: Path, name: str, folds=(0.7, 0.8)) -> Path:
    """A CV run's folder as `trainer cv.folds=K` leaves it: its folds inside, its record monitoring cv/mean."""
    cv = root / name
    for i, acc in enumerate(folds, start=1):
        fold = make_job(cv, f"fold_{i}", ["cv.folds=2", f"cv.fold={i}"], acc=acc, val=True)
        record = json.loads((fold / "metrics.json").read_text())  # a fold never sees the test set
        record["final"] = {k: v for k, v in record["final"].items() if not k.startswith("test/")}
        (fold / "metrics.json").write_text(json.dumps(record))
    record = {"status": "completed", "error": None, "overrides": ["cv.folds=2"], "hparams": {}, "monitor": "cv/mean",
              "mode": "max", "final": {"cv/mean": sum(folds) / len(folds), "cv/std": 0.07, "cv/metric": "val/acc"},
              "best": {"cv/mean": sum(folds) / len(folds)}, "history": []}
    (cv / "metrics.json").write_text(json.dumps(record))
    return cv


@pytest.fixture
def outputs(tmp_path) -> Path:
    """outputs/ with a run, a cross-validation and a sweep whose job 2 never started."""
    root = tmp_path / "outputs"
    make_job(root / "runs", "2026-12-01_10-00-00_aaaaaa", ["model=conv"], acc=0.6)
    _cross_validation(root / "runs", "2026-12-01_11-00-00_bbbbbb")
    sweep = root / "sweeps" / "2026-12-01_12-00-00_cccccc"
    make_job(sweep, "0_seed=0", ["seed=0"], acc=0.8)
    make_job(sweep, "1_seed=1", ["seed=1"], "failed", error="lr=-1 must be positive", final=False, epochs=0)
    (sweep / "sweep.json").write_text(json.dumps({"jobs": [{"num": i, "overrides": [f"seed={i}"]} for i in range(3)]}))
    return root


def test_every_run_under_a_folder_is_listed_once_with_its_kind(outputs):
    rows = collect(outputs, every=True)
    kinds = {row["job"]: (row["kind"], row["status"]) for row in rows}
    assert kinds == {
        "runs/2026-12-01_10-00-00_aaaaaa": ("run", "completed"),
        "runs/2026-12-01_11-00-00_bbbbbb": ("cv", "completed"),
        "runs/2026-12-01_11-00-00_bbbbbb/fold_1": ("fold", "completed"),
        "runs/2026-12-01_11-00-00_bbbbbb/fold_2": ("fold", "completed"),
        "sweeps/2026-12-01_12-00-00_cccccc/0_seed=0": ("run", "completed"),
        "sweeps/2026-12-01_12-00-00_cccccc/1_seed=1": ("run", "failed"),
        "sweeps/2026-12-01_12-00-00_cccccc/2": ("run", "missing"),
    }
    assert len(rows) == len(kinds)  # each once


def test_a_folder_of_runs_without_a_common_metric_is_listed_by_kind(outputs):
    console = Console(file=io.StringIO(), width=200)
    summarize(outputs, console)
    text = console.file.getvalue()
    assert "Runs in" in text and "7 runs" in text and "by kind" in text and "Sweep:" not in text
    assert "ranked by val/acc" not in text and "ranked by test/acc" not in text  # the CV and its folds have none
    # Each kind says what it is ranked by, from the function that ranked it.
    assert by_kind_label(collect(outputs, every=True)) == (
        "by kind: cv ranked by cv/mean (max); run ranked by best test/acc (max); fold ranked by best val/acc (max)")
    order = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│") and "/" in line]
    assert order[0] == "runs/2026-12-01_11-00-00_bbbbbb", order  # the cross-validation first, then the runs
    assert not any((outputs / name).exists() for name in summary.SUMMARY_FILES)  # read-only


def test_runs_are_ranked_by_a_metric_they_all_have_and_best_says_its_metric(tmp_path):
    make_job(tmp_path, "a", ["lr=0.1"], acc=0.70)                # no val split: its best is test/acc
    make_job(tmp_path, "b", ["lr=0.2"], acc=0.90, val=True)      # a val split: its best is val/acc
    console = Console(file=io.StringIO(), width=200)
    summarize(tmp_path, console)
    text = console.file.getvalue()
    # a's value is its best epoch's, b's its final test/acc (it monitored val/acc): the title says both.
    assert "ranked by best test/acc for 1, final test/acc for 1 (max)" in " ".join(text.split())
    assert "val/acc 90.00%" in text and "test/acc 70.00%" in text
    assert "val loss" in text and "test acc" in text


def test_a_cross_validation_is_summarised_as_one(tmp_path):
    cv = _cross_validation(tmp_path, "cv")
    console = Console(file=io.StringIO(), width=200)
    summarize(cv, console)
    text = console.file.getvalue()
    assert "Cross-validation: 2 runs" in text and "Sweep" not in text
    assert "Folds: mean ± std" in text and "Seed groups" not in text
    assert "test acc" not in text  # no fold has a test number: no empty column
    md = (cv / "summary.md").read_text()
    assert "## Folds (mean ± std)" in md


@pytest.mark.parametrize("width, below", [(60, True), (80, False)])
def test_a_narrow_console_still_shows_every_error(tmp_path, width, below):
    """Too narrow for the error column: each error on a line of its own below the table."""
    make_job(tmp_path, "0_lr=0.1", ["lr=0.1"], acc=0.5)
    make_job(tmp_path, "1_lr=-1", ["lr=-1"], "failed", error="lr=-1 must be positive (for example lr=1e-3)",
             final=False)
    console = Console(file=io.StringIO(), width=width)
    summarize(tmp_path, console)
    text = console.file.getvalue()
    words = " ".join(text.replace("│", " ").split())
    assert ("1_lr=-1: failed: lr=-1 must be positive (for example lr=1e-3)" in words) == below
    assert "lr=-1 must be positive (for example lr=1e-3)" in words  # in the column, or below the table
    assert max(len(line) for line in _drawn(text)) <= width


def _drawn(text: str) -> list[str]:
    """The lines that must fit the console: all but the lines of text that
    hold a path (a job's error below the table, every job's overrides, where
    the summary is), which stay whole so that the path can be pasted back (a
    terminal wraps them for the eye only)."""
    whole = re.compile(r"^(\S+: (failed|missing|diverged|interrupted|pruned|incomplete): |Every job: |Summary: )")
    return [line for line in text.splitlines() if not whole.match(line)]


@pytest.fixture
def long_outputs(tmp_path) -> Path:
    """outputs/ as a real user's looks: run and sweep folders with the long
    names trainer gives them (a search trial's path is 123 characters),
    a cross-validation with its folds, a failed job, a job never started."""
    root = tmp_path / "outputs"
    make_job(root / "runs", "model=conv,optimizer=adam_and_2_more-2026-12-05_13-39-02_0252be",
             ["model=conv", "optimizer=adam", "lr=0.01", "epochs=2"], acc=0.91)
    make_job(root / "runs", "defaults-2026-12-05_13-50-11_9f00aa", [], acc=0.65)
    _cross_validation(root / "runs", "cv.folds=2,model=conv-2026-12-05_14-00-00_aa11bb")
    search = root / "sweeps" / "batch_size+lr+optimizer.weight_decay-2026-12-05_13-41-02_c01b28"
    for num, (batch, lr, wd, acc) in enumerate([(64, "0.0031", "1.2e-05", 0.88), (32, "0.012", "0.0003", 0.86)]):
        name = f"{num + 16}_batch_size={batch},lr={lr},optimizer.weight_decay={wd}"
        make_job(search, name, [f"batch_size={batch}", f"lr={lr}", f"optimizer.weight_decay={wd}"], acc=acc)
    grid = root / "sweeps" / "lr+optimizer-2026-12-05_15-00-00_dd22ee"
    make_job(grid, "0_lr=0.001,optimizer=sgd", ["lr=0.001", "optimizer=sgd"], acc=0.60)
    make_job(grid, "1_lr=-1,optimizer=sgd", ["lr=-1", "optimizer=sgd"], "failed",
             error="lr=-1 must be positive (for example lr=1e-3)", final=False, epochs=0)
    (grid / "sweep.json").write_text(json.dumps({"varies": ["lr", "optimizer"], "jobs": [
        {"num": i, "overrides": [f"lr={lr}", f"optimizer={opt}"]}
        for i, (lr, opt) in enumerate([("0.001", "sgd"), ("-1", "sgd"), ("0.001", "adam")])]}))
    return root


def _table_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """The main table's header cells and each row's cells on its first line (the job column never wraps)."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    header = [cell.strip() for cell in lines[top + 1].split("┃")[1:-1]]
    rows = []
    for line in lines[top + 3:]:
        if line.startswith("└"):
            break
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells[0]:
            rows.append(cells)
    return header, rows


def _names(shown: str, names: list[str]) -> list[str]:
    """The names a shown (maybe shortened) job cell can stand for: its pieces between ellipses, in order."""
    pattern = ".*".join(re.escape(piece) for piece in shown.split("…"))
    return [name for name in names if re.fullmatch(pattern, name)]


@pytest.mark.parametrize("columns", ["80", "100", "120", None])  # None: piped, no COLUMNS
def test_a_folder_of_long_named_runs_fits_the_console_and_every_column_reads(long_outputs, capsys, monkeypatch,
                                                                              columns):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    width = int(columns or 160)  # a pipe gets 160 columns (trainer.report.tracking.wide_console)
    assert main([str(long_outputs)]) == 1  # the failed job
    text = capsys.readouterr().out
    assert max(len(line) for line in _drawn(text)) <= width, text
    header, rows = _table_rows(text)
    assert all(header) and {"job", "status", "overrides"} <= set(header), header  # no column squeezed away
    assert not {"kind", "test acc", "best"} - set(header) or width < 120, header
    full = [row["job"] for row in collect(long_outputs, every=True)]
    assert max(map(len, full)) > width - 40  # names that cannot fit whole beside the other columns
    assert len(rows) == len(full) == 10
    for cells in rows:
        job = cells[0]
        assert not job.startswith("/") and str(long_outputs) not in job  # its place in the folder summarised
        assert len(_names(job, full)) == 1, (job, _names(job, full))  # shortened, yet it names one run
        assert all(cell for cell in cells[1:3]), cells  # every column readable, none of zero width
    jobs = [cells[0] for cells in rows]
    assert any("…" in job for job in jobs) or width >= 160
    assert "sweeps/lr+optimizer-2026-12-05_15-00-00_dd22ee/2_lr=0.001,optimizer=adam" in full


@pytest.mark.parametrize("text, width, shown", [
    ("0_lr=0.1", 20, "0_lr=0.1"),                                                     # fits: whole
    ("runs/model=conv-2026-12-05_14-00-00_aa11bb/fold_2", 30, "runs/model=…0-00_aa11bb/fold_2"),  # folder cut
    ("sweeps/lr+optimizer-2026-12-05_15-00-00_dd22ee/1_lr=-1,optimizer=sgd", 30, "swe…22ee/1_lr=-1,optimizer=sgd"),
    # Too long to keep the job's name whole: its number and the start of its values, after its folder's ends.
    ("sweeps/lr+optimizer-2026-12-05_15-00-00_dd22ee/1_lr=-1,optimizer=sgd", 24, "sweep…dd22ee/1_lr=-1,op…"),
    ("17_batch_size=64,lr=0.0031,optimizer.weight_decay=1.2e-05", 24, "17_batch_size=64,lr=0.0…"),
    # Else its start and end: a run's date and random suffix tell it from another run of the same overrides.
    ("runs/model=conv,optimizer=adam_and_2_more-2026-12-05_13-39-02_0252be", 24, "runs/model=…39-02_0252be"),
])
def test_a_long_name_is_shortened_in_its_middle_keeping_what_tells_it_apart(text, width, shown):
    assert shorten(text, width) == shown and len(shown) <= width


def test_shortened_names_never_read_the_same():
    names = ["sweeps/a-2026-12-05_15-00-00_dd22ee/3_lr=0.01,optimizer=adam",
             "sweeps/a-2026-12-05_15-00-00_dd22ee/13_lr=0.01,optimizer=adam",
             "runs/x-2026-12-05_15-00-00_aaaaaa", "runs/x-2026-12-05_16-00-00_aaaaaa"]
    shown = short_names(names, 16)
    assert len(set(shown)) == len(names) and all(len(_names(s, names)) == 1 for s in shown), shown


# ------------------------------------------------- a sweep stopped halfway
def _killed_sweep(root: Path) -> Path:
    """A sequential sweep whose own process was killed (kill -9) in job 1: job 0
    completed, job 1's record still says running, jobs 2 and 3 never started."""
    shared = ["data.root=/data", "epochs=3"]
    jobs = [[*shared, f"optimizer={name}"] for name in ("sgd", "adam", "rmsprop", "adagrad")]
    make_job(root, "0_optimizer=sgd", jobs[0], acc=0.80)
    make_job(root, "1_optimizer=adam", jobs[1], "running", acc=0.87, epochs=1, final=False)
    (root / "sweep.json").write_text(json.dumps({"varies": ["optimizer"], "command": [*shared, "optimizer=sgd,adam"],
                                                  "jobs": [{"num": i, "overrides": o} for i, o in enumerate(jobs)]}))
    return root


@pytest.mark.parametrize("width", [80, 120, None])
def test_every_row_of_a_killed_sweep_shows_its_own_overrides(tmp_path, width):
    """Whatever its state (completed, running when killed, never started),
    each row says what its job runs: by its folder's name, a planned job's
    as its folder will be named, or in the overrides column; never (defaults)."""
    sweep = _killed_sweep(tmp_path / "sweep")
    rows = collect(sweep)
    assert {r["job"]: r["status"] for r in rows} == {
        "0_optimizer=sgd": "completed", "1_optimizer=adam": "incomplete", "2_optimizer=rmsprop": "missing",
        "3_optimizer=adagrad": "missing"}
    console = Console(file=io.StringIO(), width=width or 250)
    console.print(render_table(sort_rows(rows, *sweep_settings(rows)), width=width))
    text = console.file.getvalue()
    assert "(defaults)" not in text
    _, shown = _table_rows(text)
    for cells, name in zip(shown, ("sgd", "adam", "rmsprop", "adagrad")):
        assert f"optimizer={name}" in " ".join(cells), cells


def test_the_overrides_column_shows_each_row_its_own_overrides(tmp_path):
    """A column shown because one job's folder name does not say its overrides
    (a sweep's folder from before jobs were named): every row has its own in
    it, also where its name says them too; (defaults) only for a job that has none."""
    make_job(tmp_path, "0_optimizer=sgd", ["optimizer=sgd", "epochs=2"], acc=0.8)
    make_job(tmp_path, "1_optimizer=adam", ["optimizer=adam", "epochs=2"], "running", acc=0.9, final=False)
    make_job(tmp_path, "2", ["optimizer=rmsprop", "epochs=2"], acc=0.7)
    make_job(tmp_path, "3", ["epochs=2"], acc=0.6)
    rows = collect(tmp_path)
    console = Console(file=io.StringIO(), width=200)
    console.print(render_table(sort_rows(rows, *sweep_settings(rows)), width=200))
    header, shown = _table_rows(console.file.getvalue())
    overrides = {cells[0]: cells[header.index("overrides")] for cells in shown}
    assert overrides == {"0_optimizer=sgd": "optimizer=sgd", "1_optimizer=adam": "optimizer=adam",
                         "2": "optimizer=rmsprop", "3": "(defaults)"}
    # Where every folder's name says it all, there is no column to repeat it.
    console = Console(file=io.StringIO(), width=200)
    console.print(render_table([r for r in rows if not r["job"].isdigit()], width=200))
    assert "overrides" not in _table_rows(console.file.getvalue())[0]


# ------------------------------------------------- records of today and of old
def _today(root: Path, name: str, overrides: list[str], status: str = "completed", *, acc: float = 0.9,
           loss: float = 0.3, monitor: str = "val/acc", mode: str = "max", val: bool = False, epochs: int = 2) -> Path:
    """The job make_job writes, recorded by today's writer (trainer.runs.record.RunRecord)."""
    split = "val" if val else "test"
    history = _history(epochs, acc, loss, split)
    watched = monitor.replace("val/", f"{split}/")
    run = RunRecord(RunFolder(root / name), overrides=overrides, hparams={}, config={})
    run.start(monitor=watched, mode=mode, eval_split=split, device="cpu", device_name=None, history=[], best={},
              resumed=False, tensorboard=False, purge_step=None, model_summary="")
    run.note_timing({"startup_seconds": 3.1})
    for row in history:  # each epoch of _history is better than the one before
        run.epoch(row, is_best=True)
    if status == "completed":
        final = {"test/acc": acc, "test/loss": loss, "train/loss": loss - 0.1, "train/acc": acc + 0.02,
                 "epochs": epochs, "best_epoch": epochs, "train_seconds": 12.3,
                 **({"val/acc": acc, "val/loss": loss} if val else {})}
        run.finish(final, best_of(history[-1], watched))
    else:
        run.close()  # killed: metrics.json still says running
    return root / name


@pytest.mark.parametrize("job", [
    dict(overrides=["lr=0.1"]),
    dict(overrides=["lr=0.1"], val=True, acc=0.93),
    dict(overrides=["lr=0.1"], monitor="val/loss", mode="min"),
    dict(overrides=["lr=0.1"], monitor="val/loss", mode="min", val=True),
    dict(overrides=["lr=0.2"], status="running", epochs=1, acc=0.7),
    dict(overrides=["lr=0.2"], status="running", epochs=3, monitor="val/loss", mode="min", val=True),
])
def test_an_old_record_summarises_as_the_same_run_recorded_today(tmp_path, job):
    old = make_job(tmp_path / "old", "0", **{**job, "final": job.get("status", "completed") == "completed"})
    new = _today(tmp_path / "new", "0", **job)
    (old_row,), (new_row,) = collect(old.parent), collect(new.parent)
    # Today's writer also times drawing curves.png; everything else reads the same.
    differ = {key: (old_row[key], new_row[key]) for key in COLUMNS
              if key not in ("path", "pictures_seconds") and old_row[key] != new_row[key]}
    assert differ == {}
    assert new_row["best_value"] is not None and new_row["epochs"] == job.get("epochs", 2)


def test_a_row_states_what_the_record_states_not_what_its_history_adds_up_to(tmp_path):
    job = _today(tmp_path, "0", ["lr=0.1"], "running", epochs=2)
    data = json.loads((job / "metrics.json").read_text())
    # As a resumed run's record says it: the best epoch and the time of every attempt, one epoch of history here.
    data.update(best={**data["best"], "epoch": 1, "value": 0.5}, trained={"epochs": 2, "train_seconds": 9.0},
                history=data["history"][1:])
    (job / "metrics.json").write_text(json.dumps(data))
    (row,) = collect(tmp_path)
    assert (row["best_epoch"], row["best_value"], row["epochs"], row["seconds"]) == (1, 0.5, 2, 9.0)
    assert row["error"].startswith("stopped after epoch 2 ")


# ------------------------------------------------- time, over every session
def _session(job: Path, times: dict, *, resumed: bool, end: str, epochs: range) -> None:
    """One session of a run as today's writer records it: started (resumed or
    not), some epochs, its times, then interrupted, completed or killed."""
    run = RunRecord(RunFolder(job), overrides=["lr=0.1"], hparams={}, config={})
    history = _history(epochs.stop - 1, 0.9, 0.3)
    run.start(monitor="test/acc", mode="max", eval_split="test", device="cpu", device_name=None,
              history=history[:epochs.start - 1], best={}, resumed=resumed, tensorboard=False, purge_step=None,
              model_summary="")
    for row in history[epochs.start - 1:]:
        run.epoch(row, is_best=True)
    if end == "killed":  # kill -9: its times never written, its record still says running
        run.close()
        return
    run.note_timing(times)
    if end == "completed":
        final = {"test/acc": 0.9, "test/loss": 0.3, "epochs": len(history), "best_epoch": len(history),
                 "train_seconds": 1.5 * len(history)}
        run.finish(final, best_of(history[-1], "test/acc"))
    else:
        run.fail(end, "stopped by SIGTERM; continue it with resume=auto")


def test_a_resumed_jobs_time_counts_every_session(tmp_path):
    """Interrupted after 2 epochs, resumed with resume=auto to its end: the
    record's times, and the summary's sums, are both sessions' together."""
    job = tmp_path / "sweep" / "0_lr=0.1"
    first = {"startup_seconds": 1.0, "fit_seconds": 5.0, "final_eval_seconds": 0.0, "pictures_seconds": 0.25}
    second = {"startup_seconds": 0.5, "fit_seconds": 3.0, "final_eval_seconds": 0.25, "pictures_seconds": 0.25}
    _session(job, first, resumed=False, end="interrupted", epochs=range(1, 3))
    _session(job, second, resumed=True, end="completed", epochs=range(3, 5))
    timing = json.loads((job / "metrics.json").read_text())["timing"]
    assert (timing["sessions"], timing["fit_seconds"], timing["startup_seconds"]) == (2, 8.0, 1.5)
    (row,) = collect(tmp_path / "sweep")
    assert (row["fit_seconds"], row["sessions"], row["timed_sessions"]) == (8.0, 2, 2)
    assert time_line([row]).startswith("Time, summed over 1 job and all 2 of their sessions: start-up 1.5 s, fit 8.0 s")


def test_a_session_killed_before_it_noted_its_times_is_said_to_be_missing(tmp_path):
    job = tmp_path / "sweep" / "0_lr=0.1"
    _session(job, {}, resumed=False, end="killed", epochs=range(1, 3))
    _session(job, {"startup_seconds": 0.5, "fit_seconds": 3.0}, resumed=True, end="completed", epochs=range(3, 5))
    (row,) = collect(tmp_path / "sweep")
    assert (row["fit_seconds"], row["sessions"], row["timed_sessions"]) == (3.0, 2, 1)
    assert "1 of their 2 sessions (1 session left no times" in time_line([row])


@pytest.mark.parametrize("rows, line", [
    # A part no job records is not summed to a made-up 0.0 s.
    ([{"startup_seconds": 3.1, "sessions": 1, "timed_sessions": 1}], "Time, summed over 1 job: start-up 3.1 s"),
    # Resumed jobs: said when every session is in the sums ...
    ([{"fit_seconds": 2.0, "sessions": 2, "timed_sessions": 2}, {"fit_seconds": 1.0, "sessions": 1, "timed_sessions": 1}],
     "Time, summed over 2 jobs and all 3 of their sessions: fit 3.0 s"),
    # ... and how many are not: a record from before format 4 holds its last session's times alone.
    ([{"fit_seconds": 2.0, "sessions": 3, "timed_sessions": 1}],
     "Time, summed over 1 job, 1 of their 3 sessions (2 sessions left no times: killed before it ended, "
     "or recorded by an older trainer): fit 2.0 s"),
])
def test_the_time_line_says_what_it_sums(rows, line):
    assert time_line(rows) == line


def test_an_older_resumed_record_says_its_times_are_its_last_sessions(tmp_path):
    job = make_job(tmp_path, "0_lr=0.1", ["lr=0.1"])
    data = json.loads((job / "metrics.json").read_text())
    data.update(format=3, resumed=1, timing={"startup_seconds": 0.5, "fit_seconds": 3.0})
    (job / "metrics.json").write_text(json.dumps(data))
    (row,) = collect(tmp_path)
    assert (row["sessions"], row["timed_sessions"]) == (2, 1)
    assert "1 of their 2 sessions" in time_line([row])


# ------------------------------------------------------------- curves.png
def _trials(n: int, long: bool = True) -> list[dict]:
    """Rows of an Optuna search in the summary's order: completed ones first, best first."""
    name = "{}_batch_size=64,lr=0.0031,optimizer.weight_decay=1.2e-05" if long else "{}_lr=0.1"
    return [{"job": name.format(i), "status": "completed" if i % 5 else "pruned"} for i in range(n)]


@pytest.mark.parametrize("rows, named, shown, title", [
    # Few runs with short names: each by its name.
    ([{"job": "0_optimizer=sgd", "status": "completed"}, {"job": "1_optimizer=adam", "status": "failed"}],
     2, ["0_optimizer=sgd", "1_optimizer=adam (failed)"], None),
    # A search's long names: by trial (job) number, as the summary numbers them.
    (_trials(4), 4, ["0 (pruned)", "1", "2", "3"], "job"),
    # Many runs: the best NAMED_CURVES named, the others grey; the legend says how many of how many.
    (_trials(16), 8, [str(i) if i % 5 else f"{i} (pruned)" for i in range(8)], "job, best 8 of 16"),
    (_trials(50, long=False), 8, [f"{i}_lr=0.1" if i % 5 else f"{i}_lr=0.1 (pruned)"
                                                    for i in range(8)], "best 8 of 50"),
    # A long name without a number (a cross-validation's fold inside a folder): cut in its middle.
    ([{"job": "runs/model=conv-2026-12-05_14-00-00_aa11bb/fold_1", "status": "completed"}], 1,
     ["runs/model=co…_aa11bb/fold_1"], None),
])
def test_a_crowded_picture_names_few_runs_shortly(rows, named, shown, title):
    labels, legend = groups.curve_labels(rows)
    assert [labels[r["job"]] for r in rows[:named]] == shown and legend == title
    assert all(labels[r["job"]] is None for r in rows[named:])
    assert all(len(text) <= groups.LABEL_CHARS + len(" (pruned)") for text in shown)
    assert named <= groups.NAMED_CURVES == 8


@pytest.mark.parametrize("n", [4, 16, 50])
def test_a_searchs_curves_name_at_most_a_few_trials_shortly(tmp_path, monkeypatch, n):
    """What curves.png of an Optuna search is drawn with: short labels, at most NAMED_CURVES of them."""
    for i in range(n):
        name = f"{i}_batch_size=64,lr=0.{i + 1:04d},optimizer.weight_decay=1.2e-05"
        make_job(tmp_path, name, [f"lr=0.{i + 1:04d}"], acc=0.5 + i / 200)
    drawn = {}
    monkeypatch.setattr(figures, "save_png", lambda image, path: drawn.update(image=image))
    real = figures.overlay
    monkeypatch.setattr(figures, "overlay", lambda lines, *args, **kwargs: drawn.update(lines=lines)
                        or real(lines, *args, **kwargs))
    rows = collect(tmp_path)
    assert groups.draw_curves(tmp_path, sort_rows(rows, *sweep_settings(rows)), [], set())
    labels = [label for label, _ in drawn["lines"] if label is not None]
    assert len(drawn["lines"]) == n and len(labels) == min(n, groups.NAMED_CURVES)
    assert labels[0] == str(n - 1) and all(len(label) <= 3 for label in labels)  # the best first, by number
    height, width, _ = drawn["image"].shape
    assert (height, width) == (340, 1020)  # the panels keep their size, the legend beside them


def test_an_error_holding_a_path_is_never_broken_by_the_table(tmp_path):
    """An error's path or command (to paste back) wider than the error column
    goes below the table, whole, instead of being folded inside the column."""
    folder = "/outputs/sweeps/" + "lr+optimizer.weight_decay-2026-12-05_13-42-30_5a1c05/" * 2 + "1_lr=-1"
    error = f"stopped by SIGTERM at epoch 1, step 4; checkpoint saved, continue with resume={folder}"
    make_job(tmp_path, "0_lr=0.1", ["lr=0.1"], acc=0.5)
    make_job(tmp_path, "1_lr=-1", ["lr=-1"], "interrupted", error=error, final=False)
    make_job(tmp_path, "2_lr=-2", ["lr=-2"], "failed", error="lr=-2 must be positive", final=False)
    console = Console(file=io.StringIO(), width=250)
    summarize(tmp_path, console, write=True)
    assert f"1_lr=-1: interrupted: {error}" in console.file.getvalue().splitlines()
    # summary.md keeps its error column, and every error in it: a markdown cell is not cut.
    md = (tmp_path / "summary.md").read_text()
    assert error in md and "lr=-2 must be positive" in md
