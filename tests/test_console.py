"""What a person sees: the help, the lines of parallel jobs, and no
folder left behind by a command that was refused."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pytest

from helpers import one_line_error, run_cli, tiny


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
