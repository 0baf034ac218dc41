"""What TensorBoard's HParams dashboard shows, in one place.

    session    each run, when it ends: its hparams (group choices, main knobs,
               its `status`) and an end status; in an event file of its own
               (`*.hparams`) that is replaced each time the run ends, so a
               resumed run shows how it ended last
    experiment a sweep's root, written with its summary: every hparam, the
               ones that vary between jobs first (marked as differing, so
               HParams opens on them), string knobs with their value lists,
               and only the metrics some job has

Metrics are the last points of the runs' own curves (acc/test, loss/val, ...:
see tracking.tag), so a run has no extra single-dot charts. Whole numbers
(batch_size, epochs, seed) are shown as text, not as 64.000; a value the run
was refused for (lr=-1) is left out of its session, so it cannot stretch a
numeric axis of the parallel-coordinates view.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from trainer.core.config import GROUPS

SESSION_SUFFIX = ".hparams"
EXPERIMENT_SUFFIX = ".hparams-experiment"
# HParams metrics (metrics.json's final keys), in the order of the table's
# columns; their TensorBoard tags are tracking.tag()'s. Those no job has are left out.
METRICS = ("cv/mean", "cv/std", "test/acc", "test/loss", "val/acc", "val/loss", "train/acc", "train/loss",
           "best_epoch", "train_seconds")


def of(config, choices: dict) -> dict:
    """A run's hparams: the group choices and the main knobs (metrics.json keeps them too)."""
    hp: dict[str, Any] = {g: choices.get(g) for g in GROUPS}
    hp["experiment"] = choices.get("experiment") or "none"
    for key in ("lr", "batch_size", "epochs", "seed", "precision", "pipeline"):
        hp[key] = getattr(config, key)
    for group, keys in (("optimizer", ("weight_decay", "momentum")), ("model", ("dropout", "hidden", "channels")),
                        ("loss", ("label_smoothing",))):
        node = getattr(config, group)
        for key in keys:
            if hasattr(node, key):
                value = getattr(node, key)
                hp[f"{group}.{key}"] = str(list(value)) if isinstance(value, list) else value
    return hp


def shown(hparams: dict, status: str, error: str | None) -> dict:
    """The values a session shows: whole numbers as text, `status` added, and
    the value the one-line error names (lr=-1 in 'lr=-1 must be positive') left out."""
    refused = set(re.findall(r"(?:^|\s)([\w.]+)=", error or "")[:1]) if status == "failed" else set()
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key in refused:
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


WHOLE = ("batch_size", "epochs", "seed")


# --------------------------------------------------------------- sessions
def write_session(run_dir: Path, hparams: dict, status: str, error: str | None) -> None:
    """The run's HParams session, replacing the one it wrote when it last
    ended, and its one-line error as text (Text dashboard, tag `error`)."""
    from tensorboard.plugins.hparams import api_pb2
    from torch.utils.tensorboard.summary import hparams as hparams_summary
    from torch.utils.tensorboard.summary import text
    from torch.utils.tensorboard.writer import FileWriter

    for old in Path(run_dir).glob(f"events.out.tfevents.*{SESSION_SUFFIX}"):
        old.unlink(missing_ok=True)
    _, start, _ = hparams_summary(shown(hparams, status, error), {})
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


def _session_end(status: int):
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _plugin_summary("_hparams_/session_end_info", session_end_info=info)


# ------------------------------------------------------------ experiment
def write_experiment(sweep_dir: Path, records: list[dict], swept: list[str] = ()) -> None:
    """One experiment for a sweep at its root, from its jobs' records
    (metrics.json): what varies first (the `swept` keys always, even where
    only one of their values was valid), and only metrics some job has."""
    from tensorboard.plugins.hparams import api_pb2
    from torch.utils.tensorboard.writer import FileWriter

    from trainer.report.tracking import tag

    sessions = [shown(r.get("hparams") or {}, r.get("status") or "incomplete", r.get("error")) for r in records]
    names = sorted({k for s in sessions for k in s})
    infos = [_info(name, [s[name] for s in sessions if name in s], name in swept) for name in names]
    # TensorBoard shows the first few: what varies, then status (also when every job completed).
    infos.sort(key=lambda info: (not info.differs, info.name != "status", info.name))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag(m)), display_name=tag(m))
               for m in METRICS if any(_has(r, m) for r in records)]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    for old in Path(sweep_dir).glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"):
        old.unlink(missing_ok=True)
    writer = FileWriter(str(sweep_dir), filename_suffix=EXPERIMENT_SUFFIX)
    try:
        writer.add_summary(_plugin_summary("_hparams_/experiment", experiment=experiment))
    finally:
        writer.close()


def _plugin_summary(tag: str, **data):
    """A Summary the hparams plugin reads: `data` is one field of HParamsPluginData."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(version=0, **data).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def _info(name: str, values: list, swept: bool = False):
    from tensorboard.plugins.hparams import api_pb2

    distinct = sorted(set(values), key=str)
    if all(isinstance(v, bool) for v in values):
        info = api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_BOOL)
        info.domain_discrete.extend(distinct)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        info = api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64)
        info.domain_interval.min_value, info.domain_interval.max_value = min(values), max(values)
    else:
        info = api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_STRING)
        info.domain_discrete.extend(str(v) for v in distinct)
    info.differs = swept or len(distinct) > 1
    return info


def _has(record: dict, metric: str) -> bool:
    """Whether a job's record has a value for an HParams metric (from its final numbers)."""
    value = (record.get("final") or {}).get(metric)
    return isinstance(value, (int, float)) and not isinstance(value, bool)
