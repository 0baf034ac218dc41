"""The command-line layer: Hydra glue, the entry points, one-line errors and
the Python API. The only package that sees a DictConfig or Hydra."""
