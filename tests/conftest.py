"""Shared pytest fixtures. Tests never download: data is synthetic, or the real
files in ../shared/data when that folder exists (tests needing it skip otherwise)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import WARM


@pytest.fixture(scope="session", autouse=True)
def warm_trainer():
    """The warm process each CLI test's `trainer` is forked from (helpers.start_cli),
    started here by the main thread: it imports while the first tests run."""
    WARM.ready()


@pytest.fixture(scope="module")
def one_thread():
    """For modules of in-process tests on tiny tensors: intra-op threads only
    add hand-off latency (a lot of it on a busy CI box). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# ---------------------------------------------------------------------------
# Synthetic IDX data
# ---------------------------------------------------------------------------

# The repository sits beside `shared/` both here and in CI clones.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Top-left corners of each class's bright 6x5 block: a 2x5 grid that does not
# overlap, so every class is one distinct, linearly separable pattern.
_BLOCK_H, _BLOCK_W = 6, 5
_CORNERS = [(r, c) for r in (4, 17) for c in (1, 6, 12, 17, 22)]


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """uint8 [N, H, W] -> IDX3 file (magic 2051, big-endian header)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """uint8 [N] -> IDX1 file (magic 2049, big-endian header)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n learnable 28x28 images and balanced labels 0..9 (shuffled)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 64, size=(n, 28, 28), dtype=np.uint8)  # background noise
    for c, (r0, c0) in enumerate(_CORNERS):
        idx = np.flatnonzero(labels == c)
        block = rng.integers(192, 256, size=(len(idx), _BLOCK_H, _BLOCK_W), dtype=np.uint8)
        images[idx, r0:r0 + _BLOCK_H, c0:c0 + _BLOCK_W] = block
    return images, labels


def write_idx_dataset(root: Path, folder: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write the 4 decompressed IDX files to <root>/<folder>/raw/ (torchvision's
    layout) and return that folder. Checksums are not the real ones: load with
    verify=False."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_split(n, split_seed)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A data root with synthetic MNIST and FashionMNIST (512 train, 256 test).
    Shared by the session: treat it as read-only (copy it to corrupt files)."""
    root = tmp_path_factory.mktemp("synthetic_data")
    for folder in ("MNIST", "FashionMNIST"):
        write_idx_dataset(root, folder, n_train=512, n_test=256)
    return root


@pytest.fixture
def make_idx_dataset():
    """`write_idx_dataset` as a fixture, for tests that cannot import conftest."""
    return write_idx_dataset


@pytest.fixture
def real_data() -> Path:
    """../shared/data (real .gz files under MNIST/ and FashionMNIST/); skips when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not available at {REAL_DATA}")
    return REAL_DATA


def pytest_configure(config):
    # `make test` runs the suite on every core with pytest-xdist: each worker
    # then gets its share of the cores, because two workers each running
    # all-core OpenMP kernels on the same cores slow each other down many times.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    config.addinivalue_line(
        "markers", "requires_real_data: needs ../shared/data; skipped cleanly when it is absent")


def pytest_runtest_setup(item):
    # If you append another pytest_runtest_setup here, merge it into this one.
    if item.get_closest_marker("requires_real_data") and not REAL_DATA.is_dir():
        pytest.skip(f"real data not available at {REAL_DATA}")


# A real PostgreSQL server (tests/postgres.py), for the tests of a shared Optuna study.
from postgres import postgres_server, postgres_url  # noqa: E402,F401
