"""Sweeps in the real world: a job killed by the OOM killer, a sweep stopped
by SIGTERM, a sweep continued with resume=auto, a sweep folder reused by
mistake. The real CLI in subprocesses, signalled from outside."""
from __future__ import annotations

import io
import json
import os
import pytest
import signal
import subprocess
import time
from pathlib import Path

from rich.console import Console

from helpers import CliProcess, metrics, one_line_error, run_cli, snapshot, start_cli, tiny
from trainer.sweeps.plan import job_number, planned_job_name
from trainer.sweeps.rows import collect
from trainer.sweeps.summary import summarize

# One step an epoch (32 samples, batch 32), each ending in a checkpoint and a record: about 35 ms
# an epoch on 2 cores, so `epochs` sets how long a job runs.
SMALL = ("data.subset=32", "data.test_subset=32", "model.hidden=[16]", "checkpoint.every_n_steps=1")


def sweep_cmd(root: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return ["-m", *tiny(root, *SMALL), f"hydra.sweep.dir={sweep_dir}", *overrides]


STARTED: list[CliProcess] = []


@pytest.fixture(autouse=True)
def _no_sweep_left_behind():
    """A failed test must not leave its sweep running: SIGKILL it (its jobs
    then get SIGTERM from the kernel, as a job whose sweep died does)."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()


def start(args: list[str], cwd: Path) -> CliProcess:
    """The sweep in the background."""
    proc = start_cli(args, cwd)
    STARTED.append(proc)
    return proc


def finish(proc: CliProcess, timeout: float = 240) -> subprocess.CompletedProcess:
    return proc.finish(timeout)


def jobs(sweep_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and job_number(p.name) is not None}


def wait_until(condition, what: str, proc: CliProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep ended before {what}: {finish(proc).stderr[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def training(job: Path, epochs: int = 1) -> bool:
    """The job has recorded at least `epochs` epochs and is still running."""
    try:
        record = json.loads((job / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("status") == "running" and len(record.get("history") or []) >= epochs


def job_pids(text: str) -> list[int]:
    """Processes running one sweep job whose command line holds `text`, or
    that hold open a folder or file whose path holds it (a job holds its
    folder's lock: found whatever its command line shows; a warm template
    shows the sweep's command line, without `-m trainer -m`'s exclusion)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if (" -m trainer" in cmdline and text in cmdline) or any(text in path for path in _open_paths(entry)):
            found.append(int(entry))
    return found


def _open_paths(pid: str) -> list[str]:
    try:
        return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []


def test_a_killed_job_fails_alone_and_the_sweep_ends_with_its_summary(synthetic_root, tmp_path):
    """kill -9 one job of a joblib sweep (as the OOM killer would): it is
    recorded as killed, the three others complete, summary, exit 1."""
    sweep_dir = tmp_path / "sweep"
    proc = start(sweep_cmd(synthetic_root, sweep_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           "epochs=100000,2,3,4"), tmp_path)
    wait_until(lambda: training(sweep_dir / "0_epochs=100000"), "job 0 trained an epoch", proc)
    (victim,) = [pid for pid in job_pids("0_epochs=100000") if pid != proc.pid]
    # `ps` shows the job as its own command line, not the sweep's (epochs=100000,2,3,4).
    shown = Path(f"/proc/{victim}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert " -m trainer " in shown and " epochs=100000 " in shown, shown
    os.kill(victim, signal.SIGKILL)
    done = finish(proc)
    assert done.returncode == 1, done.stderr[-3000:]
    statuses = {name: metrics(job)["status"] for name, job in jobs(sweep_dir).items()}
    assert statuses == {"0_epochs=100000": "failed", "1_epochs=2": "completed", "2_epochs=3": "completed",
                        "3_epochs=4": "completed"}
    error = metrics(sweep_dir / "0_epochs=100000")["error"]
    assert error.startswith("killed by SIGKILL") and "resume=auto" in error
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["counts"]["completed"] == 3 and summary["counts"]["failed"] == 1
    line = [l for l in done.stderr.splitlines() if "failed job" in l]
    assert line and "0_epochs=100000 failed: killed by SIGKILL" in line[0]
    assert "is not a known choice" not in done.stderr and "Traceback" not in done.stderr


def test_sigterm_stops_every_job_then_resume_auto_finishes_the_sweep(synthetic_root, tmp_path):
    """SIGTERM to a joblib sweep: every running job saves and records
    interrupted, none is left behind, a planned job never starts, summary,
    exit 143. The same command with resume=auto then keeps the finished job
    as it is, continues the interrupted ones and starts the missing one."""
    sweep_dir = tmp_path / "sweep"
    # 3 at once: job 0 ends and job 3 takes its slot; job 4 waits for a slot that never frees.
    args = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "epochs=1,300,301,302,3")
    long_jobs = ("1_epochs=300", "2_epochs=301", "3_epochs=302")
    proc = start(sweep_cmd(synthetic_root, sweep_dir, *args), tmp_path)
    wait_until(lambda: (sweep_dir / "0_epochs=1" / "metrics.json").is_file()
               and metrics(sweep_dir / "0_epochs=1")["status"] == "completed"
               and all(training(sweep_dir / name, 2) for name in long_jobs),
               "job 0 completed and jobs 1 to 3 train", proc)
    finished_before = snapshot(sweep_dir / "0_epochs=1")
    proc.send_signal(signal.SIGTERM)
    stopped = finish(proc)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    # Its jobs and the warm template they were forked from end with it.
    wait_until_gone = time.monotonic() + 10
    while job_pids(str(sweep_dir)) and time.monotonic() < wait_until_gone:
        time.sleep(0.1)
    assert not job_pids(str(sweep_dir)), "a process of the stopped sweep is still running"
    statuses = {name: metrics(job)["status"] for name, job in jobs(sweep_dir).items()}
    assert statuses == {"0_epochs=1": "completed", **{name: "interrupted" for name in long_jobs}}
    for name in long_jobs:  # the sweep continues its jobs: no job's own resume=<folder> as the next step
        error = metrics(sweep_dir / name)["error"]
        assert "its sweep's command with resume=auto continues it" in error and "resume=/" not in error, error
    counts = json.loads((sweep_dir / "summary.json").read_text())["counts"]
    assert (counts["completed"], counts["interrupted"], counts["missing"]) == (1, 3, 1)
    assert "resume=auto" in stopped.stderr

    # Reusing the folder without resume=auto: refused, nothing touched.
    before = snapshot(sweep_dir)
    refused = run_cli(["-m", *tiny(synthetic_root, *SMALL), f"hydra.sweep.dir={sweep_dir}", *args], tmp_path)
    line = one_line_error(refused)
    assert "already holds 4 jobs" in line and "resume=auto" in line, line
    assert snapshot(sweep_dir) == before

    epochs_done = {n: len(metrics(sweep_dir / n)["history"]) for n in long_jobs}
    fit_before = {n: metrics(sweep_dir / n)["timing"]["fit_seconds"] for n in epochs_done}
    resumed = run_cli(["-m", *tiny(synthetic_root, *SMALL), f"hydra.sweep.dir={sweep_dir}",
                       *args, "resume=auto"],
                      tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert snapshot(sweep_dir / "0_epochs=1") == finished_before  # not trained again
    for name, done in epochs_done.items():
        record = metrics(sweep_dir / name)
        assert record["status"] == "completed" and record["resumed"] == 1
        planned = int(name.rsplit("=", 1)[1])
        assert [h["epoch"] for h in record["history"]] == list(range(1, planned + 1))  # continued, not restarted
        assert done >= 2
        # Its times are both sessions': the fit before SIGTERM and the one after it.
        assert record["timing"]["sessions"] == 2 and record["timing"]["fit_seconds"] > fit_before[name]
    summed = next(line for line in resumed.stdout.splitlines() if line.startswith("Time, summed"))
    assert "5 jobs and all 8 of their sessions" in summed, summed  # 1 + 2 + 2 + 2 + 1
    assert metrics(sweep_dir / "4_epochs=3")["status"] == "completed"


def test_sigterm_to_a_sweep_in_one_process_writes_its_summary(synthetic_root, tmp_path):
    """The basic launcher runs jobs in the sweep's own process: the running
    job saves and records interrupted, the sweep writes its summary (the
    jobs not run yet are missing) and exits 143."""
    sweep_dir = tmp_path / "sweep"
    proc = start(sweep_cmd(synthetic_root, sweep_dir, "epochs=2,100000,3"), tmp_path)
    wait_until(lambda: training(sweep_dir / "1_epochs=100000"), "job 1 trains", proc)
    proc.send_signal(signal.SIGTERM)
    stopped = finish(proc)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    rows = {r["job"]: r["status"] for r in json.loads((sweep_dir / "summary.json").read_text())["rows"]}
    assert rows == {"0_epochs=2": "completed", "1_epochs=100000": "interrupted", "2_epochs=3": "missing"}


def test_a_sequential_sweep_killed_outright_still_lists_every_job_with_its_overrides(synthetic_root, tmp_path):
    """kill -9 to a sweep whose jobs run in its own process (the basic
    launcher): nothing is written at its end, yet trainer-summary lists every
    job with what it runs: the one that was training (its record still says
    running) and those that never started, by the names their folders get."""
    sweep_dir = tmp_path / "sweep"
    proc = start(sweep_cmd(synthetic_root, sweep_dir, "epochs=2,100000,3,4"), tmp_path)
    wait_until(lambda: training(sweep_dir / "1_epochs=100000"), "job 1 trains", proc)
    proc.kill()
    rows = {r["job"]: r["status"] for r in collect(sweep_dir)}
    assert rows == {"0_epochs=2": "completed", "1_epochs=100000": "incomplete", "2_epochs=3": "missing",
                    "3_epochs=4": "missing"}
    plan = json.loads((sweep_dir / "sweep.json").read_text())
    for job in plan["jobs"][:2]:  # a planned job's name is the one Hydra gave the jobs that ran
        assert (sweep_dir / planned_job_name(job["num"], job["overrides"], plan["varies"])).is_dir()
    console = Console(file=io.StringIO(), width=100)
    summarize(sweep_dir, console)
    text = console.file.getvalue()
    assert "(defaults)" not in text and all(name in text for name in rows), text


def test_resume_auto_with_other_arguments_is_refused_before_anything_is_written(tmp_path, capsys):
    from trainer.sweeps.callback import refuse_a_used_folder
    from trainer.sweeps.plan import PLAN

    started = ["optimizer=sgd,adam", "epochs=2"]
    (tmp_path / PLAN).write_text(json.dumps({"command": started, "jobs": None}))
    before = snapshot(tmp_path)
    refuse_a_used_folder(tmp_path, [*reversed(started), "resume=auto"])  # the same sweep: continues
    with pytest.raises(SystemExit):
        refuse_a_used_folder(tmp_path, [*started, "model.hidden=[64]", "resume=auto"])
    line = capsys.readouterr().err.strip()
    assert "these arguments differ (+model.hidden=[64])" in line and "\n" not in line, line
    assert "optimizer=sgd,adam epochs=2 resume=auto" in line or "epochs=2 optimizer=sgd,adam resume=auto" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["/", "home", "."])
def test_the_root_home_and_current_folders_are_refused_as_sweep_folders(tmp_path, monkeypatch, capsys, where):
    from trainer.sweeps.callback import refuse_a_used_folder

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    folder = {"/": Path("/"), "home": tmp_path / "home", ".": Path(".")}[where]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit):
        refuse_a_used_folder(folder, ["seed=0,1"])
    line = capsys.readouterr().err.strip()
    assert "a sweep needs a folder of its own" in line and "\n" not in line, line
    assert snapshot(tmp_path) == before


def test_a_second_sweep_in_a_folder_in_use_is_refused(tmp_path, capsys):
    from trainer.runs.folder import RunFolder
    from trainer.sweeps.callback import SweepCallback

    with RunFolder(tmp_path).locked():  # as the first sweep's process holds it
        with pytest.raises(SystemExit):
            SweepCallback()._lock_for_the_sweep(tmp_path)
    line = capsys.readouterr().err.strip()
    assert "is in use by another trainer process" in line and "hydra.sweep.dir" in line, line
    SweepCallback()._lock_for_the_sweep(tmp_path)  # free again
