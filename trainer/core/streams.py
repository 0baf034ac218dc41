"""The process's standard output and error when their reader goes away
(`trainer ... | head -3`, a closed terminal): what is still said there goes
nowhere, and the command goes on. Python's default is an exception at the
next write (rich's: SystemExit(1)), which would end a run mid-training with
its record left `running`; a run trains to its end and records it, and its
trainer.log still gets every line.

Every console writer comes here: plain lines through `write()`, rich
consoles through their broken-pipe hook (trainer.report.tracking), a
library's own print() through `end_if_reader_gone()` at the entry points, and
logging's console handlers (Hydra's --info) and what Python flushes at
exit through `guard()`.
"""
from __future__ import annotations

import atexit
import logging
import os
import select
import sys


def silence(stream=None) -> None:
    """Point `stream`'s file descriptor at /dev/null: every later write to it,
    by any code (Python's own flush at exit included), succeeds and goes nowhere."""
    stream = sys.stdout if stream is None else stream
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's capture, a closed stream): nothing reads it to go away
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def write(text: str = "", stream=None) -> None:
    """print(text, flush=True) to `stream` (stdout by default); a reader that
    went away silences the stream instead of ending the command."""
    stream = sys.stdout if stream is None else stream
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        silence(stream)
    except ValueError:
        pass  # closed by the caller (at interpreter exit): nothing to say it on


def console_gone() -> bool:
    """Whether stdout or stderr is a pipe whose reader went away: a
    BrokenPipeError from another pipe the command writes is a failure like
    any other, not a reason to end quietly."""
    poller = select.poll()
    for stream in (sys.stdout, sys.stderr):
        try:
            poller.register(stream.fileno(), select.POLLOUT)
        except (AttributeError, OSError, ValueError):
            continue  # not a file (a test's capture)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def end_if_reader_gone() -> None:
    """In `except BrokenPipeError`: end the command quietly (reader_gone)
    when the pipe was the console's; return when it was another pipe, for
    the caller to treat it as the failure it is."""
    if console_gone():
        reader_gone()


def reader_gone() -> None:
    """End the command quietly, exit 0 as `ls | head` does: a write it could
    not go on without (Hydra's own print() of --help or --cfg) met a reader
    that went away. Nothing more is said, to anyone."""
    for stream in (sys.stdout, sys.stderr):
        silence(stream)
    sys.exit(0)


def flush() -> None:
    """Flush stdout and stderr, silencing one whose reader went away: what a
    block-buffered stdout still holds (`trainer-summary ... | head -1`) would
    otherwise fail in Python's own flush at exit, which prints
    `Exception ignored ... BrokenPipeError` and exits 120."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            silence(stream)
        except (OSError, ValueError, AttributeError):
            pass


_guarded = False


def guard() -> None:
    """Once per process, at an entry point: flush() at exit (after the exit
    handlers registered later, atexit being last-in, first-out; before
    Python's own flush); and a logging handler on the console (Hydra's)
    silences it, where logging would print `--- Logging error ---` and a
    traceback for every line left."""
    global _guarded
    if not _guarded:
        atexit.register(flush)
        logging.StreamHandler.handleError = _silence_or_report
        _guarded = True


_report_handler_error = logging.StreamHandler.handleError


def _silence_or_report(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
    if isinstance(sys.exc_info()[1], BrokenPipeError):
        silence(handler.stream)
    else:
        _report_handler_error(handler, record)
