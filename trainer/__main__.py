"""`python -m trainer` (and `torchrun -m trainer`) is the `trainer` command."""
from trainer.cli.main import main

if __name__ == "__main__":
    main()
