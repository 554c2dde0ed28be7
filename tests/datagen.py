"""Small synthetic datasets for tests, in every format ``lambdatrain.training.data`` reads or writes.

Images are learnable on purpose: each class has its own colour and stripe direction, plus noise,
so a tiny model's loss falls within a few dozen steps. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lambdatrain.training.data import ARRAY_NAMES, CIFAR10_CLASSES, FORMAT_VERSION, META_FILE

NOISE = 40  # amplitude of the uniform per-pixel noise, in uint8 steps


def class_names(classes: int) -> tuple[str, ...]:
    """CIFAR-10's names for up to ten classes, else ``class_00``...; both sort in label order."""
    if classes <= len(CIFAR10_CLASSES):
        return CIFAR10_CLASSES[:classes]
    return tuple(f"class_{i:02d}" for i in range(classes))


def _class_pattern(label: int, classes: int, size: int) -> np.ndarray:
    phase = 2 * np.pi * label / classes
    colour = 128 + 90 * np.cos([phase, phase + 2 * np.pi / 3, phase + 4 * np.pi / 3])
    angle = np.pi * label / classes
    i, j = np.mgrid[0:size, 0:size]
    stripes = np.sign(np.sin(2 * np.pi * (i * np.cos(angle) + j * np.sin(angle)) / 8))
    return colour[None, None, :] * (0.7 + 0.3 * stripes[..., None])


def make_image_arrays(n: int, classes: int = 10, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8 NHWC) with balanced, shuffled int64 labels."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    patterns = np.stack([_class_pattern(c, classes, size) for c in range(classes)])
    noise = rng.integers(-NOISE, NOISE + 1, size=(n, size, size, 3))
    x = np.clip(patterns[y] + noise, 0, 255).astype(np.uint8)
    return x, y


def make_prepared(
    dest: Path, n_train: int = 200, n_val: int = 50, classes: int = 10, size: int = 32, seed: int = 0
) -> Path:
    """Write a prepared directory (the files ``prepare_dataset`` writes) without any decoding."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_image_arrays(n_train, classes, size, seed)
    val_x, val_y = make_image_arrays(n_val, classes, size, seed + 1)
    for name, array in zip(ARRAY_NAMES, (train_x, train_y, val_x, val_y)):
        np.save(dest / f"{name}.npy", array, allow_pickle=False)
    scaled = train_x.reshape(-1, 3) / 255.0
    meta = {
        "format_version": FORMAT_VERSION,
        "source": "synthetic",
        "classes": list(class_names(classes)),
        "counts": {"train": n_train, "val": n_val},
        "image_shape": [size, size, 3],
        "mean": [round(float(v), 6) for v in scaled.mean(axis=0)],
        "std": [round(float(v), 6) for v in scaled.std(axis=0)],
        "val_split": "synthetic",
        "val_fraction": n_val / (n_train + n_val),
        "seed": seed,
    }
    (dest / META_FILE).write_text(json.dumps(meta, indent=2))
    return dest


def make_image_folder(
    root: Path, per_class: int, classes: int = 10, size: int = 32, ext: str = "png", seed: int = 0
) -> Path:
    """``root/<class>/NNNN.<ext>``, ``per_class`` images each; returns ``root``."""
    root = Path(root)
    x, y = make_image_arrays(per_class * classes, classes, size, seed)
    names = class_names(classes)
    counters = [0] * classes
    for image, label in zip(x, y):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{counters[label]:04d}.{ext}")
        counters[label] += 1
    return root


def make_image_folder_tarball(
    path: Path,
    per_class: int,
    classes: int = 10,
    size: int = 32,
    ext: str = "jpg",
    seed: int = 0,
    top: str = "cifar10-jpeg/train",
) -> Path:
    """A tar archive (gzipped when ``path`` ends in .gz) of an image folder under ``top`` ("" for none)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        make_image_folder(Path(scratch) / top, per_class, classes, size, ext, seed)
        with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as archive:
            for child in sorted(Path(scratch).iterdir()):
                archive.add(child, arcname=child.name)
    return path


def _batch_bytes(x: np.ndarray, y: np.ndarray, label: str) -> bytes:
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # the official layout: channel-major rows
    batch = {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in y],
        b"data": rows,
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(x))],
    }
    return pickle.dumps(batch, protocol=2)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def make_cifar_python_tarball(path: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """An archive in the official ``cifar-10-python.tar.gz`` layout.

    Its images are ``make_image_arrays(n_train, seed=seed)`` split over five batches in order,
    and ``make_image_arrays(n_test, seed=seed + 1)`` as ``test_batch``.
    """
    train_x, train_y = make_image_arrays(n_train, 10, 32, seed)
    test_x, test_y = make_image_arrays(n_test, 10, 32, seed + 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    meta = {b"num_cases_per_batch": n_train // 5, b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072}
    with tarfile.open(path, "w:gz") as archive:
        _add_bytes(archive, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
        for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            data = _batch_bytes(train_x[part], train_y[part], f"training batch {i} of 5")
            _add_bytes(archive, f"cifar-10-batches-py/data_batch_{i}", data)
        _add_bytes(archive, "cifar-10-batches-py/test_batch", _batch_bytes(test_x, test_y, "testing batch 1 of 1"))
        _add_bytes(archive, "cifar-10-batches-py/readme.html", b"<html></html>")
    return Path(path)
