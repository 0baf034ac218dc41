"""trainer.sweeps.summary: a sweep's summary, rebuilt from hand-made job folders."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from trainer.sweeps import summary
from trainer.sweeps.summary import collect, main, render_table, sort_rows, summarize, write_summary
from trainer.sweeps.callback import SweepCallback


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
    """A job folder as a multirun leaves it. status=None: only .hydra (never started)."""
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
    assert all(list(r) == list(summary.COLUMNS) for r in rows)


def test_fallback_val_acc_to_test_acc(mixed_sweep):
    """monitor val/acc without a val split: the best value is test/acc's."""
    jobs = _by_job(collect(mixed_sweep))
    assert jobs["1"]["monitor"] == "val/acc"
    assert jobs["1"]["best_value"] == pytest.approx(0.91)
    assert jobs["0"]["best_value"] == pytest.approx(0.80)
    assert summary.ranked_by(list(jobs.values()), "val/acc") == "test/acc"


def test_val_split_uses_val_acc(tmp_path):
    make_job(tmp_path, "0", ["data.val_split=0.1"], acc=0.93, val=True)
    (row,) = collect(tmp_path)
    assert row["val/acc"] == pytest.approx(0.93) and row["best_value"] == pytest.approx(0.93)
    assert summary.ranked_by([row], "val/acc") == "val/acc"


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
    assert summary.sweep_settings(collect(mixed_sweep)) == ("val/acc", "max")
    make_job(tmp_path, "0", ["lr=1"], monitor="val/loss", mode="min")
    assert summary.sweep_settings(collect(tmp_path)) == ("val/loss", "min")
    assert summary.sweep_settings([]) == ("val/acc", "max")


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
    monitor, mode = summary.sweep_settings(rows)
    assert (monitor, mode) == ("val/loss", "min")
    ranked = sort_rows(rows, monitor, mode)
    assert [r["job"] for r in ranked] == ["0", "2", "1", "3"]
    assert [r["best_value"] for r in ranked[:3]] == pytest.approx([0.20, 0.40, 0.60])
    # The same rows by accuracy, best first.
    assert [r["job"] for r in sort_rows(rows, "test/acc", "max")] == ["1", "2", "0", "3"]


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
    assert document["monitor"] == "val/acc" and document["mode"] == "max"
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
