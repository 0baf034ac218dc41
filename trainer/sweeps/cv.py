"""k-fold cross-validation: `trainer cv.folds=K`.

    trainer cv.folds=5 experiment=fashion_mlp          # 5 runs, each validating on one fold
    trainer cv.folds=5 cv.refit=true                   # then one run on the whole training set, on test
    trainer -m lr=1e-3,1e-2 cv.folds=5                 # a sweep that compares cross-validated means

The training set (after data.subset) is split into K stratified, seeded
folds (trainer.core.data.fold_of_each_sample); fold i trains on the others and
validates on it. Each fold is an ordinary run folder, `fold_1/ ... fold_K/`,
inside the CV run's folder, whose own metrics.json holds every fold's best
monitored value as they finish and, at the end, `cv/mean`, `cv/std` (the
sample standard deviation) and `cv/folds`. A sweep gets the mean back, so an
Optuna search tunes on cross-validated accuracy, never on the test set.

A failed fold is recorded and the others still run; an interrupted fold
stops the CV run, and `resume=<cv run>` (or `resume=auto`) continues it:
finished folds are kept as they are, the others continue or start.
"""
from __future__ import annotations

import dataclasses
import signal
import statistics
from pathlib import Path

from trainer.core import display, process
from trainer.core.config import TrainerConfig, validate
from trainer.core.errors import UserError, warn
from trainer.report.tracking import Output
from trainer.runs.build import check
from trainer.runs.folder import worst_value
from trainer.runs.job import Job, Outcome, completed_already, execute, leave_no_trace, refuse_to_overwrite
from trainer.runs.record import read
from trainer.sweeps import summary


def run(config: TrainerConfig, job: Job, output: Output) -> Outcome:
    """`cv.folds=K`: the same checks as a single run first (bad values, a
    folder that is not ours, a finished or used folder), then every fold,
    the statistics and the refit."""
    process.hold_slot()  # a sweep's CV job frees its core when all its folds are done, not after the first
    cv_job = dataclasses.replace(job, kind="cv")
    record = cv_job.record(config)
    try:
        validate(config)  # a bad value fails once, before any fold starts
        record.folder.check_ours()
        with record.folder.locked():
            done = completed_already(config, record.previous, job.run_dir, output)
            if done is not None:
                return Outcome("completed", None, done, job.run_dir)
            refuse_to_overwrite(config, record.previous, job)
            check(config, log=output.say)  # what every fold would be refused for, before the CV says a word
            return _run_folds(config, cv_job, record, output)
    except UserError as e:
        record.fail("failed", str(e))
        leave_no_trace(cv_job, record)
        return Outcome("failed", str(e), worst_value(config.early_stopping.mode), job.run_dir)


def _run_folds(config: TrainerConfig, job: Job, record, output: Output) -> Outcome:
    """Every fold, then the statistics (and the refit): the CV run's outcome."""
    worst = worst_value(config.early_stopping.mode)
    output.say(job.header())
    record.start(monitor="cv/mean", mode=config.early_stopping.mode, eval_split="val", device=config.device,
                 device_name=None, history=[], best={}, resumed=bool(config.resume),
                 tensorboard=config.tracking.tensorboard, purge_step=None, model_summary="")
    output.say(f"Cross-validation: {config.cv.folds} folds of the training set, in {job.run_dir}")
    brief = Output(output.console, brief=True)  # a few lines per fold
    results = []
    for fold in range(1, config.cv.folds + 1):
        fold_config = dataclasses.replace(config, cv=dataclasses.replace(config.cv, fold=fold), resume="auto")
        fold_job = _inner_job(job, f"fold_{fold}", "fold", fold, [f"cv.fold={fold}"])
        outcome = execute(fold_config, fold_job, brief)
        results.append(_fold_row(fold, fold_job.run_dir, outcome))
        record.epoch(results[-1])
        if outcome.status == "interrupted":
            # Where to continue is the cross-validation, not the fold (resuming a fold alone trains only it).
            saved = "checkpoint saved, " if (fold_job.run_dir / "checkpoints" / "last.ckpt").is_file() else ""
            error = (f"stopped by {signal.Signals(outcome.signum).name} in fold {fold} of {config.cv.folds}; "
                     f"{saved}continue the cross-validation with resume={job.run_dir}")
            record.fail("interrupted", error)
            return Outcome("interrupted", error, worst, job.run_dir, outcome.signum)
    used = read(job.run_dir / "fold_1") or {}
    if used.get("device"):  # the device the folds trained on (the CV's config may say `auto`)
        record.note_device(used["device"], used.get("device_name"))
    final = statistics_of(results, config.cv.folds)
    refit = _refit(config, job, output) if config.cv.refit else None
    if refit is not None and refit.status != "completed":
        return _refit_stopped(record, refit, final, worst, job)
    if refit is not None:
        final.update(_refit_metrics(job.run_dir / "refit"))
    _say(output, results, final)
    _summarize_folds(job.run_dir)
    failed = [r for r in results if r["status"] != "completed"]
    if failed:
        error = "; ".join(f"fold {r['fold']} {r['status']}: {r['error']}" for r in failed)
        record.fail("failed", error, final=final)
        return Outcome("failed", error, worst, job.run_dir)
    record.finish(final, {"cv/mean": final["cv/mean"]})
    return Outcome("completed", None, final["cv/mean"], job.run_dir)


def _inner_job(job: Job, name: str, kind: str, fold: int | None, overrides: list[str]) -> Job:
    """A fold or the refit: a run folder inside the CV's, belonging to it."""
    return Job(job.run_dir / name, [*job.overrides, *overrides], job.choices, job.multirun, in_sweep=True,
               hydra_yaml=job.hydra_yaml, kind=kind, belongs={"cv": {"dir": str(job.run_dir), "fold": fold}})


def _refit_stopped(record, refit: Outcome, final: dict, worst: float, job: Job) -> Outcome:
    """The refit did not complete: the CV says how (interrupted: resume= continues it)."""
    if refit.status == "interrupted":
        error = (f"stopped by {signal.Signals(refit.signum).name} in the refit; continue the cross-validation "
                 f"with resume={job.run_dir}")
        record.fail("interrupted", error, final=final)
        return Outcome("interrupted", error, worst, job.run_dir, refit.signum)
    error = f"the refit {refit.status}: {refit.error}"
    record.fail("failed", error, final=final)
    return Outcome("failed", error, worst, job.run_dir)


def _summarize_folds(run_dir: Path) -> None:
    """The folds' summary files and curves.png (the folds' mean with a min-max
    band), as trainer-summary writes them for any folder of runs."""
    from rich.console import Console

    try:
        summary.summarize(run_dir, console=Console(quiet=True), write=True)
    except (summary.SweepError, OSError) as e:
        warn(f"the folds' summary was not written ({e})")


def _fold_row(fold: int, run_dir: Path, outcome) -> dict:
    data = read(run_dir) or {}
    monitor = data.get("monitor") or "val/acc"
    best = (data.get("best") or {}).get(monitor)
    final = data.get("final") or {}
    return {"fold": fold, "status": outcome.status, "error": outcome.error, "metric": monitor,
            monitor: best, "best_epoch": final.get("best_epoch"), "epochs": final.get("epochs"),
            "train_seconds": final.get("train_seconds")}


def statistics_of(rows: list[dict], folds: int) -> dict:
    """cv/mean, cv/std (sample standard deviation, n-1) and cv/folds over the
    folds that completed, from their own records."""
    metric = next((r["metric"] for r in rows), "val/acc")
    values = [r[metric] for r in rows if r["status"] == "completed" and isinstance(r.get(metric), (int, float))]
    seconds = [r["train_seconds"] for r in rows if isinstance(r.get("train_seconds"), (int, float))]
    # The most any fold trained: fewer than planned only when every fold stopped early.
    epochs = max((r["epochs"] for r in rows if isinstance(r.get("epochs"), int)), default=0)
    return {"cv/metric": metric, "cv/mean": statistics.fmean(values) if values else None,
            "cv/std": statistics.stdev(values) if len(values) > 1 else None, "cv/folds": values,
            "cv/n": len(values), "cv/k": folds, "epochs": epochs, "train_seconds": sum(seconds)}


def _refit(config: TrainerConfig, job: Job, output: Output) -> Outcome:
    """One more run on the whole training set (no fold held out): the test set, once."""
    output.say("Refit on the whole training set, evaluated on the test set")
    refit_config = dataclasses.replace(config, cv=dataclasses.replace(config.cv, folds=0, fold=0, refit=False),
                                       resume="auto")
    refit_job = _inner_job(job, "refit", "refit", None, ["cv.folds=0", "cv.refit=false"])
    return execute(refit_config, refit_job, Output(output.console, brief=True))


def _refit_metrics(refit_dir: Path) -> dict:
    final = (read(refit_dir) or {}).get("final") or {}
    return {key: final[key] for key in ("test/acc", "test/loss") if key in final}


def _say(output, rows: list[dict], final: dict) -> None:
    from rich.table import Table

    metric = final["cv/metric"]
    table = Table(title=f"Cross-validation: best {metric} of each fold", title_justify="left")
    for name in ("fold", "status", f"best {metric}", "best epoch", "time"):
        table.add_column(name, justify="left" if name == "status" else "right")
    for r in rows:
        table.add_row(str(r["fold"]), r["status"], display.metric(metric, r.get(metric)),
                      display.metric("best_epoch", r.get("best_epoch")), display.metric("train_seconds",
                                                                                      r.get("train_seconds")))
    output.show(table)
    output.say(describe(final))


def describe(final: dict) -> str:
    """'val/acc 85.12% ± 0.43 over 5 folds' (the std in the metric's own unit)."""
    metric, mean, std = final.get("cv/metric", "val/acc"), final.get("cv/mean"), final.get("cv/std")
    if mean is None:
        return f"cross-validated {metric}: no fold completed"
    spread = f" ± {display.metric(metric, std).rstrip('%')}" if std is not None else ""
    text = f"cross-validated {metric} {display.metric(metric, mean)}{spread} over {final['cv/n']} of {final['cv/k']} folds"
    if "test/acc" in final:
        text += f"; refit on all training data: test/acc {display.metric('test/acc', final['test/acc'])}"
    return text
