"""The EFS layout: atomic writes with digests, verified reads, no way out of the run's folder."""

from __future__ import annotations

import numpy as np
import pytest

from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import CorruptFile, InvalidEvent


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
    digest = efs.Digest(path.stat().st_size, "xxh3_128:" + "0" * 32)
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


@pytest.mark.parametrize("algorithm", ["xxh3_128", "sha256"])
def test_each_checksum_algorithm_round_trips_and_is_named_in_the_digest(tmp_path, algorithm):
    data = np.arange(3000, dtype=np.float32)
    digest = efs.write_array(tmp_path / "a.npy", data, checksum=algorithm)
    assert digest.checksum.startswith(f"{algorithm}:")
    assert np.array_equal(efs.read_array(tmp_path / "a.npy", digest), data)
    ranges = efs.range_digests(data, [(0, 1000), (1000, 3000)], algorithm)
    assert [c.split(":")[0] for c in ranges] == [algorithm, algorithm]
    assert np.array_equal(np.concatenate(list(efs.stream_range(tmp_path / "a.npy", 1000, 3000, ranges[1]))),
                          data[1000:])


def test_unknown_checksum_algorithm_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown checksum algorithm 'md5'"):
        efs.write_array(tmp_path / "a.npy", np.zeros(4, dtype=np.float32), checksum="md5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("checksum", ["md5:abcd", "sha256", "", "xxh3_128:XYZ"])
def test_malformed_recorded_checksum_is_a_corrupt_file(tmp_path, checksum):
    digest = efs.write_array(tmp_path / "a.npy", np.zeros(4, dtype=np.float32))
    with pytest.raises(CorruptFile, match="malformed checksum"):
        efs.read_array(tmp_path / "a.npy", efs.Digest(digest.bytes, checksum))


def test_sidecar_without_a_named_checksum_is_a_corrupt_file(tmp_path):
    # Only "<algorithm>:<hex>" under "checksum" was ever deployed; anything else is damage.
    import hashlib
    import json

    path = tmp_path / "a.npy"
    efs.write_array(path, np.arange(10, dtype=np.float32), sidecar=False)
    raw = path.read_bytes()
    efs.digest_path(path).write_text(json.dumps({"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}))
    with pytest.raises(CorruptFile, match="no readable digest"):
        efs.read_array(path)


def test_corrupt_file_carries_the_path_it_is_about(tmp_path):
    path = tmp_path / "w0003.npy"
    digest = efs.write_array(path, np.arange(4, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptFile) as caught:
        efs.read_array(path, digest)
    assert caught.value.path == path and caught.value.worker is None
    assert caught.value.of_worker(3).worker == 3 and str(caught.value).startswith(f"{path}: ")


def test_remove_temporaries_takes_a_folders_and_named_files_temporaries_only(tmp_path):
    folder, weights = tmp_path / "rounds" / "r000000", tmp_path / "weights"
    folder.mkdir(parents=True)
    weights.mkdir()
    (folder / ".w0000.npy.abc.tmp").write_bytes(b"x")
    (weights / ".r000001.npy.def.tmp").write_bytes(b"x")  # the killed combine's new weights
    later = weights / ".r000002.npy.ghi.tmp"  # the next combine's, possibly being written now
    later.write_bytes(b"x")
    assert efs.remove_temporaries(folder, weights / "r000001.npy") == 2
    assert list(tmp_path.rglob("*.tmp")) == [later]
