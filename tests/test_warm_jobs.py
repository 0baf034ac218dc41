"""Warm sweep jobs (trainer.sweeps.forkserver, trainer.sweeps.launcher): each
job forked from a template process that imported everything and decoded the
data once, and still a process of its own with its own results.

The rules are pure functions tested in-process; one CLI test runs the same
sweep forked and as plain processes and compares every number."""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf

from hydra_plugins.trainer_launcher.local_launcher import LocalLauncher

from helpers import metrics, run_cli, tiny
from trainer.cli import hydra_glue
from trainer.cli.main import main
from trainer.core import data, process
from trainer.sweeps import forkserver
from trainer.sweeps import launcher
from trainer.sweeps.launcher import plan_line, threads_per_job
from trainer.sweeps.plan import job_number
from trainer.sweeps.tables import time_line


@pytest.mark.parametrize("argv, wanted", [
    (["-m", "hydra/launcher=joblib", "optimizer=sgd,adam"], True),
    (["--multirun", "hydra/launcher=local"], True),
    (["-m", "hydra/launcher=joblib", "hydra.launcher.warm=false"], False),  # plain processes asked for
    (["-m", "optimizer=sgd,adam"], False),                                   # the basic launcher: one process
    (["hydra/launcher=joblib"], False),                                      # not a sweep
    (["-m", "hydra/launcher=submitit_local"], False),
    (["-m", "hparams_search=optuna"], True),                                  # an Optuna search's trials
    (["--multirun", "hydra/sweeper=trainer_optuna", "lr=interval(1e-4, 1e-1)"], True),
    (["-m", "hparams_search=optuna", "hydra.sweeper.warm=false"], False),     # its trials as plain processes
    (["-m", "hparams_search=optuna", "hydra/launcher=joblib", "hydra.launcher.warm=false"], True),  # not its switch
    (["hparams_search=optuna"], False),
])
def test_the_template_is_forked_only_for_a_warm_sweep_or_search(argv, wanted):
    assert forkserver.wanted(argv) is wanted


@pytest.mark.parametrize("cores, slots, env, threads", [
    (2, 2, {}, 1),
    (16, 4, {}, 4),
    (2, 4, {}, 1),                          # more jobs than cores: one thread each, never 0
    (16, 4, {"OMP_NUM_THREADS": "2"}, 2),   # the user's setting wins
    (16, 4, {"OMP_NUM_THREADS": "x"}, 4),
])
def test_each_job_gets_its_share_of_the_cores(cores, slots, env, threads):
    assert threads_per_job(cores, slots, env) == threads


def test_the_sweep_says_once_how_jobs_and_threads_add_up():
    assert plan_line(2, 1, 2, warm=True) == ("Jobs: 2 at a time × 1 thread = 2 threads on 2 cores; "
                                                "each forked from one warm process that read the data once")
    assert "(the machine has 2 cores)" in plan_line(4, 1, 2, warm=False)  # 4 threads on 2 cores: said
    assert "each a fresh process" in plan_line(2, 1, 2, warm=False)
    assert plan_line(2, 2, 8, warm=True).startswith(
        "Jobs: 2 at a time × 2 threads = 4 threads on 4 cores (the machine has 8 cores);")


def test_a_signal_that_comes_while_a_job_starts_still_reaches_it(tmp_path, monkeypatch):
    """SIGTERM arriving between a job's fork and its entry among the running
    jobs (the handler cannot see it yet): the job is sent it when entered."""
    runner, sent = launcher.JobRunner(2, warm=False), []
    monkeypatch.setattr(launcher, "forward", lambda signum, pids: sent.append((signum, list(pids))))

    class Started:
        def __init__(self, pid):
            self.pid, self.returncode = pid, None

    def signalled_meanwhile(job):
        runner.stop_signal = signal.SIGTERM  # what the signal handler sets
        return Started(41 + job.num)

    monkeypatch.setattr(runner, "_process", signalled_meanwhile)
    runner.start(launcher.JobSpec(0, [], tmp_path / "0", []))
    assert sent == [(signal.SIGTERM, [41])]
    assert runner._pids_to_signal() == [41] and not runner.free()  # a second signal: the handler's to pass on


def test_a_dataset_is_decoded_once_until_its_files_change(synthetic_root, tmp_path, make_idx_dataset):
    root = tmp_path / "data"
    make_idx_dataset(root, "MNIST", n_train=64, n_test=32)
    first = data.load("mnist", root, train=True)
    again = data.load("mnist", root, train=True)
    assert again[0] is first[0] and again[1] is first[1]  # shared, not read again
    make_idx_dataset(root, "MNIST", n_train=96, n_test=32)  # new files: read again
    changed = data.load("mnist", root, train=True)
    assert len(changed[1]) == 96


def test_a_verified_file_is_not_hashed_again_in_the_same_process(tmp_path, make_idx_dataset, monkeypatch):
    root = tmp_path / "data"
    make_idx_dataset(root, "MNIST", n_train=64, n_test=32)
    raw = root / "MNIST" / "raw"
    sha = {f: data._sha256_file(raw / f) for f in data.RAW_FILES["MNIST"]}
    sizes = {f: (raw / f).stat().st_size for f in data.RAW_FILES["MNIST"]}
    monkeypatch.setitem(data.RAW_FILES, "MNIST", {f: (sizes[f], sha[f]) for f in sha})
    hashed = []
    real = data._sha256_file
    monkeypatch.setattr(data, "_sha256_file", lambda path: hashed.append(path.name) or real(path))
    data.prepare("mnist", root, download=False)
    assert len(hashed) == 4
    (raw / data.STAMP_NAME).unlink()  # no stamp on disk: only this process's memory spares the hashing
    data.prepare("mnist", root, download=False)
    assert len(hashed) == 4


def test_the_template_never_initialises_cuda(synthetic_root):
    """What the template does before its first fork: imports, Hydra's first
    compose (left uninitialised for the jobs), and the data."""
    forkserver._warm_up()
    hydra_glue.warm_up()
    assert not GlobalHydra.instance().is_initialized()
    assert data.preload("mnist", synthetic_root, verify=False)
    assert forkserver.cuda_untouched() and not torch.cuda.is_initialized()


def test_a_sweep_job_composes_its_config_once(synthetic_root, tmp_path):
    """`hydra.main` composes the config twice, once only to read hydra.mode; a
    sweep job's command line is a run by construction, so it composes once
    (half a warm job's start-up). In a forked child: Hydra's logging and its
    patched class stay out of this test process."""
    composed = tmp_path / "composed"
    pid = os.fork()
    if pid == 0:
        real = Hydra.compose_config

        def counted(self, *args, **kwargs):
            with open(composed, "a") as f:
                f.write(f"{kwargs.get('run_mode')}\n")
            return real(self, *args, **kwargs)

        Hydra.compose_config = counted
        os.environ["TRAINER_SWEEP_JOB"] = "1"
        sys.argv = ["trainer", *tiny(synthetic_root, "lr=-1"), f"hydra.run.dir={tmp_path / 'job'}"]
        os._exit(forkserver._exit_status(main))
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1  # lr=-1 is refused after the compose
    assert composed.read_text().split() == [str(RunMode.RUN)]


FIRST_USE_SCRIPT = """
import json, os, sys
from trainer.cli import hydra_glue
from trainer.cli.main import main
from trainer.core import data
from trainer.sweeps import forkserver
root, run_dir = sys.argv[1:]
forkserver._warm_up()
hydra_glue.warm_up()
data.preload("fashion_mnist", root, verify=False)
before = set(sys.modules)
os.environ["TRAINER_SWEEP_JOB"] = "1"
sys.argv = ["trainer", f"data.root={root}", "data.verify=false", "data.download=false", "data.search_paths=[]",
            "epochs=2", "data.subset=256", "data.val_split=64", "optimizer=adam", f"hydra.run.dir={run_dir}"]
code = forkserver._exit_status(main)
print(json.dumps([code, sorted(set(sys.modules) - before)]))
"""


def test_a_forked_job_imports_nothing_on_first_use(synthetic_root, tmp_path):
    """What a job imports lazily (torch._dynamo with its first optimizer,
    TensorBoard's HParams protos, PIL's format plugins, rich's emoji table)
    is imported once by the template: a job forked from it, with the default
    pictures, checkpoints and dashboards, imports nothing more. In a fresh
    interpreter: this test process's own imports would hide what is missing."""
    proc = subprocess.run([sys.executable, "-c", FIRST_USE_SCRIPT, str(synthetic_root), str(tmp_path / "job")],
                          capture_output=True, text=True, timeout=300)
    code, imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert imported == []


def test_a_sweep_composes_each_job_s_config_once():
    """Hydra's sweeper composes every job's config to check a batch before it
    launches it; trainer's launcher takes those configs rather than composing
    each again (twice doubled the seconds before a sweep's first job)."""
    composed = []

    class Loader:  # Hydra's config loader, counting its composes
        def load_sweep_config(self, master_config, sweep_overrides):
            composed.append(tuple(sweep_overrides))
            return OmegaConf.create({"hydra": {"job": {"num": 0}}, "lr": sweep_overrides[0]})

    context = HydraContext(config_loader=Loader(), callbacks=None)
    local = LocalLauncher(n_jobs=1)
    local.setup(hydra_context=context, task_function=None, config=OmegaConf.create({}))
    batch = [["lr=0.1"], ["lr=0.2"], ["lr=0.3"]]
    # Hydra's sweepers' own check, on a sweeper that shares the launcher's context (as the basic sweeper does)
    Sweeper.validate_batch_is_legal(SimpleNamespace(hydra_context=context, config=OmegaConf.create({})), batch)
    configs = [local._job_config(i, overrides) for i, overrides in enumerate(batch)]
    assert composed == [("lr=0.1",), ("lr=0.2",), ("lr=0.3",)]
    assert [(c.lr, c.hydra.job.num) for c in configs] == [("lr=0.1", 0), ("lr=0.2", 1), ("lr=0.3", 2)]


@pytest.mark.parametrize("held, order", [
    (False, ["start 0", "start 1", "end 0", "end 1"]),  # job 1 starts while job 0 writes its last files
    (True, ["start 0", "end 0", "start 1", "end 1"]),   # a CV holds its slot to its end
])
def test_a_forked_job_frees_its_slot_when_its_results_are_known(tmp_path, held, order):
    """One slot: a job that says its results are known (process.release_slot)
    lets the next job start while it finishes; one that holds its slot (a
    cross-validation, process.hold_slot) does not. In a forked child: the
    template is forked from a process with one thread."""
    log = tmp_path / "log"

    def job() -> None:  # what a forked job runs instead of `trainer`
        with open(log, "a") as f:
            f.write(f"start {sys.argv[1]}\n")
        if held:
            process.hold_slot()
        process.release_slot()
        time.sleep(1.0)  # its last files
        with open(log, "a") as f:
            f.write(f"end {sys.argv[1]}\n")

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            forkserver.fork_early(entry=job)
            runner = launcher.JobRunner(1)
            runner.run([launcher.JobSpec(i, [], tmp_path / str(i), [str(i)]) for i in range(2)])
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert log.read_text().splitlines() == order


@pytest.mark.parametrize("killer, status, says", [
    ("sweep", "interrupted", "stopped by SIGTERM with its sweep before its first epoch ended"),
    ("outside", "failed", "killed by SIGTERM before its first epoch ended (out of memory, or stopped from outside)"),
])
def test_a_job_killed_while_starting_says_who_stopped_it(tmp_path, killer, status, says):
    """A job that dies by its sweep's own SIGTERM (passed on before the job
    could catch it) was interrupted with its sweep; one killed by a signal
    from elsewhere failed, and its record says so."""
    started = tmp_path / "started"

    def job() -> None:  # a job still starting: SIGTERM is not caught yet
        started.write_text(str(os.getpid()))
        time.sleep(30)

    def stop() -> None:
        while not started.is_file():
            time.sleep(0.01)
        time.sleep(0.1)
        os.kill(os.getpid() if killer == "sweep" else int(started.read_text()), signal.SIGTERM)

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            forkserver.fork_early(entry=job)
            threading.Thread(target=stop, daemon=True).start()
            launcher.JobRunner(1).run([launcher.JobSpec(0, ["lr=0.1"], tmp_path / "0_lr=0.1", ["lr=0.1"])])
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    record = metrics(tmp_path / "0_lr=0.1")
    assert (record["status"], record["overrides"]) == (status, ["lr=0.1"])
    assert record["error"].startswith(says), record["error"]


@pytest.mark.parametrize("cv, overlap", [(False, True), (True, False)])
def test_a_sweep_starts_its_next_job_while_a_finished_one_writes_its_files(synthetic_root, tmp_path, cv, overlap):
    """One slot, two CPU jobs: the second starts as soon as the first's
    results are known, while the first still writes its last files
    (curves.png, slowed by 2 s here); a cross-validation job keeps its slot
    until its last fold and its summary are done."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *tiny(synthetic_root, "data.subset=64", "data.test_subset=32", "device=cpu",
                        *(["cv.folds=2"] if cv else [])),
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "lr=0.01,0.02", f"hydra.sweep.dir={sweep_dir}"]
    proc = run_cli(args, tmp_path, fault={"slow_curves": 2.0})
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = sorted(job_records(sweep_dir))
    first_done = (sweep_dir / first / "metrics.json").stat().st_mtime  # its record's last write: completed
    second_started = datetime.datetime.fromisoformat(metrics(sweep_dir / second)["timing"]["started_at"])
    assert (second_started.timestamp() < first_done) == overlap


def job_records(sweep_dir: Path) -> dict[str, dict]:
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and job_number(p.name) is not None)
    return {p.name: metrics(p) for p in jobs}


def without_timing(record: dict) -> tuple:
    timed = {"epoch_seconds", "samples_per_second", "train_seconds"}
    history = [{k: v for k, v in row.items() if k not in timed} for row in record["history"]]
    final = {k: v for k, v in record["final"].items() if k not in timed}
    return record["status"], history, final, record["best"]


def test_a_forked_job_gives_the_numbers_of_a_plain_process_bit_for_bit(synthetic_root, tmp_path):
    """The same two-job sweep, forked from the template and as plain
    `python -m trainer` processes: every metric equal, on the CPU with
    deterministic=true; the forked jobs read their data from the template."""
    args = ["-m", *tiny(synthetic_root, "epochs=2", "data.subset=256", "data.val_split=64", "model.hidden=[32]",
                        "device=cpu", "deterministic=true", "train.shuffle=true"),
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer=sgd,adam"]
    records = {}
    for warm in ("true", "false"):
        sweep_dir = tmp_path / f"warm-{warm}"
        proc = run_cli([*args, f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.warm={warm}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        how = "each forked from one warm process" if warm == "true" else "each a fresh process"
        assert "Jobs: 2 at a time × 1 thread = 2 threads on 2 cores; " + how in proc.stdout, proc.stdout
        records[warm] = job_records(sweep_dir)
    assert list(records["true"]) == ["0_optimizer=sgd", "1_optimizer=adam"]
    for name, forked in records["true"].items():
        assert without_timing(forked) == without_timing(records["false"][name]), name
        assert forked["status"] == "completed"
        timing = forked["timing"]
        assert {"startup_seconds", "fit_seconds", "final_eval_seconds", "pictures_seconds"} <= set(timing)
    history = records["true"]["0_optimizer=sgd"]["history"]
    assert history[0]["val/acc"] != history[1]["val/acc"] or history[0]["train/loss"] != history[1]["train/loss"]


def test_the_summary_says_where_the_sweep_s_time_went():
    rows = [{"startup_seconds": 0.25, "fit_seconds": 5.5, "final_eval_seconds": 0.25, "pictures_seconds": 0.5},
            {"startup_seconds": 0.25, "fit_seconds": 4.5, "final_eval_seconds": None, "pictures_seconds": 0.25},
            {"status": "missing"}]
    assert time_line(rows) == ("Time, summed over 2 jobs: start-up 0.5 s, fit 10.0 s, final evaluation 0.2 s, "
                               "pictures 0.8 s")
    assert time_line([{"status": "missing"}]) is None
