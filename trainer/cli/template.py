"""`python -m trainer.cli.template FD`: a sweep's warm template process, for
a sweep whose own process could not fork one at its start
(trainer.sweeps.forkserver). Each job it forks runs the `trainer` command."""
import sys

from trainer.cli import hydra_glue
from trainer.cli.main import main
from trainer.sweeps import forkserver

if __name__ == "__main__":
    forkserver.serve(int(sys.argv[1]), entry=main, warm_up=hydra_glue.warm_up)
