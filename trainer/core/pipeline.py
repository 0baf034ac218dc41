"""Batches for training and evaluation.

Default path (`pipeline=device`): the whole split is decoded once into a
uint8 tensor that lives on the training device; an epoch is a permutation of
indices, a batch is one indexing op, and transforms run on whole batches.
No worker processes, no per-sample Python, no host-to-device copy per step.

Every random choice (the shuffle order, each sample's augmentation) comes
from a generator seeded by (seed, epoch, step), so any position in training
can be reproduced from three integers: that is what makes mid-epoch resume
exact and lets DDP ranks agree on one permutation without talking.

`pipeline=loader` keeps the classic per-sample torch DataLoader path (for
per-sample torchvision transforms, num_workers, pin_memory). Its randomness
is drawn the same way, per sample from (seed, epoch, step, index in the
batch), so it resumes exactly too, with any number of workers.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor]
PIPELINES = ("device", "loader")


def position_seed(seed: int, epoch: int, step: int = -1) -> int:
    """A distinct 63-bit seed for each (run seed, epoch, step) position."""
    return (seed * 1_000_003 + epoch * 10_007 + step + 1) & 0x7FFF_FFFF_FFFF_FFFF


def _generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class BatchTransform:
    """uint8 images [B, H, W] -> float [B, 1, H, W], optionally augmented.

    scale: divide by 255 (the seed's ToTensor()); mean/std: the seed's
    Normalize(); shift: random translation by up to N pixels (pad + random
    crop); hflip: probability of a horizontal flip; erase: probability of
    random erasing (a rectangle of 2-33% of the image set to 0). Each sample
    draws its own shift, flip and rectangle.
    """

    def __init__(
        self,
        scale: bool = True,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        shift: int = 0,
        hflip: float = 0.0,
        erase: float = 0.0,
        erase_scale: Sequence[float] = (0.02, 0.33),
        erase_ratio: Sequence[float] = (0.3, 3.3),
    ):
        self.scale = scale
        self.mean = _first(mean)
        self.std = _first(std)
        self.shift = int(shift)
        self.hflip = float(hflip)
        self.erase = float(erase)
        self.erase_scale = tuple(erase_scale)
        self.erase_ratio = tuple(erase_ratio)

    @property
    def augments(self) -> bool:
        return self.shift > 0 or self.hflip > 0 or self.erase > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None, train: bool = False) -> torch.Tensor:
        x = images.unsqueeze(1).float()
        if self.scale:
            x = x / 255.0
        if train and self.augments:
            x = self._augment(x, generator)
        if self.mean is not None:
            x = (x - self.mean) / (self.std if self.std is not None else 1.0)
        return x

    def _augment(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        if self.shift > 0:
            p = self.shift
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=dev, generator=g)
            dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=dev, generator=g)
            rows = dy + torch.arange(h, device=dev).view(1, h, 1)
            cols = dx + torch.arange(w, device=dev).view(1, 1, w)
            x = padded[torch.arange(n, device=dev).view(n, 1, 1), 0, rows, cols].unsqueeze(1)
        if self.hflip > 0:
            flip = torch.rand(n, 1, 1, 1, device=dev, generator=g) < self.hflip
            x = torch.where(flip, x.flip(-1), x)
        if self.erase > 0:
            x = self._erase(x, g)
        return x

    def _erase(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        area = torch.empty(n, device=dev).uniform_(*self.erase_scale, generator=g) * (h * w)
        log_ratio = torch.empty(n, device=dev).uniform_(math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1]), generator=g)
        ratio = log_ratio.exp()
        eh = (area * ratio).sqrt().round().clamp(1, h)
        ew = (area / ratio).sqrt().round().clamp(1, w)
        top = (torch.rand(n, device=dev, generator=g) * (h - eh + 1)).floor()
        left = (torch.rand(n, device=dev, generator=g) * (w - ew + 1)).floor()
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        inside = (
            (ys >= top.view(n, 1, 1)) & (ys < (top + eh).view(n, 1, 1))
            & (xs >= left.view(n, 1, 1)) & (xs < (left + ew).view(n, 1, 1))
        )
        apply = torch.rand(n, 1, 1, device=dev, generator=g) < self.erase
        return x.masked_fill((inside & apply).unsqueeze(1), 0.0)

    def torchvision(self, train: bool = False):
        """The same pipeline as per-sample torchvision transforms (for pipeline=loader)."""
        from torchvision import transforms as T

        steps = [T.ToTensor()] if self.scale else [T.PILToTensor(), T.ConvertImageDtype(torch.float32)]
        if train and self.shift > 0:
            steps.append(T.RandomCrop(28, padding=self.shift))
        if train and self.hflip > 0:
            steps.append(T.RandomHorizontalFlip(self.hflip))
        if train and self.erase > 0:
            steps.append(T.RandomErasing(self.erase, scale=self.erase_scale, ratio=self.erase_ratio, value=0))
        if self.mean is not None:
            steps.append(T.Normalize((self.mean,), (self.std if self.std is not None else 1.0,)))
        return T.Compose(steps)


def _first(value):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    values = list(value)
    return float(values[0])  # one channel: MNIST-style images are grayscale


@dataclass(frozen=True)
class Counting:
    """How both pipelines count: `size` samples cut into global batches of
    `batch_size` (each shared out over the ranks), the last one partial
    unless `drop_last`."""

    size: int
    batch_size: int
    drop_last: bool

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else self.size

    def global_size(self, step: int) -> int:
        """Samples in global batch `step` over all ranks (the last one may be partial)."""
        return min(self.batch_size, self.num_samples - step * self.batch_size)

    def bounds(self, step: int, rank: int, world_size: int) -> tuple[int, int, int, int]:
        """(global lo, global hi, this rank's lo, hi) of batch `step` in the epoch's order."""
        glo, ghi = step * self.batch_size, min((step + 1) * self.batch_size, self.size)
        lo, hi = _shard(glo, ghi, rank, world_size) if world_size > 1 else (glo, ghi)
        return glo, ghi, lo, hi


class DeviceBatches:
    """Batches drawn from a split held on the device.

    With world_size > 1 every rank draws the same permutation and takes its
    own slice of each global batch, so `batch_size` stays the global batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        transform: BatchTransform,
        shuffle: bool = False,
        seed: int = 0,
        train: bool = True,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images, self.labels = images, labels
        self.count = Counting(len(labels), batch_size, drop_last)
        self.transform = transform
        self.shuffle, self.seed, self.train = shuffle, seed, train
        self.rank, self.world_size = rank, world_size
        self.device = images.device

    def __len__(self) -> int:
        return len(self.count)

    def global_size(self, step: int) -> int:
        return self.count.global_size(step)

    def order(self, epoch: int) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        g = _generator(self.device, position_seed(self.seed, epoch))
        return torch.randperm(len(self.labels), device=self.device, generator=g)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        augment = self.train and self.transform.augments
        for step in range(start_step, len(self)):
            glo, ghi, lo, hi = self.count.bounds(step, self.rank, self.world_size)
            g = _generator(self.device, position_seed(self.seed, epoch, step)) if augment else None
            if augment and self.world_size > 1:
                # Draw the augmentation for the whole global batch and keep this
                # rank's part: a sample gets the same shift/flip/erase whatever
                # the world size, so DDP matches one process and resume may
                # change the number of ranks.
                gidx = order[glo:ghi] if order is not None else slice(glo, ghi)
                x = self.transform(self.images[gidx], g, train=True)[lo - glo:hi - glo]
                yield x, self.labels[gidx][lo - glo:hi - glo]
                continue
            idx = order[lo:hi] if order is not None else slice(lo, hi)
            yield self.transform(self.images[idx], g, train=self.train), self.labels[idx]


def _shard(lo: int, hi: int, rank: int, world_size: int) -> tuple[int, int]:
    """This rank's contiguous part of the global batch [lo, hi)."""
    size = hi - lo
    per, extra = divmod(size, world_size)
    start = lo + rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


class LoaderBatches:
    """The classic path: per-sample torchvision transforms and a DataLoader.

    The order is the (seed, epoch) permutation of DeviceBatches, and each
    sample's augmentation is drawn from its own seed (seed, epoch, step,
    index in the batch) inside the worker, so batches do not depend on which
    worker made them, how many there are, or where a resumed epoch starts.
    The loader has its own generator: it never draws from the global RNG
    that dropout uses.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, transform: BatchTransform,
                 device: torch.device, shuffle: bool = False, seed: int = 0, train: bool = True,
                 num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1):
        self.dataset = SeededImages(images, labels, transform.torchvision(train=train))
        self.count = Counting(len(labels), batch_size, drop_last)
        self.device = device
        self.shuffle, self.seed = shuffle, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.count)

    def global_size(self, step: int) -> int:
        return self.count.global_size(step)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        n = self.count.size
        if self.shuffle:
            order = torch.randperm(n, generator=_generator(torch.device("cpu"), position_seed(self.seed, epoch))).tolist()
        else:
            order = list(range(n))
        batches = []
        for step in range(start_step, len(self)):
            glo, _, lo, hi = self.count.bounds(step, self.rank, self.world_size)
            # Seeds by position in the global batch: the same sample gets the same draw on any rank count.
            base = position_seed(self.seed, epoch, step)
            batches.append([(order[i], base + (i - glo)) for i in range(lo, hi)])
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                            pin_memory=self.pin_memory and self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(position_seed(self.seed, epoch)))
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class SeededImages(torch.utils.data.Dataset):
    """Per-sample dataset over decoded tensors, yielding what torchvision's
    MNIST yields (a PIL image through `transform`, an int label). Indexed by
    (index, seed): the transform's random draws come from that seed, with
    the process's own RNG state put back afterwards."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        from PIL import Image

        index, seed = key if isinstance(key, tuple) else (key, None)
        image = Image.fromarray(self.images[index].numpy(), mode="L")
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                image = self.transform(image)
        return image, int(self.labels[index])
