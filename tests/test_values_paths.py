"""Every value does something or is refused, every path is what it seems,
every suggestion is valid, and library warnings reach the console as one
line of ours. Table-driven and in-process; one trainer.run end to end."""
from __future__ import annotations

import errno
import gzip
import math
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import trainer
from helpers import compose_cfg, check_before_data, tiny
from trainer.cli import evaluate, hydra_errors, predict
from trainer.core import checkpoint, config, data, errors, paths, schedules
from trainer.core.errors import UserError
from trainer.report import figures
from trainer.runs import resume


# ------------------------------------------------------------------ schedules
def _lrs(name: str, steps: int, interval: str = "step", epochs: int = 1, **kwargs) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched, _ = schedules.build(name, opt, lr=0.1, epochs=epochs, steps_per_epoch=steps, interval=interval, **kwargs)
    out = []
    for _ in range(steps * epochs if interval == "step" else epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


@pytest.mark.parametrize("name", schedules.NAMES)
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shape", [{"pct_start": 0.01}, {"pct_start": 0.25}, {"pct_start": 0.5},
                                   {"pct_start": 0.99, "cycle_momentum": True}, {"warmup_epochs": 0.3},
                                   {"warmup_epochs": 0.9, "min_lr": 0.01}])
def test_every_schedule_runs_for_any_length(name, steps, shape):
    kwargs = {k: v for k, v in shape.items()
              if name == ("onecycle" if k in ("pct_start", "cycle_momentum") else "cosine")}
    for interval, epochs in (("step", 1), ("epoch", steps)):
        lrs = _lrs(name, steps, interval, epochs, **kwargs)
        assert all(math.isfinite(lr) and 0 <= lr <= 0.1 + 1e-12 for lr in lrs), lrs


@pytest.mark.parametrize("total, pct, peak", [(1, 0.25, 0), (2, 0.25, 0), (3, 0.25, 1), (4, 0.25, 1), (4, 0.9, 2),
                                              (20, 0.25, 4), (100, 0.01, 1), (100, 0.99, 98)])
def test_onecycle_peak_on_a_whole_step_inside_the_run(total, pct, peak):
    assert schedules.peak_step(total, pct) == peak
    if total >= 3:
        lrs = _lrs("onecycle", total, pct_start=pct)
        assert lrs.index(max(lrs)) == peak and max(lrs) == pytest.approx(0.1) and lrs[-1] < lrs[0]


@pytest.mark.parametrize("total, warmup, steps", [(1, 0.5, 0), (2, 0.2, 1), (10, 0.2, 1), (10, 2.4, 2), (10, 50, 9),
                                                  (10, 0, 0)])
def test_cosine_warmup_at_least_a_step_and_short_of_the_run(total, warmup, steps):
    assert schedules.warmup_steps(total, warmup) == steps


# ------------------------------------------------------- settings that apply
# One override per rule of config.APPLIES_ONLY that sets its key where it would be ignored.
IGNORED = {
    "scheduler.interval": "scheduler=step scheduler.interval=step",
    "scheduler.step_size": "scheduler=cosine scheduler.step_size=3",
    "scheduler.gamma": "scheduler=onecycle scheduler.gamma=0.5",
    "scheduler.warmup_epochs": "scheduler=step scheduler.warmup_epochs=1",
    "scheduler.min_lr": "scheduler=none scheduler.min_lr=0.001",
    "scheduler.pct_start": "scheduler=cosine scheduler.pct_start=0.5",
    "scheduler.cycle_momentum": "scheduler=cosine scheduler.cycle_momentum=true",
    "optimizer.momentum": "scheduler=onecycle scheduler.cycle_momentum=true optimizer.momentum=0.9",
    "optimizer.dampening": "optimizer=sgd optimizer.dampening=0.5",
    "optimizer.nesterov": "optimizer=sgd optimizer.nesterov=true",
    "model.dropout": "model.hidden=[] model.dropout=0.5",
    "model.batchnorm": "model.hidden=[] model.batchnorm=true",
    "model.head_dropout": "model=conv model.head_hidden=[] model.head_dropout=0.5",
    "model.pool": "model=conv model.channels=[8] model.pool=avg",
    "model.pool_every": "model=conv model.pool=none model.pool_every=1",
    "transform.std": "transform.std=0.5",
    "train.max_skipped_batches": "train.max_skipped_batches=3",
    "tracking.images_every_n_epochs": "tracking.tensorboard=false tracking.images_every_n_epochs=2",
    "tracking.histograms_every_n_epochs": "tracking.tensorboard=false tracking.histograms_every_n_epochs=2",
    "loader.num_workers": "loader.num_workers=2",
    "loader.pin_memory": "loader.pin_memory=false",
}


def test_every_rule_of_the_table_is_tried_here():
    assert sorted(rule.key for rule in config.APPLIES_ONLY) == sorted(IGNORED)


@pytest.mark.parametrize("key", sorted(IGNORED))
def test_a_key_that_would_be_ignored_is_refused_naming_what_it_needs(key):
    with pytest.raises(UserError) as e:
        config.validate(compose_cfg(IGNORED[key].split()))
    assert str(e.value).startswith(f"{key}=") and "only applies with" in str(e.value), str(e.value)


@pytest.mark.parametrize("overrides", [
    "scheduler=onecycle scheduler.cycle_momentum=true optimizer=adam", "scheduler=onecycle scheduler.pct_start=0.5",
    "scheduler=step scheduler.gamma=0.5 scheduler.step_size=2", "scheduler=cosine scheduler.warmup_epochs=1",
    "optimizer=sgd optimizer.momentum=0.9 optimizer.nesterov=true", "model.hidden=[] model.dropout=0",
    "transform.mean=0.5 transform.std=0.25", "train.nan_policy=skip train.max_skipped_batches=3",
    "tracking.tensorboard=false tracking.images_every_n_epochs=0", "pipeline=loader loader.num_workers=0",
    "model=mymodel", "model=conv", "experiment=mnist_speedrun", "experiment=fashion_conv",
])
def test_the_same_keys_with_what_they_need_are_accepted(overrides):
    check_before_data(compose_cfg(overrides.split()))


@pytest.mark.parametrize("override, key", [
    ("optimizer=sgd optimizer.momentum=1", "optimizer.momentum"), ("optimizer=sgd optimizer.momentum=2", "optimizer.momentum"),
    ("optimizer=sgd optimizer.momentum=0.5 optimizer.dampening=1.5", "optimizer.dampening"),
    ("optimizer=rmsprop optimizer.momentum=1", "optimizer.momentum"), ("optimizer=rmsprop optimizer.alpha=1", "optimizer.alpha"), ("optimizer=adam optimizer.betas=[1,0.9]", "optimizer.betas"),
    ("model=conv model.channels=[]", "model.channels"),
    ("scheduler=cosine scheduler.warmup_epochs=5 epochs=5", "scheduler.warmup_epochs"),
    ("data.subset=1 data.val_split=0.5", "data.val_split"), ("data.subset=1000 data.val_split=1e-7", "data.val_split"),
    ("data.subset=100 data.val_split=100", "data.val_split"),
])
def test_values_outside_what_the_library_allows_are_refused(override, key):
    with pytest.raises(UserError) as e:
        config.validate(compose_cfg(override.split()))
    assert str(e.value).startswith(f"{key}="), str(e.value)


@pytest.mark.parametrize("val_split, images, held", [(0, 10, 0), (0.1, 100, 10), (0.5, 2, 1), (2, 10, 2)])
def test_held_out_counts(val_split, images, held):
    assert data.held_out(val_split, images) == held


@pytest.mark.parametrize("val_split, images, says", [(1e-7, 60000, "holds out 0"), (1e-300, 60000, "holds out 0"),
                                                     (0.5, 1, "holds out 0"), (100, 100, "100 of 100"),
                                                     (0.9999, 100, "100 of 100")])
def test_a_split_that_rounds_to_nothing_or_everything_is_refused(val_split, images, says):
    with pytest.raises(errors.DataError, match=says):
        data.held_out(val_split, images)


def test_a_subset_larger_than_the_data_is_refused(synthetic_root):
    with pytest.raises(errors.DataError, match="data.subset=100000 is more than the 512"):
        data.load_splits("mnist", synthetic_root, subset=100000)


# ---------------------------------------------------------------------- paths
@pytest.fixture
def odd_paths(tmp_path) -> Path:
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "unmounted")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


@pytest.mark.parametrize("name, want, says", [
    ("file", "file", None), ("folder", "dir", None), ("nothing", "file", "missing"),
    ("dangling", "dir", "is a symlink to "), ("loop", "dir", "symlink loop"), ("file", "dir", "is a file, not a folder"),
    ("folder", "file", "is a folder, not a file"), ("fifo", "file", "is a pipe (FIFO), not a file"),
    ("fifo", "dir", "is a pipe (FIFO), not a folder"), ("file/x", "dir", "is inside"), ("dangling/x", "dir", "is inside"),
    ("loop/x", "file", "symlink loop"), ("a" * 300, "file", "too long"),
])
def test_a_path_is_said_by_its_kind(odd_paths, name, want, says):
    why = paths.problem(odd_paths / name, want)
    assert (why is None) if says is None else (says in why), why


def test_a_device_is_not_a_file():
    assert paths.problem("/dev/null", "file") == "is a device, not a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_said(tmp_path):
    (tmp_path / "secret").write_text("x")
    (tmp_path / "secret").chmod(0)
    assert "cannot be read" in paths.problem(tmp_path / "secret", "file")


@pytest.mark.parametrize("name", ["dangling", "loop", "fifo", "file", "dangling/below"])
def test_a_data_root_that_is_not_a_folder_is_one_line(odd_paths, name):
    with pytest.raises(errors.DataError) as e:
        data.prepare("mnist", odd_paths / name, download=False)
    assert str(e.value).startswith(f"data.root {odd_paths / name} ") and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["dangling", "loop", "fifo"])
def test_a_raw_folder_or_file_that_is_not_what_it_seems_is_one_line(odd_paths, tmp_path, name):
    root = tmp_path / "root"
    (root / "MNIST").mkdir(parents=True)
    os.symlink(odd_paths / name, root / "MNIST" / "raw")
    with pytest.raises(errors.DataError, match=re.escape(f"data folder {root / 'MNIST' / 'raw'} ")):
        data.prepare("mnist", root, download=False)


def test_a_truncated_gz_never_hides_a_good_copy(tmp_path, make_idx_dataset):
    good = make_idx_dataset(tmp_path / "good", "MNIST", n_train=64, n_test=32)
    copies = tmp_path / "copies"
    copies.mkdir()
    for f in good.iterdir():
        with gzip.open(copies / f"{f.name}.gz", "wb") as out:
            out.write(f.read_bytes())
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    truncated = (copies / "train-images-idx3-ubyte.gz").read_bytes()[:200]
    (raw / "train-images-idx3-ubyte.gz").write_bytes(truncated)
    os.mkfifo(raw / "train-labels-idx1-ubyte.gz")  # never opened: skipped as not a file
    said = []
    data.prepare("mnist", tmp_path / "root", [str(copies)], download=False, verify=False, log=said.append)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == (good / "train-images-idx3-ubyte").read_bytes()
    assert any("skipped" in s and "train-images" in s for s in said) and any(str(copies) in s for s in said)


def test_an_unreadable_only_copy_is_named_in_the_missing_line(tmp_path):
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(errors.DataError, match="copies skipped: .*train-images-idx3-ubyte.gz"):
        data.prepare("mnist", tmp_path / "root", download=False, verify=False, log=lambda s: None)


@pytest.mark.parametrize("make", ["folder", "fifo", "dangling"])
def test_a_checkpoint_that_is_not_a_file_is_said_for_resume_and_eval(tmp_path, make):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    {"folder": ckpt.mkdir, "fifo": lambda: os.mkfifo(ckpt), "dangling": lambda: ckpt.symlink_to("/nowhere")}[make]()
    for call in (lambda: checkpoint.find(tmp_path / "run"), lambda: checkpoint.load(ckpt),
                 lambda: resume.load("auto", tmp_path / "run")):
        with pytest.raises(errors.CheckpointError) as e:
            call()
        assert "never finished" not in str(e.value) and str(ckpt) in str(e.value)


@pytest.mark.parametrize("typed", ["resume=", "resume=''", "resume= "])
def test_an_empty_resume_is_refused_not_taken_as_here(typed):
    with pytest.raises(UserError, match="resume= is empty"):
        resume.expand(["epochs=2", typed])


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free some disk space"), (errno.EACCES, "fix its permissions"),
                                       (errno.EROFS, "writable file system"), (errno.EIO, "or choose")])
def test_an_os_error_gets_the_fix_its_errno_calls_for(code, fix):
    line = paths.os_error_line(OSError(code, os.strerror(code), "/x/y"), "could not write /x/y", "choose another")
    assert fix in line and line.startswith("could not write /x/y: ")
    assert code == errno.ENOSPC or "disk space" not in line


# ---------------------------------------------------------------- suggestions
@pytest.mark.parametrize("key", ["scheduler.eta_min", "scheduler.trian", "scheduler.gama", "optimizer.momentom",
                                 "optimizer.weight_decy", "model.hiden", "model.dropot", "train.shufle",
                                 "early_stopping.patiense", "data.val_splt", "trian", "epoch", "shufle", "lr_",
                                 "tracking.grap", "cv.fold_", "transform.mena"])
def test_did_you_mean_names_only_a_key_that_would_be_accepted(key):
    line = hydra_errors.suggest(key)
    if "did you mean" not in line:
        return
    suggested = line.split("'")[1]
    parent, _, leaf = suggested.rpartition(".")
    valid = hydra_errors.group_keys(parent) if parent else hydra_errors.top_level_keys()
    assert (leaf if parent else suggested) in valid, line
    value = {"scheduler": "none"}.get(suggested)
    if value is None and parent:  # the key with its default: a command line that composes
        compose_cfg([f"{suggested}={_as_override(getattr(getattr(compose_cfg([]), parent), leaf))}"])


def _as_override(value) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value).replace(" ", "")


def test_scheduler_eta_min_no_longer_suggests_a_section():
    assert "scheduler.train" not in hydra_errors.suggest("scheduler.eta_min")


@pytest.mark.parametrize("key, value, advice", [("optimizer.lr", "nan", "lr=1e-3"), ("scheduler.max_lr", "-1", "lr=1e-3"),
                                                ("optimizer.lr", "inf", "lr=1e-3"), ("optimizer.lr", "abc", "lr=1e-3"),
                                                ("scheduler.max_lr", "0.5", "lr=0.5")])
def test_lr_advice_never_suggests_a_refused_value(key, value, advice):
    line = hydra_errors.lr_elsewhere(key, value)
    assert line.endswith(f"write {advice}") or f"write {advice} " in line, line


def test_a_too_long_key_is_an_unknown_key_not_a_write_error():
    key = "a" * 300
    e = OSError(errno.ENAMETOOLONG, "File name too long", f"/site-packages/hydra/conf/{key}")
    line = hydra_errors.describe(e, [f"{key}=1"])
    assert line.startswith("unknown config key") and "write" not in line and "300 characters" in line


# ---------------------------------------------------------------- warnings
def test_a_library_warning_is_one_line_of_ours(capsys):
    with warnings.catch_warnings():  # restores Python's own on the way out
        warnings.simplefilter("always")
        errors.warnings_as_lines("trainer")
        warnings.warn("something odd\nin two lines", UserWarning)
    assert capsys.readouterr().err == "trainer: warning: something odd\n"


def test_a_title_the_font_cannot_draw_warns_nothing():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        figures.curves([{"epoch": 1, "train/loss": 1.0, "test/loss": 1.2, "train/acc": 0.5, "test/acc": 0.4}],
                       "日本語の実験")
    assert not [w for w in seen if "Glyph" in str(w.message)], [str(w.message) for w in seen]


def test_a_huge_image_is_refused_in_one_line_without_a_warning(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 10000 pixels: over the limit, under twice it
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(predict.ImageFileError, match="too large to read safely"):
            predict.read_image(tmp_path / "big.png")
    assert not seen


def test_an_image_that_is_a_pipe_is_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(predict.ImageFileError, match="is a pipe"):
        predict.read_image(tmp_path / "pipe.png")


# ---------------------------------------------------------------- end to end
# 4 steps at 25% rising: torch's OneCycleLR put its peak at step 0 and divided by that phase's length (0).
@pytest.mark.parametrize("schedule", [["scheduler=onecycle"],
                                      ["scheduler=onecycle", "scheduler.interval=epoch", "epochs=4"],
                                      ["scheduler=cosine", "scheduler.warmup_epochs=0.1"]])
def test_a_short_run_with_a_schedule_completes(synthetic_root, tmp_path, schedule):
    result = trainer.run(*tiny(synthetic_root, "data.subset=128", "batch_size=32", "model.hidden=[16]",
                               "data.test_subset=64", *schedule), run_dir=tmp_path / "run", quiet=True)
    assert result["status"] == "completed"


@pytest.mark.parametrize("make", ["fifo", "folder"])
def test_an_eval_output_that_is_not_a_file_is_refused_before_any_work(tmp_path, make):
    out = tmp_path / "out.json"
    os.mkfifo(out) if make == "fifo" else out.mkdir()
    args = evaluate.parser().parse_args([str(tmp_path / "no-run"), "--output", str(out)])
    with pytest.raises(UserError, match=f"--output {re.escape(str(out))} is a "):
        evaluate.run(args, console=None)
