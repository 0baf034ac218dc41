"""trainer-export (ONNX, TorchScript) and trainer-predict --model on the file.

Two tiny runs made by the real CLI (an MLP and a conv net, one epoch on the
synthetic data) are shared by the module; the commands run in-process
through their main(). The ONNX tests skip where the export extra (onnx,
onnxruntime, onnxscript) is not installed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import call_main, run_cli, side_by_side, tiny
from trainer.cli import export as export_cli
from trainer.cli import predict
from trainer.core import data
from trainer.runs.export import load_exported

MODELS = {"mlp": ["model.hidden=[32]"], "conv": ["model=conv", "model.channels=[8,8]", "model.head_hidden=[16]"]}
DIFF = re.compile(r"max abs logit difference (\S+)")


def needs_onnx():
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason="the export extra is not installed: pip install 'trainer[export]'")


@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("export")

    def train(name: str) -> Path:
        run_cli(tiny(synthetic_root, *MODELS[name], "transform=normalize", "data.subset=128",
                     "tracking.tensorboard=false", f"hydra.run.dir=outputs/{name}"), cwd=base, check=True)
        return base / "outputs" / name

    return dict(zip(MODELS, side_by_side(train, list(MODELS))))


@pytest.fixture(scope="module")
def image_files(synthetic_root, tmp_path_factory) -> list[Path]:
    images, _ = data.load("fashion_mnist", synthetic_root, train=False)
    folder = tmp_path_factory.mktemp("images")
    files = []
    for i in range(6):
        files.append(folder / f"sample{i}.png")
        Image.fromarray(images[i].numpy(), mode="L").save(files[-1])
    return files




def classes(capsys, *args) -> list[str]:
    code, out, err = call_main(predict.main, capsys, *args, "--json")
    assert code == 0, err
    return [row["predictions"][0]["class"] for row in json.loads(out)]


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_export_matches_pytorch_and_predicts_the_same_classes(runs, image_files, name, capsys):
    needs_onnx()
    code, out, err = call_main(export_cli.main, capsys, runs[name], "--format", "onnx")
    assert code == 0, err
    assert float(DIFF.search(" ".join(out.split())).group(1)) <= 1e-4
    exported = runs[name] / "export" / "best.onnx"
    assert exported.is_file()
    from_run = classes(capsys, runs[name], *image_files, "--device", "cpu")
    assert classes(capsys, "--model", exported, *image_files) == from_run


def test_onnx_batch_dimension_is_dynamic(runs, synthetic_root, tmp_path, capsys):
    needs_onnx()
    output = tmp_path / "mlp.onnx"
    assert call_main(export_cli.main, capsys, runs["mlp"], "--output", output)[0] == 0
    model = load_exported(output)
    images, _ = data.load("fashion_mnist", synthetic_root, train=False)
    assert [tuple(model.logits(images[:n]).shape) for n in (1, 7, 64)] == [(1, 10), (7, 10), (64, 10)]
    assert model.classes[0] == "T-shirt/top"
    assert model.runner.get_inputs()[0].type == "tensor(uint8)"  # raw images: the preprocessing is inside


def test_torchscript_export_predicts_the_same_classes(runs, image_files, tmp_path, capsys):
    output = tmp_path / "conv.pt"
    code, out, err = call_main(export_cli.main, capsys, runs["conv"], "--format", "torchscript", "--output", output)
    assert code == 0, err
    assert float(DIFF.search(" ".join(out.split())).group(1)) <= 1e-4
    from_run = classes(capsys, runs["conv"], *image_files, "--device", "cpu")
    assert classes(capsys, "--model", output, *image_files) == from_run


def test_a_failed_parity_check_writes_nothing(runs, tmp_path, capsys):
    output = tmp_path / "refused.pt"
    code, _, err = call_main(export_cli.main, capsys, runs["mlp"], "--format", "torchscript", "--output", output,
                             "--tolerance", "-1")
    assert code == 1
    assert err.startswith("trainer-export: error: parity check failed") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_predict_refuses_a_file_that_is_not_an_export(tmp_path, image_files, capsys):
    bogus = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    code, _, err = call_main(predict.main, capsys, "--model", bogus, image_files[0])
    assert code == 1 and err.startswith(f"trainer-predict: error: --model {bogus} cannot be loaded")

