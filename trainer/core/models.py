"""The two model families: a plain MLP and a stack of conv blocks.

Plain nn.Modules with keyword arguments, so a config's `_target_` can build
them and tests can build them by hand. A constructor that refuses its
arguments raises ValueError starting `<argument>=<value>`, which the build
step reports as `model.<argument>=<value> ...`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from trainer.core.errors import ArgumentError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


POOLS = ("max", "avg", "none")


class MLP(nn.Module):
    """Flatten, then Linear+activation(+dropout) per hidden size, then a linear head.

    The default is the seed's quickstart network: 784-512-512-10.
    """

    def __init__(
        self,
        in_features: int = 28 * 28,
        hidden: Sequence[int] = (512, 512),
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        super().__init__()
        self.flatten = nn.Flatten()
        layers = dense_layers(in_features, hidden, activation, dropout, batchnorm)
        layers.append(nn.Linear(hidden[-1] if hidden else in_features, num_classes))
        # Same attribute name as the seed's NeuralNetwork, so printed models match.
        self.linear_relu_stack = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


class ConvNet(nn.Module):
    """Conv blocks (conv, [batchnorm], activation, [pool], [dropout]) then an MLP head.

    `pool_every` pools after every N-th block, so deep stacks (two convs per
    resolution, as in VGG-style nets) and the seed's conv-pool-conv-pool
    `MyModel` are both one config away.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        channels: Sequence[int] = (32, 32, 64, 64),
        kernel_size: int = 3,
        padding: int | None = None,
        pool: str = "max",
        pool_every: int = 2,
        batchnorm: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
        head_hidden: Sequence[int] = (128,),
        head_dropout: float = 0.0,
        global_pool: bool = False,
        num_classes: int = 10,
    ):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2  # "same" convolutions unless told otherwise
        pooled = [pool != "none" and (i + 1) % pool_every == 0 for i in range(len(channels))]
        size = _feature_size(image_size, kernel_size, padding, pooled, list(channels))
        blocks: list[nn.Module] = []
        c = in_channels
        for out, pools in zip(channels, pooled):
            block: list[nn.Module] = [nn.Conv2d(c, out, kernel_size, padding=padding, bias=not batchnorm)]
            if batchnorm:
                block.append(nn.BatchNorm2d(out))
            block.append(ACTIVATIONS[activation]())
            if pools:
                block.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            if dropout > 0:
                block.append(nn.Dropout2d(dropout))
            blocks.append(nn.Sequential(*block))
            c = out
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = []
        if global_pool:
            head += [nn.AdaptiveAvgPool2d(1)]
            width = c
        else:
            width = c * size * size
        head.append(nn.Flatten())
        head += dense_layers(width, head_hidden, activation, head_dropout)
        head.append(nn.Linear(head_hidden[-1] if head_hidden else width, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def dense_layers(width: int, sizes: Sequence[int], activation: str, dropout: float,
                 batchnorm: bool = False) -> list[nn.Module]:
    """Linear, [BatchNorm], activation, [Dropout] for each size: an MLP's
    hidden layers and a conv net's head."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers.append(nn.Linear(width, size))
        if batchnorm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers


def _feature_size(image_size: int, kernel_size: int, padding: int, pooled: list[bool], channels: list[int]) -> int:
    """The side of the feature maps after every block; ValueError if it reaches 0."""
    size = image_size
    for i, pools in enumerate(pooled):
        size = (size + 2 * padding - kernel_size + 1) // (2 if pools else 1)
        if size < 1:
            raise ArgumentError("channels",
                                f"{channels} has {len(channels)} blocks, but a {image_size}px image shrinks "
                             f"to nothing after block {i + 1}; use fewer blocks, more padding or a larger pool_every")
    return size


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first Conv2d of any model, for the filter and feature-map images."""
    for module in unwrap(model).modules():
        if isinstance(module, nn.Conv2d):
            return module
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside the DDP / DataParallel and torch.compile wrappers:
    what checkpoints store and what the dashboards trace (a DDP forward would
    wait for the other ranks)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
