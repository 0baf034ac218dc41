"""What a run says while it trains: the console (rich), TensorBoard scalars,
and each finished epoch handed to the run record.

Every console line also goes, as plain text, to Python logging and so to
the run's trainer.log (record.LogBuffer). Only rank 0 builds a Tracker;
other DDP ranks get engine.NullTracker.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import time

from rich.console import Console

from trainer import display

log = logging.getLogger("trainer.console")


class Output:
    """The console: rich on a terminal, plain lines in a pipe or file (no
    escape codes, no wrapping of long lines), and every line logged."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        # soft_wrap: a line longer than the terminal stays one line (file names survive a pipe).
        self.console = console or Console(highlight=False, soft_wrap=True, quiet=quiet)

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, highlight=False, markup=False)
        log.info(text)

    def note(self, text: str) -> None:
        """For trainer.log only (the model printed in full, say)."""
        log.info(text)

    def show(self, renderable, plain: str | None = None) -> None:
        """A table or other rich object; the log gets it drawn as plain text."""
        self.console.print(renderable)
        log.info(plain if plain is not None else render_plain(renderable))

    def warn(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        log.warning(text)


def render_plain(renderable, width: int = 160) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, highlight=False, soft_wrap=False).print(renderable)
    return buffer.getvalue().rstrip("\n")


def wide_console(quiet: bool = False) -> Console:
    """A console for tables: a log or pipe gets 160 columns (or $COLUMNS)
    instead of rich's 80, which would squash the columns."""
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return Console(highlight=False, quiet=quiet, width=wide)


class Progress:
    """A live bar on a terminal, redrawn by rich's own timer (4 times a
    second) from a step count the loop sets for free; the seed's
    `loss: ... [n/N]` lines at logging points otherwise."""

    def __init__(self, output: Output, epoch: int, epochs: int, total: int, start: int, batch_size: int):
        self.output, self.total, self.batch_size = output, total, batch_size
        self.label = f"epoch {epoch}/{epochs}"
        self.live = output.console.is_terminal
        self.t0, self.start = time.perf_counter(), start
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                           console=output.console, transient=True, refresh_per_second=4)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=start, info="")

    def advance(self, step: int) -> None:
        if self.live:
            self.bar.update(self.task, completed=step)

    def update(self, step: int, loss: float) -> None:
        rate = (step - self.start) * self.batch_size / max(time.perf_counter() - self.t0, 1e-9)
        if self.live:
            self.bar.update(self.task, completed=step, info=f"loss {display.significant(loss)}  {rate:,.0f} samples/s")
        else:
            self.output.say(f"{self.label}  loss: {loss:>7f}  [{step:>5d}/{self.total:>5d}]  {rate:,.0f} samples/s")

    def close(self) -> None:
        if self.live:
            self.bar.stop()
            self.live = False


class Tracker:
    """Console lines, TensorBoard scalars (the record's writer) and each
    finished epoch into the record, for one run (rank 0)."""

    def __init__(self, output: Output, record, batch_size: int):
        self.output, self.record, self.batch_size = output, record, batch_size

    @property
    def writer(self):
        return self.record.writer  # opened when the record starts

    def message(self, text: str) -> None:
        self.output.say(text)

    def format_metric(self, key: str, value) -> str:
        return display.metric(key, value)

    def progress(self, epoch: int, epochs: int, total: int, start: int) -> Progress:
        return Progress(self.output, epoch, epochs, total, start, self.batch_size)

    def first_batch(self, x, y) -> None:
        # The seed prints these before training; so do we.
        self.output.say(f"Shape of X [N, C, H, W]: {x.shape} {x.dtype}")
        self.output.say(f"Shape of y: {y.shape} {y.dtype}")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)

    def log_epoch(self, row: dict, is_best: bool = False) -> None:
        if self.writer is not None:
            for key, value in row.items():
                if key in ("epoch", "step", "lr") or not isinstance(value, (int, float)):
                    continue
                tag = key if "/" in key else f"perf/{key}"
                # train/loss is already logged per step, at this step too: the
                # epoch mean gets its own tag, so the curve has one point a step.
                self.writer.add_scalar("train/loss_epoch" if tag == "train/loss" else tag, value, row["step"])
            self.writer.flush()
        parts = [f"epoch {row['epoch']:>3d}"]
        for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
            if key in row:
                parts.append(f"{key} {display.metric(key, row[key])}")
        parts.append(f"{display.duration(row['epoch_seconds'])}  {row['samples_per_second']:,.0f} samples/s")
        self.output.say("  ".join(parts) + ("  *" if is_best else ""))
        self.record.epoch(row)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
