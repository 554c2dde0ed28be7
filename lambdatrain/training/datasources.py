"""Readers that turn a dataset source into decoded uint8 arrays; ``data.py`` splits and stores them.

Two source formats, each given as a directory or as a tar archive (read in place, never extracted):

* the official CIFAR-10 python batches (``cifar-10-batches-py/data_batch_1..5, test_batch,
  batches.meta``): pickles, read with a restricted unpickler that resolves only the few globals
  numpy arrays need, so a crafted archive cannot run code;
* an image-folder tree ``<root>/<class>/*.jpg|png``, the class folders possibly nested below
  top folders (``cifar10-jpeg/train/<class>/0001.jpg``). Sibling ``train`` and ``test`` (or
  ``val``) trees become the train and test splits.

It also fetches a source from a URL, checking its MD5 before anyone reads it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from lambdatrain.protocol.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = frozenset({*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta"})
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation, not for the whole 163 MB

Fetch = Callable[[str, Path], None]  # fetch(url, dest_path) writes the body of url to dest_path


@dataclass(frozen=True)
class RawDataset:
    """Decoded images of a source, before the validation split is carved and arrays are stored."""

    name: str  # the source's file or folder name, recorded in meta.json
    classes: tuple[str, ...]
    train_x: np.ndarray  # uint8 (N, H, W, 3)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray | None  # the source's own held-out split, if it has one
    test_y: np.ndarray | None


def read_source(source: Path) -> RawDataset:
    """Decode ``source`` (a directory or a tar archive, in either format) into arrays."""
    if source.is_dir():
        files: dict[PurePosixPath, bytes | Path] = {
            PurePosixPath(path.relative_to(source).as_posix()): path
            for path in sorted(source.rglob("*"))
            if _is_relevant(path.name) and path.is_file()
        }
    elif source.is_file() and tarfile.is_tarfile(source):
        files = _read_tar(source)
    else:
        raise DataError(f"unrecognized dataset format at {source}: expected a directory or a tar archive")
    if any(p.name == "data_batch_1" for p in files):
        return _read_cifar_batches(source, files)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        return _read_image_folder(source, files)
    raise DataError(f"unrecognized dataset format at {source}: no CIFAR-10 batches and no .jpg/.png images found")


def _is_relevant(name: str) -> bool:
    # Skip hidden files, including macOS "._x.jpg" resource forks that tar archives often carry.
    if name.startswith("."):
        return False
    return name in CIFAR_FILES or PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _read_tar(path: Path) -> dict[PurePosixPath, bytes | Path]:
    """Read the relevant members of a tar archive into memory in one sequential pass."""
    files: dict[PurePosixPath, bytes | Path] = {}
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if member.isfile() and _is_relevant(PurePosixPath(member.name).name):
                    handle = archive.extractfile(member)
                    assert handle is not None  # regular files always have contents
                    files[PurePosixPath(member.name.lstrip("/"))] = handle.read()  # "./a" parses as "a"
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot read archive {path}: {' '.join(str(exc).split())}") from exc
    return files


# --- the official CIFAR-10 python batches ---------------------------------------------------------
def _numpy_reconstruct():
    try:  # numpy >= 2 moved the module; pickles written by numpy 1 still name numpy.core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals that pickled numpy arrays need; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: __import__("codecs").encode,
        ("builtins", "bytearray"): lambda: bytearray,
        ("__builtin__", "bytearray"): lambda: bytearray,
    }

    def __init__(self, data: bytes, origin: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.origin = origin

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise DataError(f"refusing {self.origin}: its pickle references {module}.{name}, which a CIFAR batch never needs")
        return factory()


def _unpickle(files: dict[PurePosixPath, bytes | Path], name: str, source: Path) -> dict:
    matches = [p for p in files if p.name == name]
    if len(matches) != 1:
        raise DataError(f"{source} has {len(matches)} files named {name}; expected exactly one (CIFAR-10 python format)")
    item = files[matches[0]]
    data = item.read_bytes() if isinstance(item, Path) else item
    try:
        obj = _BatchUnpickler(data, f"{source}:{matches[0]}").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise DataError(f"cannot read {source}:{matches[0]}: {' '.join(str(exc).split())}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"cannot read {source}:{matches[0]}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _batch_arrays(batch: dict, origin: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None:
        raise DataError(f"{origin} is not a CIFAR-10 batch: expected b'data' of shape (N, 3072) and b'labels'")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (data.shape[0],):
        raise DataError(f"{origin} has {data.shape[0]} images but {y.size} labels")
    # Rows are stored channel-major (1024 red, 1024 green, 1024 blue); we keep images NHWC.
    x = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def _read_cifar_batches(source: Path, files: dict[PurePosixPath, bytes | Path]) -> RawDataset:
    meta = _unpickle(files, "batches.meta", source)
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", []))
    if not classes:
        raise DataError(f"{source}: batches.meta has no b'label_names'")
    train = [_batch_arrays(_unpickle(files, n, source), f"{source}:{n}") for n in CIFAR_TRAIN_BATCHES]
    test_x, test_y = _batch_arrays(_unpickle(files, "test_batch", source), f"{source}:test_batch")
    train_y = np.concatenate([y for _, y in train])
    for y, split in ((train_y, "train"), (test_y, "test")):
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{source}: {split} labels fall outside the {len(classes)} classes of batches.meta")
    return RawDataset(source.name, classes, np.concatenate([x for x, _ in train]), train_y, test_x, test_y)


# --- image folders ------------------------------------------------------------------------------
def _read_image_folder(source: Path, files: dict[PurePosixPath, bytes | Path]) -> RawDataset:
    images = {p: item for p, item in files.items() if p.suffix.lower() in IMAGE_SUFFIXES}
    if any(len(p.parts) < 2 for p in images):
        raise DataError(f"{source}: images lie directly in the top folder; expected <root>/<class>/<image> folders")
    splits: dict[PurePosixPath, list[PurePosixPath]] = {}
    for path in sorted(images):
        splits.setdefault(path.parent.parent, []).append(path)
    train_root, test_root = _pick_split_roots(source, sorted(splits))
    classes = tuple(sorted({p.parent.name for p in splits[train_root]}))
    train_x, train_y = _decode_split(source, splits[train_root], images, classes)
    test_x = test_y = None
    if test_root is not None:
        unknown = sorted({p.parent.name for p in splits[test_root]} - set(classes))
        if unknown:
            raise DataError(f"{source}: {test_root} has classes {unknown} that {train_root} lacks")
        test_x, test_y = _decode_split(source, splits[test_root], images, classes)
        if test_x.shape[1:] != train_x.shape[1:]:
            raise DataError(f"{source}: {test_root} images are {test_x.shape[1:3]}, {train_root} images {train_x.shape[1:3]}")
    return RawDataset(source.name, classes, train_x, train_y, test_x, test_y)


def _pick_split_roots(source: Path, roots: list[PurePosixPath]) -> tuple[PurePosixPath, PurePosixPath | None]:
    """The folder whose subfolders are the training classes, and its test sibling if any."""
    if len(roots) == 1:
        return roots[0], None
    named = {root.name.lower(): root for root in roots}
    test = [named[n] for n in TEST_SPLIT_NAMES if n in named]
    if len(roots) == 2 and "train" in named and len(test) == 1:
        return named["train"], test[0]
    listed = ", ".join(str(r) or "." for r in roots)
    raise DataError(f"{source}: class folders sit under several folders ({listed}); pass one of them, or a tree with just train/ and test/")


def _decode_split(
    source: Path, paths: list[PurePosixPath], images: dict[PurePosixPath, bytes | Path], classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    first = _decode(source, paths[0], images[paths[0]], None)
    x = np.empty((len(paths), *first.shape), dtype=np.uint8)
    # Decoding is Pillow C code that releases the GIL, so threads scale; contiguous chunks keep
    # the per-task overhead negligible next to 50,000 small images.
    chunks = np.array_split(np.arange(len(paths)), max(1, min(32, len(paths) // 256)))

    def decode_chunk(indices: np.ndarray) -> None:
        for i in indices:
            x[i] = _decode(source, paths[i], images[paths[i]], first.shape)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode_chunk, chunks))
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[p.parent.name] for p in paths], dtype=np.int64)
    return x, y


def _decode(source: Path, path: PurePosixPath, item: bytes | Path, shape: tuple[int, ...] | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
            image.load()
            array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {source}:{path}: {' '.join(str(exc).split())}") from exc
    if shape is not None and array.shape != shape:
        raise DataError(
            f"image {source}:{path} is {array.shape[1]}x{array.shape[0]}, the others {shape[1]}x{shape[0]}; resize all images to one size"
        )
    return array


# --- fetching -----------------------------------------------------------------------------------
def download(url: str, dest: Path) -> None:
    """The default fetch: stream ``url`` into ``dest`` with urllib."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def fetch_verified(url: str, dest: Path, md5: str, fetch: Fetch, hint: str) -> None:
    """Fetch ``url`` to ``dest`` via a ``.part`` file that is renamed only once its MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        fetch(url, part)
    # The fetch is pluggable (urllib here, anything in tests or on Lambda) and every way it can
    # fail means the same to the user: no dataset, so name the cause and the way around it.
    except Exception as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed ({type(exc).__name__}: {' '.join(str(exc).split())}); {hint}") from exc
    if not part.is_file():
        raise DataError(f"download of {url} wrote no file at {part}; {hint}")
    verify_md5(part, md5, f"run again to re-download or {hint}")
    os.replace(part, dest)


def verify_md5(path: Path, expected: str, hint: str) -> None:
    """Raise (and delete ``path``) unless its MD5 is ``expected``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        path.unlink()
        raise DataError(f"{path.name} has MD5 {digest.hexdigest()}, expected {expected}; removed it, {hint}")
