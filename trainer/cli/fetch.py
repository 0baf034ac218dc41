"""`python -m trainer.cli.fetch [mnist] [fashion_mnist]`: put the datasets under
data.root before training (the Makefile's data step), with the same search
paths, checksums and messages as a training run."""
from __future__ import annotations

import sys

from trainer.cli.api import compose
from trainer.core import streams
from trainer.core.data import DATASETS, prepare
from trainer.core.errors import UserError, report


def fetch(names: list[str]) -> None:
    for name in names:
        if name not in DATASETS:
            raise UserError(f"unknown dataset {name}; choose from {', '.join(DATASETS)}")
        d = compose(f"data={name}").data
        raw = prepare(d.name, d.root, d.search_paths, download=d.download, verify=d.verify)
        streams.write(f"{DATASETS[name].title}: ready in {raw}")


def main(argv: list[str] | None = None) -> int:
    report("trainer", fetch, (argv if argv is not None else sys.argv[1:]) or list(DATASETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
