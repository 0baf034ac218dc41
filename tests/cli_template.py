"""The tests' warm `trainer` process: `python tests/cli_template.py FD`.

Each CLI test is a real process of its own, forked by trainer's own warm-job
template (trainer.sweeps.forkserver) from this one, which imported torch,
Hydra and trainer once. A test then pays milliseconds, not seconds of
imports, for each `trainer` command it runs, and still gets what a user gets:
a fresh process with its own exit code, signals, cwd, environment and
output. What this adds: the job's stdout and stderr go to the files the test
names (TRAINER_TEST_STDOUT / TRAINER_TEST_STDERR), and the fault named in
TRAINER_TEST_FAULT is patched in (tests/fault_child.py)."""
import json
import os
import sys

import fault_child
from trainer.cli.main import main
from trainer.sweeps import forkserver

STDOUT, STDERR = "TRAINER_TEST_STDOUT", "TRAINER_TEST_STDERR"


def entry() -> None:
    for fd, name in ((1, STDOUT), (2, STDERR)):
        target = os.open(os.environ.pop(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    if fault_child.FAULT in os.environ:
        fault_child.install(json.loads(os.environ[fault_child.FAULT]))
    main()


if __name__ == "__main__":
    forkserver.serve(int(sys.argv[1]), entry=entry)
