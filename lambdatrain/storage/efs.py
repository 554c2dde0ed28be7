"""Reads and writes of a run's files on the shared file system (EFS): the only code that writes there.

Writes are atomic (temporary file in the same folder, fsync, rename, fsync of the folder), so a
reader sees a whole file or none; every array file gets a digest (length and checksum, see
digest.py) that readers check before trusting a byte, and nothing here is ever unpickled (``np.load(allow_pickle=False)``). Every
file is opened through ``traffic.Counted``, which counts the bytes of each read and write call.

The layout of a run's files: paths.py (RunLayout, re-exported here).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lambdatrain.storage.traffic import Counted
from lambdatrain.storage.digest import DEFAULT_ALGORITHM, Digest, Hasher, algorithm_of, checksum_of, finish, new_hasher
from lambdatrain.protocol.errors import CorruptFile
from lambdatrain.storage.paths import RunLayout, digest_path  # noqa: F401  (re-exported: efs.RunLayout)

CHUNK_BYTES = 8 << 20  # streaming read size: large enough for EFS throughput, small for memory


class _HashingWriter:
    def __init__(self, f, hasher: Hasher):
        self._f, self.hash, self.count = f, hasher, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.count += view.nbytes
        return self._f.write(view)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Discard:
    def write(self, data) -> int:
        return memoryview(data).nbytes


def digest_of(array: np.ndarray, checksum: str = DEFAULT_ALGORITHM) -> Digest:
    """The digest ``write_array`` would record for ``array``, computed in memory (nothing written)."""
    writer = _HashingWriter(_Discard(), new_hasher(checksum))
    np.lib.format.write_array(writer, np.ascontiguousarray(array), allow_pickle=False)
    return Digest(bytes=writer.count, checksum=finish(checksum, writer.hash))


def write_array(path: Path, array: np.ndarray, *, checksum: str = DEFAULT_ALGORITHM, sidecar: bool = True,
                ranges: list[tuple[int, int]] | None = None) -> Digest:
    """Write ``array`` as .npy atomically and return its digest (also written beside it).

    ``checksum`` is the algorithm (a name in ``digest.ALGORITHMS``); the digest records it, and
    with ``ranges`` (element slices of a 1-D array) the checksum of each slice's bytes, which
    :func:`read_range` verifies.
    """
    hasher = new_hasher(checksum)  # an unknown algorithm fails here, before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with Counted(open(tmp, "wb"), path) as f:  # counted under the name it is renamed to
            writer = _HashingWriter(f, hasher)
            np.lib.format.write_array(writer, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        digest = Digest(bytes=writer.count, checksum=finish(checksum, hasher),
                        ranges=tuple(range_digests(array, ranges, checksum)) if ranges else ())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if sidecar:
        write_json(digest_path(path), digest.to_dict())
    _fsync_dir(path.parent)
    return digest


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with Counted(open(tmp, "w"), path) as f:
            json.dump(obj, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    with Counted(open(path, "rb"), path) as f:
        return json.load(f)


def read_digest(path: Path) -> Digest:
    try:
        return Digest.from_dict(read_json(digest_path(path)))
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptFile(path, "no readable digest beside it") from exc


class _HashingReader:
    def __init__(self, f, hasher: Hasher | None):
        self._f, self.hash, self.count = f, hasher, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if self.hash is not None:
            self.hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        if self.hash is not None:
            self.hash.update(memoryview(buffer)[:n])
        self.count += n
        return n


def _open_npy(reader: _HashingReader, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(reader)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header(reader)
    except ValueError as exc:
        raise CorruptFile(path, f"not a valid .npy file ({exc})") from exc
    if fortran or dtype.hasobject:
        raise CorruptFile(path, "unsupported array layout")
    return shape, dtype


def _chunks(reader: _HashingReader, remaining: int, dtype: np.dtype, path: Path,
            chunk_bytes: int, buffers: Iterator[np.ndarray] | None) -> Iterator[np.ndarray]:
    step = max(dtype.itemsize, chunk_bytes - chunk_bytes % dtype.itemsize)
    while remaining > 0:
        if buffers is not None:
            buf = next(buffers)[: min(step, remaining)]
        else:
            # np.empty, not bytearray: no zero-fill under the GIL for bytes read over right away.
            buf = np.empty(min(step, remaining), dtype=np.uint8)
        n = reader.readinto(memoryview(buf))
        if n == 0:
            raise CorruptFile(path, f"truncated ({remaining} bytes missing)")
        n -= n % dtype.itemsize
        remaining -= n
        yield buf[:n].view(dtype)


def _verifier(checksum: str, path: Path) -> tuple[str, Hasher]:
    try:
        algorithm = algorithm_of(checksum)
    except ValueError as exc:
        raise CorruptFile(path, f"its record holds a {exc}") from exc
    return algorithm, new_hasher(algorithm)


def _open_counted(path: Path) -> Counted:
    """``path`` opened for unbuffered reads that traffic.py counts; CorruptFile where it cannot be."""
    try:
        return Counted(open(path, "rb", buffering=0), path)
    except OSError as exc:
        raise CorruptFile(path, f"cannot open ({exc.strerror})") from exc


def stream_array(path: Path, digest: Digest, *, chunk_bytes: int = CHUNK_BYTES,
                 buffers: Iterator[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Yield a 1-D .npy file's elements chunk by chunk; the last step checks length and checksum.

    The caller must not commit anything derived from the chunks before the generator finishes:
    the check runs after the last byte (one pass over the file, no second read for hashing).

    ``buffers`` (uint8 arrays of at least ``chunk_bytes``) are read into instead of a new array
    per chunk, so a chunk is only valid until the buffer comes round again: a combine passes a
    ring, which spares it the page faults of fresh memory for every chunk.
    """
    algorithm, hasher = _verifier(digest.checksum, path)
    f = _open_counted(path)
    with f:
        reader = _HashingReader(f, hasher)
        shape, dtype = _open_npy(reader, path)
        yield from _chunks(reader, int(np.prod(shape)) * dtype.itemsize, dtype, path, chunk_bytes, buffers)
        reader.read()  # trailing bytes count towards the length check
    if reader.count != digest.bytes or finish(algorithm, hasher) != digest.checksum:
        raise CorruptFile(path, "length or checksum does not match its record")


def range_digests(array: np.ndarray, slices: list[tuple[int, int]], algorithm: str = DEFAULT_ALGORITHM) -> list[str]:
    """The checksum of each element range's bytes: what a sharded combine verifies of its slice."""
    raw = memoryview(np.ascontiguousarray(array)).cast("B")
    size = array.dtype.itemsize
    return [checksum_of(raw[lo * size: hi * size], algorithm) for lo, hi in slices]


def stream_range(path: Path, lo: int, hi: int, checksum: str, *, chunk_bytes: int = CHUNK_BYTES,
                 buffers: Iterator[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Yield elements [lo, hi) of a 1-D .npy file, reading only those bytes; checks their checksum.

    A sharded combiner reads one slice of every worker file, so it verifies the slice's own
    digest (recorded by the worker) rather than the whole file's, which it never reads.
    ``buffers``: as for :func:`stream_array`.
    """
    algorithm, hasher = _verifier(checksum, path)
    f = _open_counted(path)
    with f:
        shape, dtype = _open_npy(_HashingReader(f, None), path)
        data_start = f.tell()
        if not 0 <= lo <= hi <= int(np.prod(shape)):
            raise CorruptFile(path, f"holds {int(np.prod(shape))} elements, slice [{lo}, {hi}) asked")
        if os.fstat(f.fileno()).st_size != data_start + int(np.prod(shape)) * dtype.itemsize:
            raise CorruptFile(path, "truncated or padded")
        f.seek(data_start + lo * dtype.itemsize)
        reader = _HashingReader(f, hasher)
        yield from _chunks(reader, (hi - lo) * dtype.itemsize, dtype, path, chunk_bytes, buffers)
    if finish(algorithm, hasher) != checksum:
        raise CorruptFile(path, f"checksum of elements [{lo}, {hi}) does not match its record")


def array_length(path: Path) -> int:
    """Elements of a 1-D .npy file, from its header alone."""
    f = _open_counted(path)
    with f:
        shape, _ = _open_npy(_HashingReader(f, None), path)
    return int(np.prod(shape))


def read_range(path: Path, lo: int, hi: int, shard: int, shards: int, whole: Digest | None = None) -> np.ndarray:
    """Elements [lo, hi) of a 1-D array file, which is share ``shard`` of ``shards``' slice: only
    those bytes, verified by their own checksum, where the file's digest records the ``shards``
    slices' (written with ``ranges``); else the whole file, verified, then sliced. ``whole``: the
    digest the file must have (the ledger's, for weights); the digest beside the file must agree
    with it before its slices are trusted, and where it does not or is unreadable, the whole file
    is read and verified against ``whole``."""
    try:
        beside = read_digest(path)
    except CorruptFile:
        if whole is None:
            raise
        beside = whole
    if len(beside.ranges) == shards and (whole is None or beside == whole):
        parts = list(stream_range(path, lo, hi, beside.ranges[shard]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return read_array(path, whole or beside)[lo:hi]


def read_array(path: Path, digest: Digest | None = None) -> np.ndarray:
    """Read a whole 1-D array, verified against ``digest`` (or the sidecar beside the file)."""
    digest = digest or read_digest(path)
    parts = list(stream_array(path, digest))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def remove_temporaries(folder: Path, *files: Path) -> int:
    """Delete what killed writers left: temp files under ``folder`` and of ``files``; how many."""
    found = list(folder.rglob(".*.tmp")) if folder.is_dir() else []
    for path in files:
        found += path.parent.glob(f".{path.name}.*.tmp")
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return len(found)
