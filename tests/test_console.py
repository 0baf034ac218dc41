"""What the console tells a person: the help, and the lines of parallel jobs."""
from __future__ import annotations

import re

from helpers import run_cli


def test_help_lists_the_groups_a_user_can_choose_and_no_schema(tmp_path):
    proc = run_cli(["--help"], tmp_path, check=True)
    groups = proc.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    listed = dict(re.findall(r"^(\S+): (.+)$", groups, flags=re.M))
    assert set(listed) == {"data", "experiment", "hparams_search", "loss", "model", "optimizer", "scheduler",
                           "transform"}, groups
    assert listed["model"] == "conv, mlp, mymodel"
    assert "schema" not in groups and "$" not in proc.stdout
