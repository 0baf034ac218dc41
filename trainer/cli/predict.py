"""`trainer-predict`: class names for image files, from a trained model.

    trainer-predict outputs/runs/<run> digit.png shoe.jpg
    trainer-predict outputs/runs/<run> drawing.png --invert --top 3
    trainer-predict outputs/runs/<run> *.png --json          # machine-readable
    trainer-predict --model best.onnx digit.png               # a file written by trainer-export

The model and its input transform are rebuilt from the config saved in the
checkpoint (a run directory means checkpoints/best.ckpt if present, else
checkpoints/last.ckpt; `--checkpoint best|last` picks one).

How a file becomes a model input (what the model saw in training):
  * read with Pillow (PNG and JPEG; any format Pillow reads works), the EXIF
    orientation applied;
  * converted to 8-bit grayscale with PIL's convert("L"); transparent pixels
    count as background (black, or white with --invert);
  * any size other than 28x28 resized to 28x28 with Pillow's antialiasing
    Lanczos filter (the aspect ratio is not kept: crop to a square first);
  * MNIST and Fashion-MNIST images are light-on-dark (white digit, black
    background). A dark-on-light drawing (black ink on white paper) needs
    --invert, or the model sees a negative: an input whose border is mostly
    light is noticed, and a note on stderr (and the table's input column)
    says to add --invert (or, with --invert, to leave it out).

Printed: one row per file with the top-K classes and their softmax
probabilities (--json prints the same as a JSON list instead of a table:
[{"file": ..., "size": [w, h], "mode": "RGB", "predictions":
[{"class": "7", "index": 7, "probability": 0.98}, ...]}, ...]).

Every file is read before the model runs: a missing or unreadable file (not
an image, truncated) is one line naming it, `trainer-predict: error: ...`,
and exit status 1; so is a missing path or corrupt checkpoint.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from trainer.cli.commands import positive_int
from trainer.core import errors, paths, streams
from trainer.core.errors import UserError
from trainer.runs.export import load_exported
from trainer.runs.inference import describe_position, load_run
from trainer.report.tracking import wide_console

PROG = "trainer-predict"
SIZE = 28


class ImageFileError(UserError):
    """An input image is missing or cannot be decoded."""


def read_image(path: str | Path, invert: bool = False):
    """(uint8 tensor [28, 28], original size (w, h), original mode) of one file."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    # Never opened unless a regular file: a FIFO would block forever, a device stream forever.
    path = paths.check_path(path, "file", "image", fix="pass image files (PNG or JPEG)", error=ImageFileError)
    try:
        with warnings.catch_warnings():
            # Pillow warns of an image over MAX_IMAGE_PIXELS (a possible decompression bomb) and reads on:
            # refused here in one line instead (the model sees 28x28; a huge image is the wrong input).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageFileError(f"image {path} is too large to read safely ({errors.first_line(e).split(',')[0]}); "
                             "shrink or crop it first (the model sees 28x28)") from None
    except OSError as e:
        raise ImageFileError(_unreadable(path, e)) from None
    try:
        with image:
            image.load()
            size, mode = image.size, image.mode
            image = ImageOps.exif_transpose(image)
            image = _flatten_alpha(image, background=255 if invert else 0)
            gray = _to_8bit_gray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageFileError(_unreadable(path, e)) from None
    if gray.size != (SIZE, SIZE):
        gray = gray.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    if invert:
        gray = ImageOps.invert(gray)
    return torch.from_numpy(np.array(gray, dtype=np.uint8, copy=True)), size, mode


def _unreadable(path: Path, e: Exception) -> str:
    """UnidentifiedImageError (not an image) and truncated files are OSErrors."""
    from PIL import Image

    reason = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, Image.UnidentifiedImageError):
        reason = "not an image Pillow can read"
    return f"cannot read {path} as an image ({reason}); pass PNG or JPEG files"


def _to_8bit_gray(image):
    """Grayscale 0..255 by the image's own bit depth. PIL's convert("L")
    clips wider modes: a 16-bit pixel of 1000/65535 (1.5% grey) would
    become white."""
    import numpy as np
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())  # 16-bit, or wider
        return Image.fromarray(np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8))
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0  # floats in 0..1, else already 0..255
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8))
    return image.convert("L")


def _flatten_alpha(image, background: int):
    """Composite an image with transparency onto a uniform background."""
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGBa"):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (background, background, background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image


def light_background(image) -> bool:
    """Whether a 28x28 uint8 model input has a light background: the median
    of its border pixels above mid-grey. MNIST and Fashion-MNIST images are
    dark there (the digit or garment sits in the middle)."""
    import torch

    border = torch.cat([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return float(border.float().median()) > 127


def predict(run, images, top: int) -> list[list[tuple[int, float]]]:
    """Top-k (class index, probability) per image, best first."""
    import torch

    probs = torch.softmax(run.logits(images), dim=1).cpu()
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [[(int(i), float(v)) for i, v in zip(ix, vx)] for ix, vx in zip(indices.tolist(), values.tolist())]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Predict class names for image files with a trained model (rebuilt from its run's saved "
                    "config). Images are converted to grayscale (PIL convert('L')) and resized to 28x28 with "
                    "antialiasing; the model expects light-on-dark images like MNIST's: use --invert for "
                    "dark-on-light drawings.",
        epilog="A run directory means checkpoints/best.ckpt if the run saved one, else checkpoints/last.ckpt.",
    )
    p.add_argument("path", help="a run directory (outputs/runs/<run>) or a .ckpt file (with --model: an image)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="PNG or JPEG files")
    p.add_argument("--model", metavar="FILE", default=None,
                   help="an exported model (trainer-export: .onnx or TorchScript .pt) instead of a run")
    p.add_argument("--top", type=positive_int, default=1, metavar="K", help="show the K most likely classes (default 1)")
    p.add_argument("--invert", action="store_true",
                   help="invert the images first: for black-on-white drawings (the model saw white-on-black)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="with a run directory: best.ckpt or last.ckpt (default: best if present, else last)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON instead of a table")
    return p


def run(args: argparse.Namespace, console) -> list[dict]:
    import torch

    # Read every image first: a bad file fails fast, before the model is loaded.
    inputs = [read_image(path, invert=args.invert) for path in args.images]
    loaded = load_exported(args.model) if args.model else load_run(args.path, args.checkpoint, args.device)
    batch = torch.stack([x for x, _, _ in inputs])
    results = []
    for path, (image, size, mode), top in zip(args.images, inputs, predict(loaded, batch, args.top)):
        results.append({
            "file": str(path), "size": list(size), "mode": mode, "light_background": light_background(image),
            "predictions": [{"class": loaded.classes[i], "index": i, "probability": p} for i, p in top],
        })
    _note_light_backgrounds(results, args.invert)
    if args.json:
        streams.write(json.dumps(results, indent=2))
    else:
        print_table(console, results, loaded, args)
    return results


def _note_light_backgrounds(results: list[dict], inverted: bool) -> None:
    """The model saw light-on-dark images: say which inputs reach it with a light background, and the fix."""
    light = [row["file"] for row in results if row["light_background"]]
    if not light:
        return
    fix = ("leave out --invert for light-on-dark images" if inverted else
           "add --invert for dark drawings on a light background")
    files = ", ".join(light[:3]) + (f" and {len(light) - 3} more" if len(light) > 3 else "")
    verb = "reaches" if len(light) == 1 else "reach"
    errors.say(f"note: {files} {verb} the model with a light background, but it was trained on light-on-dark "
               f"images (MNIST's white on black); {fix}", PROG)


def print_table(console, results: list[dict], loaded, args) -> None:
    from rich.markup import escape
    from rich.table import Table

    if args.model:
        title = f"{loaded.path} ({loaded.format}, {loaded.dataset})"
    else:
        title = f"{loaded.checkpoint} ({describe_position(loaded.state)}, {loaded.dataset})"
    console.print(title, markup=False)  # a line of its own: a table's title would break the path to its width
    table = Table(title_justify="left")
    table.add_column("file", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("class", style="bold")
    table.add_column("probability", justify="right")
    if args.top > 1:
        table.add_column(f"next {args.top - 1}", overflow="fold")
    for row in results:
        w, h = row["size"]
        note = f"{w}x{h} {row['mode']}" + ("" if (w, h) == (SIZE, SIZE) else " -> 28x28")
        if args.invert:
            note += ", inverted"
        if row["light_background"]:
            note += ", light background"  # the note on stderr says what to do
        first, *rest = row["predictions"]
        cells = [row["file"], note, first["class"], f"{first['probability']:.2%}"]
        if args.top > 1:
            cells.append(", ".join(f"{p['class']} {p['probability']:.2%}" for p in rest))
        table.add_row(*(escape(cell) for cell in cells))
    show_whole(console, table)


def show_whole(console, table) -> None:
    """The table as wide as its widest row needs, even past the console's
    width: its file column never breaks or cuts a path (a terminal wraps
    the line for the eye only, and the path copies back whole)."""
    from rich.segment import Segments

    # console.print(width=...) never goes past the console's width: the table is drawn first, at its own.
    unbounded = console.options.update_width(1 << 16)  # measured as it would be drawn on a console without an edge
    width = max(console.measure(table, options=unbounded).maximum, console.width)
    console.print(Segments(console.render(table, console.options.update_width(width))), crop=False)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """With --model every positional argument is an image; without, the first is the run."""
    p = parser()
    args = p.parse_args(argv)
    if args.model:
        args.images = [args.path, *args.images]
    elif not args.images:
        p.error("the following arguments are required: IMAGE")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    errors.report(PROG, run, args, wide_console())


if __name__ == "__main__":
    main()
