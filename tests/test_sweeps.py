"""Multiruns end to end, as a user types them: one folder and one TensorBoard
run per job, failed jobs recorded while the others run, the summary (and its
rebuild by `trainer-summary`), parallel jobs with joblib, an Optuna search.

Subprocesses on synthetic data with a tiny model; each costs a torch import.
"""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import call_main, hparams_plugin_data, metrics, run_cli, tiny
from trainer.sweeps import summary as summary_command
from trainer.sweeps.plan import job_number

SMALL = ("data.subset=128", "model.hidden=[32]")


def sweep_args(root: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return ["-m", *tiny(root, *SMALL), f"hydra.sweep.dir={sweep_dir}", *overrides]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and job_number(p.name) is not None),
                  key=lambda p: job_number(p.name))


def summary(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "summary.json").read_text())


def trainer_summary(sweep_dir: Path, capsys) -> subprocess.CompletedProcess:
    """`trainer-summary <dir>` (the console script's main, in-process)."""
    code, out, err = call_main(summary_command.main, capsys, sweep_dir)
    return subprocess.CompletedProcess(["trainer-summary", str(sweep_dir)], code, out, err)


def hparams_session(run_dir: Path) -> dict:
    """The hparams plugin data of the run's event files, by kind."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    ea.Reload()
    return hparams_plugin_data(ea)


# ------------------------------------------------------- a sweep with a bad job
@pytest.fixture(scope="module")
def failed_sweep(synthetic_root, tmp_path_factory):
    """`trainer -m lr=0.01,-1,0.05,1e12` into hydra.sweep.dir=<tmp>/chosen: job 1
    fails validation, job 3 diverges (its loss becomes NaN) part-way."""
    cwd = tmp_path_factory.mktemp("sweep")
    sweep_dir = cwd / "chosen"
    proc = run_cli(sweep_args(synthetic_root, sweep_dir, "train.log_every_n_steps=1", "lr=0.01,-1,0.05,1e12"), cwd)
    return proc, sweep_dir


def test_a_failed_job_fails_the_sweep_and_is_named(failed_sweep):
    proc, _ = failed_sweep
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = next(l for l in proc.stderr.splitlines() if "failed job" in l)
    assert "failed jobs: 1_lr=-1 failed: lr=-1 must be positive" in line, line
    assert "; 3_lr=1e+12 diverged: loss became" in line, line
    assert "lr=0.01" not in line and "lr=0.05" not in line
    assert "Traceback" not in proc.stderr


def test_each_job_of_a_sequential_sweep_times_its_own_start_up(failed_sweep):
    """The basic launcher runs the jobs one after another in one process: a
    later job's start-up begins when it does, not when the process did."""
    _, sweep_dir = failed_sweep
    first, later = (metrics(job)["timing"] for job in job_dirs(sweep_dir) if metrics(job)["status"] == "completed")
    assert later["started_at"] >= first["ended_at"], (first, later)
    assert later["startup_seconds"] < first["startup_seconds"] + first["fit_seconds"], (first, later)


def test_every_job_has_its_own_folder_and_tensorboard_run(failed_sweep):
    from tensorboard.plugins.hparams import api_pb2

    _, sweep_dir = failed_sweep
    assert not (sweep_dir.parent / "outputs").exists()  # hydra.sweep.dir was respected
    jobs = job_dirs(sweep_dir)
    assert [p.name for p in jobs] == ["0_lr=0.01", "1_lr=-1", "2_lr=0.05", "3_lr=1e+12"]  # what varies
    for job in jobs:
        assert (job / ".hydra" / "overrides.yaml").is_file()
        assert len(list(job.glob("events.out.tfevents.*.hparams"))) == 1, job  # its HParams session
    assert [metrics(j)["status"] for j in jobs] == ["completed", "failed", "completed", "diverged"]
    error = metrics(jobs[1])["error"]
    assert "lr" in error and "\n" not in error
    # The failed job is in the HParams table too, marked failed; the value it was refused for is
    # left out, so lr=-1 does not stretch the lr axis of the parallel-coordinates view.
    session = hparams_session(jobs[1])
    assert "lr" not in session["session_start_info"].hparams
    assert session["session_start_info"].hparams["status"].string_value == "failed"
    assert session["session_end_info"].status == api_pb2.STATUS_FAILURE
    assert hparams_session(jobs[0])["session_end_info"].status == api_pb2.STATUS_SUCCESS
    # The diverged job's run keeps the steps it logged, and is marked failed.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(jobs[3]), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("loss/train")][:1] == [1]
    assert hparams_session(jobs[3])["session_start_info"].hparams["status"].string_value == "diverged"
    assert hparams_session(jobs[3])["session_end_info"].status == api_pb2.STATUS_FAILURE


def test_summary_files_rank_the_jobs(failed_sweep):
    _, sweep_dir = failed_sweep
    doc = summary(sweep_dir)
    assert doc["jobs"] == 4 and doc["counts"]["completed"] == 2
    assert doc["counts"]["failed"] == 1 and doc["counts"]["diverged"] == 1
    rows = doc["rows"]
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "diverged"]  # best first
    assert rows[0]["best_value"] >= rows[1]["best_value"]
    for row in rows[:2]:
        assert 0 <= row["test/acc"] <= 1 and row["epochs"] == 1 and row["seconds"] > 0
    assert rows[2]["job"] == "1_lr=-1" and "lr=-1" in rows[2]["overrides"] and rows[2]["test/acc"] is None
    with open(sweep_dir / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["job"] for r in table] == [r["job"] for r in rows]
    markdown = (sweep_dir / "summary.md").read_text()
    assert "2 completed, 1 failed, 1 diverged" in markdown and markdown.count("\n| ") == 6  # header, rule, 4 jobs


def test_the_table_is_printed(failed_sweep):
    proc, _ = failed_sweep
    assert "Sweep: 4 jobs (2 completed, 1 failed, 1 diverged)" in proc.stdout
    assert "summary.csv, summary.md, summary.json" in proc.stdout


def test_trainer_summary_rebuilds_the_same_summary(failed_sweep, tmp_path, capsys):
    _, sweep_dir = failed_sweep
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy)
    expected = summary(copy)
    for name in ("summary.csv", "summary.md", "summary.json"):
        (copy / name).unlink()
    proc = trainer_summary(copy, capsys)
    assert proc.returncode == 1 and "failed jobs: 1_lr=-1" in proc.stderr, proc.stderr
    rebuilt = summary(copy)
    assert rebuilt.pop("sweep_dir") == str(copy.resolve())
    expected.pop("sweep_dir")
    for doc in (expected, rebuilt):
        for row in doc["rows"]:
            row.pop("path")
    assert rebuilt == expected


def test_trainer_summary_of_a_sweep_stopped_halfway(failed_sweep, tmp_path, capsys):
    """Job 2 killed after its first epoch, one more planned job never started:
    both are rows, and neither is a failure (resume=auto continues them)."""
    _, sweep_dir = failed_sweep
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy)
    record = metrics(copy / "2_lr=0.05")
    record.update(status="running", final={}, best={})
    (copy / "2_lr=0.05" / "metrics.json").write_text(json.dumps(record))
    plan = json.loads((copy / "sweep.json").read_text())
    plan["jobs"].append({"num": 4, "overrides": ["lr=0.2"]})
    (copy / "sweep.json").write_text(json.dumps(plan))
    proc = trainer_summary(copy, capsys)
    assert proc.returncode == 1, proc.stderr  # jobs 1 and 3 did fail
    rows = {r["job"]: r for r in summary(copy)["rows"]}
    assert {j: r["status"] for j, r in rows.items()} == {"0_lr=0.01": "completed", "1_lr=-1": "failed",
                                                         "2_lr=0.05": "incomplete", "3_lr=1e+12": "diverged",
                                                         "4_lr=0.2": "missing"}
    assert rows["2_lr=0.05"]["test/acc"] is not None  # its last epoch's numbers stand in for the final ones
    assert rows["4_lr=0.2"]["overrides"] == "lr=0.2"  # named, as its folder will be, from the plan
    assert "2_lr" not in proc.stderr and "4" not in proc.stderr.split("failed jobs:")[1].split(";")[0][:3]


# ------------------------------------------------------------------ launchers
def test_joblib_runs_jobs_in_parallel_processes(synthetic_root, tmp_path):
    """Into the default folder, named by what the sweep varies: each job, a
    process of its own, finds the folder the sweep named."""
    proc = run_cli(["-m", *tiny(synthetic_root, *SMALL), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "threads=1", "lr=0.01,0.05"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert re.fullmatch(r"lr-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", sweep_dir.name), sweep_dir.name
    jobs = job_dirs(sweep_dir)
    assert [p.name for p in jobs] == ["0_lr=0.01", "1_lr=0.05"]
    assert [metrics(j)["status"] for j in jobs] == ["completed", "completed"]
    assert all(len(list(j.glob("events.out.tfevents.*"))) == 2 for j in jobs)  # its events, its HParams session
    assert sorted(r["overrides"].split()[-1] for r in summary(sweep_dir)["rows"]) == ["lr=0.01", "lr=0.05"]
    (a0, a1), (b0, b1) = ((metrics(j)["timing"]["started_at"], metrics(j)["timing"]["ended_at"]) for j in jobs)
    assert a0 < b1 and b0 < a1  # side by side: each process started before the other ended
    assert len(re.findall(r"; cpu device \(.*\b1 thread\)", proc.stdout)) == 2  # threads=1 reached the workers


def test_optuna_search_goes_on_after_a_failed_trial(synthetic_root, tmp_path):
    """hparams_search=optuna with lr from {0.01, -1}: a trial with lr=-1 fails,
    the search still runs all 3 trials and reports the best of the others."""
    sweep_dir = tmp_path / "sweep"
    # Seed 1234 draws lr=-1 for some trials and 0.01 for others (optuna 5.1).
    proc = run_cli(sweep_args(synthetic_root, sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                              "hydra.sweeper.sampler.seed=1234", "lr=choice(0.01,-1)"), tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 3
    status = {j.name: metrics(j)["status"] for j in jobs}
    lr = {j.name: metrics(j)["hparams"]["lr"] for j in jobs}
    assert {status[j] for j in status} == {"completed", "failed"}
    assert all((status[j] == "failed") == (lr[j] == -1) for j in status), (status, lr)
    # Sampled values are the jobs' overrides (weight decay from the search space).
    assert all("optimizer.weight_decay=" in r["overrides"] for r in summary(sweep_dir)["rows"])
    import yaml

    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_params"]["lr"] == 0.01 and math.isfinite(result["best_value"])
    assert "failed job" in proc.stderr


# ------------------------------------------------------------------ the console
def test_a_sweeps_console_is_a_few_lines_per_job(failed_sweep):
    """Piped, a sweep prints no config dump, no escape codes, no progress
    chatter: a start line, a few lines per job, the table and the summary."""
    proc, sweep_dir = failed_sweep
    out = proc.stdout.splitlines()
    assert "\x1b[" not in proc.stdout + proc.stderr  # not a terminal: no colour codes
    assert "_target_" not in proc.stdout and "Launching" not in proc.stdout
    assert out[0].startswith("Sweep: 4 jobs into") and out[0].endswith("varies: lr")
    table_start = next(i for i, line in enumerate(out) if line.startswith("Sweep: 4 jobs ("))
    per_job = out[1:table_start]
    assert [line.split(" ── ")[0] for line in per_job if line.startswith("── ")] == [
        "── 0_lr=0.01", "── 1_lr=-1", "── 2_lr=0.05", "── 3_lr=1e+12"]
    assert len(per_job) <= 4 * 4  # header, model and device, an epoch, the result
    assert not any(line.startswith("epoch 1/1  loss:") for line in out)  # the progress lines are in trainer.log
    assert "loss:" in (sweep_dir / "0_lr=0.01" / "trainer.log").read_text()


def test_numbers_read_as_numbers(failed_sweep):
    """Percentages for accuracy, 4 significant digits for losses, whole numbers
    without '.0', plurals that agree, no float noise anywhere on the console."""
    proc, _ = failed_sweep
    text = proc.stdout + proc.stderr
    assert not re.search(r"\d\.\d{7,}", text), re.search(r"\d\.\d{7,}", text)
    assert not re.search(r"\b1 (jobs|epochs|threads)\b", text)
    result = next(line for line in proc.stdout.splitlines() if line.startswith("Completed:"))
    assert re.fullmatch(r"Completed: test/acc \d+\.\d\d%, test/loss \d\.\d{3}, best epoch 1, \d+\.\ds of training",
                        result), result
