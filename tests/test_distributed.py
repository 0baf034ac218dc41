"""Scaling out: DDP under torchrun (2 gloo processes on the CPU), per-rank
sharding, resume across world sizes, the submitit launchers and the job->GPU
resolver. What needs a GPU or a SLURM cluster is in docs/scaling.md.

Tolerance (docs/scaling.md): a 2-process run and a 1-process run with the same
global batch and seed give the same test accuracy (measured: identical, the
test below allows one test sample) and losses within 2e-6 (measured: <= 3e-7;
the rest is floating-point summation order).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from helpers import compose_cfg, metrics, run_cli, run_dirs, tiny
from trainer.core import distributed
from trainer.core.pipeline import BatchTransform, DeviceBatches

TEST_SIZE = 256  # the synthetic test split (conftest.synthetic_root)
ACC_TOL = 1 / TEST_SIZE  # one test sample
LOSS_TOL = 2e-6
# An uneven last train batch (499 = 15 x 32 + 19: 10 + 9 on two ranks), uneven
# eval shares (99 = 50 + 49), shuffling and augmentation: the cases where a
# naive DDP port drifts from one process.
COMMON = ["device=cpu", "lr=0.03", "train.shuffle=true", "data.subset=499", "transform.shift=1",
          "train.eval_batch_size=99", "train.log_every_n_steps=4"]


# ------------------------------------------------------------------ sharding
@pytest.mark.parametrize("n,bs,drop_last", [(256, 99, False), (499, 32, False), (10, 3, False), (499, 32, True)])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_shares_partition_every_global_batch(n, bs, drop_last, world):
    """Each global batch is split over the ranks: no sample twice, none dropped,
    and (train, augmented) every sample looks as it does in one process."""
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    labels = torch.arange(n)  # a label is the sample's index
    transform = BatchTransform(shift=2, hflip=0.5, erase=0.5)

    def make(rank, world_size):
        return DeviceBatches(images, labels, bs, transform, shuffle=True, seed=3, train=True, drop_last=drop_last,
                             rank=rank, world_size=world_size)

    single = list(make(0, 1).epoch(2))
    shares = [list(make(r, world).epoch(2)) for r in range(world)]
    assert all(len(s) == len(single) == len(make(0, 1)) for s in shares)
    seen = []
    for step, (x1, y1) in enumerate(single):
        y = torch.cat([shares[r][step][1] for r in range(world)])
        x = torch.cat([shares[r][step][0] for r in range(world)])
        assert torch.equal(y, y1)  # the global batch, in order
        assert torch.equal(x, x1)  # the same augmentation per sample
        assert make(0, world).global_size(step) == len(y1)
        seen.append(y)
    seen = torch.cat(seen)
    assert len(seen) == len(set(seen.tolist())) == make(0, 1).count.num_samples


def test_eval_shares_cover_the_split_once():
    n, bs, world = TEST_SIZE, 99, 3
    labels = torch.arange(n)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    got = [y for r in range(world)
           for _, y in DeviceBatches(images, labels, bs, BatchTransform(), train=False, rank=r,
                                     world_size=world).epoch(0)]
    assert sorted(torch.cat(got).tolist()) == list(range(n))


# ---------------------------------------------------------------- torchrun
def _compose_with_hydra(overrides: list[str]):
    """The composed config with its `hydra` node (what a launcher gets)."""
    from trainer.cli import api

    return api.compose(*overrides, hydra_config=True)


def _torchrun(args: list[str], cwd: Path, scratch: Path, nproc: int = 2, timeout: float = 240):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200",
           "TMPDIR": str(scratch)}  # non-zero ranks' scratch run folders land here
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "trainer", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def ddp_runs(synthetic_root, tmp_path_factory):
    """one: 1 process, 3 epochs. two: torchrun 2 gloo processes, 2 epochs
    (resume=auto, nothing to resume yet). resumed: 1 process continues
    `two` with resume=auto to epoch 3 (a world-size change on resume)."""
    base = tmp_path_factory.mktemp("ddp")
    for sub in ("one", "two", "resumed", "scratch"):
        (base / sub).mkdir()
    # The 1-process run is independent of the torchrun one: start it alongside.
    with ThreadPoolExecutor(max_workers=1) as pool:
        single = pool.submit(run_cli, tiny(synthetic_root, *COMMON, "epochs=3"), cwd=base / "one", check=True)
        two = _torchrun(tiny(synthetic_root, *COMMON, "epochs=2", "resume=auto"), cwd=base / "two",
                        scratch=base / "scratch")
        one = single.result()
    (two_dir,) = run_dirs(base / "two")
    two_record = metrics(two_dir)  # before the resumed run rewrites it
    resumed = run_cli(tiny(synthetic_root, *COMMON, "epochs=3", "resume=auto", f"hydra.run.dir={two_dir}"),
                      cwd=base / "resumed", check=True)
    return {"base": base, "one": one, "two": two, "resumed": resumed,
            "one_dir": run_dirs(base / "one")[0], "two_dir": two_dir, "two_record": two_record}


def _close(a: dict, b: dict, keys=("test/acc", "test/loss", "train/acc", "train/loss")) -> None:
    for key in keys:
        tol = ACC_TOL if key.endswith("acc") else LOSS_TOL
        assert abs(a[key] - b[key]) <= tol, f"{key}: {a[key]} vs {b[key]} (tolerance {tol})"


def test_two_gloo_processes_match_one(ddp_runs):
    one, two = metrics(ddp_runs["one_dir"]), ddp_runs["two_record"]
    assert two["status"] == "completed"
    assert "2 processes (DDP)" in ddp_runs["two"].stdout
    assert [h["epoch"] for h in two["history"]] == [1, 2]
    for a, b in zip(one["history"][:2], two["history"]):
        _close(a, b)
    # every test sample counted once over the two ranks' shares
    assert two["final"]["test_samples"] == one["final"]["test_samples"] == TEST_SIZE


def test_only_rank_zero_writes_outputs(ddp_runs):
    base, two_dir = ddp_runs["base"], ddp_runs["two_dir"]
    outputs = base / "two" / "outputs"
    stray = [p for p in outputs.rglob("*") if p.is_file() and two_dir not in p.parents]
    assert stray == [], f"files outside rank 0's run folder: {stray}"
    assert (two_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(two_dir.glob("events.out.tfevents.*"))
    # rank 1 ran in a scratch folder: a log at most, no record, checkpoint or events
    scratch = [p for p in (base / "scratch").rglob("*") if p.is_file()]
    assert all(p.name == "trainer.log" for p in scratch), scratch


def test_only_rank_zero_speaks(ddp_runs):
    out = ddp_runs["two"].stdout
    assert out.count("Run: ") == 1 and out.count("Outputs: ") == 1 and out.count("epoch   2 ") == 1, out
    assert "trainer-rank" not in out + ddp_runs["two"].stderr  # rank 1's scratch folder is nobody's business


@pytest.mark.parametrize("device, processes, threads, cores, says", [
    ("cpu", 4, 1, 2, "4 processes of 1 thread each share 2 CPU cores"),
    ("cpu", 2, 2, 2, "start at most 1 (torchrun --nproc_per_node=1)"),
    ("cpu", 2, 1, 2, None),
    ("cpu", 1, 8, 2, None),      # one process: torch's own threads, not ours to judge
    ("cuda", 4, 1, 2, None),     # a GPU each: the cores only feed them
])
def test_more_processes_than_cores_is_said(device, processes, threads, cores, says):
    line = distributed.oversubscribed(device, processes, threads, cores)
    assert (line is None) if says is None else (says in line), line


def test_resume_auto_with_another_world_size(ddp_runs):
    """The 2-process run's checkpoint, continued by 1 process, ends where the
    1-process run ends."""
    one, resumed = metrics(ddp_runs["one_dir"]), metrics(ddp_runs["two_dir"])
    assert "Resuming" in ddp_runs["resumed"].stdout
    assert resumed["status"] == "completed" and resumed.get("resumed") == 1
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    _close(one["final"], resumed["final"])
    assert resumed["final"]["test_samples"] == TEST_SIZE


# ------------------------------------------------------------------ submitit
def test_submitit_local_sweep_and_summary(synthetic_root, tmp_path):
    """Two jobs under hydra/launcher=submitit_local (each its own process),
    then the summary the parent builds from the job folders."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                    *tiny(synthetic_root, "device=cpu", "resume=auto"), "lr=0.01,0.05",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / ".submitit").is_dir()  # the jobs really ran under submitit
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["jobs"] == 2 and summary["counts"]["completed"] == 2
    rows = {row["job"]: row for row in summary["rows"]}
    # Folders named by what varies, also when each job composes its own config in a submitit process.
    assert sorted(rows) == ["0_lr=0.01", "1_lr=0.05"]
    for job, row in rows.items():
        record = metrics(sweep / job)
        assert record["status"] == "completed"
        assert row["test/acc"] == record["final"]["test/acc"]
        assert job.split("_", 1)[1] in row["overrides"]


def test_slurm_preset_makes_the_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm through the real launcher code up to submission:
    partition, one GPU per job, time limit and the requeue signal."""
    submitit = pytest.importorskip("submitit")
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    cfg = _compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                               f"hydra.sweep.dir={tmp_path / 'sweep'}", "resume=auto"])
    captured = {}

    class Submitted(Exception):
        pass

    def fake_map_array(executor, fn, *args):
        captured["executor"], captured["jobs"] = executor, list(zip(*args))
        raise Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        launcher = instantiate(cfg.hydra.launcher)
        launcher.setup(hydra_context=None, task_function=None, config=cfg)
        with pytest.raises(Submitted):
            launcher.launch([["lr=0.1"], ["lr=0.2"]], initial_job_idx=0)
    finally:
        HydraConfig.instance().cfg = previous
    slurm = captured["executor"]._executor
    script = slurm._make_submission_file_text("python -m trainer", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1", "--time=240", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, script
    assert slurm.max_num_timeout == 5
    assert [job[0] for job in captured["jobs"]] == [["lr=0.1"], ["lr=0.2"]]


# ---------------------------------------------------------------- job -> GPU
def test_trainer_gpu_resolver_maps_jobs_to_gpus(monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from trainer.cli import hydra_glue
    from trainer.core.distributed import job_gpu

    hydra_glue.register()  # the resolver
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [job_gpu(n) for n in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert compose_cfg(["device=${trainer_gpu:6}"]).device == "cuda:2"

    cfg = _compose_with_hydra(["device=${trainer_gpu:}"])
    with open_dict(cfg):
        cfg.hydra.job.num = 5
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        assert cfg.device == "cuda:1"  # the running job's own number
    finally:
        HydraConfig.instance().cfg = previous

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert job_gpu(3) == "cuda:0"  # and pick_device refuses it with its one-line error
