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


SLICES = [(0, 1000), (1000, 2500), (2500, 3000)]  # three shares' slices of a 3,000-element state file


def _flip(path, element: int) -> None:
    """Change one byte of ``element`` in a float32 .npy file (after its header)."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) - 4 * 3000 + 4 * element] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_share_reads_only_its_slice_of_a_file_written_with_its_slices_checksums(tmp_path):
    from lambdatrain.storage import traffic

    data = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    path = tmp_path / "optim" / "r000001.npy"
    digest = efs.write_array(path, data, ranges=SLICES)
    assert len(digest.ranges) == 3 and digest == efs.read_digest(path)  # ranges are beside it, not its identity
    traffic.reset()
    got = efs.read_range(path, 1000, 2500, 1, 3)
    assert np.array_equal(got, data[1000:2500])
    header = path.stat().st_size - 4 * 3000
    # The .npy header and the slice's 1,500 elements, not the other 1,500 (the digest beside it is
    # counted under "digests").
    assert traffic.totals()["optim"]["read"] == header + 4 * 1500


def test_a_flipped_byte_is_caught_by_the_share_whose_slice_holds_it(tmp_path):
    data = np.arange(3000, dtype=np.float32)
    path = tmp_path / "a.npy"
    efs.write_array(path, data, ranges=SLICES)
    _flip(path, 2600)
    assert np.array_equal(efs.read_range(path, 0, 1000, 0, 3), data[:1000])  # not its bytes
    with pytest.raises(CorruptFile, match=r"elements \[2500, 3000\)"):
        efs.read_range(path, 2500, 3000, 2, 3)
    with pytest.raises(CorruptFile):  # and by any whole read
        efs.read_array(path)


def test_a_file_without_its_slices_checksums_is_read_whole_and_verified(tmp_path):
    data = np.arange(3000, dtype=np.float32)
    path = tmp_path / "a.npy"
    whole = efs.write_array(path, data)  # written unsharded (round 0's weights), or for another S
    assert np.array_equal(efs.read_range(path, 1000, 2500, 1, 3, whole), data[1000:2500])
    efs.write_array(path, data, ranges=SLICES[:2] + [(2500, 2800), (2800, 3000)])
    assert np.array_equal(efs.read_range(path, 1000, 2500, 1, 3), data[1000:2500])
    _flip(path, 10)  # outside the slice, but a whole read verifies every byte
    with pytest.raises(CorruptFile):
        efs.read_range(path, 1000, 2500, 1, 3)


def test_a_digest_beside_the_file_that_disagrees_with_the_ledgers_is_not_trusted_for_slices(tmp_path):
    data = np.arange(3000, dtype=np.float32)
    path = tmp_path / "a.npy"
    ledger = efs.write_array(path, data, ranges=SLICES)
    efs.digest_path(path).unlink()  # no digest beside it: the ledger's verifies a whole read
    assert np.array_equal(efs.read_range(path, 0, 1000, 0, 3, ledger), data[:1000])
    efs.write_array(tmp_path / "b.npy", data + 1, ranges=SLICES)  # another file's digest beside it
    efs.digest_path(path).write_text(efs.digest_path(tmp_path / "b.npy").read_text())
    assert np.array_equal(efs.read_range(path, 0, 1000, 0, 3, ledger), data[:1000])
    path.write_bytes(efs.digest_path(tmp_path / "b.npy").parent.joinpath("b.npy").read_bytes())
    with pytest.raises(CorruptFile, match="does not match its record"):  # read whole, against the ledger's
        efs.read_range(path, 0, 1000, 0, 3, ledger)
