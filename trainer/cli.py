"""`trainer`: compose the config, validate it, build the objects once, fit.

This is the only module that sees a DictConfig or calls
hydra.utils.instantiate; everything below it takes plain arguments.

    trainer                                    # the seed's quickstart
    trainer model=conv optimizer=adam lr=1e-3  # swap any group
    trainer -m optimizer=sgd,adam,rmsprop      # a sweep
    trainer resume=outputs/runs/<run>          # continue a run where it stopped
"""
from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainer import config as schema
from trainer.errors import UserError, first_line
from trainer.process import process_start_time
from trainer.validate import validate

log = logging.getLogger("trainer")
EXIT_FAILED = 1

schema.register()
# A random suffix for run and sweep folders: two runs started in the same
# second (a sweep on several machines, a script) never share a directory.
# Cached, so every place that resolves it in this process sees one value.
OmegaConf.register_new_resolver("trainer_unique", lambda kind="run": secrets.token_hex(3), use_cache=True)
# `device=${trainer_gpu:}`: parallel sweep jobs on one machine each take a GPU,
# cuda:(job number % visible GPUs). See docs/scaling.md.
OmegaConf.register_new_resolver("trainer_gpu", lambda num=None: _job_gpu(num))


def _job_gpu(num):
    from trainer.distributed import job_gpu

    return job_gpu(num)


# --------------------------------------------------------------------- entry
@hydra.main(version_base=None, config_path="conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """One job. Returns the monitored metric (what an Optuna sweep maximises).

    A failure is recorded in the job's metrics.json; a single run then exits
    non-zero with one line, a multirun job returns the worst value (-inf, or
    +inf for early_stopping.mode=min) so the sweep goes on. Not NaN: Optuna
    2.10 refuses a NaN and hydra-optuna-sweeper 1.3 then ends the whole search.
    """
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    status, error, value, exit_code = "completed", None, float("nan"), 0
    record = None
    # As typed, unresolved: iterating the ListConfig would resolve the `${lr}` in `optimizer.lr=${lr}`.
    overrides = OmegaConf.to_container(hc.overrides.task, resolve=False)
    _stop_on_sigterm_at_startup()
    try:
        settings = validate(cfg)
        record = _record(cfg, run_dir, overrides, hc.runtime.choices)
        value = train(cfg, settings, run_dir, record)
    except _Interrupted as stop:
        status, error, exit_code = "interrupted", str(stop), 128 + stop.signum
    except UserError as e:
        from trainer.engine import Diverged

        status = "diverged" if isinstance(e, Diverged) else "failed"
        error, exit_code = str(e), EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C before the training loop took over SIGINT
        status, error, exit_code = "interrupted", "stopped by SIGINT before training started", 128 + signal.SIGINT
    except Exception as e:
        status, error, exit_code = "failed", _unexpected(e, run_dir), EXIT_FAILED
    if record is None and _is_rank0():
        record = _bare_record(cfg, run_dir, overrides, hc.runtime.choices)
    if record is not None and status != "completed":
        try:
            record.update(status=status, error=error)
        except OSError:
            pass  # a full disk: the line below still says what happened
    if status != "completed":
        _close_tensorboard(cfg, run_dir, record, status, multirun)
        if _is_rank0() or status != "interrupted":  # torchrun: rank 0 alone says where to resume
            print(f"trainer: {'error' if status == 'failed' else status}: {error}", file=sys.stderr)
        if status == "interrupted" or not multirun:
            sys.exit(exit_code)
    return value if not math.isnan(value) else _worst(cfg)


def main() -> None:
    """Console script: Hydra's entry point with one-line errors and resume."""
    # Progress lines reach a pipe or log file as they happen, not in blocks.
    sys.stdout.reconfigure(line_buffering=True)
    _install_error_reporter()
    try:
        sys.argv = [sys.argv[0], *_expand_resume(sys.argv[1:])]
    except UserError as e:
        print(f"trainer: error: {e}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    if os.environ.get("RANK", "0") != "0":
        # torchrun: only rank 0 writes outputs; the others get a scratch dir.
        import tempfile

        sys.argv += [f"hydra.run.dir={tempfile.mkdtemp(prefix='trainer-rank')}", "hydra.output_subdir=null"]
    run()


# ------------------------------------------------------------------ training
class _Interrupted(Exception):
    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def train(cfg: DictConfig, settings, run_dir: Path, record) -> float:
    """Build everything from the config, once, and fit. Returns the monitored metric."""
    import torch

    from trainer import checkpoint, data, distributed, schedules
    from trainer.engine import EarlyStopping, Interrupted, NullTracker, Trainer
    from trainer.models import parameter_count
    from trainer.pipeline import DeviceBatches, LoaderBatches
    from trainer.runtime import pick_device, seed_everything, set_threads

    loss_fn = build(cfg.loss, "loss")  # before any data: some losses refuse a classifier
    device = pick_device(cfg.device)
    if record is not None:
        record.data.update(device=str(device), device_name=_device_name(device))
    set_threads(cfg.threads)
    seed_everything(cfg.seed, cfg.deterministic)
    distributed.setup(device)
    rank, world = distributed.rank(), distributed.world_size()
    main_rank = rank == 0
    if world > cfg.batch_size:
        raise UserError(f"batch_size={cfg.batch_size} is the global batch, split over {world} processes; "
                        f"make it at least {world}")

    resume = cfg.resume
    if resume == "auto":
        # A requeued job reruns in its own folder: continue from its last
        # checkpoint if it has one, else start fresh. Rank 0 decides (the other
        # ranks write into scratch folders).
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = distributed.broadcast_object(str(last) if main_rank and last.is_file() else None)
    resume_state = None
    if resume:
        resume_state = checkpoint.load(resume)

    tracker: Any = NullTracker()
    if main_rank:
        from trainer.tracking import Tracker

        tracker = Tracker(run_dir, tensorboard=cfg.tracking.tensorboard, batch_size=cfg.batch_size, record=record,
                          purge_step=resume_state["position"]["global_step"] + 1 if resume_state else None)

    # ---- data: decoded once; on the device for pipeline=device
    info = data.DATASETS[cfg.data.name]
    data.prepare(cfg.data.name, cfg.data.root, cfg.data.search_paths, download=cfg.data.download,
                 verify=cfg.data.verify, log=tracker.message if main_rank else (lambda *_: None))
    train_x, train_y = data.load(cfg.data.name, cfg.data.root, train=True)
    test_x, test_y = data.load(cfg.data.name, cfg.data.root, train=False)
    if cfg.data.subset:
        train_x, train_y = train_x[: cfg.data.subset], train_y[: cfg.data.subset]
    if cfg.data.test_subset:
        test_x, test_y = test_x[: cfg.data.test_subset], test_y[: cfg.data.test_subset]
    splits = data.split_validation(train_x, train_y, cfg.data.val_split, seed=cfg.seed)

    transform = build(_transform_cfg(cfg), "transform")
    eval_bs = cfg.train.eval_batch_size
    if cfg.pipeline == "device":
        def batches(x, y, bs, train, shard=True):
            return DeviceBatches(x.to(device), y.to(device), bs, transform, shuffle=train and cfg.train.shuffle,
                                 seed=cfg.seed, train=train, drop_last=train and cfg.train.drop_last,
                                 rank=rank if shard else 0, world_size=world if shard else 1)
    else:
        def batches(x, y, bs, train, shard=True):
            dataset = data.TensorImages(x, y, transform.torchvision(train=train))
            return LoaderBatches(dataset, bs, device, shuffle=train and cfg.train.shuffle, seed=cfg.seed,
                                 num_workers=cfg.loader.num_workers, pin_memory=cfg.loader.pin_memory,
                                 drop_last=train and cfg.train.drop_last, rank=rank if shard else 0,
                                 world_size=world if shard else 1)
    train_batches = batches(*splits.train, cfg.batch_size, True)
    eval_batches = {"test": batches(test_x, test_y, eval_bs, False)}
    if splits.val is not None:
        eval_batches["val"] = batches(*splits.val, eval_bs, False)

    # ---- model, built right after seeding (as the quickstart does), then loss and optimizer
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, "model")
    n_params = parameter_count(model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build(cfg.optimizer, "optimizer", params=model.parameters(), **settings.optimizer_kwargs)
    sched_cfg = OmegaConf.to_container(cfg.scheduler)
    scheduler, interval = schedules.build(sched_cfg.pop("name"), optimizer, lr=cfg.lr, epochs=cfg.epochs,
                                          steps_per_epoch=len(train_batches), **sched_cfg)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    stop = _StopFlag(record)
    trainer = Trainer(
        model=train_model, loss_fn=loss_fn, optimizer=optimizer, train_batches=train_batches,
        eval_batches=eval_batches, device=device, epochs=cfg.epochs, scheduler=scheduler,
        scheduler_interval=interval, tracker=tracker,
        early_stopping=EarlyStopping(settings.monitor, cfg.early_stopping.mode, cfg.early_stopping.patience,
                                     cfg.early_stopping.min_delta),
        checkpoint_dir=_checkpoint_dir(run_dir) if main_rank else None,
        checkpoint_every_n_steps=cfg.checkpoint.every_n_steps, save_best=cfg.checkpoint.save_best,
        log_every_n_steps=cfg.train.log_every_n_steps, precision=cfg.precision, grad_clip=cfg.train.grad_clip,
        nan_policy=cfg.train.nan_policy, max_skipped_batches=cfg.train.max_skipped_batches,
        stop_requested=stop, extra_state={"config": OmegaConf.to_container(cfg, resolve=True)},
    )
    if resume_state is not None:
        try:
            trainer.load_state_dict(resume_state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"checkpoint {resume} does not fit this config ({first_line(e)}); "
                            "resume with the run's own settings") from e
        tracker.message(f"Resuming {resume}: epoch {trainer.position.epoch}, step {trainer.position.step}")

    if main_rank:
        from trainer.dashboards import Dashboards

        model_summary = f"{model}\nParameters: {n_params:,}"
        tracker.start(config_yaml=OmegaConf.to_yaml(cfg), model_summary=model_summary,
                      hparams=record.data["hparams"], device_line=_device_line(device, world))
        trainer.tracker = tracker
        dashboards = Dashboards(tracker.writer, cfg.tracking.images_every_n_epochs,
                                cfg.tracking.histograms_every_n_epochs, info.classes)
    x0, y0 = next(iter(train_batches.epoch(trainer.position.epoch)))
    tracker.first_batch(x0, y0)
    if main_rank:
        dashboards.start(model, x0, y0, graph=cfg.tracking.graph and not cfg.compile)
        # Under DDP eval_batches["test"] is rank 0's share: the images cover the whole split.
        dash_test = batches(test_x, test_y, eval_bs, False, shard=False) if world > 1 else eval_batches["test"]
        trainer.on_epoch_end = lambda epoch, step: dashboards.epoch(epoch, model, dash_test, x0, step)

    t_start = time.time()
    stop.install()
    try:
        final = trainer.fit()
    except Interrupted as e:
        raise _Interrupted(e.signum, f"stopped by {signal.Signals(e.signum).name} at epoch {trainer.position.epoch}, "
                                     f"step {trainer.position.step}; checkpoint saved, continue with resume={run_dir}")
    finally:
        stop.uninstall()
        if main_rank:
            record.data["timing"].update(_timing(trainer, t_start, cfg.compile))
            record.data["history"] = trainer.history
            failing = sys.exc_info()[0] is not None
            try:
                record.write()
            except OSError:
                # Already failing (say, a checkpoint on a full disk): that
                # error is the one to report, not this consequence of it.
                if not failing:
                    raise
    best = {"epoch": trainer.early_stopping.best_epoch, settings.monitor: trainer.early_stopping.best}
    if trainer.early_stopping.best_epoch:
        best.update({k: v for k, v in trainer.history[trainer.early_stopping.best_epoch - 1].items() if "/" in k})
    final["best_epoch"] = best["epoch"]
    if main_rank:
        record.update(status="completed", final=final, best=best)
        tracker.finish("completed", final, best)
        tracker.close()
        tracker.message(f"Outputs in {run_dir} (tensorboard --logdir {run_dir.parent})")
    distributed.teardown()
    value = best.get(settings.monitor)
    return float(value) if value is not None else float("nan")


def _stop_on_sigterm_at_startup() -> None:
    """Before the loop takes over SIGTERM (it then finishes the step and
    saves), there is nothing to save: stop now, but as `interrupted` with
    exit 143 and a metrics.json that says so, like Ctrl-C."""
    def handle(signum, frame):
        raise _Interrupted(signum, f"stopped by {signal.Signals(signum).name} before training started")

    try:
        signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread (an in-process launcher): keep the default
        pass


class _StopFlag:
    """SIGINT/SIGTERM: the first asks the loop to stop after this step (and
    save); a second Ctrl-C exits at once."""

    def __init__(self, record):
        self.signum = 0
        self.record = record
        self.previous: dict[int, Any] = {}

    def __call__(self) -> int:
        return self.signum

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        if self.signum:
            return  # stopping: a second signal during the clean-up must still exit at once
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum:
            if self.record is not None:
                self.record.update(status="interrupted", error=f"stopped at once by a second {signal.Signals(signum).name}; "
                                   "the last checkpoint is from before it")
            print(f"\ntrainer: stopped at once by a second {signal.Signals(signum).name}", file=sys.stderr)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\ntrainer: {signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr)


# ------------------------------------------------------------------- helpers
def build(node: DictConfig, group: str, **kwargs):
    """hydra.utils.instantiate, with failures as one line naming the group."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        reason = first_line(cause) if cause is not None else first_line(e)
        raise UserError(f"could not build {group} ({node.get('_target_')}): {reason}; check the {group}.* values") from e


def _transform_cfg(cfg: DictConfig) -> DictConfig:
    """`transform.hflip: auto` means flip only datasets whose classes survive it."""
    t = OmegaConf.to_container(cfg.transform)
    if t.get("hflip") == "auto":
        t["hflip"] = 0.5 if cfg.data.hflip_ok else 0.0
    return OmegaConf.create(t)


def _checkpoint_dir(run_dir: Path) -> Path:
    folder = run_dir / "checkpoints"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {e.strerror}; choose a writable output folder with hydra.run.dir=...") from e
    return folder


def _hparams(cfg: DictConfig, choices: dict, overrides: list[str]) -> dict:
    """What a sweep's HParams view compares: the group choices and the main knobs."""
    hp: dict[str, Any] = {g: choices.get(g) for g in ("data", "model", "transform", "loss", "optimizer", "scheduler")}
    hp["experiment"] = choices.get("experiment") or "none"
    for key in ("lr", "batch_size", "epochs", "seed", "precision", "pipeline"):
        hp[key] = cfg[key]
    for key in ("weight_decay", "momentum"):
        if key in cfg.optimizer:
            hp[f"optimizer.{key}"] = cfg.optimizer[key]
    for key in ("dropout", "hidden", "channels"):
        if key in cfg.model:
            value = cfg.model[key]
            hp[f"model.{key}"] = value if isinstance(value, (int, float)) else str(list(value))
    if "label_smoothing" in cfg.loss:
        hp["loss.label_smoothing"] = cfg.loss.label_smoothing
    hp["overrides"] = " ".join(o for o in overrides if not o.startswith("resume=")) or "(defaults)"
    return hp


def _record(cfg: DictConfig, run_dir: Path, overrides: list[str], choices: dict):
    if not _is_rank0():
        return None
    from trainer.tracking import RunRecord

    _ensure_dir(run_dir)
    record = RunRecord(run_dir / "metrics.json", overrides=overrides, hparams=_hparams(cfg, choices, overrides),
                       monitor=cfg.early_stopping.monitor, mode=cfg.early_stopping.mode, device=str(cfg.device))
    if cfg.resume and (cfg.resume != "auto" or (run_dir / "checkpoints" / "last.ckpt").is_file()):
        record.load_previous()
    record.write()
    return record


def _bare_record(cfg, run_dir: Path, overrides: list[str], choices: dict):
    """A metrics.json for a job that failed before it could build its record."""
    from trainer.tracking import RunRecord

    try:  # the hparams, when the config allows: a sweep's HParams view then lists the failed job
        hparams = _hparams(cfg, choices, overrides)
    except Exception:
        hparams = {}
    try:
        _ensure_dir(run_dir)
        return RunRecord(run_dir / "metrics.json", overrides=overrides, hparams=hparams, monitor="val/acc", mode="max",
                         device=str(cfg.get("device", "")))
    except (UserError, OSError):
        return None


def _close_tensorboard(cfg, run_dir: Path, record, status: str, multirun: bool) -> None:
    """A job that stopped part-way: flush its TensorBoard run and mark it failed.
    In a sweep, a job that failed before it had a run (a bad value) gets one
    with its hparams, so `tensorboard --logdir <sweep>` lists every job."""
    from trainer import tracking

    try:
        if tracking.close_open_runs(status) or not multirun or status == "interrupted" \
                or record is None or not record.data["hparams"]:
            return
        if OmegaConf.select(cfg, "tracking.tensorboard", default=True):
            tracking.write_failed_run(run_dir, record.data["hparams"])
    except Exception as e:  # never hide the job's own error behind a TensorBoard one
        print(f"trainer: warning: could not close the TensorBoard run in {run_dir}: {first_line(e)}", file=sys.stderr)


def _worst(cfg) -> float:
    """The value a failed job reports to the sweeper: worse than any real one."""
    try:
        mode = OmegaConf.select(cfg, "early_stopping.mode", default="max")
    except Exception:
        mode = "max"
    return float("inf") if mode == "min" else float("-inf")


def _ensure_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output folder {run_dir} is not writable ({e.strerror}); "
                        "choose another with hydra.run.dir=... (or hydra.sweep.dir=... for -m)") from e


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _timing(trainer, t_start: float, compiled: bool) -> dict:
    timing = {"fit_seconds": time.time() - t_start}
    if trainer.first_step_time:
        timing["startup_seconds"] = trainer.first_step_time - process_start_time()
        timing["first_step_seconds"] = trainer.first_step_seconds
        if compiled:
            timing["compile_seconds"] = trainer.first_step_seconds
    return timing


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"


def _device_line(device, world: int) -> str:
    suffix = f", {world} processes (DDP)" if world > 1 else ""
    return f"Using {device} device ({_device_name(device)}{suffix})"


# A full disk, a quota, a folder made read-only: the machine's state, not a bug.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _unexpected(e: Exception, run_dir: Path) -> str:
    """The one line for an exception that is not a UserError."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        # Reads can fail with EACCES too, so the line says what failed rather than guessing "write".
        return (f"{e.strerror}: {e.filename or run_dir}; free some disk space or fix the permissions "
                "(or choose another output folder with hydra.run.dir=...)")
    # A bug: one line on the console, the traceback in trainer.log.
    log.error("".join(traceback.format_exception(e)))
    return f"internal error: {type(e).__name__}: {first_line(e)} (traceback in {run_dir / 'trainer.log'})"



# --------------------------------------------------------------------- resume
def _expand_resume(args: list[str]) -> list[str]:
    """`resume=<run dir or ckpt>` re-applies that run's own overrides and
    writes into its own directory, so the user never repeats a flag."""
    resume = [a for a in args if a.startswith("resume=")]
    if not resume or resume[-1] == "resume=auto":  # auto: resolved in train(), in the run's own folder
        return args
    import yaml

    from trainer import checkpoint

    ckpt = checkpoint.find(resume[-1].split("=", 1)[1])
    run_dir = checkpoint.run_dir_of(ckpt)
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir} has no .hydra/overrides.yaml, so its settings are unknown; "
                        "resume a run directory made by trainer")
    previous = yaml.safe_load(saved.read_text()) or []
    kept = [o for o in previous if not o.startswith(("resume=", "hydra.run.dir="))]
    extra = [a for a in args if not a.startswith("resume=")]
    return [*kept, *extra, f"resume={ckpt.resolve()}", f"hydra.run.dir={run_dir}"]


# --------------------------------------------------------------- hydra errors
def _install_error_reporter() -> None:
    """Hydra prints composition errors over several lines (and tracebacks for
    others); a user gets one line naming the key, the value and the fix."""
    from hydra._internal import utils as hydra_utils

    def run_and_report(func):
        try:
            return func()
        except Exception as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            from trainer.hydra_errors import describe

            print(f"trainer: error: {describe(e, sys.argv[1:])}", file=sys.stderr)
            sys.exit(EXIT_FAILED)

    hydra_utils.run_and_report = run_and_report
