"""The combine math: flat parameter vectors, the streaming weighted sum, the optimizer step.

A model's state (parameters, then buffers, in ``state_dict`` order) is one contiguous float32
vector, so a combine is one vectorized add per worker file, and the optimizer runs on one tensor.

Parameter-server update (sync mode, the paper's mini-batch scheme): worker w returns the mean
gradient g_w over its n_w samples; the combiner forms g = sum_w (n_w / n) g_w in worker-number order
(never arrival order, so the result does not depend on timing) and takes one SGD step. This equals
one step of a single process that accumulates gradients over the same micro-batches.

Batch-norm running statistics drift apart on the workers (each sees only its micro-batches); the
combiner replaces them with their sample-weighted average, the same weighted sum as the gradients.

Average mode (local SGD / federated averaging): worker w returns delta_w = w_end - w_start after K
local steps; the new weights are w + sum_w (n_w / n) delta_w.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch

from lambdatrain.protocol.errors import CorruptFile
from lambdatrain.storage.efs import CHUNK_BYTES, Digest, stream_array, stream_range

if TYPE_CHECKING:
    from lambdatrain.protocol.events import RunConfig


@dataclass(frozen=True)
class FlatLayout:
    """Where each state_dict entry lives in the flat vector; parameters come first."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    offsets: tuple[int, ...]
    n_params: int  # elements [0, n_params) are trainable parameters, the rest are buffers
    size: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> "FlatLayout":
        state = model.state_dict()
        param_names = [n for n, _ in model.named_parameters()]
        buffer_names = [n for n in state if n not in set(param_names)]
        names = tuple(param_names + buffer_names)
        shapes = tuple(tuple(state[n].shape) for n in names)
        sizes = [int(np.prod(s)) for s in shapes]
        offsets = tuple(int(x) for x in np.cumsum([0] + sizes[:-1]))
        n_params = sum(sizes[: len(param_names)])
        return cls(names, shapes, tuple(state[n].dtype for n in names), offsets, n_params, sum(sizes))

    def flatten(self, model: torch.nn.Module) -> np.ndarray:
        state = model.state_dict()
        out = np.empty(self.size, dtype=np.float32)
        for name, off, shape in zip(self.names, self.offsets, self.shapes):
            n = int(np.prod(shape))
            out[off: off + n] = state[name].detach().reshape(-1).to(torch.float32).numpy()
        return out

    def state_dict(self, flat: np.ndarray) -> dict[str, torch.Tensor]:
        """The flat vector as a state_dict (integer buffers rounded back to their dtype)."""
        if flat.shape != (self.size,):
            raise ValueError(f"flat vector has {flat.shape} elements, model needs {self.size}")
        tensor = torch.from_numpy(np.asarray(flat, dtype=np.float32))
        out = {}
        for name, off, shape, dtype in zip(self.names, self.offsets, self.shapes, self.dtypes):
            piece = tensor[off: off + int(np.prod(shape))].reshape(shape)
            out[name] = piece.round().to(dtype) if not dtype.is_floating_point else piece.to(dtype).clone()
        return out

    def load(self, model: torch.nn.Module, flat: np.ndarray) -> None:
        model.load_state_dict(self.state_dict(flat))

    def grads(self, model: torch.nn.Module) -> np.ndarray:
        """The parameters' .grad as one float32 vector (zeros where a parameter got none)."""
        out = np.zeros(self.n_params, dtype=np.float32)
        for (name, p), off in zip(model.named_parameters(), self.offsets):
            if p.grad is not None:
                out[off: off + p.numel()] = p.grad.detach().reshape(-1).numpy()
        return out


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
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    per_file = RING_BUFFERS * _buffer_bytes(size)
    return max(1, min(cores - 1, 8, (4 * (hi - lo)) // per_file))


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
            raise CorruptFile(f"{f.path}: holds {pos[i]} elements, the model has {size}")


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


def learning_rate(config: RunConfig, round_no: int, rounds_per_epoch: int) -> float:
    """The learning rate of round ``round_no`` (one optimizer step per round in sync mode).

    ``constant``: ``lr``. ``cosine``: torch's CosineAnnealingLR (eta_min 0) over the run's
    T = epochs * rounds_per_epoch rounds, lr * (1 + cos(pi * t / T)) / 2 at round t, so the last
    rounds take tiny steps and a run ends settled rather than wherever its last large step left
    it. Warm-up (W = warmup_epochs * rounds_per_epoch rounds, rounded): lr * (t + 1) / W for t < W,
    then the schedule over the remaining T - W rounds (Goyal et al. 2017, for the large global
    batches many workers make). A pure function of the round, so a resumed or re-driven round
    steps exactly as the first attempt did.
    """
    lr, schedule = config.lr, config.lr_schedule
    total = config.epochs * rounds_per_epoch
    warmup = min(total, round(config.warmup_epochs * rounds_per_epoch))
    if round_no < warmup:
        return lr * (round_no + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        t, span = round_no - warmup, max(1, total - warmup)
        return lr * (1 + math.cos(math.pi * min(t, span) / span)) / 2
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def sgd_step(params: np.ndarray, grad: np.ndarray, momentum_buf: np.ndarray | None, *, lr: float,
             momentum: float, weight_decay: float) -> tuple[np.ndarray, np.ndarray]:
    """One torch.optim.SGD step on a flat vector; returns (new params, new momentum buffer).

    torch's own optimizer does the arithmetic, so the step is exactly what a single-process
    PyTorch loop would take. A zero momentum buffer equals torch's "first step" initialisation.
    """
    p = torch.nn.Parameter(torch.from_numpy(np.array(params, dtype=np.float32)))
    p.grad = torch.from_numpy(np.asarray(grad, dtype=np.float32))
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
    if momentum and momentum_buf is not None:
        opt.state[p]["momentum_buffer"] = torch.from_numpy(np.array(momentum_buf, dtype=np.float32))
    opt.step()
    buf = opt.state[p].get("momentum_buffer") if momentum else None
    new_buf = buf.detach().numpy() if buf is not None else np.zeros_like(params)
    return p.detach().numpy(), new_buf


def apply_update(weights: np.ndarray, average: np.ndarray, momentum_buf: np.ndarray | None, *, mode: str,
                 n_params: int, lr: float, momentum: float, weight_decay: float) -> tuple[np.ndarray, np.ndarray | None]:
    """New flat weights (and optimizer state) from the round's weights and the weighted average."""
    new = np.empty_like(weights)
    if mode == "sync" and n_params > 0:
        new[:n_params], momentum_buf = sgd_step(weights[:n_params], average[:n_params], momentum_buf,
                                                lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        new[:n_params] = weights[:n_params] + average[:n_params]
    new[n_params:] = average[n_params:]  # batch-norm statistics: the workers' weighted average
    return new, momentum_buf


def encode(vector: np.ndarray, transport: str) -> np.ndarray:
    """A worker result in its transport dtype (bfloat16 travels as the top 16 bits, in uint16)."""
    if transport == "float32":
        return vector.astype(np.float32, copy=False)
    if transport == "float16":
        return vector.astype(np.float16)
    t = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def decode_chunk(chunk: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of ``encode`` for one chunk (uint16 means bfloat16); float32 comes back uncopied.

    ``out`` (float32, the chunk's length) receives 16-bit chunks, so the combine's hot loop
    allocates nothing.
    """
    if chunk.dtype == np.float32:
        return chunk
    if chunk.dtype == np.uint16:
        bits = out.view(np.uint32) if out is not None else np.empty(chunk.shape, dtype=np.uint32)
        np.copyto(bits, chunk)
        np.left_shift(bits, 16, out=bits)
        return bits.view(np.float32)
    if out is None:
        return chunk.astype(np.float32)
    np.copyto(out, chunk)
    return out


def iter_slices(size: int, shards: int) -> Iterable[tuple[int, int]]:
    """Contiguous [lo, hi) slices of the parameter vector for a sharded combine."""
    base, extra = divmod(size, shards)
    lo = 0
    for s in range(shards):
        hi = lo + base + (1 if s < extra else 0)
        yield lo, hi
        lo = hi
