"""A sweep job as a process of its own: `python -m trainer <its overrides>
hydra.run.dir=<its folder>`, shared by trainer's launcher and its Optuna
sweeper. One that dies (killed by hand, by the OOM killer) takes no other
job with it, and dies with the sweep (SIGTERM when the sweep process dies)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainer.core.process import die_with_parent
from trainer.runs.resume import quote

# The sweep's own Hydra settings a job must not get: they would make it a sweep again.
SWEEP_ONLY = ("hydra.mode=", "hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper", "hydra.sweep.",
              "hydra.run.dir=", "hydra.job.num=")


def job_hydra_overrides(sweep_hydra_overrides: list[str]) -> list[str]:
    return [o for o in sweep_hydra_overrides if not o.startswith(SWEEP_ONLY)]


def start(overrides: list[str], hydra_overrides: list[str], run_dir: Path, num: int, n_jobs: int,
          env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "trainer", *overrides, *job_hydra_overrides(hydra_overrides),
               f"hydra.run.dir={quote(str(run_dir))}", f"hydra.job.num={num}"]
    environment = {**os.environ, **(env or {})}
    # As joblib does: the cores shared out between the jobs running at once.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, n_jobs))))
    environment["TRAINER_SWEEP_JOB"] = "1"  # a brief console: a few lines per job
    # Its own session: a Ctrl-C in the terminal reaches the sweep alone, which passes it on once.
    return subprocess.Popen(command, env=environment, start_new_session=True, preexec_fn=die_with_parent)
