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
    assert listed["model"] == "conv, mlp, mymodel"
    assert "schema" not in groups and "$" not in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="needs hydra-submitit-launcher (the sweep extra)")
@pytest.mark.skipif(shutil.which("srun") is not None, reason="a SLURM cluster: srun is here")
def test_a_sweep_its_launcher_refuses_leaves_no_folder(synthetic_root, tmp_path):
    proc = run_cli(["-m", "hydra/launcher=slurm", *tiny(synthetic_root, "optimizer=sgd,adam")], tmp_path)
    assert proc.returncode == 1 and "srun" in one_line_error(proc)
    assert not (tmp_path / "outputs").exists(), os.listdir(tmp_path / "outputs")
