"""The run record: every file that says what a run is and what happened to it.

    metrics.json          status, error, overrides, hparams, kind, monitor, mode, eval_split, device, where
                          it belongs, history, best (so far), trained (epochs and seconds so far), final, timing
    .hydra/config.yaml    the config, resolved (no ${...} left)
    .hydra/overrides.yaml the overrides a plain `resume=<run>` re-applies
    .hydra/hydra.yaml     Hydra's own settings for the job
    trainer.log           the console output and Python logging; a traceback for a bug
    TensorBoard           the config and model as text, the final test numbers, and the HParams
                          session with the run's status (trainer.report.hparams)

One object writes them, at four moments: start (every check has passed),
epoch, finish and fail. Nothing is written before start, so a command that
fails before it (a refused resume, a bad checkpoint) leaves an existing run
exactly as it was; a job that fails before start in a fresh folder still
gets a record saying why, so a sweep lists it.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import logging.handlers
import math
import time
from pathlib import Path
from typing import Any

import yaml

from trainer.core.engine import direction, monitored
from trainer.core.files import atomic_write
from trainer.core.process import job_start_time
from trainer.report import figures, hparams
from trainer.report.tracking import tag
from trainer.runs.folder import KINDS, RunFolder, read_json, worst_value

log = logging.getLogger("trainer")
STATUSES = ("running", "completed", "failed", "diverged", "interrupted", "pruned")
# 2: metrics.json states kind, eval_split, best.value, the device used and where the run belongs;
# 3: `best` as the epochs go, and `trained` (epochs and their seconds so far);
# 4: `timing` adds up every session of a resumed run, and says how many (`sessions`).
FORMAT = 4
# Durations that add up over a resumed run's sessions: where all of its time went.
SUMMED_TIMES = ("startup_seconds", "fit_seconds", "final_eval_seconds", "pictures_seconds")


def read(run_dir: Path) -> dict | None:
    """A run folder's metrics.json in today's shape (older records upgraded),
    or None when it has none (or it is unreadable, or not a regular file)."""
    data = read_json(Path(run_dir) / "metrics.json")
    return upgrade(data, Path(run_dir)) if data is not None else None


def upgrade(data: dict, run_dir: Path) -> dict:
    """The facts a record of an older run left to be guessed, stated as a
    record of today states them: kind and where a fold or refit belongs,
    eval_split and the monitor as watched (val/acc meant test/acc without a
    validation split), the best epoch so far, how far it trained, the device
    without its description. The only place these are worked out."""
    if data.get("format") == FORMAT:
        return data
    data = dict(data)
    if data.get("format") != 3:
        data = _upgrade_to_3(data, run_dir)
    data["timing"] = _timing_of(data)
    data["format"] = FORMAT
    return data


def _upgrade_to_3(data: dict, run_dir: Path) -> dict:
    """A record from before format 3, as format 3 states it."""
    kind = _kind(data, run_dir)
    data.setdefault("kind", kind)
    if kind in ("fold", "refit"):
        fold = run_dir.name.removeprefix("fold_")
        data.setdefault("cv", {"dir": str(run_dir.parent), "fold": int(fold) if fold.isdigit() else None})
    epochs = _epochs(data.get("history"))
    monitor = data.get("monitor") if isinstance(data.get("monitor"), str) else None
    data.setdefault("eval_split", _eval_split(epochs, monitor or ""))
    data["monitor"] = monitored(monitor, data["eval_split"] == "val") if monitor else None
    data["best"] = _best(data, epochs)
    data.setdefault("trained", trained(epochs, _dict(data.get("final"))))
    device = str(data.get("device") or "")
    if " (" in device:
        data["device"], _, name = device.partition(" (")
        data.setdefault("device_name", name.rstrip(")"))
    return data


def _timing_of(data: dict) -> dict:
    """A record's timing with the number of sessions its times cover: before
    format 4, a resumed run's times were its last timed session's alone."""
    timing = dict(_dict(data.get("timing")))
    timing.setdefault("sessions", 1 if any(_finite(timing.get(key)) for key in SUMMED_TIMES) else 0)
    return timing


def _kind(data: dict, run_dir: Path) -> str:
    """run, cv, fold or refit, for a record that does not say: its HParams
    kind, else where it is (fold_2/ or refit/ inside a cross-validation)."""
    said = _dict(data.get("hparams")).get("kind")
    if said in KINDS:
        return said
    in_cv = (read_json(run_dir.parent / "metrics.json") or {}).get("monitor") == "cv/mean"
    if data.get("monitor") == "cv/mean":
        return "cv"
    if in_cv and (run_dir.name.startswith("fold_") or run_dir.name == "refit"):
        return "fold" if run_dir.name.startswith("fold_") else "refit"
    return "run"


def _epochs(history) -> list[dict]:
    """The rows of trained epochs (a cross-validation's rows are its folds)."""
    return [row for row in history if isinstance(row, dict) and "epoch" in row] if isinstance(history, list) else []


def _eval_split(epochs: list[dict], monitor: str) -> str | None:
    """Where the per-epoch evaluation ran: the split the epochs hold, else the monitor's."""
    for split in ("val", "test"):
        if any(key.startswith(f"{split}/") for row in epochs for key in row):
            return split
    return "val" if monitor.startswith(("val/", "cv/")) else "test" if monitor else None


def _best(data: dict, epochs: list[dict]) -> dict:
    """The record's best as stated, with its value; a run that never finished had none: its best epoch so far."""
    monitor, best = data["monitor"], dict(_dict(data.get("best")))
    if monitor and monitor not in best and data.get("status") != "completed":
        mode = data.get("mode") or direction(monitor)
        scored = [row for row in epochs if _finite(row.get(monitor))]
        if scored:
            return best_of((min if mode == "min" else max)(scored, key=lambda row: row[monitor]), monitor)
    if monitor and "value" not in best:
        best["value"] = best.get(monitor)
    return best


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_of(row: dict, monitor: str) -> dict:
    """The record's `best`: the best epoch's number, its metrics, and the monitored value."""
    return {"epoch": row["epoch"], **{k: v for k, v in row.items() if "/" in k}, "value": row.get(monitor)}


def trained(epochs: list[dict], final: dict | None = None) -> dict:
    """How far a run got: the epochs it trained and their seconds (from its
    final numbers where it has them: a cross-validation's are its folds')."""
    final = final or {}
    seconds = [row.get("epoch_seconds") for row in epochs]
    counted = {"epochs": epochs[-1]["epoch"] if epochs else None,
               "train_seconds": sum(s for s in seconds if _finite(s)) if epochs else None}
    return {key: final.get(key, value) for key, value in counted.items()}


def sweep_value(data: dict) -> float:
    """What a job returns to its sweeper: its best monitored value, or the
    worst possible one by its mode when it did not complete. Never NaN."""
    value = (data.get("best") or {}).get("value")
    if data.get("status") != "completed" or not isinstance(value, (int, float)) or math.isnan(value):
        return worst_value(data.get("mode"))
    return float(value)


class _LogFile(logging.FileHandler):
    """trainer.log. A line it cannot write (the disk is full, the folder
    read-only) is dropped quietly: logging's own handleError would print a
    traceback on the console, and the run's one error line already says
    what happened (the write that hit the full disk fails in the loop too)."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed = True

    def close(self) -> None:
        try:
            super().close()  # flushes what is left
        except OSError:
            self.failed = True


class LogBuffer:
    """Python logging of this job (the console's lines included), held in
    memory until the record knows whether it may write trainer.log."""

    def __init__(self):
        self.memory = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
        self.memory.setFormatter(logging.Formatter("%(message)s"))
        self.file: logging.Handler | None = None
        root = logging.getLogger()
        root.addHandler(self.memory)
        log.setLevel(logging.INFO)

    def note(self, line: str) -> None:
        """A line for trainer.log only (the console says it its own way)."""
        self.memory.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO, "levelname": "INFO"}))

    def to_file(self, path: Path) -> None:
        """From now on (and everything so far) into `path`, appended."""
        self.file = _LogFile(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(message)s"))
        self.memory.setTarget(self.file)
        self.memory.flush()
        self.memory.capacity = 0  # pass every later line straight on

    def close(self) -> None:
        logging.getLogger().removeHandler(self.memory)
        if self.file is None:
            self.memory.buffer.clear()  # nowhere it may go: a refused start
        self.memory.close()
        if self.file is not None:
            self.file.close()


class RunRecord:
    """The run's files (see the module docstring). `main=False` (DDP ranks
    other than 0) keeps everything in memory."""

    def __init__(self, folder: RunFolder, *, overrides: list[str], hparams: dict, config: dict,
                 hydra_yaml: str | None = None, session: bool = True, belongs: dict | None = None,
                 record_refusals: bool = True):
        self.folder = folder
        # A job refused before it started leaves a record saying why (a sweep lists it), or nothing at all
        # (a single run: its folder is removed).
        self.record_refusals = record_refusals
        self.run_dir = folder.path
        self.path = folder.record_path
        self.config, self.hydra_yaml, self.main = config, hydra_yaml, folder.main
        self.session = session  # an HParams session of its own (not a cross-validation's fold)
        self.logs = LogBuffer()
        self.previous = read(self.run_dir)  # a run already here: never touched before start
        self.started = False
        self.writer = None  # TensorBoard, once started
        assert folder.kind in KINDS, folder.kind
        self.data: dict[str, Any] = {
            "format": FORMAT, "kind": folder.kind, "status": "running", "error": None, "overrides": overrides,
            "hparams": hparams, "monitor": None, "mode": None, "eval_split": None, "device": None,
            "device_name": None, "sweep": None, "cv": None, **(belongs or {}),
            "final": {}, "best": {}, "trained": trained([]), "history": [], "timing": {"sessions": 0},
        }
        self.earlier: dict[str, float] = {}  # a resumed run's times of its sessions before this one
        self.timed = False  # whether this session has noted its times

    # ------------------------------------------------------------- moments
    def start(self, *, monitor: str, mode: str, eval_split: str, device: str, device_name: str | None,
              history: list[dict], best: dict, resumed: bool, tensorboard: bool, purge_step: int | None,
              model_summary: str) -> None:
        """Every check has passed: from here on the run's files are ours to write.
        A resumed run starts with the history its checkpoint holds, and its best epoch so far."""
        self.data.update(monitor=monitor, mode=mode, eval_split=eval_split, device=device, device_name=device_name,
                         history=list(history), best=dict(best), trained=trained(_epochs(history)))
        if resumed and self.previous is not None:  # this session's times add to the earlier sessions'
            self.data["timing"] = dict(self.previous.get("timing") or {})
            self.earlier = {k: v for k, v in self.data["timing"].items() if k in SUMMED_TIMES and _finite(v)}
            self.data["resumed"] = int(self.previous.get("resumed") or 0) + 1
        self.data["timing"]["started_at"] = _now(job_start_time())  # this attempt's start
        self.started = True
        if not self.main:
            return
        self.folder.claim()
        self._write_hydra_files()
        self.logs.to_file(self.run_dir / "trainer.log")
        self.write()
        if tensorboard:
            self._open_tensorboard(purge_step, model_summary)

    def epoch(self, row: dict, is_best: bool = False) -> None:
        """One more row of the history: an epoch (the best so far, when `is_best`), or a cross-validation's fold."""
        self.data["history"].append(row)
        if "epoch" in row:
            self.data["trained"] = trained(_epochs(self.data["history"]))
            if is_best:
                self.data["best"] = best_of(row, self.data["monitor"])
        self.write()

    def note_device(self, device: str, device_name: str | None) -> None:
        """The device the run trained on, once known (a cross-validation's
        config may say `auto`: its folds say which); written with the next moment."""
        self.data.update(device=device, device_name=device_name)

    def note_timing(self, timing: dict) -> None:
        """How long this session's parts took, added to the earlier sessions'
        of a resumed run (a session killed before this point left none);
        written with the next moment."""
        done = self.data["timing"]
        if not self.timed:  # this session counts once, however often it notes its times
            done["sessions"], self.timed = int(done.get("sessions") or 0) + 1, True
        done.update({k: self.earlier.get(k, 0.0) + v if k in SUMMED_TIMES and _finite(v) else v
                     for k, v in timing.items()}, ended_at=_now())

    def finish(self, final: dict, best: dict) -> None:
        """Every other file first, metrics.json's `completed` last: a reader
        that sees a run completed sees all of its files complete."""
        self.data.update(final=final, best={**best, "value": best.get(self.data["monitor"])},
                         trained=trained(_epochs(self.data["history"]), final))
        if self.writer is not None:
            self.writer.flush()  # an error of TensorBoard's writer thread (a full disk) fails the run here, in one line
            self._final_scalars(final)
            if self.session:
                hparams.write_session(self.run_dir, self.data["hparams"], "completed", None)
        t0 = time.perf_counter()
        self._draw_curves()
        timing = self.data["timing"]
        timing["pictures_seconds"] = timing.get("pictures_seconds", 0.0) + time.perf_counter() - t0
        self.close_tensorboard()
        self.data.update(status="completed", error=None)
        self.write()
        self.close()

    def _final_scalars(self, final: dict) -> None:
        """The last points of the curves HParams reads: the test set (logged
        per epoch only without a validation split), the best epoch, the time."""
        history = self.data["history"]
        step = history[-1].get("step", 0) if history else 0
        logged = set(history[-1]) if history else set()
        for key in hparams.METRICS:
            if key not in logged and isinstance(final.get(key), (int, float)) and not isinstance(final[key], bool):
                self.writer.add_scalar(tag(key), final[key], step)
        self.writer.add_text("results", hparams.results_markdown(final), step)  # the single numbers, as text

    def fail(self, status: str, error: str, traceback_text: str | None = None, final: dict | None = None,
             key: str | None = None) -> None:
        """The job stopped without final metrics (or with some: a
        cross-validation with a failed fold). A record that never started
        writes only into a folder that held no run before (a sweep job that
        failed on a bad value still shows up, with its hparams and why)."""
        self.logs.note(f"{status}: {error}")  # the line the console ends with
        self.data["error_key"] = key  # the config key a refusal names: its value is left out of HParams
        if traceback_text:
            log.error(traceback_text)
        fresh = not self.started and self.previous is None and self.record_refusals and self.folder.usable()
        if self.started or fresh:
            if final:
                self.data.update(final=final, trained=trained(_epochs(self.data["history"]), final))
            try:
                if fresh and self.main:
                    self.folder.claim()
                    self._write_hydra_files()
                    self.logs.to_file(self.run_dir / "trainer.log")
                with contextlib.suppress(OSError):  # TensorBoard's files failing: the record still says why
                    self._draw_curves(status)
                    self._write_session(status, error, fresh)
                    self.close_tensorboard()
                self.data.update(status=status, error=error)  # the record last, as in finish()
                self.write()
            except OSError:
                pass  # a full disk: the console line still says what happened
        self.close()

    def write(self) -> None:
        self.folder.write_record(self.data)

    def _draw_curves(self, status: str | None = None) -> None:
        """curves.png: the epochs so far, loss and accuracy (a picture: never a reason to fail);
        a pruned run says so in its title."""
        history = [row for row in self.data["history"] if "epoch" in row]
        if not (self.main and history):
            return
        title = self.run_dir.name + (f" (pruned at epoch {history[-1]['epoch']})" if status == "pruned" else "")
        try:
            figures.save_png(figures.curves(history, title), self.run_dir / "curves.png")
        except Exception as e:  # noqa: BLE001
            log.warning(f"curves.png not drawn: {type(e).__name__}: {e}")

    def close_tensorboard(self) -> None:
        writer, self.writer = self.writer, None
        try:
            if writer is not None:
                writer.close()
        except OSError:
            pass  # a full disk: the error the run stopped with says so already

    def close(self) -> None:
        try:
            self.close_tensorboard()
        finally:
            self.logs.close()

    # --------------------------------------------------------------- parts
    def _write_hydra_files(self) -> None:
        folder = self.run_dir / ".hydra"
        folder.mkdir(parents=True, exist_ok=True)
        texts = {"config.yaml": _yaml(self.config), "overrides.yaml": _yaml(self.data["overrides"])}
        if self.hydra_yaml is not None:
            texts["hydra.yaml"] = self.hydra_yaml
        for name, text in texts.items():
            atomic_write(folder / name, lambda f, text=text: f.write(text))

    def _open_tensorboard(self, purge_step: int | None, model_summary: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its last
        # checkpoint, so a resumed run has no duplicated steps.
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self.writer.add_text("config", "```yaml\n" + _yaml(self.config) + "```", 0)
        if model_summary:
            self.writer.add_text("model", "```\n" + model_summary + "\n```", 0)

    def _write_session(self, status: str, error: str | None, fresh: bool) -> None:
        """The run's HParams session says how it ended, with its error as text;
        a job that failed before it had a TensorBoard run gets one too, so
        HParams lists every job of a sweep."""
        if not self.main or not self.config.get("tracking", {}).get("tensorboard", True):
            return
        if self.session and (self.writer is not None or (fresh and self.data["hparams"])):
            hparams.write_session(self.run_dir, self.data["hparams"], status, error, self.data.get("error_key"))


def _now(timestamp: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp) if timestamp is not None else datetime.datetime.now()
    return moment.astimezone().isoformat(timespec="milliseconds")


def _yaml(value) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
