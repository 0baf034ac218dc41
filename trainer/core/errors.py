"""The one exception type a user ever sees as a message instead of a
traceback, and the one place that turns any error into that message."""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
import warnings

from trainer.core import streams
from trainer.core.display import labelled


class UserError(Exception):
    """A problem the user can fix: bad config value, missing or corrupt file.

    The message is one line that names the problem and the fix (config key,
    file, value); `key` is the config key it is about, where there is one, so
    no reader has to find it in the text (the HParams session leaves out the
    refused value). `report()` prints it and exits non-zero.
    """

    exit_code = 1

    def __init__(self, message: str, key: str | None = None):
        super().__init__(" ".join(str(message).split()))
        self.key = key


def say(line: str, prog: str = "trainer") -> None:
    """The one way a line reaches stderr: `trainer: error: ...`,
    `trainer: warning: ...`, `trainer: interrupted`, a sweep's failures."""
    streams.write(labelled(f"{prog}: {line}"), sys.stderr)


def warn(text: str, prog: str = "trainer") -> None:
    say(f"warning: {text}", prog)


class ArgumentError(ValueError):
    """A constructor (a model, a loss) refusing one of its arguments: it names
    the argument, and the builder adds the group (`model.channels=[] ...`)."""

    def __init__(self, argument: str, rest: str):
        super().__init__(rest)  # what follows `argument=`: its value and why it is refused
        self.argument = argument


class DataError(UserError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, is not ours, or would run code on load."""


def first_line(e: BaseException | str) -> str:
    """The first non-blank line of an exception (its type name if it has none)
    or of a text ('' if it has none): what fits in a one-line message."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return "" if isinstance(e, str) else type(e).__name__


def internal(e: BaseException, log_path: str | None = None) -> str:
    """The one line for a bug in trainer itself; the traceback goes to
    `log_path` (a run's trainer.log, written by its caller), else to a file
    of its own that the line names."""
    text = "".join(traceback.format_exception(e))
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="trainer-traceback-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return f"internal error: {type(e).__name__}: {first_line(e)} (traceback in {log_path})"


def warnings_as_lines(prog: str) -> None:
    """A library's warning that reaches the console (torch, PIL, matplotlib)
    is one line of ours, `<prog>: warning: <its first line>`, not Python's
    two lines with the library's file, line number and source."""
    def show(message, category, filename, lineno, file=None, line=None):
        try:
            streams.write(f"{prog}: warning: {first_line(str(message))}", file or sys.stderr)
        except OSError:
            pass  # a console that cannot be written: nothing to say it on, as with Python's own

    warnings.showwarning = show


def report(prog: str, func, *args):
    """Run a console command's body: a UserError, Ctrl-C or bug becomes one
    line on stderr and an exit status (1, 130), never a traceback; a warning
    one line too (warnings_as_lines). A reader of its output that goes away
    (`| head`) ends nothing (trainer.core.streams)."""
    streams.guard()
    warnings_as_lines(prog)
    try:
        return func(*args)
    except UserError as e:
        say(f"error: {e}", prog)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        say("interrupted", prog)
        sys.exit(130)
    except BrokenPipeError as e:  # a writer of a library's own (Hydra's --cfg) whose reader went away
        streams.end_if_reader_gone()
        _bug(e, prog)  # another pipe than the console's
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback in a file
        _bug(e, prog)


def _bug(e: Exception, prog: str) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    say(internal(e), prog)
    sys.exit(1)
