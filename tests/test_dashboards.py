"""trainer.report.dashboards: what lands in the TensorBoard event file, read back with
TensorBoard's own reader."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from trainer.report import dashboards, figures
from trainer.report.dashboards import Dashboards
from trainer.core.engine import confusion_matrix

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CONV_TAGS = {"model/conv_filters", "model/feature_maps"}
TEST_TAGS = {"predictions/misclassified", "predictions/confusion_matrix"}
ALL_IMAGE_TAGS = {"samples/inputs"} | CONV_TAGS | TEST_TAGS


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


class FakeBatches:
    """Stands in for the project's batch iterators: `.epoch(0)` yields (x, y)."""

    def __init__(self, n: int = 64, batch: int = 32, device: str = "cpu", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 28, 28, generator=g).to(device)
        self.y = torch.randint(0, 10, (n,), generator=g).to(device)
        self.batch = batch
        self.passes = 0

    def epoch(self, epoch: int):
        self.passes += 1
        for i in range(0, len(self.y), self.batch):
            yield self.x[i:i + self.batch], self.y[i:i + self.batch]


def conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


def mlp_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 10))


def train_once(model: nn.Module, batches: FakeBatches) -> None:
    """One backward pass, so parameters have .grad like at the end of an epoch."""
    x, y = next(iter(batches.epoch(0)))
    nn.functional.cross_entropy(model(x), y).backward()


def read_events(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    return acc


def image_steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in acc.Images(tag)] if tag in acc.Tags()["images"] else []


def board(writer, model, batches, images=1, histograms=1, graph=False, run="3_optimizer=rmsprop") -> Dashboards:
    """Dashboards drawing into `writer` (the run record holds it in a run)."""
    return Dashboards(SimpleNamespace(writer=writer), model, batches, class_names=CLASSES,
                      images_every_n_epochs=images, histograms_every_n_epochs=histograms, graph=graph, run=run)


def run(tmp_path, model, *, images=1, histograms=1, epochs=(1,), graph=False, batches=None):
    batches = batches or FakeBatches()
    x0, y0 = next(iter(batches.epoch(0)))
    train_once(model, batches)
    batches.passes = 0
    writer = SummaryWriter(str(tmp_path))
    dash = board(writer, model, batches, images, histograms, graph)
    dash.start(x0, y0)
    for epoch in epochs:
        dash.after_epoch(epoch, step=epoch * 10)
    writer.close()
    return read_events(tmp_path), batches


# ---------------------------------------------------------------------------
# confusion_matrix
# ---------------------------------------------------------------------------

def test_confusion_matrix_hand_computed():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.tensor([[1, 1, 0],
                             [0, 1, 0],
                             [1, 0, 2]])
    matrix = confusion_matrix(preds, targets, 3)
    assert matrix.dtype == torch.int64
    assert torch.equal(matrix, expected)
    assert matrix.sum() == len(targets)


def test_confusion_matrix_ignores_out_of_range_and_keeps_empty_classes():
    matrix = confusion_matrix(torch.tensor([0, 5, 1, -1]), torch.tensor([0, 1, 7, 1]), 4)
    assert matrix.shape == (4, 4)
    assert matrix.sum() == 1 and matrix[0, 0] == 1


# ---------------------------------------------------------------------------
# What gets logged
# ---------------------------------------------------------------------------

def test_conv_model_logs_every_image_and_histogram(tmp_path):
    model = conv_model()
    acc, batches = run(tmp_path, model, epochs=(1,))
    assert set(acc.Tags()["images"]) == ALL_IMAGE_TAGS
    assert image_steps(acc, "samples/inputs") == [0]
    assert image_steps(acc, "model/conv_filters") == [0, 10]  # start (step 0) and epoch 1
    assert image_steps(acc, "model/feature_maps") == [0, 10]
    assert image_steps(acc, "predictions/misclassified") == [10]
    assert image_steps(acc, "predictions/confusion_matrix") == [10]
    histograms = set(acc.Tags()["histograms"])
    for name in ("0.weight", "0.bias", "3.weight", "3.bias"):
        assert f"weights/{name}" in histograms
        assert f"weights/{name}/grad" in histograms
    assert batches.passes == 1  # misclassified + confusion from ONE pass over the test split
    assert model.training  # train mode restored


def test_mlp_logs_no_conv_images(tmp_path):
    acc, _ = run(tmp_path, mlp_model(), epochs=(1,))
    tags = set(acc.Tags()["images"])
    assert tags == {"samples/inputs"} | TEST_TAGS
    assert not tags & CONV_TAGS


def test_none_grads_are_skipped(tmp_path):
    model = mlp_model()
    writer = SummaryWriter(str(tmp_path))
    board(writer, model, FakeBatches(), images=0).after_epoch(1, step=5)  # no backward: all grads None
    writer.close()
    histograms = set(read_events(tmp_path).Tags()["histograms"])
    assert "weights/1.weight" in histograms
    assert not any(tag.endswith("/grad") for tag in histograms)


def test_every_n_epochs_gating(tmp_path):
    acc, batches = run(tmp_path, conv_model(), images=2, histograms=3, epochs=(1, 2, 3, 4))
    # rule: epoch 1, then every multiple of N
    assert image_steps(acc, "predictions/confusion_matrix") == [10, 20, 40]
    assert image_steps(acc, "predictions/misclassified") == [10, 20, 40]
    assert image_steps(acc, "model/conv_filters") == [0, 10, 20, 40]
    assert [e.step for e in acc.Histograms("weights/0.weight")] == [10, 30]
    assert batches.passes == 3


def test_zero_turns_parts_off(tmp_path):
    acc, batches = run(tmp_path / "no_images", conv_model(), images=0, histograms=1, epochs=(1, 2))
    assert acc.Tags()["images"] == []
    assert "weights/0.weight" in acc.Tags()["histograms"]
    assert batches.passes == 0

    acc, _ = run(tmp_path / "no_histograms", conv_model(), images=1, histograms=0, epochs=(1, 2))
    assert acc.Tags()["histograms"] == []
    assert "predictions/confusion_matrix" in acc.Tags()["images"]


def test_no_writer_is_a_no_op():
    batches = FakeBatches()
    dash = board(None, conv_model(), batches)
    x, y = next(iter(batches.epoch(0)))
    dash.start(x, y)
    dash.after_epoch(1, step=1)
    assert batches.passes == 1  # only the pass that drew the sample batch: nothing evaluated

def decode(acc: EventAccumulator, tag: str, index: int = -1) -> Image.Image:
    event = acc.Images(tag)[index]
    image = Image.open(io.BytesIO(event.encoded_image_string))
    assert image.size == (event.width, event.height)
    return image


def test_every_figure_fits_the_default_card(tmp_path):
    """TensorBoard's image card (1600 px window, default card width) shows at
    most about 455 x 215 px and shrinks a bigger image to fit: every figure is
    drawn inside it, wide rather than tall, so its text is read at full size."""
    acc, _ = run(tmp_path, conv_model(), epochs=(1,))
    for tag in ALL_IMAGE_TAGS:
        image = decode(acc, tag)
        assert image.mode == "RGB" and image.size == (440, 210), (tag, image.size)
    assert figures.FONT * figures.DPI / 72 >= 11  # TensorBoard's own axis labels are 11 px


def test_each_figure_names_its_run():
    """An image card labels its picture with the start of the run's path
    (the sweep's folder, the same for every job): the picture names its run,
    in its top line, a long name cut at its end to fit."""
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    conv = torch.randn(8, 1, 3, 3)
    drawings = {"samples": lambda run: figures.samples(x, y, CLASSES, run),
                "misclassified": lambda run: figures.misclassified(x[:3], [1, 2, 3], [0, 0, 0], CLASSES, run),
                "confusion": lambda run: figures.confusion_matrix(torch.eye(10, dtype=torch.long) * 5, CLASSES, run),
                "filters": lambda run: figures.conv_filters(conv, run),
                "feature maps": lambda run: figures.feature_maps(x[0], conv, torch.rand(8, 26, 26), run)}
    for name, draw in drawings.items():
        plain, named = draw(""), draw("3_optimizer=rmsprop")
        assert named.shape == plain.shape == (210, 440, 3), name
        top = named[:14].astype(int)
        assert (top.max(axis=2) < 128).any(), f"{name}: no dark text in the top line"
        assert not np.array_equal(plain, named), name
    long = "3_batch_size=64,lr=0.0003755,optimizer=adam,weight_decay=0.0001"
    for name, draw in drawings.items():  # cut at its end, the whole line inside the picture
        edges = draw(long)[:14, [0, 1, 2, -3, -2, -1]].astype(int)
        assert (edges.min(axis=2) > 200).all(), f"{name}: the top line runs off the picture"
    assert np.array_equal(figures.conv_filters(conv, long), figures.conv_filters(conv, long + ",more=1"))


def test_misclassified_capped_and_captioned(tmp_path):
    # An untrained model on 200 random examples gets far more wrong than the figure shows.
    acc, _ = run(tmp_path, mlp_model(), batches=FakeBatches(n=200, batch=50), epochs=(1,))
    image = decode(acc, "predictions/misclassified")
    assert image.size == (440, 210)  # 2 rows of 6, with their captions
    wrong = figures.misclassified(torch.randn(3, 1, 28, 28), [1, 2, 3], [0, 0, 0], CLASSES)
    assert wrong.shape == (210, 440, 3) and wrong.dtype.name == "uint8"


def test_confusion_matrix_also_as_a_markdown_table(tmp_path):
    acc, _ = run(tmp_path, conv_model(), epochs=(1,))
    (event,) = acc.Tensors("predictions/confusion_matrix/text_summary")
    table = event.tensor_proto.string_val[0].decode()
    assert table.startswith("| true \\\\ predicted | T-shirt/top | Trouser |") and "| accuracy |" in table
    rows = [line for line in table.splitlines() if line.startswith("| **")]
    assert len(rows) == 10 and sum(int(c) for r in rows for c in r.split("|")[2:12]) == 64  # FakeBatches' 64 images


def test_perfect_model_gets_a_placeholder():
    image = figures.misclassified(torch.empty(0), [], [], CLASSES)
    assert image.ndim == 3 and image.shape[2] == 3


def test_feature_maps_through_a_hook_when_the_first_conv_is_not_first():
    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.expand = nn.Linear(28, 28)
            self.conv = nn.Conv2d(2, 3, 3)

        def forward(self, x):
            x = self.expand(x)
            return self.conv(torch.cat([x, x], 1)).flatten(1)[:, :10]

    model = Stem()
    maps = board(None, model, FakeBatches())._feature_maps(model.conv, torch.randn(1, 1, 28, 28))
    assert maps.shape == (1, 3, 26, 26)


# ---------------------------------------------------------------------------
# The graph never stops training
# ---------------------------------------------------------------------------

def test_graph_is_logged(tmp_path):
    model = conv_model()
    writer = SummaryWriter(str(tmp_path))
    x = torch.randn(2, 1, 28, 28)
    board(writer, model, FakeBatches(), graph=True).start(x, torch.tensor([0, 1]))
    writer.close()
    acc = read_events(tmp_path)
    assert acc.Tags()["graph"]
    assert model.training


def test_graph_failure_prints_one_warning(tmp_path, capsys):
    class Broken(SummaryWriter):
        def add_graph(self, *args, **kwargs):
            raise RuntimeError("trace failed\nsecond line")

    writer = Broken(str(tmp_path))
    model = conv_model()
    x = torch.randn(2, 1, 28, 28)
    board(writer, model, FakeBatches(), graph=True).start(x, torch.tensor([0, 1]))
    writer.close()
    err = capsys.readouterr().err
    assert "warning" in err and "trace failed" in err
    assert len(err.strip().splitlines()) == 1
    assert model.training
    assert "samples/inputs" in read_events(tmp_path).Tags()["images"]  # the rest still logged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors(tmp_path):
    model = conv_model().cuda()
    acc, _ = run(tmp_path, model, batches=FakeBatches(device="cuda"), epochs=(1,))
    assert set(acc.Tags()["images"]) == ALL_IMAGE_TAGS
    assert "weights/0.weight/grad" in acc.Tags()["histograms"]


def test_dashboards_leave_training_state_alone(tmp_path):
    """Graph trace and test pass run in eval mode: no BatchNorm statistics updates,
    no RNG draws (resume must stay exact), and the train/eval mode comes back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    batches = FakeBatches()
    x0, y0 = next(iter(batches.epoch(0)))
    bn = model[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    rng = torch.get_rng_state()
    writer = SummaryWriter(str(tmp_path))
    dash = board(writer, model, batches, graph=True)
    dash.start(x0, y0)
    dash.after_epoch(1, step=1)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    model.eval()
    dash.after_epoch(1, step=2)  # eval mode is kept too
    writer.close()
    assert not model.training


def test_wrapper_prefixes_are_dropped_from_histogram_tags():
    assert dashboards._clean_name("module.features.0.weight") == "features.0.weight"
    assert dashboards._clean_name("_orig_mod.head.1.bias") == "head.1.bias"
    assert dashboards._clean_name("0.weight") == "0.weight"
