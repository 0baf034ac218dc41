"""trainer: a config-driven PyTorch experiment CLI."""

__version__ = "0.1.0"
