"""Behaviour of lambdatrain.training.data: preparation from every source format, opening, caching and
download, sharding, and the batch transform."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lambdatrain.training import data
from lambdatrain.training.data import (
    CIFAR10_CLASSES,
    open_prepared,
    is_prepared,
    prepare_dataset,
    resolve_dataset,
)
from lambdatrain.training.batches import shard_bounds, to_tensor_batch
from lambdatrain.protocol.errors import DataError, InvalidEvent
from tests.datagen import (
    make_cifar_python_tarball,
    make_image_arrays,
    make_image_folder,
    make_image_folder_tarball,
    make_prepared,
)


def _rows(x: np.ndarray, y: np.ndarray) -> list[tuple[int, bytes]]:
    """Images with labels as sortable records, to compare splits regardless of order."""
    return sorted((int(label), image.tobytes()) for image, label in zip(x, y))


def _sources(tmp: Path) -> dict[str, Path]:
    return {
        "cifar-python-tarball": make_cifar_python_tarball(tmp / "cifar-10-python.tar.gz", 100, 30),
        "png-folder": make_image_folder(tmp / "flat", per_class=4, ext="png"),
        "nested-jpg-folder": make_image_folder(tmp / "nested" / "cifar10-jpeg" / "train", per_class=4, ext="jpg").parents[1],
        "jpg-folder-tar-gz": make_image_folder_tarball(tmp / "images.tar.gz", per_class=4),
        "png-folder-tar": make_image_folder_tarball(tmp / "images.tar", per_class=4, ext="png", top=""),
    }


@pytest.mark.parametrize("kind", ["cifar-python-tarball", "png-folder", "nested-jpg-folder", "jpg-folder-tar-gz", "png-folder-tar"])
def test_each_source_format_prepares_into_the_array_contract(tmp_path, kind):
    source = _sources(tmp_path)[kind]
    root = prepare_dataset(source, tmp_path / "prepared")
    prepared = open_prepared(root)
    assert root == tmp_path / "prepared" and prepared.classes == CIFAR10_CLASSES
    for x, y in ((prepared.train_x, prepared.train_y), (prepared.val_x, prepared.val_y)):
        assert isinstance(x, np.memmap) and not x.flags.writeable
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
        assert y.dtype == np.int64 and y.shape == x.shape[:1] and set(y.tolist()) <= set(range(10))
    expected = prepared.train_x.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(prepared.mean, expected.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(prepared.std, expected.std(axis=0), atol=1e-5)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["counts"] == {"train": len(prepared.train_y), "val": len(prepared.val_y)}
    assert meta["source"] == source.name and meta["seed"] == 0 and meta["val_fraction"] == 0.1


def test_png_folder_keeps_every_pixel_and_label(tmp_path):
    source = make_image_folder(tmp_path / "src", per_class=5, ext="png")
    prepared = open_prepared(prepare_dataset(source, tmp_path / "out"))
    x, y = make_image_arrays(50)
    both = (np.concatenate([prepared.train_x, prepared.val_x]), np.concatenate([prepared.train_y, prepared.val_y]))
    assert _rows(*both) == _rows(x, y)


def test_official_tarball_test_batch_becomes_the_validation_split(tmp_path):
    source = make_cifar_python_tarball(tmp_path / "cifar-10-python.tar.gz", n_train=100, n_test=30, seed=3)
    prepared = open_prepared(prepare_dataset(source, tmp_path / "out", seed=5))
    assert _rows(prepared.val_x, prepared.val_y) == _rows(*make_image_arrays(30, seed=4))
    assert _rows(prepared.train_x, prepared.train_y) == _rows(*make_image_arrays(100, seed=3))
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["val_split"] == "source test split"


def test_train_and_test_folders_become_train_and_validation(tmp_path):
    make_image_folder(tmp_path / "src" / "train", per_class=4, seed=0)
    make_image_folder(tmp_path / "src" / "test", per_class=2, seed=9)
    prepared = open_prepared(prepare_dataset(tmp_path / "src", tmp_path / "out"))
    assert len(prepared.train_y) == 40 and len(prepared.val_y) == 20
    assert _rows(prepared.val_x, prepared.val_y) == _rows(*make_image_arrays(20, seed=9))


def test_carved_validation_split_is_fixed_for_a_seed_stratified_and_disjoint(tmp_path):
    source = make_image_folder(tmp_path / "src", per_class=20)
    first = open_prepared(prepare_dataset(source, tmp_path / "a", val_fraction=0.1, seed=7))
    again = open_prepared(prepare_dataset(source, tmp_path / "b", val_fraction=0.1, seed=7))
    other = open_prepared(prepare_dataset(source, tmp_path / "c", val_fraction=0.1, seed=8))
    np.testing.assert_array_equal(first.val_x, again.val_x)
    np.testing.assert_array_equal(first.train_x, again.train_x)
    assert _rows(first.val_x, first.val_y) != _rows(other.val_x, other.val_y)
    assert np.bincount(first.val_y, minlength=10).tolist() == [2] * 10
    assert not {r for _, r in _rows(first.train_x, first.train_y)} & {r for _, r in _rows(first.val_x, first.val_y)}
    assert len(first.train_y) + len(first.val_y) == 200


def test_train_order_is_class_mixed_so_contiguous_shards_see_every_class(tmp_path):
    prepared = open_prepared(prepare_dataset(make_image_folder(tmp_path / "src", per_class=20), tmp_path / "out"))
    start, stop = shard_bounds(len(prepared.train_y), 4, 0)
    assert len(set(prepared.train_y[start:stop].tolist())) >= 8


def test_prepare_failing_midway_leaves_no_destination(tmp_path, monkeypatch):
    source = make_image_folder(tmp_path / "src", per_class=2)

    def broken_meta(root, meta):
        raise OSError("disk full")

    monkeypatch.setattr(data, "_write_meta", broken_meta)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(source, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_prepare_replaces_an_existing_preparation_and_refuses_other_folders(tmp_path):
    old = make_prepared(tmp_path / "out", n_train=10, n_val=5)
    prepare_dataset(make_image_folder(tmp_path / "src", per_class=3), old)
    assert len(open_prepared(old).train_y) + len(open_prepared(old).val_y) == 30
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="busy exists and is not a prepared dataset"):
        prepare_dataset(tmp_path / "src", tmp_path / "busy")


def test_images_of_different_sizes_are_refused_naming_the_file(tmp_path):
    source = make_image_folder(tmp_path / "src", per_class=2)
    Image.new("RGB", (16, 16)).save(source / "cat" / "odd.png")
    with pytest.raises(DataError, match=r"cat/odd\.png is 16x16, the others 32x32"):
        prepare_dataset(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _Mkdir:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_pickle_with_a_disallowed_global_is_refused_without_running_it(tmp_path):
    source = make_cifar_python_tarball(tmp_path / "cifar-10-python.tar.gz", 10, 10)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Mkdir(marker), b"labels": [0]}, protocol=2)
    with tarfile.open(source, "r:gz") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}
    members["cifar-10-batches-py/data_batch_1"] = evil
    with tarfile.open(source, "w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    with pytest.raises(DataError, match=r"data_batch_1: its pickle references posix\.mkdir|references os\.mkdir"):
        prepare_dataset(source, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_prepared_source_is_used_as_is(tmp_path):
    root = make_prepared(tmp_path / "ready")
    assert prepare_dataset(root, tmp_path / "elsewhere") == root
    assert resolve_dataset(root, tmp_path / "cache") == root
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "cache").exists()


def test_incomplete_or_inconsistent_prepared_directory_is_a_data_error(tmp_path):
    root = make_prepared(tmp_path / "ready", n_train=20, n_val=10)
    np.save(root / "train_y.npy", np.zeros(19, dtype=np.int64))
    with pytest.raises(DataError, match="train_y is int64 \\(19,\\), expected int64 \\(20,\\)"):
        open_prepared(root)
    (root / "val_y.npy").unlink()
    with pytest.raises(DataError, match="val_y.npy is missing"):
        open_prepared(root)
    assert not is_prepared(root) and not is_prepared(tmp_path / "nothing")


def test_shards_are_disjoint_cover_and_differ_by_at_most_one():
    for n in (0, 1, 7, 100, 50_000):
        for workers in (1, 2, 3, 7, 16):
            bounds = [shard_bounds(n, workers, w) for w in range(workers)]
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(n))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_shard_of_a_worker_outside_the_pool_is_invalid():
    with pytest.raises(InvalidEvent, match="worker"):
        shard_bounds(10, 2, 2)
    with pytest.raises(InvalidEvent, match="workers"):
        shard_bounds(10, 0, 0)


def test_resolve_prepares_a_source_once_and_then_reuses_the_cache(tmp_path, monkeypatch):
    source = make_image_folder_tarball(tmp_path / "images.tar.gz", per_class=3)
    first = resolve_dataset(source, tmp_path / "cache")
    other_split = resolve_dataset(source, tmp_path / "cache", seed=1)
    assert first.parent == tmp_path / "cache" and is_prepared(first) and other_split != first
    monkeypatch.setattr(data, "read_source", lambda path: pytest.fail("the cached preparation was not reused"))
    assert resolve_dataset(source, tmp_path / "cache") == first
    assert resolve_dataset(source, tmp_path / "cache", seed=1) == other_split


def _fetch_writing(body: bytes, calls: list):
    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        Path(dest).write_bytes(body)

    return fetch


def test_resolve_without_source_downloads_verifies_and_prepares_cifar10(tmp_path, monkeypatch):
    body = make_cifar_python_tarball(tmp_path / "upstream.tar.gz", 50, 20).read_bytes()
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(body).hexdigest())
    calls: list = []
    root = resolve_dataset(None, tmp_path / "cache", fetch=_fetch_writing(body, calls))
    assert root == tmp_path / "cache" / "cifar10" and len(open_prepared(root).val_y) == 20
    assert calls == [data.CIFAR10_URL]
    assert resolve_dataset(None, tmp_path / "cache", fetch=_fetch_writing(b"", calls)) == root
    assert len(calls) == 1


def test_resolve_without_source_prepares_a_cached_tarball_without_downloading(tmp_path, monkeypatch):
    tarball = make_cifar_python_tarball(tmp_path / "cache" / "cifar-10-python.tar.gz", 50, 20)
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(tarball.read_bytes()).hexdigest())
    root = resolve_dataset(None, tmp_path / "cache", fetch=lambda url, dest: pytest.fail("downloaded again"))
    assert is_prepared(root)


def test_download_with_a_wrong_checksum_is_refused_and_removed(tmp_path):
    with pytest.raises(DataError, match="MD5"):
        resolve_dataset(None, tmp_path / "cache", fetch=_fetch_writing(b"not a tarball", []))
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_download_failure_says_how_to_pass_a_dataset(tmp_path):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(DataError) as caught:
        resolve_dataset(None, tmp_path / "cache", fetch=offline)
    message = str(caught.value)
    assert "download of" in message and "failed" in message and "DATA=PATH" in message and "--data PATH" in message
    assert "\n" not in message and list((tmp_path / "cache").iterdir()) == []


def test_missing_source_path_is_named(tmp_path):
    with pytest.raises(DataError, match=f"dataset not found: {tmp_path / 'nope.tar.gz'}"):
        resolve_dataset(tmp_path / "nope.tar.gz", tmp_path / "cache")


@pytest.mark.parametrize("kind", ["text-file", "empty-folder", "tar-without-images"])
def test_unrecognized_format_is_named(tmp_path, kind):
    path = tmp_path / "weird"
    if kind == "text-file":
        path.write_text("hello")
    elif kind == "empty-folder":
        path.mkdir()
    else:
        (tmp_path / "notes.txt").write_text("hello")
        with tarfile.open(path, "w") as archive:
            archive.add(tmp_path / "notes.txt", arcname="notes.txt")
    with pytest.raises(DataError, match=f"unrecognized dataset format at {path}"):
        resolve_dataset(path, tmp_path / "cache")


def test_batch_becomes_normalized_float_nchw():
    x = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    x[1] = 255
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    batch = to_tensor_batch(x, mean, std)
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 8, 8)
    torch.testing.assert_close(batch[0, :, 0, 0], torch.tensor([-1.0, -1.0, 0.0]))
    torch.testing.assert_close(batch[1, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


def test_batch_is_resized_to_the_model_input():
    x, _ = make_image_arrays(2)
    batch = to_tensor_batch(x, (0.0,) * 3, (1.0,) * 3, size=224)
    assert batch.shape == (2, 3, 224, 224)
    torch.testing.assert_close(batch.mean(dim=(2, 3)), torch.from_numpy(x / 255.0).float().mean(dim=(1, 2)), atol=0.01, rtol=0)


def test_augmentation_is_a_padded_crop_or_flip_and_deterministic_for_a_seed():
    x, _ = make_image_arrays(6, size=8)
    aug = to_tensor_batch(x, (0.0,) * 3, (1.0,) * 3, augment=True, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global generator must not matter
    same = to_tensor_batch(x, (0.0,) * 3, (1.0,) * 3, augment=True, generator=torch.Generator().manual_seed(1))
    other = to_tensor_batch(x, (0.0,) * 3, (1.0,) * 3, augment=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(aug, same)
    assert not torch.equal(aug, other)
    padded = torch.nn.functional.pad(to_tensor_batch(x, (0.0,) * 3, (1.0,) * 3), (4, 4, 4, 4))
    for image, source in zip(aug, padded):
        windows = [source[:, i : i + 8, j : j + 8] for i in range(9) for j in range(9)]
        assert any(torch.equal(image, w) or torch.equal(image, w.flip(-1)) for w in windows)
