"""Processes that die, get signals, diverge or run out of disk: driven for real.

Every run here is the real CLI in a subprocess. Where a test needs something
to happen at an exact point of training (a SIGKILL half-way through writing a
checkpoint, a NaN batch, a full disk), the child is started through
tests/fault_child.py: it patches the test's fault into the process, then runs
`python -m trainer` unchanged. The trainer itself has no test hooks.
"""
from __future__ import annotations

import json
import os
import shutil
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import CliProcess, metrics, one_line_error, run_cli, snapshot, start_cli, tiny
from trainer.core import checkpoint

# Every moving part whose state must survive a kill: shuffling, per-sample
# augmentation, dropout (the global RNG), a per-step cosine schedule, Adam's
# moments, a validation split with early-stopping state, and checkpoints
# inside epochs. 256 training samples / batch 32 = 8 steps per epoch, 16 in
# all; checkpoints at global steps 3, 6, 8 (epoch end), 9, 12, 15, 16.
STEPS = 16


def config(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return tiny(root, "epochs=2", "data.subset=320", "data.val_split=64", "deterministic=true", "device=cpu",
                "train.shuffle=true", "transform=augment", "model.hidden=[32]", "model.dropout=0.2",
                "optimizer=adam", "scheduler=cosine", "early_stopping.patience=3", "checkpoint.every_n_steps=3",
                "train.log_every_n_steps=1", f"hydra.run.dir={run_dir}", *extra)


# ------------------------------------------------------------------ the child
# tests/fault_child.py patches one fault into the `trainer` process (its docstring lists them).
def start(args: list[str], cwd: Path, **fault) -> CliProcess:
    return start_cli(args, cwd, fault=fault)


def finish(proc: CliProcess, timeout: float = 240) -> subprocess.CompletedProcess:
    return proc.finish(timeout)


def run_child(args: list[str], cwd: Path, **fault) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, fault=fault)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def position(run_dir: Path, name: str = "last.ckpt") -> dict:
    return checkpoint.load(run_dir / "checkpoints" / name)["position"]


def resume(run_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli([f"resume={run_dir}"], cwd=cwd)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def without_timing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("train_seconds", "epoch_seconds", "samples_per_second")}


def assert_same_run(a: Path, b: Path) -> None:
    """b ended exactly where the uninterrupted run a did: metrics, history, weights, optimizer."""
    ma, mb = metrics(a), metrics(b)
    assert mb["status"] == "completed", mb
    assert without_timing(mb["final"]) == without_timing(ma["final"])
    assert mb["best"] == ma["best"]
    assert [without_timing(r) for r in mb["history"]] == [without_timing(r) for r in ma["history"]]
    sa, sb = checkpoint.load(a / "checkpoints" / "last.ckpt"), checkpoint.load(b / "checkpoints" / "last.ckpt")
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    for i, state in sa["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, sb["optimizer"]["state"][i][name]), (i, name)
    assert sa["scheduler"] == sb["scheduler"] and sa["early_stopping"] == sb["early_stopping"]
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def reference(synthetic_root, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must match bit for bit."""
    base = tmp_path_factory.mktemp("reference")
    ok(run_cli(config(synthetic_root, base / "A"), cwd=base))
    return base / "A"


# ------------------------------------------------------------------ SIGKILL
def test_sigkill_anywhere_then_resume_is_bit_identical(synthetic_root, reference, tmp_path):
    b = tmp_path / "B"
    # 1. SIGKILL half-way through writing the mid-epoch-1 checkpoint of step 6:
    #    last.ckpt is still the one of step 3, whole.
    killed = run_child(config(synthetic_root, b), tmp_path, torn_write_at_step=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert position(b) == {"epoch": 1, "step": 3, "global_step": 3}
    assert len(list((b / "checkpoints").glob(".last.ckpt.*.tmp"))) == 1  # the torn one, never renamed
    # 2. Resume; SIGKILL again mid-epoch 2, one step after the checkpoint of step 12.
    killed = run_child([f"resume={b}"], tmp_path, kill_after_step=13)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert position(b) == {"epoch": 2, "step": 4, "global_step": 12}
    assert metrics(b)["status"] == "running"
    # 3. Resume to the end: same directory, same result as never stopping.
    ok(resume(b, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B"]  # no second run directory
    assert sorted(p.name for p in (b / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # temp file gone
    assert metrics(b)["resumed"] == 2
    assert_same_run(reference, b)
    # One TensorBoard run with every step exactly once, and the same values.
    loss = scalars(b, "loss/train")
    assert [step for step, _ in loss] == list(range(1, STEPS + 1))
    assert loss == scalars(reference, "loss/train")
    assert [step for step, _ in scalars(b, "acc/val")] == [8, 16]


# ------------------------------------------------------------------ SIGINT / SIGTERM
def signal_run(root: Path, run_dir: Path, cwd: Path, *signums: int, **fault) -> subprocess.CompletedProcess:
    """Start a run, wait until it is training in epoch 2 (or at `fault`'s
    point), send `signums` from outside. Each signal after the first is sent
    once the run has printed its notice for the one before, so the test does
    not depend on how fast a loaded machine schedules either process."""
    ready = cwd / "ready"
    proc = start(config(root, run_dir), cwd, ready=str(ready), **(fault or {"slow_from_step": 10}))
    deadline = time.monotonic() + 180
    while not ready.exists():
        assert proc.poll() is None, finish(proc).stderr
        assert time.monotonic() < deadline, "the run never got to the point where it is signalled"
        time.sleep(0.05)
    seen, notices = "", 0
    for i, signum in enumerate(signums):
        while notices < i:
            line = proc.readline()
            assert line, f"the run ended before its notice for signal {i}:\n{seen}"
            seen += line
            notices += "finishing this step" in line
        proc.send_signal(signum)
    return finish(proc)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_and_resume_finishes_identically(synthetic_root, reference, tmp_path, signum):
    run_dir = tmp_path / "run"
    stopped = signal_run(synthetic_root, run_dir, tmp_path, signum)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert "Traceback" not in stopped.stdout + stopped.stderr, stopped.stderr
    # A notice when the signal arrives (it says how to stop at once), then the outcome.
    notice, line = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert "finishing this step and saving a checkpoint" in notice, notice
    assert line.startswith("trainer: interrupted:") and f"resume={run_dir}" in line, line
    record = metrics(run_dir)
    assert record["status"] == "interrupted" and signal.Signals(signum).name in record["error"]
    at = position(run_dir)
    assert at["epoch"] == 2 and 10 <= at["global_step"] < STEPS  # the step in progress was finished and saved
    ok(resume(run_dir, tmp_path))
    assert_same_run(reference, run_dir)
    assert [step for step, _ in scalars(run_dir, "loss/train")] == list(range(1, STEPS + 1))


def test_second_ctrl_c_exits_at_once(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    # From step 10 on each step takes 60 s: a run that waited for the step to
    # finish would take longer than that.
    started = time.monotonic()
    stopped = signal_run(synthetic_root, run_dir, tmp_path, signal.SIGINT, signal.SIGINT,
                         slow_from_step=10, slow_seconds=60)
    assert time.monotonic() - started < 60
    assert stopped.returncode == 130
    assert "stopped at once by a second SIGINT" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert metrics(run_dir)["status"] == "interrupted"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_start_up_is_one_line(synthetic_root, tmp_path, sig):
    run_dir = tmp_path / "run"
    stopped = signal_run(synthetic_root, run_dir, tmp_path, sig, slow_prepare=True)
    assert stopped.returncode == 128 + sig
    assert one_line_error(stopped) == f"trainer: interrupted: stopped by {sig.name} before training started"
    assert not run_dir.exists()  # nothing was trained: a stopped start leaves no folder behind


# ------------------------------------------------------------------ NaN / inf
def test_nan_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    failed = run_child(config(synthetic_root, run_dir), tmp_path, nan_at_calls=[5])
    line = one_line_error(failed)
    assert line.startswith("trainer: diverged:") and "epoch 1, step 5" in line, line
    record = metrics(run_dir)
    assert record["status"] == "diverged" and "epoch 1, step 5" in record["error"]
    state = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert state["position"]["global_step"] == 3
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_nan_between_logging_points_names_the_window(synthetic_root, tmp_path):
    """The loss is read back only every log_every_n_steps: the error names the window it hides in."""
    run_dir = tmp_path / "run"
    failed = run_child(config(synthetic_root, run_dir, "train.log_every_n_steps=4", "checkpoint.every_n_steps=0"),
                       tmp_path, nan_at_calls=[6])
    assert "epoch 1, steps 5-8" in one_line_error(failed)


def test_nan_policy_skip_counts_skipped_batches(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run_child(config(synthetic_root, run_dir, "train.nan_policy=skip", "train.max_skipped_batches=2"),
                     tmp_path, nan_at_calls=[2, 11])
    ok(done)
    assert "skipped a batch with non-finite loss (1/2)" in done.stdout
    assert "skipped a batch with non-finite loss (2/2)" in done.stdout
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["skipped_batches"] == 2
    assert metrics(run_dir)["status"] == "completed"


def test_exploding_lr_with_skip_gives_up_after_max_skipped_batches(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    failed = run_cli(config(synthetic_root, run_dir, "optimizer=sgd", "lr=1e30", "train.nan_policy=skip",
                            "train.max_skipped_batches=2"), cwd=tmp_path)
    line = one_line_error(failed)
    assert "train.max_skipped_batches=2" in line and "epoch 1, step" in line, line
    assert metrics(run_dir)["status"] == "diverged"


# ------------------------------------------------------------------ unwritable output
def test_output_folder_that_cannot_be_created(synthetic_root, tmp_path):
    # A regular file where a folder should be: fails for root too (chmod does not).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    failed = run_cli(config(synthetic_root, blocker / "run"), cwd=tmp_path)
    line = one_line_error(failed)
    assert str(blocker) in line and "hydra.run.dir" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0o555 folder anyway")
def test_read_only_output_folder(synthetic_root, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        line = one_line_error(run_cli(config(synthetic_root, parent / "run"), cwd=tmp_path))
    finally:
        parent.chmod(0o755)
    assert str(parent) in line and "hydra.run.dir" in line, line


@pytest.mark.parametrize("full_after, first_failing_write, kept", [
    (4, "last.ckpt", 3),        # the mid-epoch checkpoint of step 6
    (7, "metrics.json", 6),     # the epoch-end record of step 8, before its checkpoint
], ids=["checkpoint", "metrics.json"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(synthetic_root, tmp_path, full_after,
                                                              first_failing_write, kept):
    run_dir = tmp_path / "run"
    failed = run_child(config(synthetic_root, run_dir), tmp_path, disk_full_after_step=full_after)
    line = one_line_error(failed)
    assert "No space left on device" in line and "internal error" not in line, line
    if first_failing_write == "last.ckpt":
        assert "last.ckpt" in line and "previous checkpoint is intact" in line, line
    assert position(run_dir) == {"epoch": 1, "step": kept, "global_step": kept}
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]  # no temp file left


# ------------------------------------------------------------------ bad checkpoints
class RunsCode:
    """Unpickling this creates `marker`: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _truncated(src: Path, dest: Path) -> None:
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) // 3])


def _foreign(src: Path, dest: Path) -> None:
    torch.save(torch.ones(3), dest)


def _empty(src: Path, dest: Path) -> None:
    dest.write_bytes(b"")


def _record(src: Path, dest: Path) -> None:
    dest.write_bytes((src.parent.parent / "metrics.json").read_bytes())  # resume= a file of the run, not its ckpt


def _bare_pickle(src: Path, dest: Path) -> None:
    dest.write_bytes(pickle.dumps({"model": {}}))


def _malicious(src: Path, dest: Path) -> None:
    state = checkpoint.load(src)
    state["model"]["payload"] = RunsCode(dest.parent / "pwned")
    torch.save(state, dest)


@pytest.mark.parametrize("make, expected", [
    (_truncated, "is corrupt or truncated"),
    (_empty, "is corrupt or truncated"),
    (_foreign, "is not a trainer checkpoint"),
    (_record, "is not a trainer checkpoint"),
    (_bare_pickle, "is not a trainer checkpoint"),
    (_malicious, "would run code on load"),
], ids=["truncated", "zero-byte", "foreign", "json", "bare-pickle", "malicious"])
def test_bad_checkpoint_is_refused_in_one_line_and_the_run_is_untouched(reference, tmp_path, make, expected):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    # As if stopped halfway: a resume must read last.ckpt (a completed run is left as it is, unread).
    record = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    make(reference / "checkpoints" / "last.ckpt", ckpt)
    before = snapshot(run_dir)
    line = one_line_error(resume(run_dir, tmp_path))
    assert expected in line and str(ckpt) in line, line
    assert not (run_dir / "checkpoints" / "pwned").exists()
    assert snapshot(run_dir) == before  # the run's record is still its own


# ------------------------------------------------------------------ one process per run folder
def test_a_second_process_in_a_running_run_folder_is_refused(synthetic_root, tmp_path):
    """While a run trains, a second run into its folder and a resume of it are
    each refused in one line; the first run's record stays its own."""
    run_dir = tmp_path / "run"
    ready = tmp_path / "ready"
    first = start(config(synthetic_root, run_dir), tmp_path, ready=str(ready), slow_from_step=5,
                  slow_seconds=3)  # 12 slow steps: 36 s for the two refused commands, on a loaded machine too
    deadline = time.monotonic() + 180
    while not ready.exists():
        assert first.poll() is None and time.monotonic() < deadline, finish(first).stderr
        time.sleep(0.05)
    second = run_cli(config(synthetic_root, run_dir, "lr=0.5"), cwd=tmp_path)
    resumed = run_cli([f"resume={run_dir}"], cwd=tmp_path)
    first.send_signal(signal.SIGINT)
    done = finish(first)
    for proc in (second, resumed):
        line = one_line_error(proc)
        assert f"{run_dir} is in use by another trainer process" in line, line
    assert done.returncode == 130, done.stderr
    record = metrics(run_dir)
    assert record["status"] == "interrupted" and "lr=0.5" not in record["overrides"]
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


# ------------------------------------------------------------------ exact resume, classic pipeline
LOADER = ("pipeline=loader", "loader.num_workers=2", "transform.hflip=0")


def test_loader_pipeline_with_workers_resumes_bit_identical(synthetic_root, tmp_path):
    """pipeline=loader with 2 workers, shuffling, per-sample augmentation and
    dropout: SIGKILL mid-epoch 2, resume, and end exactly where an
    uninterrupted run ends."""
    straight, killed = tmp_path / "A", tmp_path / "B"
    ok(run_cli(config(synthetic_root, straight, *LOADER), cwd=tmp_path))
    dead = run_child(config(synthetic_root, killed, *LOADER), tmp_path, kill_after_step=13)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    assert position(killed)["global_step"] == 12
    ok(resume(killed, tmp_path))
    assert_same_run(straight, killed)


# ------------------------------------------------------------------ a real full disk
@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on a tmpfs of that size (root only), unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _full_disk_line(proc: subprocess.CompletedProcess) -> str:
    line = one_line_error(proc)
    assert "No space left on device" in line and "internal error" not in line, line
    assert "Traceback" not in proc.stdout + proc.stderr
    return line


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_says_disk_full_and_keeps_what_was_there(synthetic_root, tmp_path, small_disk):
    base = tiny(synthetic_root, "epochs=30", "tracking.images_every_n_epochs=1", "tracking.histograms_every_n_epochs=1")
    # A checkpoint larger than the disk: the first save fails.
    disk = small_disk("1m")
    line = _full_disk_line(run_cli([*base, "model.hidden=[512]", f"hydra.run.dir={disk / 'run'}"], tmp_path))
    assert "could not write checkpoint" in line and "no earlier checkpoint was saved" in line, line
    json.loads((disk / "run" / "metrics.json").read_text())  # the record is whole
    # TensorBoard's events fill the disk after a few epochs: the checkpoints written before stay whole.
    disk = small_disk("400k")
    _full_disk_line(run_cli([*base, "model.hidden=[16]", f"hydra.run.dir={disk / 'run'}"], tmp_path))
    assert checkpoint.load(disk / "run" / "checkpoints" / "last.ckpt")["position"]["epoch"] >= 2
    json.loads((disk / "run" / "metrics.json").read_text())
    # A dataset copied into a data.root that cannot hold it.
    disk = small_disk("300k")
    line = _full_disk_line(run_cli([*tiny(disk / "data"), f"data.search_paths=[{synthetic_root}]",
                                    f"hydra.run.dir={tmp_path / 'data_run'}"], tmp_path))
    assert "could not copy" in line and "data.root" in line, line
    assert not [p for p in (disk / "data").rglob("*") if p.is_file()]  # nothing partial left
