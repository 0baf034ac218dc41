"""The figures of a run, drawn with matplotlib (as the seed notes draw them)
for the shape of TensorBoard's image card, so they read without enlarging:
the card (Time Series, a 1600 px wide window, default card width) shows an
image at most about 455 px wide and 215 px tall, shrinking a bigger one to
fit. Every figure is drawn 440 x 210 px, wide rather than tall, so it is
shown at full size, its text 8 pt at 100 dpi (11 px: TensorBoard's own axis
labels are 11 px).

Why matplotlib rather than drawing with PIL: real fonts at any size,
rotated tick labels, colour maps with a colour bar, and annotated heat maps
are what make a 10x10 confusion matrix or 32 filters legible at 480 px;
hand-placed bitmap text at that width was not.

Each function takes tensors on any device and returns uint8 RGB [H, W, 3].
"""
from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from trainer.core.files import atomic_write

WIDTH_IN, HEIGHT_IN, DPI = 4.4, 2.1, 100  # 440 x 210 px: inside the image card, so never shrunk
SAMPLE_COUNT, SAMPLE_COLUMNS = 8, 4  # the notes' TestDisplay: 8 images, 4 columns x 2 rows
MAX_MISCLASSIFIED, MISCLASSIFIED_COLUMNS = 12, 6  # 6 x 2, two caption lines each
GRID_COLUMNS = 16                 # filters and feature maps: 2 rows of 16
FONT = 8


def _figure(height_in: float = HEIGHT_IN):
    wait_for_warm_up()
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def _pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        # A title with characters the font lacks (a run folder named in CJK): matplotlib draws a box for
        # each and warns with its own source line; the box is the fallback, the folder keeps its real name.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _numpy(t: torch.Tensor) -> np.ndarray:
    """Any tensor (CPU or CUDA, any float dtype) -> float32 numpy, in one transfer."""
    return t.detach().to("cpu", torch.float32).numpy()


def _image(x: torch.Tensor) -> np.ndarray:
    """One model input [C, H, W] (maybe normalised) -> [H, W], grey as the model saw it."""
    a = _numpy(x)
    return a[0] if a.ndim == 3 else a


def _name(class_names: Sequence[str], index: int) -> str:
    return str(class_names[index]) if 0 <= index < len(class_names) else str(index)


def _grid_axes(fig, count: int, columns: int):
    rows = max(1, math.ceil(count / columns))
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    return axes


def _headline(fig, text: str, run: str) -> None:
    """The figure's top line: the run's folder name, then what the figure
    shows. A TensorBoard image card labels its picture with only the start of
    the run's path (about 17 characters: the same for every job of a sweep),
    so the picture names its run itself; a long name is cut at its end (its
    start tells jobs apart) until the line fits the figure's width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    shown = run
    title = fig.suptitle(_line(shown, run, text), fontsize=FONT)
    renderer = FigureCanvasAgg(fig).get_renderer()
    while shown and title.get_window_extent(renderer).width > fig.bbox.width - 2 * FONT:
        shown = shown[:-1]
        title.set_text(_line(shown, run, text))


def _line(shown: str, run: str, text: str) -> str:
    name = shown if shown == run else shown + "…"
    return " · ".join(part for part in (name, text) if part)


def message(text: str) -> np.ndarray:
    fig = _figure(0.6)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=FONT)
    return _pixels(fig)


def samples(x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str], run: str = "") -> np.ndarray:
    """The notes' TestDisplay: 8 inputs, 4 a row, each titled with its class."""
    n = min(SAMPLE_COUNT, len(x))
    if n == 0:
        return message("no samples")
    fig = _figure()
    for ax, image, label in zip(_grid_axes(fig, n, SAMPLE_COLUMNS), x[:n], y[:n].tolist()):
        ax.imshow(_image(image), cmap="gray")
        ax.set_title(_name(class_names, int(label)), fontsize=FONT, pad=2)
    _headline(fig, "", run)
    return _pixels(fig)


def misclassified(x: torch.Tensor, preds: Sequence[int], targets: Sequence[int],
                  class_names: Sequence[str], run: str = "") -> np.ndarray:
    """Wrong test predictions, 6 a row: what the model said (red) over the truth."""
    n = min(MAX_MISCLASSIFIED, len(x))
    if n == 0:
        return message("no misclassified examples")
    fig = _figure()
    for ax, image, p, t in zip(_grid_axes(fig, n, MISCLASSIFIED_COLUMNS), x[:n], preds[:n], targets[:n]):
        ax.imshow(_image(image), cmap="gray")
        ax.set_title(_name(class_names, int(p)), fontsize=FONT, color="#c81e1e", pad=1)
        ax.set_xlabel(_name(class_names, int(t)), fontsize=FONT, labelpad=1)
    _headline(fig, "predicted (red, above) and true class (below)", run)
    return _pixels(fig)


def confusion_matrix(matrix: torch.Tensor, class_names: Sequence[str], run: str = "") -> np.ndarray:
    """Rows: true class (named, with its number), columns: predicted (by
    number, so the matrix is wide rather than tall). Cells shaded by the share
    of their row (per-class recall), counts written in them."""
    counts = matrix.detach().cpu().long().numpy()
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    names = [f"{_name(class_names, i)} {i}" for i in range(len(counts))]
    fig = _figure()
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(counts)):
        for j in range(len(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=FONT,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), [str(i) for i in range(len(names))], fontsize=FONT)
    ax.set_yticks(range(len(names)), names, fontsize=FONT)
    ax.tick_params(length=2, pad=1)
    ax.set_xlabel("predicted class", fontsize=FONT, labelpad=1)
    total, correct = int(counts.sum()), int(np.trace(counts))
    ax.set_title(f"true class (rows) · accuracy {100 * correct / max(total, 1):.2f}% on {total} images",
                 fontsize=FONT)
    _headline(fig, "", run)
    return _pixels(fig)


def conv_filters(weight: torch.Tensor, run: str = "") -> np.ndarray:
    """The first conv layer's kernels (input channel 0) on one shared, signed
    colour scale: red excites, blue inhibits, white is 0."""
    kernels = _numpy(weight[:, 0])
    limit = float(np.abs(kernels).max()) or 1.0
    n = len(kernels)
    columns = min(GRID_COLUMNS, max(8, math.ceil(n / 3)))  # 3 rows of 11 for 32 filters
    fig = _figure()
    axes = _grid_axes(fig, n, columns)
    for ax, kernel in zip(axes, kernels):
        shown = ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(shown, ax=list(axes), shrink=0.9, aspect=15).ax.tick_params(labelsize=FONT)
    _headline(fig, f"{n} filters of the first conv layer ({kernels.shape[-1]}x{kernels.shape[-2]})", run)
    return _pixels(fig)


def feature_maps(image: torch.Tensor, weight: torch.Tensor, maps: torch.Tensor, run: str = "") -> np.ndarray:
    """The notes' "input | weight | output" for filter 0, then every output
    channel's feature map of that input (image [C, H, W], maps [O, H', W'])."""
    all_maps = _numpy(maps)
    fig = _figure()
    left, right = fig.subfigures(1, 2, width_ratios=[1, 2.2])  # side by side: the card is wide
    panels = (("input", _image(image), "gray"), ("filter 0", _numpy(weight[0, 0]), "RdBu_r"),
              ("map 0", all_maps[0], "gray"))
    for ax, (title, values, cmap) in zip(np.atleast_1d(left.subplots(2, 2)).reshape(-1), panels):
        limit = float(np.abs(values).max()) or 1.0
        ax.imshow(values, cmap=cmap, **({"vmin": -limit, "vmax": limit} if cmap == "RdBu_r" else {}))
        ax.set_title(title, fontsize=FONT, pad=2)
    for ax in np.atleast_1d(left.axes):
        ax.set_xticks([])
        ax.set_yticks([])
    left.axes[-1].set_visible(False)
    columns = max(4, math.ceil(math.sqrt(len(all_maps) * 2)))
    for ax, values in zip(_grid_axes(right, len(all_maps), columns), all_maps):
        ax.imshow(values, cmap="gray")
    right.suptitle(f"all {len(all_maps)} feature maps of this input", fontsize=FONT)
    _headline(fig, "", run)
    return _pixels(fig)


def confusion_markdown(matrix: torch.Tensor, class_names: Sequence[str]) -> str:
    """The confusion matrix and per-class accuracy as a markdown table (TensorBoard's Text)."""
    counts = matrix.detach().cpu().long().numpy()
    names = [_name(class_names, i) for i in range(len(counts))]
    lines = ["| true \\\\ predicted | " + " | ".join(names) + " | accuracy |",
             "|---|" + "---:|" * (len(names) + 1)]
    for i, name in enumerate(names):
        total = int(counts[i].sum())
        acc = f"{100 * counts[i, i] / total:.1f}%" if total else "-"
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in counts[i]) + f" | {acc} |")
    return "\n".join(lines)


# ------------------------------------------------------------- curves.png
CURVE_WIDTH_IN, CURVE_FONT = 8.0, 10  # a file of its own, not a TensorBoard card: two panels side by side
LEGEND_WIDTH_IN = 2.2  # a sweep's legend, beside the panels: labels of some 24 characters
MARKS = {"marker": "o", "markersize": 3}  # a run of one epoch is a point, and a line needs two


def curves(history: list[dict], title: str) -> np.ndarray:
    """A run's curves per epoch: loss (left) and accuracy in % (right), for
    training and for the split evaluated each epoch."""
    series = [(f"{split}", [h.get(f"{split}/loss") for h in history], [h.get(f"{split}/acc") for h in history])
              for split in ("train", "val", "test") if any(f"{split}/acc" in h for h in history)]
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = _curve_axes(title)
    for split, losses, accs in series:
        loss_ax.plot(epochs, losses, label=split, **MARKS)
        acc_ax.plot(epochs, [100 * a if a is not None else None for a in accs], label=split, **MARKS)
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize=CURVE_FONT)
    return _pixels_of_curves(fig, (loss_ax, acc_ax))


OTHERS = "#b4b4b4"  # the runs a crowded picture does not name: one grey, behind the named ones


def overlay(lines: list[tuple[str | None, list[dict]]], bands: list[tuple[str, list[list[dict]]]], title: str,
            split: str, note: str = "", legend_title: str | None = None) -> np.ndarray:
    """Runs side by side: `lines` one curve each, a line labelled None drawn
    thin and grey and left out of the legend but for one entry that counts
    them; `bands` (a seed group, the folds of a cross-validation) their mean
    with a min-max band, the legend says so. The `split` evaluated each
    epoch (val or test), loss left and accuracy right, one legend for both
    outside them on the right (so the axes keep their width however many
    runs there are); `note` below them (the jobs that have no curve, and why)."""
    fig, (loss_ax, acc_ax) = _curve_axes(title, width_in=CURVE_WIDTH_IN + LEGEND_WIDTH_IN)
    if note:
        fig.supxlabel(note, fontsize=CURVE_FONT - 2, wrap=True)
    named = [(label, history) for label, history in lines if label is not None]
    colours = iter(_palette(len(named) + len(bands)))
    others = [history for label, history in lines if label is None]
    for i, history in enumerate(others):  # first, so the named curves lie on top
        label = f"{len(others)} more (grey)" if i == 0 else None
        _plot_line(loss_ax, acc_ax, history, split, OTHERS, label, linewidth=0.8, alpha=0.7, zorder=1)
    for label, history in named:
        _plot_line(loss_ax, acc_ax, history, split, next(colours), label, **MARKS, zorder=3)
    for label, histories in bands:
        _plot_band(loss_ax, acc_ax, histories, split, next(colours), f"{label}: mean, band min–max of {len(histories)}")
    if lines or bands:
        handles, labels = acc_ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i].endswith("(grey)"))  # the grey entry last
        fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside right upper",
                   fontsize=CURVE_FONT - 2, title=legend_title, title_fontsize=CURVE_FONT - 2)
    loss_ax.set_ylabel(f"{split} loss", fontsize=CURVE_FONT)
    acc_ax.set_ylabel(f"{split} accuracy (%)", fontsize=CURVE_FONT)
    return _pixels_of_curves(fig, (loss_ax, acc_ax))


def _plot_line(loss_ax, acc_ax, history: list[dict], split: str, colour, label: str | None, **style) -> None:
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h.get(f"{split}/loss") for h in history], color=colour, label=label, **style)
    acc_ax.plot(epochs, [_percent(h.get(f"{split}/acc")) for h in history], color=colour, label=label, **style)


def _plot_band(loss_ax, acc_ax, histories: list[list[dict]], split: str, colour, label: str) -> None:
    """The runs' mean per epoch with their min-max band (an error bar where there is one epoch)."""
    for ax, key, scale in ((loss_ax, f"{split}/loss", 1), (acc_ax, f"{split}/acc", 100)):
        epochs, lows, means, highs = _band(histories, key)
        means, lows, highs = ([v * scale for v in values] for values in (means, lows, highs))
        ax.plot(epochs, means, color=colour, label=label, **MARKS, zorder=3)
        if len(epochs) > 1:
            ax.fill_between(epochs, lows, highs, color=colour, alpha=0.2)
        else:  # one epoch: a band has no width, so the range is an error bar
            ax.errorbar(epochs, means, yerr=[[m - lo for m, lo in zip(means, lows)],
                                             [hi - m for m, hi in zip(means, highs)]],
                        color=colour, capsize=4, linestyle="none")


def _curve_axes(title: str, width_in: float = CURVE_WIDTH_IN):
    wait_for_warm_up()
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width_in, 3.4), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.set_ylabel("loss", fontsize=CURVE_FONT)
    acc_ax.set_ylabel("accuracy (%)", fontsize=CURVE_FONT)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch", fontsize=CURVE_FONT)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=CURVE_FONT - 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=CURVE_FONT + 1)
    return fig, (loss_ax, acc_ax)


def _pixels_of_curves(fig, axes) -> np.ndarray:
    """The figure as pixels; an axis that holds a single epoch gets that one
    tick (MaxNLocator falls back to fractions when it finds one integer)."""
    for ax in axes:
        first, last = ax.dataLim.intervalx
        if first == last:
            ax.set_xticks([first])
            ax.set_xlim(first - 0.5, first + 0.5)
    return _pixels(fig)


def _band(histories: list[list[dict]], key: str):
    """(epochs, min, mean, max) of `key` over the runs, on the epochs all of them reached."""
    by_epoch = [{h["epoch"]: h[key] for h in history if isinstance(h.get(key), (int, float))} for history in histories]
    epochs = sorted(set.intersection(*(set(e) for e in by_epoch))) if by_epoch else []
    values = [[run[e] for run in by_epoch] for e in epochs]
    return epochs, [min(v) for v in values], [sum(v) / len(v) for v in values], [max(v) for v in values]


def _percent(value):
    return 100 * value if isinstance(value, (int, float)) else None


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def save_png(image: np.ndarray, path) -> None:
    """Write an image atomically (a reader never sees half a PNG)."""
    import io

    from PIL import Image


    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=True)


# ---------------------------------------------------------------- warm-up
_warming: threading.Thread | None = None


def warm_up() -> None:
    """Pay matplotlib's first use now (its import, the font cache, the
    renderer: a second or more) rather than when the first figure is wanted."""
    import io

    from PIL import Image

    pixels = curves([{"epoch": 1, "train/loss": 1.0, "train/acc": 0.5, "test/loss": 1.0, "test/acc": 0.5}], "warm-up")
    Image.fromarray(pixels).save(io.BytesIO(), format="PNG")  # PIL finds its format plugins on the first save


def warm_up_meanwhile() -> None:
    """warm_up() in a thread of its own, once: a sweep's process, idle while
    its jobs run, readies its summary's curves.png, which is otherwise drawn
    only after the last job, on the sweep's critical path."""
    global _warming
    if _warming is None:
        _warming = threading.Thread(target=warm_up, name="figures-warm-up", daemon=True)
        _warming.start()


def wait_for_warm_up() -> None:
    """Until the warm-up has ended: a figure drawn meanwhile waits for it
    (matplotlib's state is not shared across threads), and so does a fork."""
    if _warming is not None and _warming is not threading.current_thread():
        _warming.join()
