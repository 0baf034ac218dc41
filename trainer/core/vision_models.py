"""torchvision's classification architectures, adapted to 1x28x28 images.

    model = torchvision_model("resnet18", num_classes=10)            # from scratch
    model = torchvision_model("resnet18", pretrained=True, freeze=True)  # fine-tune the head

Any builder `torchvision.models.list_models` names for classification. The
adaptation, the same however the first weights arrive:
  * the first convolution takes one channel: pretrained RGB filters are summed
    over their three channels (a grey image seen as R=G=B gives the same
    response); a fresh one keeps torchvision's initialisation of one channel;
  * ResNet-shaped nets get a small-image stem (`small_stem`): a 3x3 kernel at
    stride 1 and no max-pool; pretrained 7x7 filters are resampled to 3x3
    (their sum kept), so the shapes never depend on where the weights came
    from and a checkpoint always fits the model its config rebuilds;
  * the classifier's last layer (the head) gets `num_classes` outputs;
  * `resize` scales the batch up inside the model for nets whose feature maps
    would shrink to nothing at 28 pixels (a trial forward finds the size).

The input normalisation belongs to the weights, so it lives in the model as
two buffers (saved in every checkpoint): ImageNet's statistics, averaged over
RGB, for torchvision's weights; none for a net trained from scratch (the
transform config's mean/std apply). Nothing here downloads: pretrained
weights come from torch's cache ($TORCH_HOME/hub/checkpoints) or not at all.

A refused argument raises ValueError starting `<argument>=<value>`, which the
build step reports as `model.<argument>=<value> ...` (trainer.core.models).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv

from trainer.core.errors import ArgumentError, first_line

ARCHS = tuple(sorted(tv.list_models(module=tv)))
# Sizes the trial forward tries when 28 pixels are too small, smallest first.
RESIZE_STEPS = (32, 48, 64, 96, 112, 128, 160, 192, 224, 256, 299)
# The builders with auxiliary classifiers return a tuple in training mode: one output is what a loss takes.
_NO_AUX = {"googlenet": {"aux_logits": False, "init_weights": True},
           "inception_v3": {"aux_logits": False, "init_weights": True}}


class VisionModel(nn.Module):
    """Normalise (the weights' statistics), resize if needed, then the torchvision net.

    `freeze`: only the head trains; the backbone's parameters take no
    gradient and its BatchNorm layers stay in eval mode (their running
    statistics are those of the weights).
    """

    def __init__(self, net: nn.Module, head: str, mean: float = 0.0, std: float = 1.0, resize: int = 0,
                 freeze: bool = False):
        super().__init__()
        self.net = net
        self.head = head
        self.resize = int(resize)
        self.freeze = bool(freeze)
        self.register_buffer("input_mean", torch.tensor(float(mean)))
        self.register_buffer("input_std", torch.tensor(float(std)))
        if self.freeze:
            for name, param in self.net.named_parameters():
                param.requires_grad_(_in_head(name, head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return self.net(x)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze and mode:
            for name, module in self.net.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not _in_head(name, self.head):
                    module.eval()
        return self

    def extra_repr(self) -> str:
        return f"head={self.head}, resize={self.resize}, freeze={self.freeze}"


def torchvision_model(arch: str = "resnet18", num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                      resize: int = 0, small_stem: bool = True, pretrained: bool = False,
                      weights_path: str | None = None, freeze: bool = False, *,
                      load_weights: bool = True) -> VisionModel:
    """The adapted net. `load_weights=False` builds the same shapes without
    reading any weights (a checkpoint is about to fill them: trainer-eval,
    resume)."""
    if arch not in ARCHS:
        raise ArgumentError("arch",
                            f"{arch} is not a torchvision classification model; choose one of: {', '.join(ARCHS)}")
    if pretrained and weights_path:
        raise ArgumentError("pretrained", f"true and model.weights_path={weights_path} both give the first weights; "
                         "set one of them (model.pretrained=false or model.weights_path=null)")
    saved = read_weights(weights_path) if weights_path and load_weights else None
    ours = saved is not None and _is_adapted(saved)
    weights = default_weights(arch) if pretrained else None
    if weights is not None and load_weights:
        check_cached(arch, weights)
    net = tv.get_model(arch, weights=weights if load_weights else None, **_NO_AUX.get(arch, {}))
    if saved is not None and not ours:
        _load(net, saved, weights_path)
    from_weights = pretrained or (weights_path is not None and not ours)
    head = _adapt(net, arch, in_channels, num_classes, small_stem, from_weights)
    mean, std = imagenet_gray_stats(arch) if from_weights else (0.0, 1.0)
    model = VisionModel(net, head, mean, std, resize, freeze)
    if ours:
        _load(model, saved, weights_path)
    check_input_size(model, arch, in_channels, image_size, num_classes)
    return model


# ------------------------------------------------------------------ weights
def default_weights(arch: str):
    """torchvision's default weights enum value for `arch`; ValueError if it has none."""
    try:
        return tv.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise ArgumentError("pretrained", f"true: torchvision has no pretrained weights for {arch}; "
                         "set model.pretrained=false") from e


def cached_weights_file(weights) -> Path:
    """Where torch's hub cache keeps a torchvision weights file (what load_state_dict_from_url reads)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def check_cached(arch: str, weights) -> None:
    """Never download: a missing file is one line saying how to bring it here."""
    path = cached_weights_file(weights)
    if not path.is_file():
        raise ArgumentError(
            "pretrained", f"true: the {arch} weights are not in torch's cache: expected {path}; on a connected machine "
            f"run `python -c \"import torchvision; torchvision.models.get_model_weights('{arch}').DEFAULT"
            f".get_state_dict()\"` (or download {weights.url}) and copy the file into {path.parent}/ on this "
            "machine ($TORCH_HOME moves the cache); nothing is downloaded")


def read_weights(path: str | Path) -> dict:
    """A state dict from a file: a plain one (torchvision's, a saved model's) or a trainer checkpoint's model."""
    path = Path(path)
    if not path.is_file():
        raise ArgumentError("weights_path",
                            f"{path} is not a file; give a state dict (.pth) or a trainer checkpoint (.ckpt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch each raise their own
        raise ArgumentError("weights_path", f"{path} cannot be read as a state dict ({first_line(e)})") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a trainer checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArgumentError("weights_path", f"{path} holds no state dict (a mapping of names to tensors)")
    return state


def _is_adapted(state: dict) -> bool:
    """A state dict of a VisionModel (ours: a checkpoint, a saved model) rather than of a bare torchvision net."""
    return "input_mean" in state and any(k.startswith("net.") for k in state)


def _load(module: nn.Module, state: dict, path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ArgumentError("weights_path", f"{path} does not fit this architecture ({first_line(e)}); "
                         "check model.arch") from e


def imagenet_gray_stats(arch: str) -> tuple[float, float]:
    """The weights' normalisation, one grey channel: the mean of their per-channel mean and std."""
    try:
        preset = default_weights(arch).transforms()
        mean, std = preset.mean, preset.std
    except (ValueError, AttributeError):
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's
    return sum(mean) / len(mean), sum(std) / len(std)


# --------------------------------------------------------------- adaptation
def _adapt(net: nn.Module, arch: str, in_channels: int, num_classes: int, small_stem: bool,
           from_weights: bool) -> str:
    """One input channel, a small stem, `num_classes` outputs. Returns the head's name."""
    stem_name, stem = _first(net, nn.Conv2d)
    if small_stem and isinstance(net, tv.ResNet):
        net.maxpool = nn.Identity()
        stem = _stem_conv(stem, in_channels, from_weights)
    else:
        stem = _one_channel(stem, in_channels, from_weights, stride=stem.stride)
    _replace(net, stem_name, stem)
    head_name, head = _last(net, nn.Linear) or _last(net, nn.Conv2d)  # squeezenet's head is a 1x1 conv
    if isinstance(head, nn.Linear):
        new_head: nn.Module = nn.Linear(head.in_features, num_classes)
    else:
        new_head = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding)
    _replace(net, head_name, new_head)
    return head_name


def _stem_conv(conv: nn.Conv2d, in_channels: int, from_weights: bool) -> nn.Conv2d:
    """3x3 at stride 1: a 28-pixel image keeps its resolution through the stem.
    Pretrained filters are summed over RGB and resampled to 3x3 with their sum
    (the response to a flat patch) kept."""
    small = nn.Conv2d(in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    with torch.no_grad():
        if from_weights:
            grey = conv.weight.sum(1, keepdim=True)
            resampled = F.interpolate(grey, size=(3, 3), mode="bilinear", antialias=True, align_corners=False)
            scale = grey.shape[2] * grey.shape[3] / 9  # a resampled kernel averages: scale back to the sum
            resampled = resampled * scale
            # The rest of the difference spread evenly: a flat patch gets exactly the 7x7 filter's response.
            resampled += (grey.sum((2, 3), keepdim=True) - resampled.sum((2, 3), keepdim=True)) / 9
            small.weight.copy_(resampled.expand(-1, in_channels, -1, -1) / in_channels)
        else:
            nn.init.kaiming_normal_(small.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's ResNet
        if conv.bias is not None:
            small.bias.copy_(conv.bias)
    return small


def _one_channel(conv: nn.Conv2d, in_channels: int, from_weights: bool, stride) -> nn.Conv2d:
    if conv.groups != 1:
        raise ValueError(f"the first convolution of this net is grouped ({conv.groups} groups); "
                         "choose another model.arch")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None)
    with torch.no_grad():
        weight = conv.weight.sum(1, keepdim=True) if from_weights else conv.weight[:, :1]
        new.weight.copy_(weight.expand(-1, in_channels, -1, -1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _first(net: nn.Module, kind: type) -> tuple[str, nn.Module]:
    return next((name, m) for name, m in net.named_modules() if isinstance(m, kind))


def _last(net: nn.Module, kind: type) -> tuple[str, nn.Module] | None:
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, kind)]
    return found[-1] if found else None


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, module)


def _in_head(name: str, head: str) -> bool:
    return name == head or name.startswith(head + ".")


# --------------------------------------------------------------- input size
def check_input_size(model: VisionModel, arch: str, in_channels: int, image_size: int, num_classes: int) -> None:
    """A trial forward at the data's size; a net that cannot take it names the model.resize it needs."""
    error = _trial(model, in_channels, image_size, num_classes)
    if error is None:
        return
    needed = next((size for size in RESIZE_STEPS if size > model.resize and _fits(model, in_channels, image_size,
                                                                                   num_classes, size)), None)
    seen = f"{model.resize}x{model.resize}" if model.resize else f"{image_size}x{image_size}"
    fix = f"set model.resize={needed} (the smallest size it takes)" if needed else "choose another model.arch"
    argument, value = ("resize", model.resize) if model.resize else ("arch", arch)
    raise ArgumentError(argument, f"{value}: {arch} cannot take {seen} inputs ({error}); {fix}")


def _fits(model: VisionModel, in_channels: int, image_size: int, num_classes: int, size: int) -> bool:
    kept = model.resize
    model.resize = size
    try:
        return _trial(model, in_channels, image_size, num_classes) is None
    finally:
        model.resize = kept


def _trial(model: VisionModel, in_channels: int, image_size: int, num_classes: int) -> str | None:
    """None if a batch of 2 images goes through in eval mode (no statistics change) to [2, num_classes]."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, image_size, image_size))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return None if shape == (2, num_classes) else f"its output is {shape}, not (2, {num_classes})"
    except (RuntimeError, ValueError, AssertionError, IndexError) as e:
        return first_line(e)
    finally:
        model.train(was_training)

