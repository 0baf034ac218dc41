"""`trainer-export`: a trained model as an ONNX or TorchScript file, for use outside PyTorch.

    trainer-export outputs/runs/<run> --format onnx               # -> <run>/export/best.onnx
    trainer-export outputs/runs/<run> --format torchscript --output model.pt
    trainer-predict --model outputs/runs/<run>/export/best.onnx digit.png

The file takes uint8 images [batch, 28, 28] (any batch size) and returns
logits: the run's input preprocessing is inside it. Before the file is
written, its logits on the run's first test images are compared with
PyTorch's; above --tolerance the export is refused and nothing is written.
ONNX needs the export extra: pip install 'trainer[export]'.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from trainer.cli.commands import positive_int
from trainer.cli.evaluate import data_root, split_data
from trainer.core import data, errors
from trainer.runs import export
from trainer.runs.inference import describe_position, load_run
from trainer.report.tracking import wide_console

PROG = "trainer-export"
PARITY_IMAGES = 256


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export a trained model (its input preprocessing included) to ONNX or TorchScript, checked "
                    "against PyTorch on the run's test images.",
        epilog="A run directory means checkpoints/best.ckpt if the run saved one, else checkpoints/last.ckpt.",
    )
    p.add_argument("path", help="a run directory (outputs/runs/<run>) or a .ckpt file")
    p.add_argument("--format", choices=export.FORMATS, default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="where to write (default: <run>/export/<checkpoint>.onnx or .pt)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="with a run directory: best.ckpt or last.ckpt (default: best if present, else last)")
    p.add_argument("--images", type=positive_int, default=PARITY_IMAGES, metavar="N",
                   help=f"test images for the parity check (default {PARITY_IMAGES})")
    p.add_argument("--tolerance", type=float, default=export.TOLERANCE,
                   help=f"largest max abs logit difference accepted (default {export.TOLERANCE:g})")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding <Name>/raw/ (default: the run's data.root)")
    return p


def run(args: argparse.Namespace, console) -> export.Exported:
    loaded = load_run(args.path, args.checkpoint, "cpu")
    config = loaded.config
    root = data_root(config.data, data.dataset_info(loaded.dataset).folder, loaded.run_dir, args.data_root)
    images, _, what = split_data(config.data, config.seed, root, "test",
                                 log=lambda text: console.print(text, style="dim", markup=False), cv_cfg=config.cv)
    output = Path(args.output).expanduser() if args.output else \
        export.default_output(loaded.run_dir, loaded.checkpoint, args.format)
    done = export.export(loaded, args.format, output, images[:args.images], args.tolerance)
    console.print(f"Exported {loaded.checkpoint} ({describe_position(loaded.state)}) to {done.path} "
                  f"({done.format}; input uint8 [batch, 28, 28], any batch size)", markup=False)
    console.print(f"Parity with PyTorch on {done.images} images of the {what}: max abs logit difference "
                  f"{done.max_abs_diff:.2e} (tolerance {args.tolerance:g})")
    return done


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    errors.report(PROG, run, args, wide_console())


if __name__ == "__main__":
    main()
