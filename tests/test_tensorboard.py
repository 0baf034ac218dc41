"""What TensorBoard shows for one run, read back with TensorBoard's own event
reader: HParams data with real final metrics, images, histograms, scalars.

One tiny CLI run (a small conv net, every dashboard on) shared by the module.
"""
from __future__ import annotations

import math

import pytest
from helpers import hparams_plugin_data, metrics, run_cli, tiny

pytest.importorskip("tensorboard")

LR = 0.02
METRIC_TAGS = ("final/test_acc", "final/test_loss", "final/train_loss", "final/best_epoch", "final/train_seconds")


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
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    # size_guidance 0 = keep everything (the defaults sample images, histograms and tensors).
    ea = EventAccumulator(str(events[0]), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return run_dir, ea


def test_hydra_run_dir_override_is_the_run_folder(tb_run):
    run_dir, _ = tb_run
    assert (run_dir / "metrics.json").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert not (run_dir.parents[1] / "outputs").exists()  # nothing in the default place


def test_hparams_session_has_the_run_settings(tb_run):
    _, ea = tb_run
    data = hparams_plugin_data(ea)
    assert set(data) == {"experiment", "session_start_info", "session_end_info"}
    hparams = data["session_start_info"].hparams
    assert hparams["optimizer"].string_value == "sgd"
    assert hparams["model"].string_value == "conv"
    assert hparams["lr"].number_value == pytest.approx(LR)
    assert hparams["batch_size"].number_value == 32
    from tensorboard.plugins.hparams import api_pb2

    assert data["session_end_info"].status == api_pb2.STATUS_SUCCESS
    experiment = data["experiment"]
    assert {"optimizer", "lr", "model"} <= {h.name for h in experiment.hparam_infos}
    assert set(METRIC_TAGS) <= {m.name.tag for m in experiment.metric_infos}


def test_hparams_metrics_are_the_real_final_numbers(tb_run):
    run_dir, ea = tb_run
    final = metrics(run_dir)["final"]
    scalars = set(ea.Tags()["scalars"])
    for tag in METRIC_TAGS:
        assert tag in scalars, tag
        values = [e.value for e in ea.Scalars(tag)]
        assert len(values) == 1 and math.isfinite(values[0]), (tag, values)
    assert ea.Scalars("final/test_acc")[0].value == pytest.approx(final["test/acc"], abs=1e-6)
    assert ea.Scalars("final/test_loss")[0].value == pytest.approx(final["test/loss"], rel=1e-5)
    assert ea.Scalars("final/best_epoch")[0].value == final["best_epoch"]
    assert "hp_metric" not in scalars  # no placeholder metric


def test_images_and_histograms(tb_run):
    _, ea = tb_run
    tags = ea.Tags()
    for tag in ("images/samples", "images/misclassified", "images/confusion_matrix",
                "images/conv_filters", "images/feature_maps"):
        assert tag in tags["images"], tag
        image = ea.Images(tag)[-1]
        assert image.width > 0 and image.height > 0 and image.encoded_image_string, tag
    histograms = tags["histograms"]
    assert any(t.startswith("weights/") for t in histograms) and any(t.startswith("grads/") for t in histograms)
    # Every parameter with a gradient has both, at each epoch (histograms_every_n_epochs=1).
    weights = {t[len("weights/"):] for t in histograms if t.startswith("weights/")}
    assert weights == {t[len("grads/"):] for t in histograms if t.startswith("grads/")}
    assert len(ea.Histograms(next(iter(sorted(histograms))))) == 2
    assert tags["graph"]


def test_scalars_one_point_per_step(tb_run):
    _, ea = tb_run
    for tag in ("train/loss", "test/acc", "lr", "train/acc", "test/loss"):
        steps = [e.step for e in ea.Scalars(tag)]
        assert steps and all(a < b for a, b in zip(steps, steps[1:])), (tag, steps)
    assert [e.step for e in ea.Scalars("train/loss")] == [2, 4, 6, 8]  # 128 samples / 32 = 4 steps an epoch
    assert [e.step for e in ea.Scalars("test/acc")] == [4, 8]
