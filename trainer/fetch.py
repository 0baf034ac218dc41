"""`python -m trainer.fetch [mnist] [fashion_mnist]`: put the datasets under
data.root before training (the Makefile's data step), with the same search
paths, checksums and messages as a training run."""
from __future__ import annotations

import sys

from hydra import compose, initialize_config_module

from trainer import config as schema
from trainer.data import DATASETS, prepare
from trainer.errors import UserError


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(DATASETS)
    schema.register()
    try:
        with initialize_config_module("trainer.conf", version_base=None):
            for name in names:
                if name not in DATASETS:
                    raise UserError(f"unknown dataset {name}; choose from {', '.join(DATASETS)}")
                d = compose("config", overrides=[f"data={name}"]).data
                raw = prepare(d.name, d.root, d.search_paths, download=d.download, verify=d.verify)
                print(f"{DATASETS[name].title}: ready in {raw}")
    except UserError as e:
        print(f"trainer: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
