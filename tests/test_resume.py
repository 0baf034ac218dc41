"""Resume with changes, decided before anything is written: the real CLI on
synthetic data. A refused resume leaves every file of the run as it was; a
safe change applies and is recorded; a finished run is never damaged."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from helpers import metrics, one_line_error, run_all, run_cli, snapshot, tiny
from trainer.core import checkpoint


def base(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return tiny(root, "model.hidden=[32]", "data.subset=128", f"hydra.run.dir={run_dir}", *extra)


@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory) -> Path:
    """A completed 1-epoch run (4 steps an epoch), shared read-only: tests copy it."""
    cwd = tmp_path_factory.mktemp("finished")
    run_cli(base(synthetic_root, cwd / "A", "checkpoint.every_n_steps=2"), cwd, check=True)
    return cwd / "A"


def copy_of(run_dir: Path, tmp_path: Path, name: str = "A") -> Path:
    target = tmp_path / name
    shutil.copytree(run_dir, target)
    return target


REFUSED = {  # extra overrides on `resume=` -> the key its one line must name
    "model.hidden=[64]": "model.hidden=[64]",
    "optimizer=adam": "optimizer=torch.optim.Adam",
    "data=mnist": "data.name=mnist",
    "pipeline=loader": "pipeline=loader",
    "optimizer.momentum=0.9": "optimizer.momentum=0.9",
    "cv.folds=3": "cv.folds=3",  # a cross-validation would replace the run's record with its own
}


def test_a_refused_resume_changes_nothing_and_the_plain_resume_still_works(finished, tmp_path):
    # One copy of the run per command: two processes never share a run folder (it is locked).
    copies = [copy_of(finished, tmp_path, f"A{i}") for i in range(len(REFUSED))]
    before = snapshot(copies[0])
    procs = run_all([[f"resume={run_dir}", extra] for run_dir, extra in zip(copies, REFUSED)], tmp_path)
    for run_dir, (extra, named), proc in zip(copies, REFUSED.items(), procs):
        line = one_line_error(proc)
        assert named in line and "resume" in line, (extra, line)
        assert snapshot(run_dir) == before  # byte for byte, mtimes too
    run_dir = copies[0]
    assert metrics(run_dir)["status"] == "completed"
    done = run_cli([f"resume={run_dir}", "epochs=2"], tmp_path, check=True)
    assert "Resuming" in done.stdout and [h["epoch"] for h in metrics(run_dir)["history"]] == [1, 2]


def test_a_completed_run_with_nothing_left_to_train_stays_as_it_is(finished, tmp_path):
    plain, changed = copy_of(finished, tmp_path, "plain"), copy_of(finished, tmp_path, "changed")
    before = snapshot(plain)
    bad = copy_of(finished, tmp_path, "bad")
    kept, refused, invalid = run_all([[f"resume={plain}"], [f"resume={changed}", "lr=0.5"],
                                      [f"resume={bad}", "epochs=-3"]], tmp_path)
    assert kept.returncode == 0 and "Already completed" in kept.stdout
    assert "epochs=-3 must be" in one_line_error(invalid)  # a bad value, not "already completed"
    # A new lr with no epoch left to train at it would be a record that lies.
    line = one_line_error(refused)
    assert "lr 0.001 -> 0.5 would change nothing" in line and "epochs=2" in line, line
    assert snapshot(plain) == before and snapshot(changed) == before and snapshot(bad) == before


def test_resume_auto_without_the_runs_overrides_points_to_the_command_that_works(finished, tmp_path):
    """`hydra.run.dir=<the printed folder> resume=auto` alone takes this
    command's settings (defaults the user never typed), not the run's: its
    one line says so and names resume=<folder>, which continues the run."""
    run_dir = copy_of(finished, tmp_path)
    before = snapshot(run_dir)
    line = one_line_error(run_cli([f"hydra.run.dir={run_dir}", "resume=auto"], tmp_path))
    assert "resume without" not in line and f"resume={run_dir} continues it with its own" in line, line
    assert snapshot(run_dir) == before
    done = run_cli([f"resume={run_dir}", "epochs=2"], tmp_path, check=True)  # the command the line names
    assert "Resuming" in done.stdout and metrics(run_dir)["status"] == "completed"


def test_resume_into_another_folder_is_refused(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    line = one_line_error(run_cli([f"resume={run_dir}", "epochs=2", f"hydra.run.dir={tmp_path / 'else'}"], tmp_path))
    assert f"continues the run in its own folder ({run_dir})" in line, line
    assert not (tmp_path / "else").exists()


def test_resuming_an_earlier_checkpoint_never_overwrites_recorded_epochs(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    run_cli([f"resume={run_dir}", "epochs=2"], tmp_path, check=True)  # best.ckpt: epoch 1 or 2
    shutil.copy(finished / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "epoch1.ckpt")
    before = snapshot(run_dir)
    line = one_line_error(run_cli([f"resume={run_dir / 'checkpoints' / 'epoch1.ckpt'}", "epochs=3"], tmp_path))
    assert "is at epoch 1" in line and "would overwrite epoch 2;" in line, line
    assert snapshot(run_dir) == before


def test_a_new_lr_on_resume_reaches_the_optimizer_and_the_record(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    run_cli([f"resume={run_dir}", "epochs=2", "lr=0.01"], tmp_path, check=True)
    record = metrics(run_dir)
    assert [(h["epoch"], h["lr"]) for h in record["history"]] == [(1, 0.001), (2, 0.01)]
    assert record["hparams"]["lr"] == 0.01 and record["resumed"] == 1
    state = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01 and state["config"]["lr"] == 0.01
    assert "lr=0.01" in (run_dir / ".hydra" / "overrides.yaml").read_text()  # a plain resume keeps it


def test_changes_that_only_fit_an_epoch_boundary(finished, tmp_path, synthetic_root):
    # last.ckpt of the finished run is at an epoch end: a new batch size applies.
    run_dir = copy_of(finished, tmp_path)
    run_cli([f"resume={run_dir}", "epochs=2", "batch_size=64"], tmp_path, check=True)
    assert metrics(run_dir)["history"][-1]["step"] == 4 + 2  # 128 samples: 4 steps of 32, then 2 of 64
    # A mid-epoch checkpoint (every 2 steps; killed at step 3): the same change is refused.
    mid = tmp_path / "mid"
    args = base(synthetic_root, mid, "checkpoint.every_n_steps=2", "epochs=2", "train.log_every_n_steps=1")
    killed = _run_fault(args, tmp_path, kill_after_step=3)
    assert killed.returncode == -signal.SIGKILL
    before = snapshot(mid)
    line = one_line_error(run_cli([f"resume={mid}", "batch_size=64"], tmp_path))
    assert "batch_size=64" in line and "middle of an epoch" in line and "epoch 1, step 2" in line, line
    assert snapshot(mid) == before


def test_run_length_of_a_whole_run_schedule_cannot_change(synthetic_root, tmp_path):
    run_dir = tmp_path / "cos"
    run_cli(base(synthetic_root, run_dir, "scheduler=cosine"), tmp_path, check=True)
    before = snapshot(run_dir)
    line = one_line_error(run_cli([f"resume={run_dir}", "epochs=3"], tmp_path))
    assert "epochs=3" in line and "scheduler=cosine" in line, line
    assert snapshot(run_dir) == before


def test_a_new_schedule_is_refused_as_itself(finished, tmp_path):
    # The run has no schedule: its length may change, and the schedule is what is refused.
    run_dir = copy_of(finished, tmp_path)
    line = one_line_error(run_cli([f"resume={run_dir}", "epochs=3", "scheduler=cosine"], tmp_path))
    assert "scheduler.name=cosine (the run has none)" in line and "laid out" not in line, line


def test_starting_again_in_a_finished_run_folder_is_refused(finished, tmp_path, synthetic_root):
    run_dir = copy_of(finished, tmp_path)
    before = snapshot(run_dir)
    line = one_line_error(run_cli(base(synthetic_root, run_dir), tmp_path))
    assert "already holds a run (completed)" in line and f"resume={run_dir}" in line, line
    assert snapshot(run_dir) == before
    # A run that stopped before its first checkpoint: no advice to resume what cannot be resumed.
    failed = tmp_path / "failed"
    _run_fault(base(synthetic_root, failed, "train.log_every_n_steps=1"), tmp_path, nan_at_calls=[2])
    line = one_line_error(run_cli(base(synthetic_root, failed), tmp_path))
    assert "already holds a run (diverged)" in line and "no checkpoint to continue from" in line, line
    assert "resume=" not in line


def test_the_record_holds_every_epoch_while_a_resumed_run_trains(finished, tmp_path):
    """Killed during epoch 3 of a resumed run: metrics.json still lists epochs 1 and 2."""
    run_dir = copy_of(finished, tmp_path)
    killed = _run_fault([f"resume={run_dir}", "epochs=3", "train.log_every_n_steps=1"], tmp_path,
                        kill_after_step=10)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    record = metrics(run_dir)
    assert record["status"] == "running" and [h["epoch"] for h in record["history"]] == [1, 2]


def test_a_run_that_diverges_before_any_checkpoint_says_so(synthetic_root, tmp_path):
    run_dir = tmp_path / "nan"
    failed = _run_fault(base(synthetic_root, run_dir, "train.log_every_n_steps=1"), tmp_path, nan_at_calls=[2])
    line = one_line_error(failed)
    assert "epoch 1, step 2" in line and "no checkpoint was saved before it" in line, line
    assert "last good" not in line
    assert metrics(run_dir)["status"] == "diverged"


def _run_fault(args: list[str], cwd: Path, **fault):
    return run_cli(args, cwd, fault=fault)


def test_a_run_written_before_the_modules_moved_resumes(finished, tmp_path):
    """A run folder from before the package layout (its checkpoints' configs
    and .hydra/config.yaml name trainer.models.MLP, trainer.losses...,
    trainer.pipeline...) is the same run: its saved config is upgraded, not
    taken for another model, loss or transform."""
    run_dir = copy_of(finished, tmp_path)
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        state = checkpoint.load(ckpt)
        for group in ("model", "loss", "transform"):
            state["config"][group]["_target_"] = state["config"][group]["_target_"].replace("trainer.core.", "trainer.")
        checkpoint.save({k: v for k, v in state.items() if k != "format"}, ckpt)
    recorded = run_dir / ".hydra" / "config.yaml"
    recorded.write_text(recorded.read_text().replace("trainer.core.", "trainer."))
    assert "trainer.models.MLP" in recorded.read_text()
    done = run_cli([f"resume={run_dir}", "epochs=2"], tmp_path, check=True)
    assert "Resuming" in done.stdout and [h["epoch"] for h in metrics(run_dir)["history"]] == [1, 2]
