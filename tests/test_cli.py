"""The CLI end to end, as a user runs it: a process of its own on synthetic
data (forked from the tests' warm template; the installed commands
themselves once, below)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import hparams_plugin_data, metrics, run_cli, run_dirs, side_by_side, start_cli, tiny


@pytest.fixture(scope="module")
def quick_run(synthetic_root, tmp_path_factory):
    """One tiny default-config run, shared by the assertions below."""
    cwd = tmp_path_factory.mktemp("quick")
    proc = run_cli(tiny(synthetic_root, "epochs=2", "tracking.images_every_n_epochs=1",
                        "tracking.histograms_every_n_epochs=1"), cwd, check=True)
    (run_dir,) = run_dirs(cwd)
    return proc, run_dir


def test_run_writes_a_valid_metrics_json(quick_run):
    _, run_dir = quick_run
    m = metrics(run_dir)
    assert m["status"] == "completed" and m["error"] is None
    assert [row["epoch"] for row in m["history"]] == [1, 2]
    for row in m["history"]:
        for key in ("train/loss", "train/acc", "test/loss", "test/acc", "epoch_seconds", "samples_per_second", "lr"):
            assert isinstance(row[key], float), key
        assert row["epoch_seconds"] > 0 and row["lr"] == pytest.approx(1e-3)
    assert m["final"]["test/acc"] == m["history"][-1]["test/acc"]
    assert m["best"]["epoch"] in (1, 2) and m["final"]["epochs"] == 2
    assert m["timing"]["startup_seconds"] > 0


def test_run_prints_first_batch_and_progress(quick_run):
    proc, run_dir = quick_run
    assert "Shape of X [N, C, H, W]: torch.Size([32, 1, 28, 28])" in proc.stdout
    assert "Shape of y: torch.Size([32]) torch.int64" in proc.stdout
    assert "Model: MLP, 669,706 parameters" in proc.stdout  # the seed's 784-512-512-10 network
    assert "Run completed" in proc.stdout


def test_trainer_log_holds_the_console_and_the_model(quick_run):
    proc, run_dir = quick_run
    log = (run_dir / "trainer.log").read_text()
    for line in ("Model: MLP, 669,706 parameters", "Shape of y: torch.Size([32]) torch.int64", "epoch   2"):
        assert line in log, line
    assert "Linear(in_features=784, out_features=512, bias=True)" in log  # print(model), as the seed does
    assert log.startswith("Run: ") and "data.root=" in log.splitlines()[0]  # the header line too


@pytest.mark.parametrize("bad", ["lr=-1", "epochs=-3", "cuda_graph=true", "cv.folds=1", "cv.folds=3 lr=-1",
                                 "cv.folds=3 data.test_subset=9999"])  # data every fold would be refused for
def test_a_refused_run_says_one_line_and_leaves_no_folder(synthetic_root, tmp_path, bad):
    proc = run_cli([*tiny(synthetic_root, *bad.split()), "device=cpu"], tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and proc.stderr.startswith("trainer: error: "), proc
    assert not (tmp_path / "outputs").exists()  # Hydra made the run folder; the refusal took it away


def test_a_refused_sweep_job_keeps_its_record_ending_with_why(synthetic_root, tmp_path):
    run_cli(["-m", *tiny(synthetic_root, "lr=-1,0.01", f"hydra.sweep.dir={tmp_path / 'sweep'}")], tmp_path)
    refused = next((tmp_path / "sweep").glob("0_*"))
    lines = (refused / "trainer.log").read_text().splitlines()
    assert lines[0].startswith("── 0_lr=-1") and lines[-1] == "failed: lr=-1 must be positive (for example lr=1e-3)"
    assert metrics(refused)["status"] == "failed" and metrics(refused)["kind"] == "run"


def test_the_record_says_what_happened(quick_run):
    _, run_dir = quick_run
    m = metrics(run_dir)
    assert m["monitor"] == "test/acc"  # no validation split: the per-epoch evaluation is on test
    assert m["best"]["test/acc"] == max(row["test/acc"] for row in m["history"])
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "${" not in config and "lr: 0.001" in config  # resolved
    assert "lr" not in yaml.safe_load(config)["optimizer"]  # one lr, at the top level


def test_run_directory_layout(quick_run):
    from trainer.core import checkpoint

    _, run_dir = quick_run
    m = metrics(run_dir)
    last = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    best = checkpoint.load(run_dir / "checkpoints" / "best.ckpt")
    assert last["history"] == m["history"]  # the record and the checkpoint tell the same story
    assert len(best["history"]) == m["best"]["epoch"]  # best.ckpt is the best epoch's state
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["epochs"] == len(m["history"])
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_tensorboard_has_the_expected_tags(quick_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = quick_run
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for tag in ("loss/train", "acc/train", "loss/test", "acc/test", "lr", "perf/epoch_seconds",
                "perf/samples_per_second", "results/train_seconds"):
        assert tag in scalars, tag
    assert "hp_metric" not in scalars
    final = ea.Scalars("acc/test")[-1].value
    assert final == pytest.approx(metrics(run_dir)["final"]["test/acc"], abs=1e-6)
    assert {"config", "model"} <= {t.split("/")[0] for t in ea.Tags()["tensors"]}
    assert set(hparams_plugin_data(ea)) == {"session_start_info", "session_end_info"}
    assert "samples/inputs" in ea.Tags()["images"]
    assert any(t.startswith("weights/") for t in ea.Tags()["histograms"])


def test_conv_model_and_adam_from_the_command_line(synthetic_root, tmp_path):
    run_cli(tiny(synthetic_root, "model=conv", "optimizer=adam", "lr=1e-3", "model.channels=[8,16]",
                 "model.head_hidden=[32]"), tmp_path, check=True)
    (run_dir,) = run_dirs(tmp_path)
    # Named by what it changes as typed (tiny()'s knobs first, data.root left out), then the date and a suffix.
    assert re.fullmatch(r"epochs=1_and_10_more-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", run_dir.name), run_dir.name
    cfg = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "trainer.core.models.ConvNet" in cfg and "torch.optim.Adam" in cfg
    assert metrics(run_dir)["final"]["test/acc"] > 0.5  # synthetic classes are easy


def test_two_runs_in_the_same_second_get_two_directories(synthetic_root, tmp_path):
    procs = [start_cli(tiny(synthetic_root, "data.subset=64"), tmp_path) for _ in range(2)]
    for p in procs:
        done = p.finish()
        assert done.returncode == 0, done.stderr
    assert len(run_dirs(tmp_path)) == 2


def test_the_installed_commands_run_as_a_user_types_them(synthetic_root, tmp_path):
    """The other CLI tests fork their `trainer` from a warm template; this one
    starts the console scripts pip installed, as a shell does."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    trained = subprocess.run([str(bin_dir / "trainer"), *tiny(synthetic_root, "data.subset=64")], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=240)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert metrics(run_dir)["status"] == "completed"
    listed = subprocess.run([str(bin_dir / "trainer-summary"), str(tmp_path / "outputs")], env=env,
                            capture_output=True, text=True, timeout=240)
    # Listed by its place, its name shortened to fit beside the other columns: its date and id kept.
    assert listed.returncode == 0 and "runs/" in listed.stdout, listed.stdout + listed.stderr
    assert run_dir.name.rsplit("_", 1)[1] in listed.stdout, listed.stdout


# Bad commands, each one line naming the key and the fix: tests/test_bad_input.py.


def test_resume_continues_to_the_same_result(synthetic_root, tmp_path):
    """Train 1 epoch, then `resume=<run dir> epochs=3`: the same final metrics
    and weights as 3 epochs straight (deterministic CPU run)."""
    common = ["deterministic=true", "train.shuffle=true", "model.hidden=[32]", "model.dropout=0.1",
              "scheduler=step", "transform=augment"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    side_by_side(lambda job: run_cli(tiny(synthetic_root, *common, job[0]), job[1], check=True),
                 [("epochs=3", straight), ("epochs=1", resumed)])
    (a,), (b,) = run_dirs(straight), run_dirs(resumed)
    proc = run_cli([f"resume={b}", "epochs=3"], resumed, check=True)
    assert "Resuming" in proc.stdout
    assert run_dirs(resumed) == [b]  # continued in its own directory
    ma, mb = metrics(a), metrics(b)
    assert [r["epoch"] for r in mb["history"]] == [1, 2, 3]
    assert ma["final"]["test/acc"] == mb["final"]["test/acc"]
    assert ma["final"]["test/loss"] == mb["final"]["test/loss"]
    wa = torch.load(a / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    wb = torch.load(b / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
