"""The streaming weighted sum of worker files: sum_w (n_w / n) * file_w, read chunk by chunk.

Each element receives its terms in worker-number order (never arrival order, so the float32 result
does not depend on timing); file reads and checksums run in background threads, read ahead of the
adds into ring buffers allocated once. Memory stays below three model sizes whatever the number of
files. The same sum serves both modes (step.py): mean gradients in sync mode, weight deltas in
average mode, and the batch-norm running statistics in both. Compressed results (feedback.py)
have their own sum, ``compressed_sum``.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lambdatrain.protocol.errors import CorruptFile
from lambdatrain.storage.efs import CHUNK_BYTES, Digest, stream_array, stream_range
from lambdatrain.training import feedback
from lambdatrain.training.codec import decode_chunk
from lambdatrain.training.compress.layout import codec_of

PREFETCH_DEPTH = 2  # chunks read ahead per file
# Chunks of one file alive at once: read ahead (queued), being read, and being added. While the
# producer reads chunk j it has queued j-1, so the queue's bound means the consumer has taken at
# most j-3 and is done with j-4: a ring of this many buffers is never overwritten in use.
RING_BUFFERS = PREFETCH_DEPTH + 2


def _prefetch(chunks: Iterator[np.ndarray], depth: int = PREFETCH_DEPTH) -> Iterator[np.ndarray]:
    """Run ``chunks`` in a background thread so file reads overlap with the adds."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for c in chunks:
                q.put(c)
            q.put(done)
        except BaseException as exc:  # re-raised in the consumer, with its type
            q.put(exc)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass(frozen=True)
class WorkerFile:
    worker: int
    path: Path
    digest: Digest
    samples: int
    range_checksum: str | None = None  # checksum of the slice a sharded combine reads (else: whole file)

    def open(self, lo: int, hi: int, buffers: Iterator[np.ndarray] | None = None,
             chunk_bytes: int = CHUNK_BYTES) -> tuple[Iterator[np.ndarray], int]:
        """The chunks to add and the element index of the first one (read into ``buffers``, if given)."""
        if self.range_checksum is not None:
            return stream_range(self.path, lo, hi, self.range_checksum, buffers=buffers, chunk_bytes=chunk_bytes), lo
        return stream_array(self.path, self.digest, buffers=buffers, chunk_bytes=chunk_bytes), 0


def _buffer_bytes(size: int) -> int:
    """One read buffer: a chunk, or a whole float32 file of ``size`` elements if that is smaller."""
    return min(CHUNK_BYTES, 4 * size)


def cores_available() -> int:
    """Cores this process may run on (on Lambda, the vCPUs its memory buys)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _parallel_reads(size: int, lo: int, hi: int) -> int:
    """Files read at once: one per core beyond the one doing the adds (each file's reads and checksum
    run in its own thread), so reads use the spare cores without taking the adder's. With two
    cores that is one file at a time, still read ahead of the adds: measured in a fresh process on
    2 cores from the page cache, two parallel files made N = 2 1.6x and N = 8 1.1x slower than one.
    Not measured on EFS, where a read waits on the network rather than a core and more files at
    once could pay even on 2 vCPUs (the planner assumes one client reaches the per-client limit).

    Each file being read holds RING_BUFFERS chunks (queued, being read, being added); the group is
    kept small enough that those stay below the accumulator's size, so memory stays below three
    model sizes.
    """
    per_file = RING_BUFFERS * _buffer_bytes(size)
    return max(1, min(cores_available() - 1, 8, (4 * (hi - lo)) // per_file))


def _add_group(group: Sequence[WorkerFile], total: int, size: int, lo: int, hi: int, acc: np.ndarray,
               tmp: np.ndarray, filled: int, rings: Sequence[Sequence[np.ndarray]]) -> None:
    """Add a group of files (in worker order) into ``acc``, their reads running in parallel.

    The files advance in lockstep, one chunk each per step, worker order within the step; every
    chunk of the same index covers the same elements, so each element still receives its terms
    in worker-number order and the float32 result is bit-identical to a one-file-at-a-time sum.

    ``acc[:filled]`` holds partial sums and the rest is uninitialised: the first term to reach an
    element is written (multiplied straight into ``acc``), not added to a zero, which saves a
    zero-fill and a read-modify-write pass over the whole vector (for N = 2, a third of the adds).
    Every file's chunks are contiguous from its start, so a chunk never begins past ``filled``.
    """
    opened = [f.open(lo, hi, itertools.cycle(ring), ring[0].size) for f, ring in zip(group, rings)]
    streams = [_prefetch(chunks) for chunks, _ in opened]
    weights = [np.float32(f.samples / total) for f in group]
    pos, errors, live = [start for _, start in opened], {}, list(range(len(group)))
    while live:
        for i in list(live):
            try:
                chunk = next(streams[i])
            except StopIteration:
                live.remove(i)
                continue
            except CorruptFile as exc:  # drain the others first, then report in worker order
                errors[i] = exc
                live.remove(i)
                continue
            a, b = max(pos[i], lo), min(pos[i] + chunk.size, hi)
            if a < b:
                values = chunk[a - pos[i]: b - pos[i]]
                mid = min(max(a, lo + filled), b)  # [a, mid) has partial sums, [mid, b) is new
                if a < mid:
                    part = tmp[: mid - a]
                    np.multiply(decode_chunk(values[: mid - a], out=part), weights[i], out=part)
                    acc[a - lo: mid - lo] += part
                if mid < b:
                    fresh = acc[mid - lo: b - lo]
                    np.multiply(decode_chunk(values[mid - a:], out=fresh), weights[i], out=fresh)
                    filled = b - lo
            pos[i] += chunk.size
    for i, f in enumerate(group):
        if i in errors:
            raise errors[i]
        if pos[i] != (hi if f.range_checksum is not None else size):
            raise CorruptFile(f.path, f"holds {pos[i]} elements, the model has {size}")


def weighted_sum(files: Sequence[WorkerFile], size: int, *, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """sum_w (n_w / n) * file_w over elements [lo, hi), streaming the files chunk by chunk.

    Memory: the accumulator, one scratch chunk and a few chunks per file being read, whatever the
    number of files. Each element is summed in worker-number order. A file whose length or
    checksum does not match raises CorruptFile.
    """
    hi = size if hi is None else hi
    total = sum(f.samples for f in files)
    if total <= 0:
        raise ValueError("no samples in any worker result")
    # Uninitialised: the first file's terms are written, not added (see _add_group).
    acc = np.empty(hi - lo, dtype=np.float32)
    tmp = np.empty(min(max(hi - lo, 1), CHUNK_BYTES // 2), dtype=np.float32)  # a chunk of the narrowest dtype
    ordered = sorted(files, key=lambda f: f.worker)
    group = min(_parallel_reads(size, lo, hi), len(ordered))
    # Read buffers allocated once and reused by every group: fresh memory for each chunk cost
    # page faults that made a fresh process's combine of two files ~1.5x the NumPy floor.
    rings = [[np.empty(_buffer_bytes(size), dtype=np.uint8) for _ in range(RING_BUFFERS)] for _ in range(group)]
    for start in range(0, len(ordered), group):
        # A group either covers [lo, hi) or raises CorruptFile (after its reads have all
        # stopped, so the rings are free again), so later groups only add.
        _add_group(ordered[start: start + group], total, size, lo, hi, acc, tmp, 0 if start == 0 else hi - lo, rings)
    return acc


# Elements a decoding thread takes at least: a compressed sum of fewer runs in the calling thread
# alone (a thread's start and hand-off cost about what decoding a few thousand elements does).
MIN_DECODE_SPAN = 1 << 20
MAX_DECODE_THREADS = 8


def decode_threads(elements: int, cores: int | None = None) -> int:
    """Threads for a compressed sum of ``elements``: one per core (the codecs' NumPy releases the
    GIL; ``cores``: this process's by default, the planner gives a Lambda's), fewer where each would
    get less than MIN_DECODE_SPAN."""
    cores = cores_available() if cores is None else cores
    return max(1, min(cores, MAX_DECODE_THREADS, elements // MIN_DECODE_SPAN))


def decode_spans(lo: int, hi: int, n_params: int, codec: str, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into at most ``parts`` spans on codec block boundaries (``lo`` is on one: a
    share's slice starts on a block), the buffers past ``n_params`` in the last span."""
    top = min(hi, n_params)
    if parts <= 1 or top <= lo:
        return [(lo, hi)]
    block = codec_of(codec).block
    n_blocks = -(-(top - lo) // block)
    cuts = sorted({lo + min(top - lo, (n_blocks * i // parts) * block) for i in range(parts)})
    return [(x, y) for x, y in zip(cuts, cuts[1:] + [hi]) if x < y]


class SpanSum:
    """``acc`` += weight * decode(data) for compressed data of elements [lo, hi), one file after
    another, in ``threads`` threads (the calling one among them), each on its own block-aligned
    span (``decode_spans``). All of a file's spans are done before ``add`` returns, so each element
    takes its terms in the order of the calls and the sum is bit-identical to one thread's. A
    context manager: the threads end with it."""

    def __init__(self, lo: int, hi: int, n_params: int, size: int, codec: str, threads: int | None = None):
        self.lo, self.n_params, self.codec = lo, n_params, codec
        self.acc = np.zeros(hi - lo, dtype=np.float32)
        spans = decode_spans(lo, hi, n_params, codec, decode_threads(hi - lo) if threads is None else threads)
        a = feedback.byte_range(lo, hi, n_params, size, codec)[0]
        # Each span's bytes within the slice's: the same in every file.
        self.parts = [(x, y, *(c - a for c in feedback.byte_range(x, y, n_params, size, codec))) for x, y in spans]
        self.pool = (ThreadPoolExecutor(max_workers=len(self.parts) - 1, thread_name_prefix="decode")
                     if len(self.parts) > 1 else None)

    def __enter__(self) -> "SpanSum":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _add(self, data: np.ndarray, weight: np.float32, part: tuple[int, int, int, int]) -> None:
        x, y, p, q = part
        feedback.add_slice(data[p:q], x, y, self.n_params, self.codec, self.acc[x - self.lo: y - self.lo], weight)

    def add(self, data: np.ndarray, weight: np.float32) -> None:
        """Add one file's bytes of the slice (``feedback.byte_range(lo, hi)``), weighted."""
        pending = [self.pool.submit(self._add, data, weight, part) for part in self.parts[1:]] if self.pool else []
        try:
            self._add(data, weight, self.parts[0])
        finally:
            for done in pending:
                done.result()


def compressed_sum(files: Sequence[WorkerFile], *, lo: int, hi: int, n_params: int, size: int,
                   codec: str, threads: int | None = None) -> np.ndarray:
    """sum_w (n_w / n) * decode(file_w) over elements [lo, hi) of compressed results (feedback.py).

    Each file's bytes for the slice are read whole (1/18 of a float32 file or less) and verified
    (the file's digest, or the slice's own when ``range_checksum`` is set), then decoded straight
    into the sum, in worker-number order, in ``threads`` threads (``SpanSum``): the result does not
    depend on timing, threads or S. Reading the next file meanwhile, in one more thread, gained
    less on 2 cores than it took from the decode (two threads 1.2-1.5x one, against 1.4-1.5x).
    """
    total = sum(f.samples for f in files)
    if total <= 0:
        raise ValueError("no samples in any worker result")
    a, b = feedback.byte_range(lo, hi, n_params, size, codec)
    expected = feedback.file_nbytes(n_params, size, codec)
    with SpanSum(lo, hi, n_params, size, codec, threads) as summed:
        for f in sorted(files, key=lambda f: f.worker):
            chunks, _ = f.open(a, b)
            parts = list(chunks)
            data = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
            if data.dtype != np.uint8:
                raise CorruptFile(f.path, f"holds {data.dtype}, not a {codec} payload")
            if f.range_checksum is None:
                if data.size != expected:
                    raise CorruptFile(f.path, f"holds {data.size} bytes, a {codec} result has {expected}")
                data = data[a:b]
            summed.add(data, np.float32(f.samples / total))
    return summed.acc
