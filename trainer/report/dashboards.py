"""TensorBoard pictures of a run (the figures the study notes draw), when
they are due. The drawing itself is trainer.report.figures (matplotlib).

    samples/inputs               sample training inputs titled with their class
    model/conv_filters           the first Conv2d's filters (input channel 0)
    model/feature_maps           "input | weight | output" for filter 0, then
                                 every output channel's map of that input
    predictions/misclassified    wrong test predictions, predicted over true
    predictions/confusion_matrix the 10x10 matrix (and as a markdown table in Text)
    weights/<param>, weights/<param>/grad   histograms per parameter, side by side
    the model graph              (a failed trace prints one warning line)

The test-set figures come from engine.evaluate(), the same pass that
scores a run.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from trainer.report import figures
from trainer.core.engine import evaluate
from trainer.core.errors import first_line, warn
from trainer.core.models import first_conv, unwrap


def _due(epoch: int, every: int) -> bool:
    """0 = never; N = at epoch 1 (an early look) and at every multiple of N."""
    return every > 0 and (epoch == 1 or epoch % every == 0)


def _clean_name(name: str) -> str:
    """Parameter name without the wrappers' prefixes (DDP's module., torch.compile's _orig_mod.)."""
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("._orig_mod.", ".")


class Dashboards:
    """Images, histograms and the graph for TensorBoard, for one model.

    They draw into the run record's writer (none: every method is a no-op).
    images_every_n_epochs and histograms_every_n_epochs: 0 = off, N = at
    epoch 1 and every N-th epoch. `test_batches` covers the whole test split
    on this process (not a DDP rank's share).
    """

    def __init__(self, record, model: nn.Module, test_batches, *, class_names: Sequence[str],
                 images_every_n_epochs: int, histograms_every_n_epochs: int, precision: str = "fp32",
                 graph: bool = True, run: str = ""):
        self.record = record
        self.model = unwrap(model)  # a DDP forward would wait for the other ranks
        self.test_batches = test_batches
        self.class_names = [str(n) for n in class_names]
        self.images_every = int(images_every_n_epochs or 0)
        self.histograms_every = int(histograms_every_n_epochs or 0)
        self.precision = precision
        self.graph = graph
        self.sample: Tensor | None = None
        self.seconds = 0.0  # spent drawing: the run's timing reports it apart from training
        self.run = run  # the run's folder name: each figure names its run

    @property
    def writer(self):
        return self.record.writer

    def start(self, x: Tensor, y: Tensor) -> None:
        """Before training: sample inputs (kept for the feature maps), the graph, the conv figures at step 0."""
        self.sample = x[:1]
        with self._timed():
            self._start(x, y)

    def after_epoch(self, epoch: int, step: int) -> None:
        """After an epoch's evaluation: histograms and test-set images when due (global step `step`)."""
        with self._timed():
            self._after_epoch(epoch, step)

    @contextlib.contextmanager
    def _timed(self):
        """Time spent drawing, which the run's timing reports apart from training."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0

    def _start(self, x: Tensor, y: Tensor) -> None:
        if self.writer is None:
            return
        if self.images_every > 0:
            self.writer.add_image("samples/inputs", figures.samples(x, y, self.class_names, self.run), 0, dataformats="HWC")
        if self.graph:
            self._graph(x)
        if self.images_every > 0:
            self._conv_images(0)

    def _after_epoch(self, epoch: int, step: int) -> None:
        if self.writer is None:
            return
        if _due(epoch, self.histograms_every):
            self._histograms(step)
        if _due(epoch, self.images_every):
            self._conv_images(step)
            self._test_images(step)

    # -- parts -------------------------------------------------------------

    def _graph(self, x: Tensor) -> None:
        was_training = self.model.training
        self.model.eval()  # no BatchNorm statistics updates, no dropout randomness
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.writer.add_graph(self.model, x[:1])
        except Exception as e:  # noqa: BLE001 - a graph is a nicety, never a reason to stop
            warn(f"model graph not logged to TensorBoard ({type(e).__name__}: {first_line(e)[:200]})")
        finally:
            self.model.train(was_training)

    def _histograms(self, step: int) -> None:
        for name, param in self.model.named_parameters():
            tag = _clean_name(name)
            self._histogram(f"weights/{tag}", param, step)
            if param.grad is not None:
                self._histogram(f"weights/{tag}/grad", param.grad, step)

    def _histogram(self, tag: str, values: Tensor, step: int) -> None:
        values = figures._numpy(values).reshape(-1)
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]  # NaN/inf would make numpy's binning fail
        if values.size:
            self.writer.add_histogram(tag, values, step)

    def _conv_images(self, step: int) -> None:
        conv = first_conv(self.model)
        if conv is None or self.sample is None:
            return
        self.writer.add_image("model/conv_filters", figures.conv_filters(conv.weight, self.run), step, dataformats="HWC")
        sample = self.sample.to(conv.weight.device)
        maps = self._feature_maps(conv, sample)
        if maps is not None:
            self.writer.add_image("model/feature_maps", figures.feature_maps(sample[0], conv.weight, maps[0], self.run),
                                  step, dataformats="HWC")

    def _feature_maps(self, conv: nn.Conv2d, sample: Tensor) -> Tensor | None:
        """The first conv's output for one input: applied directly when it takes the raw
        input (the usual case), else caught by a hook during a forward pass."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                if sample.dim() == 4 and sample.shape[1] == conv.in_channels:
                    return conv(sample.to(conv.weight.dtype)).float().cpu()
                captured: list[Tensor] = []
                handle = conv.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
                try:
                    self.model(sample)
                finally:
                    handle.remove()
                return captured[0][:1].float().cpu() if captured else None
        finally:
            self.model.train(was_training)

    def _test_images(self, step: int) -> None:
        """One evaluation pass over the test split -> misclassified grid and confusion matrix."""
        device = next(self.model.parameters()).device
        result = evaluate(self.model, self.test_batches, _no_loss, device, self.precision,
                          num_classes=len(self.class_names), keep_wrong=figures.MAX_MISCLASSIFIED, across_ranks=False)
        if result.samples == 0:
            return  # an empty test split: nothing to draw
        x, pred, true = result.wrong if result.wrong is not None else (torch.empty(0), torch.empty(0), torch.empty(0))
        self.writer.add_image("predictions/misclassified",
                              figures.misclassified(x, pred.tolist(), true.tolist(), self.class_names, self.run), step,
                              dataformats="HWC")
        confusion = result.confusion.cpu()
        self.writer.add_image("predictions/confusion_matrix", figures.confusion_matrix(confusion, self.class_names, self.run),
                              step, dataformats="HWC")
        self.writer.add_text("predictions/confusion_matrix", figures.confusion_markdown(confusion, self.class_names),
                             step)


def _no_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The pictures need predictions only: a zero loss costs nothing."""
    return logits.new_zeros(())
