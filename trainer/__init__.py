"""trainer: a config-driven PyTorch experiment CLI.

From Python: `trainer.run("model=conv", "lr=1e-3")` (see trainer.cli.api).
"""
from trainer.core.errors import UserError

__version__ = "0.1.0"


def run(*overrides: str, **kwargs) -> dict:
    """Train one run with these overrides; returns its metrics.json content
    and "run_dir". Raises trainer.UserError with the CLI's one line."""
    # Imported on use: every `import trainer.core...` runs this file first, and
    # the API would pull the whole command-line layer (Hydra) into each of them.
    from trainer.cli.api import run as run_

    return run_(*overrides, **kwargs)


__all__ = ["UserError", "run"]
