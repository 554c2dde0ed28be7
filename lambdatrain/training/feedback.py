"""Compressed rounds with error feedback on both sides: a worker's result, the combiner's update.

A flat vector is P parameter elements followed by B buffer elements (batch-norm statistics). The
parameters' part travels compressed (training/compress: ``ternary`` or ``sign``) with error
feedback; the buffers travel as float32, because they are averaged as values, not summed as
increments, and are a few thousand elements against millions.

* **Worker** (``pack``): corrected = result[:P] + residual; the file holds payload(corrected)
  then result[P:] as float32 bytes; the new residual is corrected - decode(payload), kept by the
  worker for its next round (storage/state.py). In sync mode the result is the mean gradient, in
  average mode the weight delta after the local steps.
* **Combiner** (``add_slice``, ``step_slice``): the weighted sum of the decoded results, the
  optimizer step as for any transport (training/step.py), then the update u = (stepped weights -
  weights)[:P] in sync mode, the averaged delta in average mode, is compressed with the combiner's
  own residual; the new weights are weights + decode(update payload), so every party that applies
  the update holds them bit for bit (dist-EF-SGD, Zheng et al., NeurIPS 2019). The update has the
  result's layout: payload, then the new buffers (kept in the stack's bucket, storage/state.py).
* **Worker, next round** (``apply_update``): a warm environment that holds round r's weights builds
  round r + 1's from the update alone: the same float32 additions as the combiner's.

Slices: a sharded combine's share reduces elements [lo, hi) of the flat vector (``slices``: every
boundary on a codec block, the last share also takes the buffers); ``byte_range`` is the part of a
result or update file that holds them, so a share reads and verifies only its bytes, and a slice's
payload is exactly those bytes of the whole's (compress/layout.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.training.flat import iter_slices
from lambdatrain.training.compress import block_slices, compress, decode, decode_add, payload_nbytes, payload_range
from lambdatrain.training.step import apply_update as step_update


def file_nbytes(n_params: int, size: int, codec: str) -> int:
    """Bytes of a result or update file's data: the parameters' payload, then 4 bytes per buffer."""
    return payload_nbytes(n_params, codec) + 4 * (size - n_params)


def slices(n_params: int, size: int, shards: int, codec: str) -> list[tuple[int, int]]:
    """S element slices [lo, hi) of the flat vector: block-aligned, the last one ending at ``size``."""
    out = block_slices(n_params, shards, codec)
    return out[:-1] + [(out[-1][0], size)]


def shard_slices(transport: str, n_params: int, size: int, shards: int) -> list[tuple[int, int]]:
    """The element slices of a sharded combine's S shares for a run's transport: the workers'
    slice checksums and the shares' reads both come from here. Block-aligned for a compressed
    transport (``slices``), else even (``flat.iter_slices``)."""
    codec = COMPRESSED.get(transport)
    return slices(n_params, size, shards, codec) if codec else list(iter_slices(size, shards))


def state_ranges(transport: str, n_params: int, size: int, shards: int) -> list[tuple[int, int]] | None:
    """The slices whose checksums a weights file of ``size`` elements is written with (efs.write_array's
    ``ranges``), so each of S shares reads only its own; None for an unsharded combine."""
    return None if shards == 1 else shard_slices(transport, n_params, size, shards)


def byte_range(lo: int, hi: int, n_params: int, size: int, codec: str) -> tuple[int, int]:
    """The bytes of a file (its data, after the .npy header) that hold elements [lo, hi)."""
    plen = payload_nbytes(n_params, codec)
    a, b = payload_range(min(lo, n_params), min(hi, n_params), n_params, codec)
    if lo > n_params:
        a = plen + 4 * (lo - n_params)
    if hi > n_params:
        b = plen + 4 * (hi - n_params)
    return a, b


def pack(vector: np.ndarray, n_params: int, codec: str, residual: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(file data as uint8, new residual) of a worker's result, or of an update with ``vector`` =
    update ++ buffers. ``residual`` None means zeros (a worker's first round)."""
    plen = payload_nbytes(n_params, codec)
    data = np.empty(plen + 4 * (vector.size - n_params), dtype=np.uint8)
    _, new_residual = compress(np.ascontiguousarray(vector[:n_params], dtype=np.float32), residual, codec,
                               out=data[:plen])
    data[plen:] = np.ascontiguousarray(vector[n_params:], dtype="<f4").view(np.uint8)
    return data, new_residual


def add_slice(data: np.ndarray, lo: int, hi: int, n_params: int, codec: str, acc: np.ndarray, weight) -> None:
    """acc += weight * (elements [lo, hi) of a file), given ``data``, the file's ``byte_range(lo, hi)``."""
    k = max(0, min(hi, n_params) - lo)  # parameters inside [lo, hi)
    plen = payload_nbytes(k, codec) if k else 0
    if k:
        decode_add(data[:plen], k, codec, acc[:k], weight)
    if hi > lo + k:
        buffers = data[plen:].view("<f4")
        acc[k:] += np.float32(weight) * buffers


def step_slice(weights: np.ndarray, average: np.ndarray, momentum: np.ndarray | None, residual: np.ndarray | None,
               *, mode: str, n_params: int, lr: float, sgd: Mapping[str, Any],
               codec: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The combiner's step on a slice holding ``n_params`` parameters then buffers:
    (new weights, new momentum, new residual, update file data)."""
    stepped, momentum = step_update(weights, average, momentum, mode=mode, n_params=n_params, lr=lr, sgd=sgd)
    update = np.empty_like(weights)
    if mode == "sync":
        np.subtract(stepped[:n_params], weights[:n_params], out=update[:n_params])
    else:  # the averaged delta itself: weights + delta - weights would round it
        update[:n_params] = average[:n_params]
    update[n_params:] = stepped[n_params:]
    data, new_residual = pack(update, n_params, codec, residual)
    return apply_update(weights, data, n_params, codec), momentum, new_residual, data


def update_nbytes(size: int, n_params: int, codec: str) -> int:
    """Bytes of the update of a ``size``-element vector whose first ``n_params`` are parameters."""
    return payload_nbytes(n_params, codec) + 4 * (size - n_params)


def apply_update(weights: np.ndarray, data: np.ndarray, n_params: int, codec: str) -> np.ndarray:
    """The next weights from ``weights`` and an update file's data (whole, or a slice's bytes)."""
    plen = payload_nbytes(n_params, codec)
    if data.size != update_nbytes(weights.size, n_params, codec):
        raise ValueError(f"an update of {weights.size} elements ({n_params} parameters) has "
                         f"{update_nbytes(weights.size, n_params, codec)} bytes, got {data.size}")
    new = np.empty_like(weights)
    decode(data[:plen], n_params, codec, out=new[:n_params])
    np.add(weights[:n_params], new[:n_params], out=new[:n_params])
    new[n_params:] = data[plen:].view("<f4")
    return new
