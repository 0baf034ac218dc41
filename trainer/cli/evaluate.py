"""`trainer-eval`: evaluate a trained model on a dataset split.

    trainer-eval outputs/runs/<run>                     # best.ckpt (else last.ckpt) on the test set
    trainer-eval outputs/runs/<run> --checkpoint last   # the final weights
    trainer-eval outputs/runs/<run> --split val         # the run's own seeded validation split
    trainer-eval path/to/some.ckpt --data-root ~/data --device cpu

The model, its input transform, the loss and the dataset all come from the
config saved in the checkpoint, so no flag of the original run is repeated.
A run directory means checkpoints/best.ckpt when the run saved one (the
epoch that was best on its early_stopping.monitor), else checkpoints/last.ckpt;
`--checkpoint best|last` picks one explicitly.

Splits are the ones the run used:
    test   the test set (its first data.test_subset images if the run set that)
    val    the validation part held out of train by data.val_split with the run's
           seed (trainer.core.data.split_validation); an error if the run had none
    train  the part of train the run trained on (data.subset applied, val removed)

Evaluation is the training loop's own: the run's transform without
augmentation, the run's loss, its precision (bf16/fp16 autocast), batches of
train.eval_batch_size unless --batch-size is given. So `--checkpoint last`
on the test split reproduces metrics.json's final test/acc and test/loss.

Printed: accuracy and loss, per-class accuracy, the confusion matrix (rows =
true class, columns = predicted). Written beside the checkpoint as
`<checkpoint stem>.eval-<split>.json` (e.g. checkpoints/best.eval-test.json;
`--output FILE` to write elsewhere):

    {"checkpoint": ".../best.ckpt", "run_dir": "...", "position": "after epoch 3",
     "split": "test", "dataset": "mnist", "data_root": "...", "samples": 10000,
     "accuracy": 0.9812, "loss": 0.0634, "correct": 9812, "loss_fn": "trainer.core.losses.CrossEntropy",
     "classes": ["0", ..., "9"],
     "per_class": [{"index": 0, "class": "0", "samples": 980, "correct": 975, "accuracy": 0.9949}, ...],
     "confusion_matrix": [[975, 0, ...], ...],      # [true][predicted] counts
     "batch_size": 2000, "device": "cpu", "precision": "fp32", "evaluated_at": "2025-..."}

A class with no samples in the split has "accuracy": null. Any problem
(missing path, corrupt checkpoint, missing data, unwritable output) is one
line on stderr, `trainer-eval: error: ...`, and exit status 1.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from trainer.cli.commands import positive_int
from trainer.core import data, display, engine, errors, paths
from trainer.core.config import CVConfig, DataConfig
from trainer.core.errors import UserError
from trainer.core.files import read_text
from trainer.core.pipeline import DeviceBatches
from trainer.runs.build import load_data, make_loss
from trainer.runs.inference import LoadedRun, describe_position, load_run
from trainer.runs.folder import write_json
from trainer.report.tracking import wide_console

PROG = "trainer-eval"
SPLITS = ("test", "val", "train")


# ------------------------------------------------------------------- data
def _launch_cwd(run_dir: Path) -> Path | None:
    """The folder the run was started from (hydra.runtime.cwd), if recorded."""
    try:
        import yaml

        saved = yaml.safe_load(read_text(run_dir / ".hydra" / "hydra.yaml"))
        cwd = saved["hydra"]["runtime"]["cwd"]
        return Path(cwd) if isinstance(cwd, str) and cwd else None
    except Exception:  # absent, unreadable or another layout: just not known
        return None


def data_root(data_cfg: DataConfig, folder: str, run_dir: Path, override: str | None) -> Path:
    """--data-root, else the run's data.root. A relative root is looked up
    from the current folder, then from the folder the run was started in."""
    if override:
        return Path(override).expanduser()
    root = Path(data_cfg.root).expanduser()
    if root.is_absolute():
        return root
    candidates = [Path.cwd() / root]
    launch = _launch_cwd(run_dir)
    if launch is not None:
        candidates.append(launch / root)
    for candidate in candidates:
        if (candidate / folder / "raw").is_dir():
            return candidate
    return candidates[0]


def split_data(data_cfg: DataConfig, seed: int, root: Path, split: str, log,
               cv_cfg: CVConfig | None = None) -> tuple[Any, Any, str]:
    """(images uint8 [N,28,28], labels [N], description) of one split, as the
    run saw it: trainer.runs.build.load_data, the same function training used."""
    splits = load_data(data_cfg, seed, log=log, root=root, cv=cv_cfg)
    subset, test_subset = data_cfg.subset, data_cfg.test_subset
    if split == "test":
        what = f"test set, first {test_subset} images (the run's data.test_subset)" if test_subset else "test set"
        return (*splits.test, what)
    if split == "val":
        if splits.val is None:
            raise UserError("the run had no validation split (data.val_split=0); use --split test or --split train")
        held_out = display.typed(data_cfg.val_split)
        return (*splits.val, f"validation split (data.val_split={held_out}, seed {seed})")
    what = ("train set" + (f", first {subset} images" if subset else "")
            + (", validation part removed" if splits.val is not None else ""))
    return (*splits.train, what)


# -------------------------------------------------------------- evaluation
def evaluate(run: LoadedRun, images, labels, loss_fn, batch_size: int) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix: engine.evaluate, the pass that scored the run."""
    dev = run.device
    batches = DeviceBatches(images.to(dev), labels.to(dev), batch_size, run.transform, shuffle=False, train=False)
    result = engine.evaluate(run.model, batches, loss_fn.to(dev), dev, run.precision, num_classes=len(run.classes))
    matrix = result.confusion.cpu()
    per_class = []
    for i, name in enumerate(run.classes):
        samples, right = int(matrix[i].sum()), int(matrix[i, i])
        per_class.append({"index": i, "class": name, "samples": samples, "correct": right,
                          "accuracy": right / samples if samples else None})
    return {"samples": result.samples, "correct": int(matrix.diagonal().sum()), "accuracy": result.acc,
            "loss": result.loss, "per_class": per_class, "confusion_matrix": matrix.tolist()}


# ----------------------------------------------------------------- output
def print_report(console, report: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    # Lines, not a table: a table's cell would break the checkpoint's path to fit its column.
    console.print(f"{PROG}: {report['split']} split", markup=False)
    for key, value in (("checkpoint", f"{report['checkpoint_arg']} ({report['position']})"),
                       ("data", f"{report['dataset']}: {report['data']}; {report['samples']} images"),
                       ("accuracy", f"{report['accuracy']:.2%} ({report['correct']}/{report['samples']})"),
                       ("loss", f"{report['loss']:.4f} ({report['loss_fn']})")):
        console.print(Text.assemble(("  " + key.ljust(12), "bold"), value))

    per_class = Table(title="Per-class accuracy", title_justify="left")
    for name, justify in (("#", "right"), ("class", "left"), ("samples", "right"), ("correct", "right"),
                          ("accuracy", "right")):
        per_class.add_column(name, justify=justify)
    for row in report["per_class"]:
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        per_class.add_row(str(row["index"]), row["class"], str(row["samples"]), str(row["correct"]), acc)
    console.print(per_class)

    matrix = report["confusion_matrix"]
    confusion = Table(title="Confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    confusion.add_column("true \\ pred", no_wrap=True)
    for i in range(len(matrix)):
        confusion.add_column(str(i), justify="right")
    for i, row in enumerate(matrix):
        cells = [f"[bold green]{v}[/]" if j == i else (f"[red]{v}[/]" if v else "[dim]0[/]") for j, v in enumerate(row)]
        name = report["classes"][i]
        confusion.add_row(name if name == str(i) else f"{i} {name}", *cells)
    console.print(confusion)


def output_path(checkpoint: Path, split: str, override: str | None) -> Path:
    if override:
        return Path(override).expanduser()
    return checkpoint.with_name(f"{checkpoint.stem}.eval-{split}.json")


def write_report(path: Path, report: dict) -> None:
    try:
        write_json(path, report)
    except OSError as e:
        raise UserError(f"could not write {path}: {e.strerror or e}; choose another file with --output") from e


# ------------------------------------------------------------------ entry
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate a trained model (rebuilt from its run's saved config) on a dataset split: "
                    "accuracy, loss, per-class accuracy and the confusion matrix, printed and written as JSON "
                    "beside the checkpoint (<checkpoint stem>.eval-<split>.json).",
        epilog="A run directory means checkpoints/best.ckpt if the run saved one (best on its "
               "early_stopping.monitor), else checkpoints/last.ckpt.",
    )
    p.add_argument("path", help="a run directory (outputs/runs/<run>) or a .ckpt file")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="test (default), val (the run's own seeded validation split) or train")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="with a run directory: best.ckpt or last.ckpt (default: best if present, else last)")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding <Name>/raw/ (default: the run's data.root)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=positive_int, metavar="N", default=None,
                   help="evaluation batch size (default: the run's train.eval_batch_size)")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="write the JSON here instead of beside the checkpoint")
    return p


def run(args: argparse.Namespace, console) -> dict:
    if args.output:  # before any work: a folder or a pipe there would be replaced, or fail only at the end
        why = paths.problem(Path(args.output).expanduser(), "file")
        if why not in (None, "missing"):
            raise UserError(f"--output {args.output} {why}; choose another file with --output")
    loaded = load_run(args.path, args.checkpoint, args.device)
    config = loaded.config
    info = data.dataset_info(loaded.dataset)
    root = data_root(config.data, info.folder, loaded.run_dir, args.data_root)
    images, labels, what = split_data(config.data, config.seed, root, args.split,
                                      log=lambda text: console.print(text, style="dim", markup=False), cv_cfg=config.cv)
    loss_fn = make_loss(config.loss)
    batch_size = args.batch_size or config.train.eval_batch_size
    result = evaluate(loaded, images, labels, loss_fn, batch_size)
    report = {
        "checkpoint": str(loaded.checkpoint.resolve()),
        "run_dir": str(loaded.run_dir),
        "position": describe_position(loaded.state),
        "split": args.split,
        "dataset": loaded.dataset,
        "data_root": str(root.resolve()),
        "data": what,
        "samples": result["samples"],
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "correct": result["correct"],
        "loss_fn": config.loss._target_,
        "classes": list(loaded.classes),
        "per_class": result["per_class"],
        "confusion_matrix": result["confusion_matrix"],
        "batch_size": batch_size,
        "device": str(loaded.device),
        "precision": loaded.precision,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print_report(console, {**report, "checkpoint_arg": str(loaded.checkpoint)})
    out = output_path(loaded.checkpoint, args.split, args.output)
    write_report(out, report)
    report["json"] = str(out)
    console.print(f"Wrote {out}", markup=False)
    return report


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    errors.report(PROG, run, args, wide_console())


if __name__ == "__main__":
    main()
