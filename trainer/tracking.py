"""Where a run's numbers go: the console (rich), TensorBoard, metrics.json.

Only rank 0 builds a Tracker; other DDP ranks get engine.NullTracker.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trainer.files import atomic_write

# The numbers every run reports in HParams, so a sweep's table and parallel
# coordinates compare real outcomes (never a placeholder metric).
HPARAM_METRICS = ("test/acc", "test/loss", "val/acc", "val/loss", "train/loss", "best_epoch", "train_seconds")
# Trackers whose TensorBoard run is still open. A job that fails part-way
# never reaches close(); close_open_runs() flushes and closes them for it.
# Strong references: the failed job's frames are gone by then.
_OPEN: set[Tracker] = set()


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(_jsonable(data), indent=2, allow_nan=True) + "\n"
    atomic_write(path, lambda f: f.write(text))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


class RunRecord:
    """metrics.json: status, error, final and best metrics, per-epoch history, timing.

    Rewritten (atomically) at the start, after every epoch and at the end, so
    a sweep summary built from the files sees even a run that was killed.
    """

    def __init__(self, path: Path, *, overrides: list[str], hparams: dict, monitor: str, mode: str, device: str):
        self.path = Path(path)
        self.data: dict[str, Any] = {
            "status": "running",
            "error": None,
            "overrides": overrides,
            "hparams": hparams,
            "monitor": monitor,
            "mode": mode,
            "device": device,
            "final": {},
            "best": {},
            "history": [],
            "timing": {},
        }

    def load_previous(self) -> None:
        """On resume, keep the earlier timing entries (start-up of the first attempt)."""
        try:
            previous = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        self.data["timing"] = {**previous.get("timing", {}), **self.data["timing"]}
        self.data["resumed"] = previous.get("resumed", 0) + 1

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        write_json_atomic(self.path, self.data)


class _Progress:
    """A live bar on a terminal; the seed's `loss: ... [n/N]` lines otherwise."""

    def __init__(self, console: Console, epoch: int, epochs: int, total: int, start: int, batch_size: int):
        self.console, self.total, self.batch_size = console, total, batch_size
        self.label = f"epoch {epoch}/{epochs}"
        self.live = console.is_terminal
        self.t0, self.start = time.perf_counter(), start
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=start, info="")

    def update(self, step: int, loss: float) -> None:
        rate = (step - self.start) * self.batch_size / max(time.perf_counter() - self.t0, 1e-9)
        if self.live:
            self.bar.update(self.task, completed=step, info=f"loss {loss:.4f}  {rate:,.0f} samples/s")
        else:
            self.console.print(f"{self.label}  loss: {loss:>7f}  [{step:>5d}/{self.total:>5d}]  {rate:,.0f} samples/s",
                               highlight=False)

    def close(self) -> None:
        if self.live:
            self.bar.stop()
            self.live = False


class Tracker:
    """Console + TensorBoard for one run (rank 0)."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, purge_step: int | None = None,
                 batch_size: int = 64, console: Console | None = None, record: RunRecord | None = None):
        self.run_dir = Path(run_dir)
        # soft_wrap: log lines stay whole when the output is a file or a pipe.
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.batch_size = batch_size
        self.record = record
        self.writer = None
        self._header_written = False
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its last
            # checkpoint, so a resumed run has no duplicated steps.
            self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
            _OPEN.add(self)

    # ------------------------------------------------------------------ start
    def start(self, *, config_yaml: str, model_summary: str, hparams: dict, device_line: str) -> None:
        from rich.syntax import Syntax

        self.console.rule("[bold]trainer")
        self.console.print(Syntax(config_yaml.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
        self.console.print(model_summary, highlight=False)
        self.console.print(device_line)
        self.console.print(f"Outputs: {self.run_dir}")
        if self.writer is not None:
            self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)
            self.writer.add_text("model", "```\n" + model_summary + "\n```", 0)
            self._hparams_header(hparams)

    def _hparams_header(self, hparams: dict) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        exp, ssi, _ = hparams_summary(_hparam_values(hparams), {_metric_tag(m): 0.0 for m in HPARAM_METRICS})
        self.writer.file_writer.add_summary(exp)
        self.writer.file_writer.add_summary(ssi)
        self._header_written = True

    def first_batch(self, x, y) -> None:
        # The seed prints these before training; so do we.
        self.console.print(f"Shape of X [N, C, H, W]: {x.shape} {x.dtype}")
        self.console.print(f"Shape of y: {y.shape} {y.dtype}")

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def progress(self, epoch: int, epochs: int, total: int, start: int) -> _Progress:
        return _Progress(self.console, epoch, epochs, total, start, self.batch_size)

    # ------------------------------------------------------------- per step/epoch
    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)

    def log_epoch(self, row: dict, is_best: bool = False) -> None:
        epoch, step = row["epoch"], row["step"]
        if self.writer is not None:
            for key, value in row.items():
                if key in ("epoch", "step", "lr") or not isinstance(value, (int, float)):
                    continue
                tag = key if "/" in key else f"perf/{key}"
                # train/loss is already logged per step, at this step too: the
                # epoch mean gets its own tag, so the curve has one point a step.
                if tag == "train/loss":
                    tag = "train/loss_epoch"
                self.writer.add_scalar(tag, value, step)
            self.writer.add_scalar("epoch", epoch, step)
            self.writer.flush()
        parts = [f"epoch {epoch:>3d}"]
        for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
            if key in row:
                value = row[key]
                parts.append(f"{key} {100 * value:5.2f}%" if key.endswith("acc") else f"{key} {value:.4f}")
        parts.append(f"{row['epoch_seconds']:.2f}s  {row['samples_per_second']:,.0f} samples/s")
        self.console.print("  ".join(parts) + ("  *" if is_best else ""), highlight=False)
        if self.record is not None:
            self.record.data["history"].append(row)
            self.record.write()

    # ------------------------------------------------------------------ end
    def finish(self, status: str, final: dict, best: dict) -> None:
        if self.writer is not None:
            values = {**final, "best_epoch": best.get("epoch", 0)}
            for metric in HPARAM_METRICS:
                if isinstance(values.get(metric), (int, float)):
                    self.writer.add_scalar(_metric_tag(metric), values[metric], 0)
            # Session status: TensorBoard marks failed runs in the HParams table.
            self.writer.file_writer.add_summary(_session_end(status == "completed"))
            self.writer.flush()
        if final:
            table = Table(title=f"Run {status}")
            table.add_column("metric")
            table.add_column("value", justify="right")
            for key, value in final.items():
                if isinstance(value, float):
                    shown = f"{100 * value:.2f}%" if key.endswith("acc") else f"{value:.4f}"
                else:
                    shown = str(value)
                table.add_row(key, shown)
            self.console.print(table)

    def fail(self, status: str) -> None:
        """The job stopped without final metrics: keep what it logged (flush) and,
        unless it was only interrupted (resume continues the run), mark the
        session failed, so HParams lists the run, with its hparams, as failed."""
        if self.writer is not None and status != "interrupted":
            if not self._header_written and self.record is not None:
                self._hparams_header(self.record.data["hparams"])
            self.writer.file_writer.add_summary(_session_end(False))
        self.close()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        _OPEN.discard(self)


def close_open_runs(status: str) -> bool:
    """Fail and close every TensorBoard run a failed job left open; True if any."""
    trackers = list(_OPEN)
    for tracker in trackers:
        tracker.fail(status)
    return bool(trackers)


def write_failed_run(run_dir: Path, hparams: dict) -> None:
    """A TensorBoard run for a sweep job that failed before it had one (a bad
    value such as lr=-1): its hparams and a failed session, so the sweep's
    HParams table lists every job."""
    tracker = Tracker(run_dir, console=Console(quiet=True))
    tracker._hparams_header(hparams)
    tracker.fail("failed")


def _metric_tag(metric: str) -> str:
    return "final/" + metric.replace("/", "_")


def _hparam_values(hparams: dict) -> dict:
    out = {}
    for key, value in hparams.items():
        if isinstance(value, bool) or isinstance(value, (int, float, str)):
            out[key] = value
        elif value is None:
            out[key] = "none"
        else:
            out[key] = str(value)
    return out


def _session_end(ok: bool):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE,
                                          end_time_secs=time.time())
    content = plugin_data_pb2.HParamsPluginData(session_end_info=info, version=0).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content))
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])
