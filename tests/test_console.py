"""What a person sees: the help, the lines of parallel jobs, and no
folder left behind by a command that was refused."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import metrics, one_line_error, run_cli, run_cli_into_head, tiny
from trainer.core import errors
from test_sweep_summary import make_job


def test_help_lists_the_groups_a_user_can_choose_and_no_schema(tmp_path):
    proc = run_cli(["--help"], tmp_path, check=True)
    groups = proc.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    listed = dict(re.findall(r"^(\S+): (.+)$", groups, flags=re.M))
    assert set(listed) == {"data", "experiment", "hparams_search", "loss", "model", "optimizer", "scheduler",
                           "transform"}, groups
    assert listed["model"] == "conv, mlp, mymodel, torchvision"
    assert "schema" not in groups and "$" not in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="needs hydra-submitit-launcher (the sweep extra)")
@pytest.mark.skipif(shutil.which("srun") is not None, reason="a SLURM cluster: srun is here")
def test_a_sweep_its_launcher_refuses_leaves_no_folder(synthetic_root, tmp_path):
    proc = run_cli(["-m", "hydra/launcher=slurm", *tiny(synthetic_root, "optimizer=sgd,adam")], tmp_path)
    assert proc.returncode == 1 and "srun" in one_line_error(proc)
    assert not (tmp_path / "outputs").exists(), os.listdir(tmp_path / "outputs")


def test_parallel_jobs_label_every_line(synthetic_root, tmp_path):
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    *tiny(synthetic_root, "lr=-1,1e-2", "hydra.sweep.dir=outputs/sweep")], tmp_path)
    assert proc.returncode == 1  # the job with lr=-1 failed, and the sweep says so
    jobs = ["0_lr=-1", "1_lr=0.01"]
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("Jobs: 2 at a time")  # the sweep's own line about the machine: no job's
    job_lines = lines[2:lines.index(next(line for line in lines if line.startswith("Sweep: 2 jobs (")))]
    assert job_lines and all(line.startswith(tuple(f"[{job}] " for job in jobs)) for line in job_lines), proc.stdout
    assert "[0_lr=-1] trainer: error: lr=-1 must be positive" in proc.stderr, proc.stderr
    # The job's own trainer.log is its alone: no label there.
    assert "[1_lr=0.01]" not in (tmp_path / "outputs" / "sweep" / "1_lr=0.01" / "trainer.log").read_text()


# ------------------------------------------------- a reader that goes away
@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_closed_pipe_on_stdout_ends_no_training(synthetic_root, tmp_path, sweep):
    """`trainer ... | head -3`: the console goes quiet, the run (every job of
    a sweep) trains to its end and records it, trainer.log has every line,
    and Python says nothing of a broken pipe at exit."""
    where = ["lr=1e-3,1e-2", "hydra.sweep.dir=outputs/sweep"] if sweep else ["hydra.run.dir=outputs/run"]
    args = [*(["-m"] if sweep else []), *tiny(synthetic_root, "epochs=3"), *where]
    proc, taken = run_cli_into_head(args, tmp_path, lines=3)
    assert proc.returncode == 0, proc.stderr
    assert taken[0].startswith("Sweep: 2 jobs" if sweep else "Run: "), taken
    assert "Exception ignored" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    run_dirs = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))
    assert len(run_dirs) == (2 if sweep else 1)
    for run_dir in run_dirs:
        assert metrics(run_dir)["status"] == "completed", run_dir
        assert "epoch   3" in (run_dir / "trainer.log").read_text()
    if sweep:
        assert (tmp_path / "outputs" / "sweep" / "summary.json").is_file()
    else:
        assert "Outputs in " in (run_dirs[0] / "trainer.log").read_text().splitlines()[-1]


@pytest.mark.parametrize("command", ["table", "study", "--help", "--cfg job", "--info"])
def test_a_short_command_on_a_closed_pipe_exits_0_quietly(tmp_path, command):
    """`trainer-summary ... | head -1` after head has gone, and Hydra's own
    printing (`trainer --help | head -1`): nothing on stderr, exit 0, as `ls | head` does."""
    make_job(tmp_path / "sweep", "0_lr=0.1", ["lr=0.1"])
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    if command == "study":
        import optuna

        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "sweep" / "optuna.journal")))
        optuna.create_study(storage=storage, study_name="trainer").add_trial(
            optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=1.0))
    summary = [sys.executable, "-c", "import sys; from trainer.sweeps.summary import main; sys.exit(main())"]
    args = {"table": [*summary, str(tmp_path / "sweep")],
            "study": [*summary, "--study", str(tmp_path / "sweep"), "trainer"]}.get(
        command, [sys.executable, "-m", "trainer", *command.split()])
    read, write = os.pipe()
    os.close(read)  # the reader went away before the first line
    with os.fdopen(write, "wb") as stdout:
        proc = subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# ------------------------------------------------- a header only for what runs
@pytest.mark.parametrize("refused", [
    ["lr=abc,1e-3"],                                                   # a job's value, found by Hydra's sweeper
    ["hydra/launcher=joblib", "lr=1e-3,abc"],                         # ... with trainer's own launcher
    ["hparams_search=optuna", "hydra.sweeper.pruner=sometimes"],      # the search's own settings
], ids=["basic", "joblib", "optuna"])
def test_a_refused_sweep_says_its_error_line_and_no_header(synthetic_root, tmp_path, refused):
    proc = run_cli(["-m", *tiny(synthetic_root, *refused)], tmp_path)
    assert proc.returncode == 1 and one_line_error(proc).startswith("trainer: error: ")
    assert proc.stdout == "", proc.stdout  # no `Sweep: ... into <folder>` for a folder that is never made
    assert not (tmp_path / "outputs").exists()


def test_a_broken_pipe_that_is_not_the_console_s_is_a_failure(capsys):
    """Only a reader of the console going away ends a command quietly: a
    BrokenPipeError from another pipe it writes is a failure, in one line."""
    def writes_to_a_pipe_nobody_reads() -> None:
        read, write = os.pipe()
        os.close(read)
        os.write(write, b"x")

    with pytest.raises(SystemExit) as ended:
        errors.report("trainer", writes_to_a_pipe_nobody_reads)
    assert ended.value.code == 1
    assert "internal error: BrokenPipeError" in capsys.readouterr().err
