"""What a run says while it trains: the console (rich), TensorBoard scalars,
and each finished epoch handed to the run record.

Every console line also goes, as plain text, to Python logging and so to
the run's trainer.log (record.LogBuffer). Only rank 0 builds a Tracker;
other DDP ranks get engine.NullTracker.

TensorBoard tags name the metric first (`acc/train`, `acc/test`,
`loss/train`, `loss/val`): the Time Series page groups cards by what comes
before the `/`, sorts the groups by name and opens the first two, so it
opens on accuracy and loss, each card overlaying every run. Everything else
sorts after them: `lr`, `model/` and `predictions/` pictures, `perf/`,
`samples/`, `weights/` histograms.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time

from rich.console import Console

from trainer.core import display, distributed, streams

log = logging.getLogger("trainer.console")


# A run's single numbers, known once it ends (with a cross-validation's cv/mean and cv/std).
SINGLE_NUMBERS = ("best_epoch", "train_seconds")


def tag(key: str, per_step: bool = False) -> str:
    """The TensorBoard tag of a metrics.json key: train/acc -> acc/train,
    val/loss -> loss/val, epoch_seconds -> perf/epoch_seconds; the single
    numbers in one group: cv/mean -> results/cv_mean, best_epoch ->
    results/best_epoch. The training loss is logged per step (loss/train)
    and as the epoch's mean (loss/train_epoch).

    HParams reads a run's metrics only from scalar events (the last point of
    a tag), and Time Series charts every scalar event, so a single number is
    a one-point chart there too (trainer.report.hparams says why): all of
    them in `results`, a group that sorts after acc and loss (TensorBoard
    opens the first two groups) and that a tag filter leaves out
    (`^(?!results/)`); the per-epoch `perf` curves stay curves."""
    split, _, metric = key.partition("/")
    if not metric:
        return key if key == "lr" else f"results/{key}" if key in SINGLE_NUMBERS else f"perf/{key}"
    if split == "cv":  # a cross-validation's mean and std over its folds
        return f"results/cv_{metric}"
    if key == "train/loss" and not per_step:
        return "loss/train_epoch"
    return f"{metric}/{split}"


class _Console(Console):
    """rich's Console, but a reader that goes away (`trainer ... | head -3`)
    silences it instead of raising SystemExit(1), rich's default, which
    would end a run mid-training with its record left `running`."""

    def on_broken_pipe(self) -> None:
        del self._buffer[:]  # what could not be written: not again, to nobody
        self.quiet = True
        streams.silence(self.file)


def new_console(quiet: bool = False, width: int | None = None) -> Console:
    """Every console trainer prints on. soft_wrap: a line longer than the
    console stays one line, so a path or command in it is never broken and
    can be pasted back whole (a terminal wraps it for the eye only)."""
    return _Console(highlight=False, soft_wrap=True, quiet=quiet, width=width)


class Output:
    """The console: rich on a terminal, plain lines in a pipe or file (no
    escape codes, no wrapping of long lines), and every line logged.
    `brief` (a sweep's jobs): a few lines per job, not the whole story.
    Under torchrun only rank 0 speaks (every rank would say the same); a
    parallel sweep's job labels its lines (display.labelled), not its trainer.log."""

    def __init__(self, console: Console | None = None, quiet: bool = False, brief: bool = False):
        self.main = distributed.is_main()
        self.console = console or new_console(quiet=quiet or not self.main)
        self.brief = brief
        self._held: list[tuple[str, str | None]] | None = None

    def say(self, text: str, style: str | None = None) -> None:
        if self._held is not None:
            self._held.append((text, style))
        else:
            self.console.print(display.labelled(text), style=style, highlight=False, markup=False)
        log.info(text)

    @contextlib.contextmanager
    def held(self):
        """Lines said in this block wait for release(), and are dropped if it
        never comes: a run refused at its start says one line, its error,
        with no header before it."""
        self._held = []
        try:
            yield self
        finally:
            self._held = None

    def release(self) -> None:
        held, self._held = self._held or [], None
        for text, style in held:
            self.console.print(display.labelled(text), style=style, highlight=False, markup=False)

    def note(self, text: str) -> None:
        """For trainer.log only (the model printed in full, say)."""
        log.info(text)

    def show(self, renderable, plain: str | None = None) -> None:
        """A table or other rich object; the log gets it drawn as plain text."""
        drawn = plain if plain is not None else render_plain(renderable)
        if os.environ.get(display.JOB_LABEL):  # a parallel job's table: labelled line by line
            self.console.print(display.labelled(drawn), highlight=False, markup=False)
        else:
            self.console.print(renderable, soft_wrap=False)  # a table lays itself out to the width
        log.info(drawn)

    def warn(self, text: str) -> None:
        if self.main:
            streams.write(display.labelled(text), sys.stderr)
        log.warning(text)


def render_plain(renderable, width: int = 160) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, highlight=False, soft_wrap=False).print(renderable)
    return buffer.getvalue().rstrip("\n")


def wide_console(quiet: bool = False) -> Console:
    """A console for tables: a log or pipe gets 160 columns (or $COLUMNS)
    instead of rich's 80, which would squash the columns."""
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return new_console(quiet=quiet, width=wide)


class Progress:
    """A live bar on a terminal, redrawn by rich's own timer (4 times a
    second) from a step count the loop sets for free; the seed's
    `loss: ... [n/N]` lines at logging points otherwise (a sweep's jobs:
    in trainer.log only)."""

    def __init__(self, output: Output, epoch: int, epochs: int, total: int, start: int, batch_size: int):
        self.output, self.total, self.batch_size = output, total, batch_size
        self.label = f"epoch {epoch}/{epochs}"
        self.live = output.console.is_terminal and not output.brief
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
        line = f"{self.label}  loss: {loss:>7f}  [{step:>5d}/{self.total:>5d}]  {rate:,.0f} samples/s"
        if self.live:
            self.bar.update(self.task, completed=step, info=f"loss {display.significant(loss)}  {rate:,.0f} samples/s")
        elif self.output.brief:
            self.output.note(line)
        else:
            self.output.say(line)

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
        # The seed prints these before training; so does a single run.
        say = self.output.note if self.output.brief else self.output.say
        say(f"Shape of X [N, C, H, W]: {x.shape} {x.dtype}")
        say(f"Shape of y: {y.shape} {y.dtype}")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(tag(key, per_step=True), value, step)

    def log_epoch(self, row: dict, is_best: bool = False) -> None:
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step", "lr") and isinstance(value, (int, float)):
                    self.writer.add_scalar(tag(key), value, row["step"])
            self.writer.flush()
        parts = [f"epoch {row['epoch']:>3d}"]
        for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
            if key in row:
                parts.append(f"{key} {display.metric(key, row[key])}")
        parts.append(f"{display.duration(row['epoch_seconds'])}  {row['samples_per_second']:,.0f} samples/s")
        self.output.say("  ".join(parts) + ("  *" if is_best else ""))
        self.record.epoch(row, is_best)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
