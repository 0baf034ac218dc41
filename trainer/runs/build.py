"""From a validated config to finished objects, and the loop that fits them.

    run = build(config, run_dir, record, output, stop)   # every check, then the objects
    value = fit(run)                                     # train, test, finish the record

`build` checks everything that can be wrong before anything is written
(the job has checked the values: trainer.runs.job): the device, the checkpoint and which changes a resume may make,
the model, loss and optimizer (their constructors check their own
arguments), the data. The run record starts last, so a command that fails
before then leaves an existing run's files exactly as they were.

The factories below (`make_model`, `make_transform`, `make_loss`,
`load_data`, `make_batches`) also rebuild a trained model for trainer-eval
and trainer-predict, so training and using a model derive the splits, the
transform and the model the same way.
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.core import capture, data, display, distributed, process, runtime, schedules

from trainer.runs import resume
from trainer.runs.record import best_of
from trainer.core.config import (CVConfig, DataConfig, LossConfig, ModelConfig, OptimizerConfig, TrainerConfig,
                                 TorchvisionConfig, TransformConfig, as_dict, from_dict)
from trainer.report.dashboards import Dashboards
from trainer.core.engine import (Checkpointing, EarlyStopping, NullTracker, Safety, Schedule, Trainer, TrainStep,
                                 eval_split, monitored)
from trainer.core.errors import ArgumentError, CheckpointError, UserError, first_line
from trainer.core.models import parameter_count
from trainer.core.pipeline import DeviceBatches, LoaderBatches
from trainer.core.process import job_start_time
from trainer.report.tracking import Output, Tracker


# ---------------------------------------------------------------- factories
def make(node, group: str, **kwargs) -> Any:
    """Call the object a config node (a schema dataclass) names (`_target_`)
    with the node's other fields. A constructor that refuses its arguments
    becomes one line naming the key."""
    return call_target(dataclasses.asdict(node), group, **kwargs)


def call_target(fields: dict, group: str, **kwargs) -> Any:
    """Call what `fields["_target_"]` names with the other fields (a node
    outside the schema too: an Optuna sampler's settings)."""
    fields = dict(fields)
    target = str(fields.pop("_target_"))
    args = {k: v for k, v in fields.items() if not k.startswith("_")}
    module, _, name = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"{group}._target_={target} cannot be imported ({first_line(e)})") from e
    try:
        return factory(**args, **kwargs)
    except UserError:
        raise
    except ArgumentError as e:  # our constructors name the argument they refuse
        raise UserError(f"{group}.{e.argument}={e}", key=f"{group}.{e.argument}") from e
    except ValueError as e:
        raise UserError(f"could not build {group} ({target}): {first_line(e)}; check the {group}.* values") from e
    except TypeError as e:
        raise UserError(f"could not build {group} ({target}): {first_line(e)}; check the {group}.* values") from e


def make_model(node: ModelConfig, seed: int, load_weights: bool = True) -> nn.Module:
    """The model, built right after seeding, as the quickstart does: the same
    seed gives the same initial weights whatever else the run does.
    `load_weights=False`: a checkpoint is about to fill the weights, so a
    model that starts from pretrained or saved weights does not read them."""
    torch.manual_seed(seed)
    reads_weights = isinstance(node, TorchvisionConfig)  # trainer.core.vision_models: weights from a cache or a file
    return make(node, "model", **({"load_weights": False} if reads_weights and not load_weights else {}))


def make_transform(node: TransformConfig, dataset: str):
    """The batch transform; `hflip: auto` flips only datasets whose classes survive it."""
    if node.hflip == "auto":
        node = dataclasses.replace(node, hflip=0.5 if data.dataset_info(dataset).hflip_ok else 0.0)
    return make(node, "transform")


def make_loss(node: LossConfig) -> nn.Module:
    return make(node, "loss")


def make_optimizer(node: OptimizerConfig, model: nn.Module, lr: float,
                   for_graph: bool = False) -> torch.optim.Optimizer:
    """`for_graph`: fused, reading its lr from a tensor (capture.optimizer_arguments)."""
    params = trainable(model)  # a frozen backbone (model.freeze=true) is not the optimizer's
    if for_graph:
        device = params[0].device
        return make(node, "optimizer", params=params, **capture.optimizer_arguments(node._target_, lr, device))
    # foreach: one multi-tensor kernel per op instead of a loop over
    # parameters (same numbers, fewer dispatches); every optimizer here has it.
    return make(node, "optimizer", params=params, lr=lr, foreach=True)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def load_data(d: DataConfig, seed: int, log=print, root: str | Path | None = None,
              cv: CVConfig | None = None) -> data.Splits:
    """Acquire (local copies first, checksums) and split the dataset of a
    data config, on the fold a cross-validation config names (`root`: in
    place of the config's own data.root)."""
    root = root if root is not None else d.root
    data.prepare(d.name, root, d.search_paths, download=d.download, verify=d.verify, log=log)
    return data.load_splits(d.name, root, subset=d.subset, test_subset=d.test_subset, val_split=float(d.val_split),
                            seed=seed, folds=cv.folds if cv else 0, fold=cv.fold if cv else 0)


def make_batches(pipeline: str, split, batch_size: int, transform, device: torch.device, *, train: bool,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool = False):
    images, labels = split
    if pipeline == "device":
        return DeviceBatches(images.to(device), labels.to(device), batch_size, transform, shuffle=shuffle and train,
                             seed=seed, train=train, drop_last=drop_last and train, rank=rank, world_size=world_size)
    return LoaderBatches(images, labels, batch_size, transform, device, shuffle=shuffle and train, seed=seed,
                         train=train, num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last and train,
                         rank=rank, world_size=world_size)


def saved_config(ckpt: Path, state: dict) -> TrainerConfig:
    """The typed config a checkpoint was trained with, once (config.from_dict:
    an older checkpoint's moved `_target_`s are upgraded)."""
    if not isinstance(state.get("config"), dict) or not isinstance(state["config"].get("data"), dict):
        raise CheckpointError(f"checkpoint {ckpt} holds no run config, so its model cannot be rebuilt; "
                              "use a checkpoint written by trainer")
    try:
        return from_dict(state["config"])
    except UserError as e:
        raise CheckpointError(f"checkpoint {ckpt}: {e}") from e


# -------------------------------------------------------------------- build
@dataclass
class Parts:
    """What a config builds before any data is touched; each constructor checks its own arguments."""

    model: nn.Module
    loss_fn: nn.Module
    transform: Any
    optimizer: torch.optim.Optimizer


def make_parts(config: TrainerConfig, device: torch.device, for_graph: bool = False,
               load_weights: bool = True) -> Parts:
    model = make_model(config.model, config.seed, load_weights).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Parts(model, make_loss(config.loss), make_transform(config.transform, config.data.name),
                 make_optimizer(config.optimizer, model, config.lr, for_graph))


def plan_capture(config: TrainerConfig, device: torch.device, world: int) -> tuple[bool, str]:
    """Whether the run captures its step in a CUDA graph, or why it trains eagerly."""
    return capture.plan(config.cuda_graph, device, precision=config.precision, nan_policy=config.train.nan_policy,
                        pipeline=config.pipeline, world_size=world, compile=config.compile,
                        optimizer=config.optimizer._target_,
                        changes_momentum=schedules.changes_momentum(config.scheduler.name,
                                                                    config.scheduler.cycle_momentum))


def check(config: TrainerConfig, log=print) -> None:
    """What build() would refuse `config` for before training, found without
    a run folder: the device, the model, loss, transform and optimizer
    constructors, the data (its files, subsets and folds). A cross-validation
    asks it once before it starts: a refusal is then its one line, not the
    same failure in every fold after its header."""
    device = runtime.pick_device(config.device)
    graph, _ = plan_capture(config, device, world=1)
    make_parts(config, device, for_graph=graph, load_weights=False)  # weights: each fold loads (or downloads) them
    load_data(config.data, config.seed, log=log, cv=dataclasses.replace(config.cv, fold=1))


@dataclass
class Run:
    """Everything a run needs, finished: fit() only trains it."""

    config: TrainerConfig
    run_dir: Path
    device: torch.device
    model: nn.Module
    trainer: Trainer
    record: Any
    output: Output
    tracker: Any
    dashboards: Dashboards | None
    monitor: str
    resumed_from: Path | None
    changes: dict
    step_note: str = ""  # how the training step runs, when there is something to say


def build(config: TrainerConfig, run_dir: Path, record, output: Output, stop, epoch_end=None) -> Run:
    """Every check first, then the objects; the record starts last."""
    device, rank, world = _setup(config)
    saved = resume.load(config.resume, run_dir)
    resume.check_rewind(saved, run_dir, record.previous)
    changes = resume.check_changes(as_dict(saved_config(*saved)), as_dict(config), saved[1]["position"],
                                   run_dir if config.resume == "auto" else None) if saved else {}
    graph, eager_because = plan_capture(config, device, world)
    parts = make_parts(config, device, for_graph=graph, load_weights=saved is None)
    splits = load_data(config.data, config.seed, log=output.say, cv=config.cv)
    batches = _batches(config, splits, parts.transform, device, rank, world)
    scheduler, interval = make_scheduler(config, parts.optimizer, len(batches["train"]))
    main = rank == 0
    monitor = monitored(config.early_stopping.monitor, splits.val is not None)
    tracker = Tracker(output, record, config.batch_size) if main else NullTracker()
    dashboards = _dashboards(config, record, parts.model, batches["pictures"]) if main else None
    step = TrainStep(_wrap(parts.model, device, world, config.compile), parts.loss_fn, parts.optimizer, device,
                     config.precision, config.train.grad_clip)
    es = config.early_stopping
    early_stopping = EarlyStopping(monitor, es.mode, es.patience, es.min_delta)
    trainer = Trainer(
        step=step, train_batches=batches["train"], eval_batches=batches["eval"],
        schedule=Schedule(config.epochs, scheduler, interval, early_stopping, config.train.log_every_n_steps),
        checkpointing=Checkpointing(run_dir / "checkpoints" if main else None, config.checkpoint.every_n_steps,
                                    config.checkpoint.save_best, extra_state={"config": as_dict(config)}),
        safety=Safety(config.train.nan_policy, config.train.max_skipped_batches, stop),
        tracker=tracker, on_epoch_end=_after_epoch(dashboards, epoch_end, monitor, lambda: trainer.history),
        # A graph is captured only where the step runs unwrapped (one process, no torch.compile).
        static_step=capture.StaticStep(step, batch_size=config.batch_size, capture=True) if graph else None,
    )
    if saved:
        _restore(trainer, saved, changes, config.lr)
    record.start(monitor=monitor, mode=es.mode, eval_split=eval_split(splits.val is not None), device=str(device),
                 device_name=runtime.device_name(device), history=trainer.history, best=_best(trainer, monitor),
                 resumed=saved is not None, tensorboard=config.tracking.tensorboard and main,
                 purge_step=trainer.position.global_step + 1 if saved else None,
                 model_summary=f"{parts.model}\nParameters: {parameter_count(parts.model):,}")
    if main:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
    step_note = (f"Whole training step in one CUDA graph, recorded after {capture.StaticStep.WARMUP_STEPS} "
                 "warm-up steps" if graph else eager_because)
    return Run(config, run_dir, device, parts.model, trainer, record, output, tracker, dashboards, monitor,
               saved[0] if saved else None, changes, step_note)


def _best(trainer: Trainer, monitor: str) -> dict:
    """The best epoch so far as the record states it ({} before one): early stopping's, whose rules decide it."""
    es = trainer.schedule.early_stopping
    return best_of(trainer.history[es.best_epoch - 1], monitor) if es.best_epoch else {}


def _after_epoch(dashboards: Dashboards | None, epoch_end, monitor: str, history):
    """The Trainer's on_epoch_end: the dashboards' pictures, then `epoch_end`
    (a search's pruning) with the epoch's monitored value."""
    if epoch_end is None:
        return dashboards.after_epoch if dashboards is not None else None

    def after_epoch(epoch: int, step: int) -> None:
        if dashboards is not None:
            dashboards.after_epoch(epoch, step)
        rows = history()
        epoch_end(epoch, rows[-1].get(monitor) if rows else None)

    return after_epoch


def _setup(config: TrainerConfig) -> tuple[torch.device, int, int]:
    """The process: device, threads, seeds, DDP. (device, rank, world size)."""
    device = runtime.pick_device(config.device)
    runtime.set_threads(config.threads)
    runtime.seed_everything(config.seed, config.deterministic)
    distributed.setup(device)
    world = distributed.world_size()
    if world > config.batch_size:
        raise UserError(f"batch_size={config.batch_size} is the global batch, split over {world} processes; "
                        f"make it at least {world}")
    return device, distributed.rank(), world


def _batches(config: TrainerConfig, splits: data.Splits, transform, device: torch.device, rank: int,
             world: int) -> dict:
    """train (this rank's share), eval ({"test", "val"}) and the test split
    whole for the pictures (under DDP eval["test"] is this rank's share).
    A cross-validation's fold never touches the test set: it validates on
    its fold, and its pictures are of that fold (cv.refit tests, once)."""
    def batches(split, batch_size: int, train: bool, shard: bool = True):
        return make_batches(config.pipeline, split, batch_size, transform, device, train=train,
                            shuffle=config.train.shuffle, seed=config.seed, drop_last=config.train.drop_last,
                            rank=rank if shard else 0, world_size=world if shard else 1,
                            num_workers=config.loader.num_workers, pin_memory=config.loader.pin_memory)

    eval_bs = config.train.eval_batch_size
    fold = config.cv.folds > 0
    evaluation = {} if fold else {"test": batches(splits.test, eval_bs, False)}
    if splits.val is not None:
        evaluation["val"] = batches(splits.val, eval_bs, False)
    shown = "val" if fold else "test"
    pictures = batches(getattr(splits, shown), eval_bs, False, shard=False) if world > 1 else evaluation[shown]
    return {"train": batches(splits.train, config.batch_size, True), "eval": evaluation, "pictures": pictures}


def make_scheduler(config: TrainerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    s = config.scheduler
    return schedules.build(s.name, optimizer, lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                           interval=s.interval, step_size=s.step_size, gamma=s.gamma,
                           warmup_epochs=s.warmup_epochs, min_lr=s.min_lr, pct_start=s.pct_start,
                           cycle_momentum=s.cycle_momentum)


def _dashboards(config: TrainerConfig, record, model: nn.Module, test_batches) -> Dashboards:
    t = config.tracking
    return Dashboards(record, model, test_batches, class_names=data.dataset_info(config.data.name).classes,
                      images_every_n_epochs=t.images_every_n_epochs, histograms_every_n_epochs=t.histograms_every_n_epochs,
                      precision=config.precision, graph=t.graph and not config.compile, run=record.run_dir.name)


def _restore(trainer: Trainer, saved: tuple[Path, dict], changes: dict, lr: float) -> None:
    path, state = saved
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"checkpoint {path} does not fit this config ({first_line(e)}); "
                        "resume with the run's own settings") from e
    if "lr" in changes:  # the optimizer's saved state carries the old lr: the new one applies from here
        schedules.rescale(trainer.step.optimizer, trainer.schedule.scheduler, lr / changes["lr"][0])


def _wrap(model: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """The module the loop calls: DDP across processes, torch.compile on top."""
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(model) if compile else model


# ---------------------------------------------------------------------- fit
def fit(run: Run) -> float:
    """Train, test, and finish the record. Returns the monitored metric's best value."""
    trainer = run.trainer
    _say_start(run)
    x0, y0 = next(iter(trainer.train_batches.epoch(trainer.position.epoch)))
    run.tracker.first_batch(x0, y0)
    if run.dashboards is not None:
        run.dashboards.start(x0, y0)
    t0 = time.time()
    drawn_before = run.dashboards.seconds if run.dashboards is not None else 0.0
    try:
        final = trainer.fit()
    finally:
        run.record.note_timing(_timing(trainer, t0, run.dashboards, drawn_before))
    if run.device.type == "cpu":  # a GPU job's memory stays taken until it exits: it keeps its slot
        process.release_slot()  # only files are left to write: a sweep may start its next job on this core
    es = trainer.schedule.early_stopping
    final["best_epoch"] = es.best_epoch
    if distributed.is_main():
        _say_finish(run, final)  # into trainer.log too, before the record closes it
        run.record.finish(final, _best(trainer, run.monitor))
    distributed.teardown()
    return float(es.best) if es.best is not None else float("nan")


def _say_start(run: Run) -> None:
    out, model = run.output, run.model
    world = distributed.world_size()
    processes = f", {display.plural(world, 'process', 'processes')} (DDP)" if world > 1 else ""
    device = f"{run.device} device ({runtime.device_name(run.device)}{processes})"
    crowded = distributed.oversubscribed(run.device.type, distributed.local_processes(), torch.get_num_threads(),
                                         distributed.cpu_cores())
    if crowded:  # said once: only rank 0 speaks
        out.warn(f"trainer: note: {crowded}")
    out.note(str(model))  # print(model), as the seed does: in trainer.log, beside everything else
    count = f"{parameter_count(model):,} parameters"
    trains = sum(p.numel() for p in trainable(model))
    if trains != parameter_count(model):
        count += f", {trains:,} of them train (model.freeze=true: the head only)"
    if out.brief:
        out.say(f"Model: {type(model).__name__}, {count}; {device}")
    else:
        out.say(f"Model: {type(model).__name__}, {count}")
        out.say(f"Using {device}")
    if run.step_note:
        out.say(run.step_note)
    if run.resumed_from is not None:
        pos = run.trainer.position
        changed = f"; changed: {resume.describe(run.changes)}" if run.changes else ""
        out.say(f"Resuming {run.resumed_from}: epoch {pos.epoch}, step {pos.step}{changed}")
    if not out.brief:
        out.say(f"Outputs: {run.run_dir}")


def _say_finish(run: Run, final: dict) -> None:
    from rich.table import Table

    if run.output.brief:  # a sweep's job: one line; the sweep's table compares them
        shown = [f"{key} {display.metric(key, final[key])}" for key in ("test/acc", "test/loss", "val/acc")
                 if key in final]
        run.output.say(f"Completed: {', '.join(shown)}, best epoch {final['best_epoch']}, "
                       f"{display.duration(final['train_seconds'])} of training")
        return
    table = Table(title="Run completed")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in final.items():
        table.add_row(key, display.metric(key, value))
    run.output.show(table)
    run.output.say(f"Outputs in {run.run_dir} (tensorboard --logdir {run.run_dir.parent})")


def _timing(trainer: Trainer, t0: float, dashboards: Dashboards | None, drawn_before: float) -> dict:
    """Where the job's time went: start-up (the job's start, its process's
    for the first job of a process, to the first step done), fit (the epochs and their evaluation), the final evaluation, and
    pictures (TensorBoard's graph, images and histograms; curves.png adds to it)."""
    pictures = dashboards.seconds if dashboards is not None else 0.0
    drawn_in_fit = pictures - drawn_before
    timing = {"fit_seconds": time.time() - t0 - trainer.final_eval_seconds - drawn_in_fit,
              "final_eval_seconds": trainer.final_eval_seconds, "pictures_seconds": pictures}
    if trainer.first_step_time:
        timing["startup_seconds"] = trainer.first_step_time - job_start_time()
        # The first step pays for torch.compile and lazy initialisation: warm-up, reported apart.
        timing["first_step_seconds"] = trainer.first_step_seconds
    if trainer.static_step is not None and trainer.static_step.capture_seconds is not None:
        timing["capture_seconds"] = trainer.static_step.capture_seconds
    return timing
