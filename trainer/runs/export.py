"""A trained model out of the project: ONNX or TorchScript, its input
preprocessing included, checked against PyTorch before the file exists.

    served = export(loaded_run, "onnx", Path("model.onnx"), test_images)   # -> Exported
    model = load_exported(Path("model.onnx"))     # what trainer-predict --model runs
    model.logits(uint8_images)                     # [N, 28, 28] -> [N, classes]

The exported graph takes what a user has: uint8 images [batch, 28, 28]
(light-on-dark, like the training data), any batch size; it applies the
run's eval-time transform (scale, normalisation) and the model, and returns
float32 logits [batch, classes]. The file carries the class names and where
it came from (ONNX metadata_props; a TorchScript extra file `trainer.json`).

The file is written beside its final name and moved there only after the
parity check passes: a refused export leaves nothing behind and changes no
file that existed.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainer.core.errors import UserError, first_line

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4        # max abs logit difference a float32 export may show against PyTorch
METADATA = "trainer.json"  # the TorchScript extra file holding the class names
EXTRA = "export"          # pip install 'trainer[export]': onnx, onnxruntime, onnxscript


class Served(nn.Module):
    """uint8 images [N, H, W] -> logits: the run's eval transform, then the model."""

    def __init__(self, model: nn.Module, transform):
        super().__init__()
        self.model = model
        self.transform = transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(images, None, train=False)).float()


@dataclass
class Exported:
    path: Path
    format: str
    max_abs_diff: float
    images: int


def default_output(run_dir: Path, checkpoint: Path, fmt: str) -> Path:
    """<run>/export/<checkpoint name>.onnx (or .pt)."""
    return run_dir / "export" / (checkpoint.stem + SUFFIXES[fmt])


def export(loaded, fmt: str, output: Path, images: torch.Tensor, tolerance: float = TOLERANCE) -> Exported:
    """Write `loaded` (trainer.runs.inference.LoadedRun, on the CPU) to `output`
    if its logits on `images` match PyTorch's within `tolerance`."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt} is not known; choose one of: {', '.join(FORMATS)}")
    served = Served(loaded.model.float().eval(), loaded.transform).eval()
    meta = {"classes": list(loaded.classes), "dataset": loaded.dataset, "checkpoint": str(loaded.checkpoint),
            "input": "uint8 [batch, 28, 28], light on dark"}
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        _write(fmt, served, images[:2], partial, meta)
        diff = parity(served, load_exported(partial, fmt), images)
        if not diff <= tolerance:
            raise UserError(f"parity check failed: the {fmt} model's logits differ from PyTorch's by up to {diff:.3g} "
                            f"on {len(images)} test images (tolerance {tolerance:g}); nothing was written")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return Exported(output, fmt, diff, len(images))


def parity(served: nn.Module, exported: "ExportedModel", images: torch.Tensor) -> float:
    """Max abs logit difference, on the whole batch and on one image (the batch dimension is dynamic)."""
    with torch.inference_mode():
        reference = served(images)
    whole = (exported.logits(images) - reference).abs().max().item()
    single = (exported.logits(images[:1]) - reference[:1]).abs().max().item()
    return max(whole, single)


def _write(fmt: str, served: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    if fmt == "onnx":
        _write_onnx(served, example, path, meta)
        return
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export; it still runs everywhere
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(served, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA: json.dumps(meta)})


def _write_onnx(served: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    onnx = _need("onnx")
    _need("onnxscript")  # torch.onnx's exporter
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(served, (example,), dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes={"images": {0: batch}},
                                    verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; one line says which op failed
        raise UserError(f"torch.onnx could not export this model ({first_line(e)}); try --format torchscript") from e
    model = program.model_proto
    onnx.helper.set_model_props(model, {"trainer": json.dumps(meta)})
    onnx.save(model, str(path))


# ------------------------------------------------------------------ reading
@dataclass
class ExportedModel:
    """An exported file ready to classify uint8 images, as trainer-predict uses it."""

    path: Path
    format: str
    classes: tuple[str, ...]
    dataset: str
    runner: object

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to("cpu", torch.uint8).contiguous()
        if self.format == "onnx":
            return torch.from_numpy(self.runner.run(["logits"], {"images": images.numpy()})[0])
        with torch.inference_mode():
            return self.runner(images).float()


def load_exported(path: Path, fmt: str | None = None) -> ExportedModel:
    """An .onnx file (run by onnxruntime) or a TorchScript .pt file written by `export`."""
    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix == ".onnx" else "torchscript")
    if not path.is_file():
        raise UserError(f"--model {path} is not a file; give a file written by trainer-export")
    try:
        if fmt == "onnx":
            runtime = _need("onnxruntime")
            runner = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            meta = runner.get_modelmeta().custom_metadata_map.get("trainer")
        else:
            extra = {METADATA: ""}
            with warnings.catch_warnings():  # deprecated in favour of torch.export, still supported
                warnings.simplefilter("ignore", FutureWarning)
                runner = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            meta = extra[METADATA]
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime and torch.jit raise their own kinds
        raise UserError(f"--model {path} cannot be loaded as {fmt} ({first_line(e)}); "
                        "give a file written by trainer-export") from e
    if not meta:
        raise UserError(f"--model {path} has no class names (it was not written by trainer-export); export the run "
                        "with trainer-export")
    info = json.loads(meta)
    return ExportedModel(path, fmt, tuple(info["classes"]), str(info.get("dataset", "")), runner)


def _need(module: str):
    """An optional dependency of the export extra, or one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"{module} is not installed; install the export extra: pip install 'trainer[{EXTRA}]' "
                        "(onnx, onnxruntime, onnxscript)") from e
