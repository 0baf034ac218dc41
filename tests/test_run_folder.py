"""The run folder: the one owner of a run's files. A folder that is not a
trainer run is never written; metrics.json states what the run is; the
Python API leaves no handler behind. Mostly in-process (trainer.run)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

import trainer
from helpers import metrics, run_cli, snapshot, tiny
from trainer.core.errors import UserError
from trainer.runs.folder import MARKER, RunFolder, read_json
from trainer.runs.record import RunRecord, read, upgrade


def run(root: Path, folder: Path, *overrides: str) -> dict:
    return trainer.run(*tiny(root, *overrides), run_dir=folder, quiet=True)


@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    run(synthetic_root, folder, "data.subset=256")
    return folder


# ------------------------------------------------------------ what it states
def test_metrics_json_states_what_the_run_is(finished):
    m = metrics(finished)
    assert (m["kind"], m["eval_split"], m["monitor"], m["mode"], m["status"]) == ("run", "test", "test/acc", "max",
                                                                                  "completed")
    assert m["device"] == "cpu" and "(" not in m["device"]
    assert m["best"]["value"] == m["best"]["test/acc"] == max(row["test/acc"] for row in m["history"])
    assert m["sweep"] is None and m["cv"] is None
    assert read_json(finished / MARKER) == {"kind": "run"}


def test_a_validation_split_is_stated_not_guessed(synthetic_root, tmp_path):
    m = run(synthetic_root, tmp_path / "run", "data.subset=256", "data.val_split=64")
    assert (m["eval_split"], m["monitor"]) == ("val", "val/acc")


@pytest.mark.parametrize("record, name, parent, want", [
    ({"monitor": "test/acc", "status": "completed", "device": "cpu (AMD EPYC, 2 threads)", "best": {"test/acc": 0.5}},
     "run", None, {"kind": "run", "eval_split": "test", "device": "cpu", "device_name": "AMD EPYC, 2 threads",
                   "best": {"test/acc": 0.5, "value": 0.5}}),
    ({"monitor": "cv/mean", "best": {"cv/mean": 0.7}}, "cv", None, {"kind": "cv", "eval_split": "val"}),
    ({"monitor": "val/acc"}, "fold_2", {"monitor": "cv/mean"}, {"kind": "fold", "cv": {"fold": 2}}),
    ({"monitor": "test/acc"}, "refit", {"monitor": "cv/mean"}, {"kind": "refit", "cv": {"fold": None}}),
    ({"monitor": "val/loss"}, "fold_1", None, {"kind": "run", "eval_split": "val"}),  # not inside a CV
    # The first format: the monitor as declared, val/acc, with the epochs evaluated on test.
    ({"monitor": "val/acc", "status": "completed", "best": {"epoch": 2, "test/acc": 0.8},
      "final": {"epochs": 2, "train_seconds": 3.0},
      "history": [{"epoch": 1, "test/acc": 0.6}, {"epoch": 2, "test/acc": 0.8}]},
     "run", None, {"monitor": "test/acc", "eval_split": "test", "best": {"epoch": 2, "value": 0.8},
                   "trained": {"epochs": 2, "train_seconds": 3.0}}),
    # A run that never finished recorded no best: its best epoch so far, by its mode, and how far it got.
    ({"monitor": "val/acc", "mode": "max", "status": "running", "history": [
        {"epoch": 1, "test/acc": 0.5, "epoch_seconds": 1.0}, {"epoch": 2, "test/acc": 0.7, "epoch_seconds": 2.0},
        {"epoch": 3, "test/acc": 0.6, "epoch_seconds": 1.5}]},
     "run", None, {"monitor": "test/acc", "best": {"epoch": 2, "value": 0.7},
                   "trained": {"epochs": 3, "train_seconds": 4.5}}),
    ({"monitor": "val/loss", "status": "failed",
      "history": [{"epoch": 1, "val/loss": 0.5}, {"epoch": 2, "val/loss": 0.7}]},
     "run", None, {"eval_split": "val", "best": {"epoch": 1, "value": 0.5}, "trained": {"epochs": 2}}),
    ({"monitor": "test/acc", "hparams": {"kind": "refit"}}, "x", None, {"kind": "refit"}),  # as its HParams said
    # Before format 4 a resumed run's times were its last timed session's alone; a killed run has none.
    ({"format": 3, "monitor": "test/acc", "resumed": 2, "timing": {"startup_seconds": 0.5, "fit_seconds": 3.0}},
     "run", None, {"timing": {"sessions": 1, "fit_seconds": 3.0}, "monitor": "test/acc", "resumed": 2}),
    ({"format": 3, "monitor": "test/acc", "status": "running", "timing": {"started_at": "2026-12-05T10:00:00"}},
     "run", None, {"timing": {"sessions": 0}}),
])
def test_older_records_are_upgraded_for_the_readers(tmp_path, record, name, parent, want):
    folder = tmp_path / "parent" / name
    folder.mkdir(parents=True)
    if parent is not None:
        (tmp_path / "parent" / "metrics.json").write_text(__import__("json").dumps(parent))
    got = upgrade(record, folder)
    for key, value in want.items():
        if isinstance(value, dict):
            assert {k: got[key][k] for k in value} == value, (key, got[key])
        else:
            assert got[key] == value, (key, got[key])


def test_the_record_states_the_best_epoch_and_how_far_it_got_as_the_epochs_go(tmp_path):
    run = RunRecord(RunFolder(tmp_path / "run"), overrides=[], hparams={}, config={})
    resumed_best = {"epoch": 1, "test/acc": 0.6, "value": 0.6}
    run.start(monitor="test/acc", mode="max", eval_split="test", device="cpu", device_name=None,
              history=[{"epoch": 1, "test/acc": 0.6, "epoch_seconds": 2.0}], best=resumed_best, resumed=False,
              tensorboard=False, purge_step=None, model_summary="")
    started = read(run.run_dir)
    assert (started["best"], started["trained"]) == (resumed_best, {"epochs": 1, "train_seconds": 2.0})
    run.epoch({"epoch": 2, "test/acc": 0.8, "epoch_seconds": 1.0}, is_best=True)
    run.epoch({"epoch": 3, "test/acc": 0.7, "epoch_seconds": 1.0})
    m = read(run.run_dir)
    assert m["best"] == {"epoch": 2, "test/acc": 0.8, "value": 0.8}
    assert m["trained"] == {"epochs": 3, "train_seconds": 4.0} and m["status"] == "running"
    run.close()


# ------------------------------------------------------- folders not ours
def _foreign(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    for name in ("notes.txt", "curves.png", "trainer.log", "checkpoints/last.ckpt"):
        (folder / name).write_text(f"the user's own {name}\n")
    return folder


def test_a_folder_that_is_not_a_run_is_never_written(synthetic_root, tmp_path):
    folder = _foreign(tmp_path / "mine")
    before = snapshot(folder)
    with pytest.raises(trainer.UserError, match=r"not a trainer run folder \(it holds checkpoints, curves.png"):
        run(synthetic_root, folder)
    assert snapshot(folder) == before and sorted(os.listdir(folder)) == sorted(before_names(before))


def before_names(snap: dict) -> set[str]:
    return {name.split("/")[0] for name in snap}


def test_a_run_folder_without_its_record_is_refused_not_overwritten(synthetic_root, finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / "metrics.json").unlink()
    before = snapshot(copy)
    with pytest.raises(trainer.UserError) as refused:
        run(synthetic_root, copy)
    assert "\n" not in str(refused.value) and snapshot(copy) == before


@pytest.mark.parametrize("where", ["/", "~", "."])
def test_root_home_and_current_folders_are_refused_by_name(synthetic_root, where, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    folder = Path(where).expanduser()
    with pytest.raises(trainer.UserError, match="root folder|home folder|current folder"):
        run(synthetic_root, folder)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("make", ["file", "file/sub"])
def test_a_bad_run_dir_is_a_user_error(synthetic_root, tmp_path, make):
    (tmp_path / "file").write_text("x")
    with pytest.raises(trainer.UserError):
        run(synthetic_root, tmp_path / make)
    with pytest.raises(trainer.UserError, match="run_dir= takes a folder path"):
        trainer.run(*tiny(synthetic_root), run_dir=123)
    assert (tmp_path / "file").read_text() == "x"


def test_a_fifo_named_metrics_json_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "metrics.json")
    assert read(tmp_path) is None  # returns at once: a FIFO is never opened for reading


def test_the_folder_is_claimed_before_anything_else(tmp_path):
    folder = RunFolder(tmp_path / "new", "fold")
    folder.check_ours()  # new: fine
    folder.claim()
    assert read_json(tmp_path / "new" / MARKER) == {"kind": "fold"} and folder.is_ours()
    (tmp_path / "new" / "anything.txt").write_text("x")
    folder.check_ours()  # marked: ours, whatever else it holds


# ------------------------------------------------------------ the API
def test_the_api_leaves_no_handler_or_hook_behind(synthetic_root, tmp_path):
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), threading.excepthook)
    run(synthetic_root, tmp_path / "ok")
    with pytest.raises(trainer.UserError):
        run(synthetic_root, tmp_path / "bad", "lr=-1")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), threading.excepthook) == before


def test_an_interrupted_api_run_restores_the_handlers(synthetic_root, tmp_path, monkeypatch):
    """Ctrl-C mid-run: the run stops at the end of its step, and afterwards
    Ctrl-C in the notebook is Python's again (not the run's os._exit)."""
    from trainer.core import engine

    before = signal.getsignal(signal.SIGINT)
    real = engine.Trainer.train_step

    def step_then_interrupt(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(engine.Trainer, "train_step", step_then_interrupt)
    with pytest.raises(trainer.UserError, match="stopped by SIGINT"):
        run(synthetic_root, tmp_path / "stopped", "data.subset=256")
    assert signal.getsignal(signal.SIGINT) is before
    assert metrics(tmp_path / "stopped")["status"] == "interrupted"


# --------------------------------------------------------------- the CLI
def test_a_foreign_hydra_run_dir_is_refused_in_one_line(synthetic_root, tmp_path):
    folder = _foreign(tmp_path / "mine")
    before = snapshot(folder)
    proc = run_cli([*tiny(synthetic_root), f"hydra.run.dir={folder}"], tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not a trainer run folder" in proc.stderr
    assert snapshot(folder) == before


def test_the_lock_ends_with_its_process_not_with_its_forked_children(tmp_path):
    """A run killed while its DataLoader workers (forked children) still live
    leaves its folder free at once: resume= right after kill -9 is not told
    the folder is in use."""
    folder = tmp_path / "run"
    ready = tmp_path / "ready"
    holder = os.fork()
    if holder == 0:  # the run: locks, forks a worker that outlives it, dies
        try:
            RunFolder(folder).hold_lock()
            worker = os.fork()
            if worker == 0:
                time.sleep(30)
                os._exit(0)
            ready.write_text(str(worker))
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        while not ready.exists() or not ready.read_text():
            time.sleep(0.01)
        with pytest.raises(UserError, match="is in use by another trainer process"):
            RunFolder(folder).hold_lock()
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        RunFolder(folder).hold_lock().unlock()  # the worker still lives: the folder is free
    finally:
        for pid in (holder, int(ready.read_text() or 0) if ready.exists() else 0):
            with contextlib.suppress(ProcessLookupError):
                if pid:
                    os.kill(pid, signal.SIGKILL)
