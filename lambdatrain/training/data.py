"""The prepared dataset: decoding a source into four arrays once, finding or caching it, opening it.

A dataset is decoded once (``datasources.py`` reads and downloads the raw formats) into a *prepared directory*::

    train_x.npy  uint8 (N, H, W, 3)    train_y.npy  int64 (N,)
    val_x.npy    uint8 (M, H, W, 3)    val_y.npy    int64 (M,)
    meta.json    classes, counts, per-channel mean/std of train, source, split settings

Workers memory-map the arrays read-only (many Lambdas share one copy on EFS, each touching only its
shard's pages); ``batches.py`` turns their uint8 batches into tensors. Nothing here ever invents data: a dataset that cannot be found,
downloaded or read is a ``DataError`` that says what to pass instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lambdatrain.storage import traffic
from lambdatrain.training.datasources import Fetch, RawDataset, download, fetch_verified, read_source, verify_md5
from lambdatrain.protocol.errors import DataError, InvalidEvent

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

FORMAT_VERSION = 1  # bump when the files of a prepared directory change meaning
ARRAY_NAMES = ("train_x", "train_y", "val_x", "val_y")
META_FILE = "meta.json"
DATA_HINT = (
    "pass DATA=PATH to make train or --data PATH to lambdatrain (a cifar-10-python.tar.gz, "
    "an image folder or .tar.gz of one, or a prepared directory)"
)

Step = Callable[[str], None]  # told the name of each slow step as it starts (the CLI shows them)


def _quiet(what: str) -> None:
    """The default ``step``: library callers and tests see nothing."""


@dataclass(frozen=True)
class PreparedData:
    """A prepared directory, its arrays memory-mapped read-only."""

    root: Path
    train_x: np.ndarray  # uint8 (N, H, W, 3)
    train_y: np.ndarray  # int64 (N,)
    val_x: np.ndarray  # uint8 (M, H, W, 3)
    val_y: np.ndarray  # int64 (M,)
    classes: tuple[str, ...]
    mean: tuple[float, float, float]  # per channel over train_x, 0..1 scale
    std: tuple[float, float, float]


# --- preparation --------------------------------------------------------------------------------
def prepare_dataset(source: Path, dest: Path, *, val_fraction: float = 0.1, seed: int = 0, step: Step = _quiet) -> Path:
    """Decode ``source`` into a prepared directory at ``dest`` (a prepared ``source`` is returned as is)."""
    source, dest = Path(source), Path(dest)
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidEvent("val_fraction", f"must be in [0, 1), got {val_fraction}")
    if not source.exists():
        raise DataError(f"dataset not found: {source}; {DATA_HINT}")
    if is_prepared(source):
        return source
    _check_replaceable(dest)
    step(f"decoding {source.name}")
    raw = read_source(source)
    step(f"shuffling and splitting {len(raw.train_y)} images")
    arrays, val_split = _split(raw, val_fraction, seed)
    step("measuring the channels' mean and std")
    mean, std = _channel_stats(arrays["train_x"])
    meta = {
        "format_version": FORMAT_VERSION,
        "source": raw.name,
        "classes": list(raw.classes),
        "counts": {"train": len(arrays["train_y"]), "val": len(arrays["val_y"])},
        "image_shape": list(arrays["train_x"].shape[1:]),
        "mean": mean,
        "std": std,
        "val_split": val_split,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    step(f"writing {dest}")
    _write_atomically(dest, arrays, meta)
    return dest


def _split(raw: RawDataset, val_fraction: float, seed: int) -> tuple[dict[str, np.ndarray], str]:
    # Workers take contiguous shards, so the stored train order must already be class-mixed:
    # image folders arrive sorted by class. The permutation is seeded, hence reproducible.
    rng = np.random.default_rng(seed)
    if raw.test_x is not None and raw.test_y is not None:
        train_idx = rng.permutation(len(raw.train_y))
        val_order = rng.permutation(len(raw.test_y))
        val_x, val_y, val_split = raw.test_x[val_order], raw.test_y[val_order], "source test split"
    else:
        train_idx, val_idx = _stratified_split(raw.train_y, val_fraction, rng)
        val_x, val_y, val_split = raw.train_x[val_idx], raw.train_y[val_idx], "carved from train"
    arrays = {"train_x": raw.train_x[train_idx], "train_y": raw.train_y[train_idx], "val_x": val_x, "val_y": val_y}
    return arrays, val_split


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, val) indices; each class gives ``fraction`` of its images (rounded) to val."""
    train, val = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        take = int(np.floor(len(members) * fraction + 0.5))
        val.append(members[:take])
        train.append(members[take:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale, exact, from a 256-bin histogram per channel."""
    hist = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].reshape(-1, 3)
        for channel in range(3):
            hist[channel] += np.bincount(block[:, channel], minlength=256)
    levels = np.arange(256) / 255.0
    count = np.maximum(hist.sum(axis=1), 1)
    mean = hist @ levels / count
    std = np.sqrt(np.maximum(hist @ np.square(levels) / count - np.square(mean), 0.0))
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-6)), 6) for v in std]


def _check_replaceable(dest: Path) -> None:
    if dest.exists() and not (dest.is_dir() and (is_prepared(dest) or not any(dest.iterdir()))):
        raise DataError(f"{dest} exists and is not a prepared dataset; remove it or choose another destination")


def _write_atomically(dest: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Build the directory beside ``dest`` and rename it into place, so no reader sees half of it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; other users (and Lambdas) must read it
        for name in ARRAY_NAMES:
            np.save(tmp / f"{name}.npy", arrays[name], allow_pickle=False)
        _write_meta(tmp, meta)
        _move_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_meta(root: Path, meta: dict) -> None:
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _move_into_place(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(tmp, dest)
        return
    # rename() cannot replace a non-empty directory: move the old one aside first, then drop it.
    old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


# --- opening ------------------------------------------------------------------------------------
def open_prepared(root: Path) -> PreparedData:
    """Memory-map a prepared directory, checking that its files agree with each other."""
    root = Path(root)
    meta = _read_meta(root)
    arrays = {}
    for name in ARRAY_NAMES:
        path = root / f"{name}.npy"
        if not path.is_file():
            raise DataError(f"{root} is an incomplete prepared dataset: {path.name} is missing; prepare it again")
        try:
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
            traffic.mapped(path, arrays[name])  # its reads are page faults: the mapped length counts
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot read {path}: {' '.join(str(exc).split())}; prepare the dataset again") from exc
    _check_arrays(root, arrays, meta)
    try:
        classes = tuple(str(c) for c in meta["classes"])
        mean = tuple(float(v) for v in meta["mean"])
        std = tuple(float(v) for v in meta["std"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{root / META_FILE} lacks classes, mean or std ({exc}); prepare the dataset again") from exc
    if len(mean) != 3 or len(std) != 3 or not classes:
        raise DataError(f"{root / META_FILE} needs 3 mean and 3 std values and at least one class; prepare it again")
    return PreparedData(root, **arrays, classes=classes, mean=mean, std=std)  # type: ignore[arg-type]


def is_prepared(root: Path) -> bool:
    """Whether ``root`` is a complete, readable prepared directory."""
    try:
        open_prepared(root)
    except DataError:
        return False
    return True


def _read_meta(root: Path) -> dict:
    path = root / META_FILE
    if not path.is_file():
        raise DataError(f"{root} is not a prepared dataset (no {META_FILE}); pass a raw source to prepare it")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())}; prepare the dataset again") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path} is not format version {FORMAT_VERSION}; prepare the dataset again")
    return meta


def _check_arrays(root: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    tx, ty, vx, vy = (arrays[name] for name in ARRAY_NAMES)
    problems = []
    if tx.dtype != np.uint8 or tx.ndim != 4 or tx.shape[-1] != 3:
        problems.append(f"train_x is {tx.dtype} {tx.shape}, expected uint8 (N, H, W, 3)")
    elif vx.dtype != np.uint8 or vx.shape[1:] != tx.shape[1:]:
        problems.append(f"val_x is {vx.dtype} {vx.shape}, expected uint8 (M, {', '.join(map(str, tx.shape[1:]))})")
    for x, y, split in ((tx, ty, "train"), (vx, vy, "val")):
        if y.dtype != np.int64 or y.shape != x.shape[:1]:
            problems.append(f"{split}_y is {y.dtype} {y.shape}, expected int64 ({x.shape[0]},)")
        elif meta.get("counts", {}).get(split) != len(y):
            problems.append(f"{split} has {len(y)} images but {META_FILE} says {meta.get('counts', {}).get(split)}")
    if problems:
        raise DataError(f"{root} is an inconsistent prepared dataset: {'; '.join(problems)}; prepare it again")


# --- finding a dataset --------------------------------------------------------------------------
def resolve_dataset(
    source: Path | None, cache_dir: Path, *, val_fraction: float = 0.1, seed: int = 0, fetch: Fetch | None = None,
    step: Step = _quiet,
) -> Path:
    """A prepared directory for ``source``: itself, a cached preparation, or a fresh one.

    ``None`` means CIFAR-10: prepared in ``cache_dir/cifar10``, from a cached or downloaded tarball.
    ``step`` hears of each slow step, and only of work that is done now (not of a cached result).
    """
    cache_dir = Path(cache_dir)
    if source is None:
        return _resolve_cifar10(cache_dir, val_fraction, seed, fetch or download, step)
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"dataset not found: {source}; {DATA_HINT}")
    if is_prepared(source):
        return source
    dest = cache_dir / _cache_name(source, val_fraction, seed)
    if is_prepared(dest):
        return dest
    return prepare_dataset(source, dest, val_fraction=val_fraction, seed=seed, step=step)


def _cache_name(source: Path, val_fraction: float, seed: int) -> str:
    """A folder name that changes whenever the source's path, size or modification time does."""
    resolved = source.resolve()
    files = [resolved] if resolved.is_file() else [p for p in resolved.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    fingerprint = [str(resolved), len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    key = hashlib.sha256(json.dumps([*fingerprint, val_fraction, seed]).encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', source.name)[:48]}-{key}"


def _resolve_cifar10(cache_dir: Path, val_fraction: float, seed: int, fetch: Fetch, step: Step) -> Path:
    dest = cache_dir / "cifar10"
    if is_prepared(dest):
        return dest
    tarball = cache_dir / "cifar-10-python.tar.gz"
    if tarball.is_file():
        step(f"checking {tarball.name}")
        verify_md5(tarball, CIFAR10_MD5, f"run again to re-download or {DATA_HINT}")
    else:
        step(f"downloading {CIFAR10_URL}")
        fetch_verified(CIFAR10_URL, tarball, CIFAR10_MD5, fetch, DATA_HINT)
    return prepare_dataset(tarball, dest, val_fraction=val_fraction, seed=seed, step=step)
