"""What the small console commands (trainer-eval, trainer-predict) share."""
from __future__ import annotations

import argparse
import sys

from trainer.errors import UserError


def run_reporting(prog: str, func, *args) -> None:
    """Run a console command's body; a UserError or Ctrl-C becomes one line
    on stderr and an exit status (1, 130), never a traceback."""
    try:
        func(*args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def positive_int(text: str) -> int:
    """argparse type for counts such as --batch-size and --top."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value
