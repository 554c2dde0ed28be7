"""The two codecs' arithmetic on a chunk of whole blocks: values to records, records to units.

Each encoder takes a (k, block) float32 array of k blocks, writes their k records (codes, then
the float32 scale) and returns the units it coded, (k, block) int8 in {-1, 0, +1}, so error
feedback needs no decode; the unit readers read k records back as the same units. The decoded
value is unit * scale, exact in float32 since the unit is -1, 0 or +1. Everything is one
NumPy call over the chunk, into the caller's scratch arrays, with no Python loop over blocks.
"""

from __future__ import annotations

import numpy as np

from lambdatrain.training.compress.layout import CODECS, Codec

# A zero block (scale 0) is compared against the smallest positive float32 instead of 0, so its
# codes are those of zero (0 >= 0 would round every element up), and it decodes to exact zeros.
TINY = np.float32(np.finfo(np.float32).smallest_subnormal)
TERNARY_DIGITS = 5  # base-3 digits per byte: 3^5 = 243 <= 256

# Byte -> its five ternary units, least significant digit first (digit 0, 1, 2 is unit -1, 0, +1).
# The 13 bytes above 242 are never written; they decode as zeros.
TERNARY_UNITS = np.zeros((256, TERNARY_DIGITS), dtype=np.int8)
TERNARY_UNITS[:243] = (np.arange(243)[:, None] // 3 ** np.arange(TERNARY_DIGITS)) % 3 - 1
# Byte -> its eight sign units in np.packbits' order (most significant bit first); bit 1 is -1.
SIGN_UNITS = (1 - 2 * np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)).astype(np.int8)


class Scratch:
    """Work arrays for up to ``rows`` blocks, allocated once per call and reused by every chunk."""

    def __init__(self, rows: int, codec: Codec) -> None:
        shape = (rows, codec.block)
        self.values = np.empty(shape, dtype=np.float32)  # the input chunk (corrected, or padded)
        self.work = np.empty(shape, dtype=np.float32)
        self.decoded = np.empty(shape, dtype=np.float32)
        self.pos = np.empty(shape, dtype=np.bool_)
        self.neg = np.empty(shape, dtype=np.bool_)
        self.units = np.empty(shape, dtype=np.int8)
        self.codes = np.empty((rows, codec.code_bytes), dtype=np.uint8)


def scales(records: np.ndarray, codec: Codec) -> np.ndarray:
    """The (k,) float32 scales of k records (a view into them)."""
    return records[:, codec.code_bytes: codec.record].view("<f4")[:, 0]


def encode_ternary(x: np.ndarray, count: int, records: np.ndarray, s: Scratch) -> np.ndarray:
    """Ternary: s = the block's largest magnitude; x -> +s if x >= s/2, -s if x <= -s/2, else 0.

    Compared as 2x >= s, which is exact (doubling a float32 is exact, and where 2x overflows to
    inf, |x| > max/2 >= s/2 anyway). Units u in {-1, 0, +1} are stored as digits u + 1 in base 3,
    five per byte: byte = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4 (Horner, in uint8: at most 242).
    ``count`` (elements of the block that are real) plays no part: padding zeros change no maximum.
    """
    k = x.shape[0]
    work, pos, neg = s.work[:k], s.pos[:k], s.neg[:k]
    scale = np.abs(x, out=work).max(axis=1)
    threshold = np.maximum(scale, TINY)[:, None]
    np.add(x, x, out=work)
    np.greater_equal(work, threshold, out=pos)
    np.negative(threshold, out=threshold)
    np.less_equal(work, threshold, out=neg)
    digits = s.units[:k].view(np.uint8)
    np.add(pos.view(np.uint8), 1, out=digits)
    np.subtract(digits, neg.view(np.uint8), out=digits)
    d = digits.reshape(k, -1, TERNARY_DIGITS)
    # Horner in contiguous scratch, then one copy into the strided records: measured 1.6x faster
    # than Horner in the records themselves.
    codes = s.codes[:k]
    np.copyto(codes, d[:, :, TERNARY_DIGITS - 1])
    for j in range(TERNARY_DIGITS - 2, -1, -1):  # four vectorised passes, one per digit
        np.multiply(codes, 3, out=codes)
        np.add(codes, d[:, :, j], out=codes)
    records[:, : CODECS["ternary"].code_bytes] = codes
    scales(records, CODECS["ternary"])[:] = scale
    np.subtract(digits, 1, out=digits)
    return s.units[:k]


assert CODECS["sign"].block & (CODECS["sign"].block - 1) == 0, "the sign scale's fold halves the block"


def encode_sign(x: np.ndarray, count: int, records: np.ndarray, s: Scratch) -> np.ndarray:
    """Scaled sign: s = mean |x| over the block's ``count`` real elements; x -> -s if x < 0 else +s.

    The sum is an explicit tree that folds the upper half onto the lower (element i plus element
    i + 128, then i + 64, ...: 8 levels for 256), so a block's scale is the same float32 whatever
    NumPy's reduction does inside (SIMD width, pairwise blocking) and whatever chunk or slice the
    block sits in; padding zeros add nothing.
    """
    k = x.shape[0]
    work = np.abs(x, out=s.work[:k])
    width = work.shape[1]
    while width > 1:
        width //= 2
        np.add(work[:, :width], work[:, width: 2 * width], out=work[:, :width])
    scale = work[:, 0] / np.float32(count)
    neg = np.less(x, 0, out=s.neg[:k])
    records[:, : CODECS["sign"].code_bytes] = np.packbits(neg, axis=1)
    scales(records, CODECS["sign"])[:] = scale
    units = np.multiply(neg.view(np.int8), -2, out=s.units[:k])
    return np.add(units, 1, out=units)


def units_ternary(records: np.ndarray, s: Scratch) -> np.ndarray:
    k = records.shape[0]
    units = s.units[:k]
    np.take(TERNARY_UNITS, records[:, : CODECS["ternary"].code_bytes], axis=0,
            out=units.reshape(k, -1, TERNARY_DIGITS))
    return units


def units_sign(records: np.ndarray, s: Scratch) -> np.ndarray:
    k = records.shape[0]
    units = s.units[:k]
    np.take(SIGN_UNITS, records[:, : CODECS["sign"].code_bytes], axis=0, out=units.reshape(k, -1, 8))
    return units


ENCODERS = {"ternary": encode_ternary, "sign": encode_sign}
UNITS = {"ternary": units_ternary, "sign": units_sign}
