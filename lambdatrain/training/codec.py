"""Worker results in their transport dtype: float32 as is, float16, or bfloat16 as uint16 bits.

bfloat16 has no NumPy dtype, so it travels as the top 16 bits of each float32 in a uint16 array;
decoding shifts them back, which is exact for every value bfloat16 holds.
"""

from __future__ import annotations

import numpy as np
import torch


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
