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

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from lambdatrain.errors import CorruptFile
from lambdatrain.layout import CHUNK_BYTES, Digest, stream_array, stream_range


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


def _prefetch(chunks: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
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

    def open(self, lo: int, hi: int) -> tuple[Iterator[np.ndarray], int]:
        """The chunks to add and the element index of the first one."""
        if self.range_checksum is not None:
            return stream_range(self.path, lo, hi, self.range_checksum), lo
        return stream_array(self.path, self.digest), 0


def _parallel_reads(size: int, lo: int, hi: int) -> int:
    """Files read at once: SHA-256 is serial per file, so parallel files are what use more cores
    (and EFS serves parallel reads from one client faster than one sequential stream).

    Each file being read holds up to four chunks (queued, being read, being added); the group is
    kept small enough that those stay below the accumulator's size (but at least two files, so
    reading overlaps adding), so memory stays below three model sizes.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    per_file = 4 * min(CHUNK_BYTES, 4 * size)
    return max(2, min(cores, 8, (4 * (hi - lo)) // per_file))


def _add_group(group: Sequence[WorkerFile], total: int, size: int, lo: int, hi: int, acc: np.ndarray,
               tmp: np.ndarray) -> None:
    """Add a group of files (in worker order) into ``acc``, their reads running in parallel.

    The files advance in lockstep, one chunk each per step, worker order within the step; every
    chunk of the same index covers the same elements, so each element still receives its terms
    in worker-number order and the float32 result is bit-identical to a one-file-at-a-time sum.
    """
    opened = [f.open(lo, hi) for f in group]
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
                part = tmp[: b - a]
                np.multiply(decode_chunk(chunk[a - pos[i]: b - pos[i]], out=part), weights[i], out=part)
                acc[a - lo: b - lo] += part
            pos[i] += chunk.size
    for i, f in enumerate(group):
        if i in errors:
            raise errors[i]
        if pos[i] != (hi if f.range_checksum is not None else size):
            raise CorruptFile(f"{f.path}: holds {pos[i]} elements, the model has {size}")


def weighted_sum(files: Sequence[WorkerFile], size: int, *, lo: int = 0, hi: int | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
    """sum_w (n_w / n) * file_w over elements [lo, hi), streaming the files chunk by chunk.

    Memory: the accumulator, one scratch chunk and a few chunks per file being read, whatever the
    number of files. Each element is summed in worker-number order. A file whose length or
    checksum does not match raises CorruptFile.
    """
    hi = size if hi is None else hi
    total = sum(f.samples for f in files)
    if total <= 0:
        raise ValueError("no samples in any worker result")
    if out is None:
        acc = np.zeros(hi - lo, dtype=np.float32)  # lazily zeroed pages: the first add touches them once
    else:
        acc = out
        acc[:] = 0
    tmp = np.empty(min(max(hi - lo, 1), CHUNK_BYTES // 2), dtype=np.float32)  # a chunk of the narrowest dtype
    ordered = sorted(files, key=lambda f: f.worker)
    group = _parallel_reads(size, lo, hi)
    for start in range(0, len(ordered), group):
        _add_group(ordered[start: start + group], total, size, lo, hi, acc, tmp)
    return acc


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
