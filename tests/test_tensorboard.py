"""What TensorBoard shows for one run, read back with TensorBoard's own event
reader: the HParams session with the run's status, metrics that are the
last points of its own curves, images, histograms, scalars.

One tiny CLI run (a small conv net, every dashboard on) shared by the module.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from helpers import hparams_plugin_data, metrics, run_cli, tiny

pytest.importorskip("tensorboard")

LR = 0.02
# The HParams metrics a run without a validation split has (trainer.report.hparams.METRICS, as tags).
METRIC_TAGS = ("acc/test", "loss/test", "acc/train", "loss/train_epoch", "results/best_epoch",
               "results/train_seconds")


@pytest.fixture(scope="module")
def tb_run(synthetic_root, tmp_path_factory):
    """(run dir, EventAccumulator) of `trainer model=conv ...` with every dashboard on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd = tmp_path_factory.mktemp("tb")
    run_dir = cwd / "chosen" / "run"
    run_cli(tiny(synthetic_root, "epochs=2", "data.subset=128", "train.log_every_n_steps=2",
                 "model=conv", "model.channels=[4,8]", "model.head_hidden=[16]", f"lr={LR}",
                 "tracking.images_every_n_epochs=1", "tracking.histograms_every_n_epochs=1", "tracking.graph=true",
                 f"hydra.run.dir={run_dir}"), cwd, check=True)
    events = sorted(p.name for p in run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 2 and events[1].endswith(".hparams"), events  # the run's events, its HParams session
    # size_guidance 0 = keep everything (the defaults sample images, histograms and tensors).
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return run_dir, ea


def test_hydra_run_dir_override_is_the_run_folder(tb_run):
    run_dir, _ = tb_run
    assert (run_dir / "metrics.json").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert not (run_dir.parents[1] / "outputs").exists()  # nothing in the default place


def test_hparams_session_has_the_run_settings_and_status(tb_run):
    _, ea = tb_run
    data = hparams_plugin_data(ea)
    # No experiment of its own: a sweep's one experiment (at its root) then decides what differs.
    assert set(data) == {"session_start_info", "session_end_info"}
    hparams = data["session_start_info"].hparams
    assert hparams["optimizer"].string_value == "sgd"
    assert hparams["model"].string_value == "conv"
    assert hparams["lr"].number_value == pytest.approx(LR)
    assert hparams["batch_size"].string_value == "32"  # a whole number reads as 32, not 32.000
    assert hparams["status"].string_value == "completed"
    from tensorboard.plugins.hparams import api_pb2

    assert data["session_end_info"].status == api_pb2.STATUS_SUCCESS


def test_hparams_metrics_are_the_last_points_of_the_curves(tb_run):
    run_dir, ea = tb_run
    final = metrics(run_dir)["final"]
    scalars = set(ea.Tags()["scalars"])
    for tag in METRIC_TAGS:
        assert tag in scalars, tag
        assert math.isfinite(ea.Scalars(tag)[-1].value), tag
    assert ea.Scalars("acc/test")[-1].value == pytest.approx(final["test/acc"], abs=1e-6)
    assert ea.Scalars("loss/test")[-1].value == pytest.approx(final["test/loss"], rel=1e-5)
    assert ea.Scalars("results/best_epoch")[-1].value == final["best_epoch"]
    assert "hp_metric" not in scalars and not any(t.startswith("final/") for t in scalars)
    assert "epoch" not in scalars  # a step-to-epoch line is no curve to compare


def test_images_and_histograms(tb_run):
    _, ea = tb_run
    tags = ea.Tags()
    for tag in ("samples/inputs", "predictions/misclassified", "predictions/confusion_matrix",
                "model/conv_filters", "model/feature_maps"):
        assert tag in tags["images"], tag
        image = ea.Images(tag)[-1]
        assert image.width > 0 and image.height > 0 and image.encoded_image_string, tag
    histograms = tags["histograms"]
    grads = {t for t in histograms if t.endswith("/grad")}
    assert grads and histograms
    # Every parameter with a gradient has both, side by side, at each epoch (histograms_every_n_epochs=1).
    assert {t for t in histograms if t not in grads} == {t[: -len("/grad")] for t in grads}
    assert len(ea.Histograms(next(iter(sorted(histograms))))) == 2
    assert tags["graph"]


def test_scalars_one_point_per_step(tb_run):
    _, ea = tb_run
    for tag in ("loss/train", "acc/test", "lr", "acc/train", "loss/test"):
        steps = [e.step for e in ea.Scalars(tag)]
        assert steps and all(a < b for a, b in zip(steps, steps[1:])), (tag, steps)
    assert [e.step for e in ea.Scalars("loss/train")] == [2, 4, 6, 8]  # 128 samples / 32 = 4 steps an epoch
    assert [e.step for e in ea.Scalars("acc/test")] == [4, 8]


def test_time_series_opens_on_accuracy_and_loss(tb_run):
    """TensorBoard groups cards by the tag's first part, sorts the groups and
    opens the first two: those must be the curves people compare."""
    _, ea = tb_run
    tags = ea.Tags()
    groups = sorted({t.split("/")[0] for kind in ("scalars", "images", "histograms") for t in tags[kind]})
    assert groups[:2] == ["acc", "loss"], groups


# ------------------------------------------------------------------ a sweep, in the real TensorBoard
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def _tensorboard(logdir: Path):
    """`tensorboard --logdir <logdir>` on loopback: its HTTP data API, as the browser reads it."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                               "127.0.0.1", "--port", str(port), "--load_fast=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/data/runs", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "tensorboard did not start"
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def tensorboard_on_a_sweep(synthetic_root, tmp_path_factory):
    """`trainer -m optimizer=sgd,adam lr=1e-3,-1 epochs=1`, then `tensorboard --logdir <sweep>`."""
    cwd = tmp_path_factory.mktemp("tb_sweep")
    sweep_dir = cwd / "sweep"
    run_cli(["-m", *tiny(synthetic_root, "data.subset=128", "model.hidden=[16]"), "optimizer=sgd,adam", "lr=1e-3,-1",
             f"hydra.sweep.dir={sweep_dir}"], cwd)
    with _tensorboard(sweep_dir) as base:
        yield base, sweep_dir


def test_hparams_opens_on_what_the_sweep_varies(tensorboard_on_a_sweep):
    base, _ = tensorboard_on_a_sweep
    experiment = _post(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = experiment["hparamInfos"]
    differing = [i["name"] for i in infos if i.get("differs")]
    # lr=-1 was refused: it is on no axis, so lr has one value (0.001) and does not differ.
    assert differing == ["optimizer", "status"], differing  # the first columns
    assert [i["name"] for i in infos][:2] == differing
    assert sorted({i["name"]: i for i in infos}["optimizer"]["domainDiscrete"]) == ["adam", "sgd"]
    # Only metrics a job has: no validation split here, so no val/ columns.
    tags = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert {"acc/test", "loss/test", "acc/train", "results/train_seconds"} <= set(tags), tags
    assert not [t for t in tags if t.endswith("/val")], tags


def _session(run_dir: Path, hparams: dict, status: str = "completed", **scalars: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from trainer.report import hparams as hp

    with SummaryWriter(str(run_dir)) as writer:
        for name, value in scalars.items():
            writer.add_scalar(name.replace("_", "/"), value, 10)
    hp.write_session(run_dir, hparams, status, None if status == "completed" else "lr=-1 must be positive")


def _groups(base: str) -> dict:
    groups = _post(f"{base}/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})["sessionGroups"]
    return {g["name"]: g for g in groups}


def _by_folder(groups: dict, logdir: Path) -> dict:
    """The rows by their run's folder under the logdir; each row's Trial ID names that folder first."""
    out = {}
    for name, group in groups.items():
        (session,) = group["sessions"]
        parent = (logdir / session["name"]).parent.absolute()
        assert name == f"{Path(session['name']).name} in {parent.name} ({parent.parent})", name
        out[session["name"]] = group
    return out


def test_hparams_over_outputs_compares_every_sweep_run_and_fold(tmp_path):
    """`tensorboard --logdir outputs` over two sweeps, a cross-validation and its
    folds: one experiment, built by TensorBoard from every session, in which lr,
    optimizer, seed and status differ and every run (a seed group too) is a row."""
    from trainer.report import hparams

    out = tmp_path / "outputs"
    base = {"kind": "run", "batch_size": 64, "epochs": 2, "optimizer": "sgd", "lr": 0.001, "seed": 0}
    _session(out / "sweeps/a/0_lr=0.001", base, acc_test=0.5)
    _session(out / "sweeps/a/1_lr=0.003", {**base, "lr": 0.003}, acc_test=0.6)
    _session(out / "sweeps/a/2_lr=-1", {**base, "lr": -1.0}, "failed")
    for seed in (0, 1):
        _session(out / f"sweeps/b/{seed}_seed={seed}", {**base, "optimizer": "adam", "seed": seed}, acc_test=0.7)
    hparams.write_group_session(out / "sweeps/b/seed_groups/optimizer=adam", {**base, "optimizer": "adam"},
                                {"test/acc": 0.7}, "mean of 2: 0,1")
    _session(out / "runs/cv", {**base, "kind": "cv", "cv.folds": 2}, cv_mean=0.8)
    _session(out / "runs/cv/fold_1", {**base, "kind": "fold", "cv.folds": 2, "cv.fold": 1}, acc_val=0.8)
    with _tensorboard(out) as url:
        experiment = _post(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
        rows = _by_folder(_groups(url), out)
    infos = {i["name"]: i for i in experiment["hparamInfos"]}
    assert {name for name, i in infos.items() if i.get("differs")} >= {"lr", "optimizer", "seed", "status", "kind"}
    assert infos["lr"]["type"] == "DATA_TYPE_FLOAT64" and infos["lr"]["domainInterval"]["maxValue"] == 0.003
    assert sorted(infos["status"]["domainDiscrete"]) == ["completed", "failed"]
    assert sorted(rows) == sorted(["sweeps/a/0_lr=0.001", "sweeps/a/1_lr=0.003", "sweeps/a/2_lr=-1", "sweeps/b/0_seed=0",
                                   "sweeps/b/1_seed=1", "sweeps/b/seed_groups/optimizer=adam", "runs/cv",
                                   "runs/cv/fold_1"])
    assert rows["sweeps/a/2_lr=-1"]["hparams"]["status"] == "failed"
    group = rows["sweeps/b/seed_groups/optimizer=adam"]
    assert group["hparams"]["seed"] == "mean of 2: 0,1" and group["hparams"]["kind"] == "group"
    metric = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
    assert metric["acc/test"] == pytest.approx(0.7)
    assert {m["name"]["tag"] for m in rows["runs/cv"]["sessions"][0]["metricValues"]} == {"cv/mean"}


def test_hparams_shows_every_job_with_its_status(tensorboard_on_a_sweep):
    base, sweep_dir = tensorboard_on_a_sweep
    groups = _post(f"{base}/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})["sessionGroups"]
    by_name = {g["name"].split(" in ")[0]: g["hparams"] for g in groups}  # the Trial ID: the job's folder first
    assert sorted(by_name) == sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())  # all 4 jobs
    assert {n: h["status"] for n, h in by_name.items()} == {
        "0_lr=0.001,optimizer=sgd": "completed", "1_lr=-1,optimizer=sgd": "failed",
        "2_lr=0.001,optimizer=adam": "completed", "3_lr=-1,optimizer=adam": "failed"}
    assert "lr" not in by_name["1_lr=-1,optimizer=sgd"]  # the refused value is on no axis
    assert by_name["0_lr=0.001,optimizer=sgd"]["batch_size"] == "32"  # whole numbers read as such


@pytest.mark.parametrize("key, expected", [
    ("cv/mean", "results/cv_mean"), ("cv/std", "results/cv_std"),
    ("best_epoch", "results/best_epoch"), ("train_seconds", "results/train_seconds"),   # single numbers: one group
    ("epoch_seconds", "perf/epoch_seconds"), ("samples_per_second", "perf/samples_per_second"),  # per-epoch curves
    ("train/acc", "acc/train"), ("val/loss", "loss/val"), ("lr", "lr"),
])
def test_single_numbers_are_one_group_and_curves_stay_curves(key, expected):
    from trainer.report.tracking import tag

    assert tag(key) == expected


def test_single_numbers_do_not_take_the_first_card_groups():
    """cv/mean and cv/std are one number each: their group sorts after acc and
    loss, which TensorBoard opens first; they are in Text as a table too."""
    from trainer.report import hparams
    from trainer.report.tracking import tag

    keys = ("train/acc", "val/acc", "train/loss", "val/loss", "cv/mean", "cv/std", "best_epoch", "train_seconds")
    assert sorted({tag(k).split("/")[0] for k in keys})[:2] == ["acc", "loss"]
    table = hparams.results_markdown({"cv/mean": 0.8812, "cv/std": 0.0043, "best_epoch": 3, "cv/folds": [0.8]})
    assert "| cv/mean | 88.12% |" in table and "| best_epoch | 3 |" in table and "cv/folds" not in table
