"""What the small console commands' argument parsers share."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts such as --batch-size and --top."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value
