"""The EFS layout: atomic writes with digests, verified reads, no way out of the run's folder."""

from __future__ import annotations

import numpy as np
import pytest

from lambdatrain import layout as efs
from lambdatrain.errors import CorruptFile, InvalidEvent


def test_written_array_reads_back_verified(tmp_path):
    data = np.arange(1000, dtype=np.float32)
    digest = efs.write_array(tmp_path / "a.npy", data)
    assert digest == efs.read_digest(tmp_path / "a.npy")
    assert np.array_equal(efs.read_array(tmp_path / "a.npy"), data)
    assert np.array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), data)


def test_write_leaves_no_temporary_files(tmp_path):
    efs.write_array(tmp_path / "a.npy", np.zeros(10, dtype=np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.digest.json"]


def test_truncated_file_is_detected(tmp_path):
    digest = efs.write_array(tmp_path / "a.npy", np.ones(5000, dtype=np.float32))
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFile, match="truncated|checksum"):
        efs.read_array(tmp_path / "a.npy", digest)


def test_flipped_byte_is_detected(tmp_path):
    digest = efs.write_array(tmp_path / "a.npy", np.ones(5000, dtype=np.float32))
    raw = bytearray((tmp_path / "a.npy").read_bytes())
    raw[-7] ^= 0xFF
    (tmp_path / "a.npy").write_bytes(bytes(raw))
    with pytest.raises(CorruptFile, match="checksum"):
        efs.read_array(tmp_path / "a.npy", digest)


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    digest = efs.Digest(path.stat().st_size, "0" * 64)
    with pytest.raises(CorruptFile):
        efs.read_array(path, digest)


def test_streaming_read_yields_chunks_in_order(tmp_path):
    data = np.arange(100_000, dtype=np.float32)
    digest = efs.write_array(tmp_path / "a.npy", data)
    chunks = list(efs.stream_array(tmp_path / "a.npy", digest, chunk_bytes=4096))
    assert len(chunks) > 10
    assert np.array_equal(np.concatenate(chunks), data)


@pytest.mark.parametrize("run", ["../x", "a/b", ".."])
def test_run_layout_refuses_escaping_run_ids(tmp_path, run):
    with pytest.raises(InvalidEvent):
        efs.RunLayout(tmp_path, run)


def test_committed_rounds_lists_weights_with_digests(tmp_path):
    paths = efs.RunLayout(tmp_path, "r1")
    for r in (0, 1, 2):
        efs.write_array(paths.weights(r), np.zeros(3, dtype=np.float32))
    paths.weights(3).write_bytes(b"half")  # no digest: not committed
    assert paths.committed_rounds() == [0, 1, 2]
