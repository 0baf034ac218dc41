"""trainer-eval and trainer-predict on a model trained by the real CLI.

One tiny run (synthetic Fashion-MNIST-shaped data, MLP 784-32-10, 2 epochs,
a 64-image validation split) is shared by the module; the commands are run
in-process through their `main()` where that is enough, and as subprocesses
where the exit status and the stderr line are the point.
"""
from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import call_main, metrics, run_cli, tiny
from trainer.cli import evaluate, predict
from trainer.core import data
from trainer.core.checkpoint import find, save
from trainer.core.config import TrainerConfig
from trainer.core.engine import confusion_matrix
from trainer.core.models import MLP
from trainer.runs.inference import load_run
from trainer.core.errors import CheckpointError


def resolve_checkpoint(path, which=None):
    """What trainer-eval and trainer-predict mean by a path."""
    return find(path, which, prefer=("best", "last"))

TEST_SIZE, VAL_SIZE = 256, 64  # conftest's synthetic test split; data.val_split below


@pytest.fixture(scope="module")
def run_dir(synthetic_root, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("inference")
    run_cli(tiny(synthetic_root, "model.hidden=[32]", "epochs=2", "optimizer=adam", "lr=7e-4",
                 "train.shuffle=true", f"data.val_split={VAL_SIZE}", "tracking.tensorboard=false",
                 "hydra.run.dir=outputs/run"), cwd=base, check=True)
    return base / "outputs" / "run"


@pytest.fixture(scope="module")
def test_split(synthetic_root):
    return data.load("fashion_mnist", synthetic_root, train=False)


def one_error_line(stderr: str, prog: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: "), stderr
    return lines[0]


# ------------------------------------------------------------------ eval
def test_eval_reproduces_the_runs_final_test_metrics(run_dir, test_split, capsys):
    code, out, err = call_main(evaluate.main, capsys, run_dir, "--checkpoint", "last", "--device", "cpu")
    assert code == 0, err
    assert "Per-class accuracy" in out and "Confusion matrix" in out
    report = json.loads((run_dir / "checkpoints" / "last.eval-test.json").read_text())
    final = metrics(run_dir)["final"]

    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert int(matrix.sum()) == report["samples"] == TEST_SIZE
    assert report["correct"] == int(matrix.trace())
    assert report["accuracy"] == pytest.approx(int(matrix.trace()) / TEST_SIZE, abs=1e-12)
    # Same model, same data, same arithmetic as the run's own final evaluation.
    assert report["accuracy"] == pytest.approx(final["test/acc"], abs=1e-6)
    assert report["loss"] == pytest.approx(final["test/loss"], rel=1e-5)
    assert report["accuracy"] > 0.9

    _, labels = test_split
    counts = torch.bincount(labels, minlength=10)
    for i, row in enumerate(report["per_class"]):
        assert row["index"] == i and row["class"] == data.DATASETS["fashion_mnist"].classes[i]
        assert row["samples"] == int(matrix[i].sum()) == int(counts[i])  # rows are the true class
        assert row["correct"] == int(matrix[i, i])
        assert row["accuracy"] == pytest.approx(row["correct"] / row["samples"])
    assert report["split"] == "test" and report["position"] == "after epoch 2"
    assert report["loss_fn"] == "trainer.core.losses.CrossEntropy"


def test_eval_confusion_matches_the_model_sample_by_sample(run_dir, test_split):
    """Rows are true classes, columns predictions: rebuilt independently here."""
    images, labels = test_split
    loaded = load_run(run_dir, "last", "cpu")
    preds = loaded.logits(images).argmax(1)
    report = json.loads((run_dir / "checkpoints" / "last.eval-test.json").read_text())
    assert confusion_matrix(preds, labels, 10).tolist() == report["confusion_matrix"]


def test_eval_val_split_with_the_default_best_checkpoint(run_dir, capsys):
    code, out, err = call_main(evaluate.main, capsys, run_dir, "--split", "val", "--device", "cpu", "--batch-size", "7")
    assert code == 0, err
    assert resolve_checkpoint(run_dir).name == "best.ckpt"  # a run dir means best.ckpt when there is one
    report = json.loads((run_dir / "checkpoints" / "best.eval-val.json").read_text())
    best = metrics(run_dir)["best"]
    assert report["samples"] == VAL_SIZE == sum(sum(r) for r in report["confusion_matrix"])
    assert report["position"] == f"after epoch {best['epoch']}"
    # The run's seeded validation split, even in batches of 7.
    assert report["accuracy"] == pytest.approx(best["val/acc"], abs=1e-6)
    assert report["loss"] == pytest.approx(best["val/loss"], rel=1e-5)
    assert f"data.val_split={VAL_SIZE}," in out, out  # a count reads as the user typed it, not 64.0


@pytest.mark.parametrize("case", ["missing", "corrupt", "not-a-run"])
def test_eval_errors_are_one_line(case, tmp_path, capsys):
    if case == "missing":
        target = tmp_path / "nope"
    elif case == "corrupt":
        target = tmp_path / "broken.ckpt"
        target.write_bytes(b"\x80\x02this is not a checkpoint")
    else:
        target = tmp_path  # a folder without checkpoints/
    code, _, err = call_main(evaluate.main, capsys, target, "--device", "cpu")
    assert code == 1
    assert str(target) in one_error_line(err, "trainer-eval")


# --------------------------------------------------------------- predict
def _correct_samples(run_dir, images, labels, n: int) -> list[int]:
    """Indices of test samples the model gets right, one per class for the first n classes."""
    preds = load_run(run_dir, None, "cpu").logits(images).argmax(1)
    picked = []
    for c in range(n):
        ok = ((labels == c) & (preds == labels)).nonzero().flatten()
        picked.append(int(ok[0]))
    return picked


def test_predict_names_the_classes_of_png_files(run_dir, test_split, tmp_path, capsys):
    images, labels = test_split
    classes = data.DATASETS["fashion_mnist"].classes
    picked = _correct_samples(run_dir, images, labels, 4)
    files, expected = [], []
    for i in picked:
        path = tmp_path / f"sample{i}.png"
        Image.fromarray(images[i].numpy(), mode="L").save(path)
        files.append(path)
        expected.append(classes[int(labels[i])])
    # Any size and mode: RGB 56x56, resized with antialiasing to 28x28.
    i = picked[1]
    big = tmp_path / "big_rgb.png"
    Image.fromarray(images[i].numpy(), mode="L").resize((56, 56), Image.Resampling.NEAREST).convert("RGB").save(big)
    files.append(big)
    expected.append(classes[int(labels[i])])

    code, out, err = call_main(predict.main, capsys, run_dir, *files, "--top", "3", "--json", "--device", "cpu")
    assert code == 0, err
    assert err == ""  # light-on-dark, as the model saw in training: no note
    results = json.loads(out)
    assert not any(r["light_background"] for r in results)
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert [r["predictions"][0]["class"] for r in results] == expected
    assert results[-1]["size"] == [56, 56] and results[-1]["mode"] == "RGB"
    for r in results:
        probs = [p["probability"] for p in r["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6

    # The table, and --invert for a black-on-white drawing of the same sample.
    negative = tmp_path / "negative.jpg"
    Image.fromarray(255 - images[picked[2]].numpy(), mode="L").save(negative, quality=100)
    code, out, err = call_main(predict.main, capsys, run_dir, negative, "--invert", "--device", "cpu")
    assert code == 0, err
    assert classes[int(labels[picked[2]])] in out and "inverted" in out
    assert err == ""
    # Without --invert, the drawing is noticed: one note naming it and the fix, the answer still printed.
    code, out, err = call_main(predict.main, capsys, run_dir, negative, "--device", "cpu")
    assert code == 0 and "light background" in out, out
    assert err.count("\n") == 1 and str(negative) in err and "add --invert" in err, err


def test_predict_rejects_a_file_that_is_not_an_image(run_dir, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L").save(good)
    bad = tmp_path / "x.png"
    bad.write_text("not a picture\n")
    code, _, err = call_main(predict.main, capsys, run_dir, good, bad)
    assert code == 1
    assert str(bad) in one_error_line(err, "trainer-predict")
    assert "Traceback" not in err


def test_predict_errors_are_one_line(run_dir, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L").save(image)
    code, _, err = call_main(predict.main, capsys, tmp_path / "no-run", image)
    assert code == 1 and str(tmp_path / "no-run") in one_error_line(err, "trainer-predict")
    code, _, err = call_main(predict.main, capsys, run_dir, tmp_path / "missing.png")
    assert code == 1 and "missing.png" in one_error_line(err, "trainer-predict")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"garbage")
    code, _, err = call_main(predict.main, capsys, broken, image)
    assert code == 1 and str(broken) in one_error_line(err, "trainer-predict")


@pytest.fixture
def deep_run(run_dir, tmp_path, monkeypatch) -> Path:
    """The module's run copied where its paths are longer than any console line
    (a pipe's 80 or 160 columns), for commands whose output goes to a pipe."""
    import shutil

    monkeypatch.delenv("COLUMNS", raising=False)
    deep = tmp_path.joinpath(*["a-folder-with-a-rather-long-name"] * 6, "run")
    shutil.copytree(run_dir, deep)
    return deep


def test_eval_never_breaks_a_path_it_prints(deep_run, capsys):
    out_file = deep_run / "reports" / "test-split-of-the-run-in-its-own-long-folder.json"
    out_file.parent.mkdir()
    code, out, err = call_main(evaluate.main, capsys, deep_run, "--device", "cpu", "--output", out_file)
    assert code == 0, err
    assert str(deep_run / "checkpoints" / "best.ckpt") in out and f"Wrote {out_file}" in out, out


def test_predict_never_breaks_a_path_it_prints(deep_run, capsys):
    image = deep_run / "an-image-in-a-long-folder.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L").save(image)
    code, out, err = call_main(predict.main, capsys, deep_run, image, "--device", "cpu", "--top", "2")
    assert code == 0, err
    assert str(image) in out and str(deep_run / "checkpoints" / "best.ckpt") in out, out


def test_resolve_checkpoint_choices(run_dir):
    assert resolve_checkpoint(run_dir, "last").name == "last.ckpt"
    assert resolve_checkpoint(run_dir, "best").name == "best.ckpt"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(ckpt) == ckpt
    with pytest.raises(CheckpointError):
        resolve_checkpoint(run_dir / "missing")


def test_console_scripts_are_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("trainer-eval") == "trainer.cli.evaluate:main"
    assert scripts.get("trainer-predict") == "trainer.cli.predict:main"


# ------------------------------------------------- checkpoints of older versions
def old_format_checkpoint(path: Path, synthetic_root: Path) -> nn.Module:
    """A checkpoint as trainer wrote it before the package layout moved its
    modules (trainer.models.MLP, trainer.losses..., trainer.pipeline...),
    written by hand: a key the schema has since dropped (optimizer.lr), keys
    it has since gained left out (cv, cuda_graph, train.drop_last). Returns
    the model whose weights it holds."""
    torch.manual_seed(3)
    model = MLP(hidden=[24]).eval()
    config = {
        "data": {"name": "fashion_mnist", "root": str(synthetic_root), "val_split": 0.0, "subset": 0,
                 "test_subset": 0, "search_paths": [], "download": False, "verify": False},
        "transform": {"_target_": "trainer.pipeline.BatchTransform", "scale": True, "mean": 0.5, "std": 1.0,
                      "shift": 0, "hflip": 0.0, "erase": 0.0},
        "model": {"_target_": "trainer.models.MLP", "in_features": 784, "hidden": [24], "num_classes": 10,
                  "activation": "relu", "dropout": 0.0, "batchnorm": False},
        "loss": {"_target_": "trainer.losses.CrossEntropy", "label_smoothing": 0.0},
        "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.0, "dampening": 0.0,
                      "nesterov": False, "weight_decay": 0.0},
        "scheduler": {"name": "none", "interval": "epoch"},
        "seed": 3, "epochs": 1, "batch_size": 64, "lr": 0.05, "device": "cpu", "precision": "fp32",
        "pipeline": "device", "train": {"shuffle": False, "eval_batch_size": 100},
    }
    save({"config": config, "model": model.state_dict(), "position": {"epoch": 2, "step": 0, "global_step": 4}},
         path)
    return model


def test_an_old_format_checkpoint_loads_and_evaluates(synthetic_root, test_split, tmp_path, capsys):
    ckpt = tmp_path / "old" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    model = old_format_checkpoint(ckpt, synthetic_root)

    loaded = load_run(ckpt, device="cpu")
    assert isinstance(loaded.config, TrainerConfig)
    assert (loaded.config.model._target_, loaded.config.loss._target_, loaded.config.transform._target_) == (
        "trainer.core.models.MLP", "trainer.core.losses.CrossEntropy", "trainer.core.pipeline.BatchTransform")

    code, out, err = call_main(evaluate.main, capsys, ckpt, "--device", "cpu")
    assert code == 0, err
    report = json.loads(ckpt.with_name("last.eval-test.json").read_text())
    images, labels = test_split
    with torch.no_grad():  # the transform by hand: ToTensor then Normalize(0.5, 1.0)
        logits = model(images.float().div(255).sub(0.5).unsqueeze(1))
    assert report["samples"] == TEST_SIZE and report["batch_size"] == 100
    assert report["correct"] == int((logits.argmax(1) == labels).sum())
    assert report["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, labels)), rel=1e-5)
    assert report["loss_fn"] == "trainer.core.losses.CrossEntropy"
