"""What TensorBoard's HParams dashboard shows, in one place.

    session    each run, when it ends: its hparams (group choices, main knobs,
               its `status`) and an end status; in an event file of its own
               (`*.hparams`) that is replaced each time the run ends, so a
               resumed run shows how it ended last
    group      a seed group of a sweep (trainer.sweeps.groups): one row with
               the runs' shared hparams, `seed` = 'mean of 0,1,2', and the mean
               of its metric, written with the sweep's summary

No experiment file: TensorBoard builds the experiment from every session
under whatever --logdir points at (outputs/, outputs/sweeps, one sweep), so
an hparam is marked as differing when it differs across all of them, and
each value keeps one type in every kind of run (run, cv, fold, refit, group)
so no column turns into text in one folder and a number in another.

Metrics are the last points of the runs' own curves (acc/test, loss/val, ...:
see tracking.tag). A single number (cv/mean, cv/std, best epoch, time) can
reach HParams only as a scalar event too: TensorBoard 2.21 reads a session's
metrics with `read_last_scalars(plugin_name="scalars")`
(plugins/hparams/backend_context.py, read_last_scalars), the same data that
Time Series lists as cards (`list_scalars(plugin_name="scalars")` in
plugins/metrics/metrics_plugin.py, _tags_impl), and neither has a way to
mark a scalar as one for tables only. So those are one-point charts in the
`results` group (sorted after acc and loss, so it starts collapsed), and a
table in Text under `results` (results_markdown).

Each row's name (the Trial ID, TensorBoard's session group name) is the
run's folder name first, then where it is (trial_id): TensorBoard's own
name would be the path under --logdir, cut after some 14 characters. Whole numbers
(batch_size, epochs, seed) are shown as text, not as 64.000; a value the run
was refused for (lr=-1) is left out of its session, so it cannot stretch a
numeric axis of the parallel-coordinates view.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainer.core import display
from trainer.core.config import GROUPS, TrainerConfig, fields_of
from trainer.report.tracking import tag

SESSION_SUFFIX = ".hparams"
EXPERIMENT_SUFFIX = ".hparams-experiment"
# HParams metrics (metrics.json's final keys), in the order of the table's
# columns; their TensorBoard tags are tracking.tag()'s. Those no job has are left out.
METRICS = ("cv/mean", "cv/std", "test/acc", "test/loss", "val/acc", "val/loss", "train/acc", "train/loss",
           "best_epoch", "train_seconds")


def results_markdown(final: dict) -> str:
    """The run's single numbers (cv/mean, cv/std, best epoch, the test set
    once, the time) as a table for TensorBoard's Text: read, not charted."""
    def unit(key: str) -> str:  # cv/mean and cv/std in the unit of the metric the folds were scored on
        return str(final.get("cv/metric") or "val/acc") if key.startswith("cv/") else key

    rows = [f"| {key} | {display.metric(unit(key), final[key])} |" for key in METRICS
            if isinstance(final.get(key), (int, float)) and not isinstance(final[key], bool)]
    return "\n".join(["| result | value |", "| --- | ---: |", *rows])


# The group keys a session shows, where the group's choice has them (model=conv has no `hidden`).
GROUP_KEYS = {"optimizer": ("weight_decay", "momentum"), "model": ("dropout", "hidden", "channels"),
              "loss": ("label_smoothing",)}


def of(config: TrainerConfig, choices: dict, kind: str | None = None) -> dict:
    """A run's hparams: its kind, the group choices and the main knobs (metrics.json keeps them too)."""
    hp: dict[str, Any] = {"kind": kind or kind_of(config)}
    hp.update({g: choices.get(g) for g in GROUPS})
    hp["experiment"] = choices.get("experiment") or "none"
    hp.update(lr=config.lr, batch_size=config.batch_size, epochs=config.epochs, seed=config.seed,
              precision=config.precision, pipeline=config.pipeline)
    groups = fields_of(config)
    for group, keys in GROUP_KEYS.items():
        node = fields_of(groups[group])
        hp.update({f"{group}.{key}": str(list(node[key])) if isinstance(node[key], list) else node[key]
                   for key in keys if key in node})
    if config.cv.folds:
        hp["cv.folds"] = config.cv.folds
    if config.cv.fold:
        hp["cv.fold"] = config.cv.fold
    return hp


def kind_of(config: TrainerConfig) -> str:
    """run, cv (the cross-validation's own run) or fold; a refit says so itself."""
    return "fold" if config.cv.fold else "cv" if config.cv.folds else "run"


def shown(hparams: dict, status: str, refused: str | None = None) -> dict:
    """The values a session shows: whole numbers as text, `status` added, and
    the value the one-line error names (lr=-1 in 'lr=-1 must be positive') left out."""
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key == refused:
            continue
        if isinstance(value, bool) or isinstance(value, str):
            out[key] = value
        elif isinstance(value, int) or (isinstance(value, float) and value.is_integer() and key in WHOLE):
            out[key] = str(int(value))
        elif isinstance(value, float):
            out[key] = value
        else:
            out[key] = "none" if value is None else str(value)
    out["status"] = status
    return out


WHOLE = ("batch_size", "epochs", "seed", "cv.folds", "cv.fold")


# --------------------------------------------------------------- sessions
def write_session(run_dir: Path, hparams: dict, status: str, error: str | None, refused: str | None = None) -> None:
    """The run's HParams session, replacing the one it wrote when it last
    ended, and its one-line error as text (Text dashboard, tag `error`)."""
    from tensorboard.plugins.hparams import api_pb2
    from torch.utils.tensorboard.summary import hparams as hparams_summary
    from torch.utils.tensorboard.summary import text
    from torch.utils.tensorboard.writer import FileWriter

    for old in Path(run_dir).glob(f"events.out.tfevents.*{SESSION_SUFFIX}"):
        old.unlink(missing_ok=True)
    _, start, _ = hparams_summary(shown(hparams, status, refused), {})
    start = _named(start, trial_id(run_dir))
    writer = FileWriter(str(run_dir), filename_suffix=SESSION_SUFFIX)
    try:
        writer.add_summary(start)
        end = api_pb2.STATUS_SUCCESS if status == "completed" else (
            api_pb2.STATUS_RUNNING if status == "interrupted" else api_pb2.STATUS_FAILURE)
        writer.add_summary(_session_end(end))
        if error:
            writer.add_summary(text("error", f"**{status}**: {error}"))
    finally:
        writer.close()


def trial_id(folder: Path) -> str:
    """The row's name in HParams (its Trial ID, a column 10em wide that shows
    some 14 characters): the folder's own name first, `0_lr=0.001,optimizer=sgd`,
    `fold_2`, `model=conv-2026-...`, then its sweep's or run's and where that is. TensorBoard would show
    the run's path under --logdir, which starts `sweeps/<sweep>/...` for every
    job. Sessions with the same name are merged into one row, so the
    folder's whole path keeps each one its own."""
    folder = Path(folder).absolute()
    return f"{folder.name} in {folder.parent.name} ({folder.parent.parent})"


def _named(start, name: str):
    """The session-start summary torch wrote, with a group name (TensorBoard's Trial ID)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = start.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    data.session_start_info.group_name = name
    value.metadata.plugin_data.content = data.SerializeToString()
    return start


def _session_end(status: int):
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _plugin_summary("_hparams_/session_end_info", session_end_info=info)


# ---------------------------------------------------------------- groups
def write_group_session(folder: Path, hparams: dict, metrics: dict[str, float], seeds: str) -> None:
    """A seed group as one HParams row: the hparams its runs share, `seed`
    saying which seeds it averages ('mean of 0,1,2'), kind `group`, and its
    mean (and std) as the last point of the runs' own metric tags."""
    from tensorboard.plugins.hparams import api_pb2
    from torch.utils.tensorboard.summary import hparams as hparams_summary
    from torch.utils.tensorboard.summary import scalar
    from torch.utils.tensorboard.writer import FileWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink(missing_ok=True)
    _, start, _ = hparams_summary({**shown(hparams, "completed"), "seed": seeds, "kind": "group"}, {})
    start = _named(start, trial_id(folder))
    writer = FileWriter(str(folder), filename_suffix=SESSION_SUFFIX)
    try:
        writer.add_summary(start)
        for key, value in metrics.items():
            writer.add_summary(scalar(tag(key), value), 0)
        writer.add_summary(_session_end(api_pb2.STATUS_SUCCESS))
    finally:
        writer.close()


def remove_experiment(folder: Path) -> None:
    """An experiment file an older version wrote at a sweep's root: TensorBoard
    would take its hparams and ranges for every run under the logdir."""
    for old in Path(folder).glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"):
        old.unlink(missing_ok=True)


def _plugin_summary(tag: str, **data):
    """A Summary the hparams plugin reads: `data` is one field of HParamsPluginData."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(version=0, **data).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


