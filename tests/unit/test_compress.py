"""The compressed codecs with error feedback (lambdatrain/training/compress/), checked against a slow
per-block Python reference written here from the codecs' definitions, not from the kernels."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from lambdatrain.training import compress as C
from lambdatrain.training.compress import stream

CODECS = ("ternary", "sign")
ODD_SIZES = (1, 255, 257, 1000, 1_000_003)
VGG19_CIFAR = 20_051_546  # elements of vgg19_cifar at width 1 (docs/benchmarks.md)


def _tree_sum(v: np.ndarray) -> np.float32:
    """Fold the upper half onto the lower (element i plus element i + 128, then i + 64, ...) in
    float32: the order the sign codec's scale is defined by."""
    v = [np.float32(x) for x in v]
    while len(v) > 1:
        half = len(v) // 2
        v = [np.float32(v[i] + v[i + half]) for i in range(half)]
    return v[0]


def reference_block(part: np.ndarray, codec: str) -> tuple[bytes, np.ndarray]:
    """One block's record and decoded values, element by element, straight from the definitions;
    a partial block is padded with zeros, and its sign scale is the mean over its real elements."""
    c = C.codec_of(codec)
    x = np.concatenate([part, np.zeros(c.block - part.size, np.float32)])
    if codec == "ternary":
        s = max(abs(float(v)) for v in x)  # float32 values are exact in Python floats
        units = [0 if s == 0 or abs(float(v)) < s / 2 else (1 if v > 0 else -1) for v in x]
        digits = [u + 1 for u in units]
        codes = bytes(sum(digits[5 * j + i] * 3 ** i for i in range(5)) for j in range(c.code_bytes))
    else:
        s = float(_tree_sum(np.abs(x)) / np.float32(part.size))
        units = [-1 if v < 0 else 1 for v in x]
        bits = [1 if u < 0 else 0 for u in units]
        codes = bytes(sum(bits[8 * j + i] << (7 - i) for i in range(8)) for j in range(c.code_bytes))
    decoded = np.array([u * s for u in units[: part.size]], np.float32)
    return codes + struct.pack("<f", s), decoded


def reference(x: np.ndarray, codec: str) -> tuple[bytes, np.ndarray]:
    block = C.codec_of(codec).block
    pieces = [reference_block(x[lo: lo + block], codec) for lo in range(0, x.size, block)]
    return b"".join(p[0] for p in pieces), np.concatenate([p[1] for p in pieces])


def _vector(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # magnitudes that vary by block, as gradients do from layer to layer
    return (rng.standard_normal(n) * np.exp(rng.standard_normal(n // 97 + 1).repeat(97)[:n])).astype(np.float32)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("n", ODD_SIZES[:4])
def test_payload_and_values_match_the_reference(codec, n):
    x = _vector(n, n)
    payload = C.encode(x, codec)
    expected_bytes, expected_values = reference(x, codec)
    assert payload.tobytes() == expected_bytes
    assert np.array_equal(C.decode(payload, n, codec), expected_values)


@pytest.mark.parametrize("codec", CODECS)
def test_large_odd_size_round_trips_signs_and_scales(codec):
    n = ODD_SIZES[-1]
    x = _vector(n, 7)
    payload = C.encode(x, codec)
    assert payload.size == C.payload_nbytes(n, codec)
    decoded = C.decode(payload, n, codec)
    block = C.codec_of(codec).block
    for j in range(0, C.blocks(n, codec), 613):  # a spread of blocks, the partial last one too
        lo = j * block
        record, values = reference(x[lo: lo + block], codec)
        assert payload[j * C.codec_of(codec).record: (j + 1) * C.codec_of(codec).record].tobytes() == record
        assert np.array_equal(decoded[lo: lo + block], values)
    last = (C.blocks(n, codec) - 1) * block
    assert np.array_equal(decoded[last:], reference(x[last:], codec)[1])
    if codec == "sign":
        assert np.array_equal(np.signbit(decoded), x < 0)
        means = np.abs(x[: n // block * block].astype(np.float64)).reshape(-1, block).mean(axis=1)
        scales = np.abs(decoded[: n // block * block]).reshape(-1, block)[:, 0]
        assert np.allclose(scales, means, rtol=1e-6, atol=0)
    else:
        full = np.abs(x[: n // block * block]).reshape(-1, block)
        assert np.array_equal(np.abs(decoded[: n // block * block]).reshape(-1, block).max(axis=1), full.max(axis=1))


def test_ternary_rounds_to_nearest_ties_away_from_zero():
    s = np.float32(3.0)
    half = s / 2
    below = np.nextafter(half, np.float32(0))
    x = np.zeros(240, np.float32)
    x[:8] = [s, half, below, -half, -below, -s, 0.0, -0.0]
    decoded = C.decode(C.encode(x, "ternary"), 240, "ternary")
    assert decoded[:8].tolist() == [3.0, 3.0, 0.0, -3.0, 0.0, -3.0, 0.0, 0.0]
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    sub = np.array([tiny, tiny, -tiny, 0.0], np.float32)  # the smallest scale a block can have
    assert C.decode(C.encode(sub, "ternary"), 4, "ternary").tolist() == [tiny, tiny, -tiny, 0.0]


@pytest.mark.parametrize("codec", CODECS)
def test_zero_and_constant_blocks(codec):
    block = C.codec_of(codec).block
    x = np.concatenate([np.zeros(block, np.float32), np.full(block, 0.375, np.float32),
                        np.full(block, -2.5, np.float32), np.zeros(block // 2 + 3, np.float32)])
    payload, residual = C.compress(x, None, codec)
    decoded = C.decode(payload, x.size, codec)
    assert not np.isnan(decoded).any()
    assert np.array_equal(decoded, x)  # zeros and constants (full blocks) are said exactly
    assert not residual.any()
    assert payload.tobytes() == reference(x, codec)[0]


@pytest.mark.parametrize("codec", CODECS)
def test_residual_arithmetic_of_one_step(codec):
    n = 10_007
    grad, residual = _vector(n, 1), _vector(n, 2) * np.float32(0.1)
    payload, new_residual = C.compress(grad, residual, codec)
    corrected = grad + residual  # float32, as the codec adds
    assert payload.tobytes() == C.encode(corrected, codec).tobytes()
    decoded = C.decode(payload, n, codec)
    assert np.array_equal(new_residual, corrected - decoded)  # one float32 subtraction
    gap = corrected.astype(np.float64) - decoded.astype(np.float64) - new_residual.astype(np.float64)
    assert np.all(np.abs(gap) <= np.spacing(np.abs(new_residual)) / 2)
    if codec == "ternary":  # |c| in [s/2, s] when rounded to +-s, so c - s is exact (Sterbenz)
        assert np.array_equal(decoded + new_residual, corrected)


@pytest.mark.parametrize("codec", CODECS)
def test_error_feedback_tracks_the_sum_of_gradients(codec):
    n, steps = 4_099, 60
    residual = None
    sum_grads, sum_sent, sum_plain = np.zeros(n), np.zeros(n), np.zeros(n)
    largest, residual_norms = 0.0, []
    for t in range(steps):
        grad = _vector(n, 100 + t)
        payload, residual = C.compress(grad, residual, codec)
        sum_grads += grad
        sum_sent += C.decode(payload, n, codec)
        sum_plain += C.decode(C.encode(grad, codec), n, codec)  # the same codec without feedback
        largest = max(largest, float(np.abs(grad).max()))
        residual_norms.append(np.linalg.norm(residual))
    # Telescoping: sent = sum_t (grad_t + r_{t-1} - r_t) = sum grads - r_T, up to float32 rounding
    # of the two operations per step.
    tolerance = steps * 4 * np.spacing(np.float32(4 * largest))
    assert np.all(np.abs(sum_grads - sum_sent - residual) <= tolerance)
    # The error is the last residual alone, which stays bounded instead of growing with the steps
    # (measured: 0.6-1.3 times one gradient's norm throughout), while without feedback the error
    # is a sum of T compression errors (measured: 4.6 times one gradient's norm after 60 steps).
    grad_norm = np.linalg.norm(_vector(n, 100))
    assert max(residual_norms) < 2 * grad_norm
    if codec == "ternary":  # |r| <= s/2 <= (|g| + |r|)/2, so |r| never exceeds the largest |g|
        assert np.abs(residual).max() <= largest
    assert np.linalg.norm(sum_grads - sum_sent) < 0.3 * np.linalg.norm(sum_grads - sum_plain)


@pytest.mark.parametrize("codec", CODECS)
def test_slices_give_parts_of_the_whole_payload(codec):
    n = 100_003
    grad, residual = _vector(n, 3), _vector(n, 4)
    whole, whole_residual = C.compress(grad, residual, codec)
    for shards in (1, 2, 3, 7):
        slices = C.block_slices(n, shards, codec)
        assert slices[0][0] == 0 and slices[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        for lo, hi in slices:
            part, part_residual = C.compress(grad[lo:hi], residual[lo:hi], codec)
            a, b = C.payload_range(lo, hi, n, codec)
            assert part.tobytes() == whole[a:b].tobytes()
            assert np.array_equal(part_residual, whole_residual[lo:hi])
            assert np.array_equal(C.decode(whole[a:b], hi - lo, codec), C.decode(whole, n, codec)[lo:hi])


@pytest.mark.parametrize("codec", CODECS)
def test_unaligned_slices_are_refused_and_aligned_down(codec):
    block = C.codec_of(codec).block
    n = 10 * block + 5
    with pytest.raises(ValueError, match="not aligned"):
        C.payload_range(block + 1, 3 * block, n, codec)
    with pytest.raises(ValueError, match="not aligned"):
        C.payload_range(block, 3 * block - 1, n, codec)
    assert C.payload_range(2 * block, n, n, codec) == (2 * C.codec_of(codec).record, C.payload_nbytes(n, codec))
    assert C.align_down(3 * block + 7, n, codec) == 3 * block
    assert C.align_down(n + 9, n, codec) == n
    assert C.block_slices(block + 1, 5, codec) == [(0, block), (block, block + 1), (block + 1, block + 1),
                                                    (block + 1, block + 1), (block + 1, block + 1)]


def test_bytes_per_parameter():
    float32_bytes = 4 * VGG19_CIFAR
    ternary, sign = C.payload_nbytes(VGG19_CIFAR, "ternary"), C.payload_nbytes(VGG19_CIFAR, "sign")
    assert 8 * ternary / VGG19_CIFAR <= 2.13 and ternary <= float32_bytes / 15
    assert 8 * sign / VGG19_CIFAR <= 1.125 + 1e-4 and sign <= float32_bytes / 28
    assert C.codec_of("sign").bits_per_param == 1.125
    assert abs(C.codec_of("ternary").bits_per_param - 52 * 8 / 240) < 1e-12


@pytest.mark.parametrize("codec", CODECS)
def test_deterministic_in_any_chunking(codec, monkeypatch):
    n = 50_001
    grad, residual = _vector(n, 5), _vector(n, 6)
    first, r1 = C.compress(grad, residual, codec)
    second, r2 = C.compress(grad, residual, codec)
    monkeypatch.setattr(stream, "CHUNK_BLOCKS", 3)
    third, r3 = C.compress(grad, residual, codec)
    assert first.tobytes() == second.tobytes() == third.tobytes()
    assert r1.tobytes() == r2.tobytes() == r3.tobytes()


@pytest.mark.parametrize("codec", CODECS)
def test_decode_into_buffers_and_decode_add(codec):
    n = 2_345
    payload = C.encode(_vector(n, 8), codec)
    out = np.full(n, np.nan, np.float32)
    assert C.decode(payload, n, codec, out=out) is out
    acc = _vector(n, 9)
    expected = acc + np.float32(0.3) * out
    assert C.decode_add(payload.tobytes(), n, codec, acc, 0.3) is acc
    assert np.array_equal(acc, expected)


@pytest.mark.parametrize("codec", CODECS)
def test_residual_updated_in_place(codec):
    n = 3_001
    grad, residual = _vector(n, 10), _vector(n, 11)
    expected_payload, expected_residual = C.compress(grad, residual, codec)
    payload, new_residual = C.compress(grad, residual, codec, new_residual=residual)
    assert new_residual is residual
    assert payload.tobytes() == expected_payload.tobytes()
    assert np.array_equal(residual, expected_residual)


@pytest.mark.parametrize("codec", CODECS)
def test_wrong_lengths_and_types_are_refused(codec):
    payload = C.encode(_vector(1000), codec)
    with pytest.raises(ValueError, match="bytes"):
        C.decode(payload[:-1], 1000, codec)
    with pytest.raises(ValueError, match="float32"):
        C.encode(np.zeros(10), codec)
    with pytest.raises(ValueError, match="unknown codec"):
        C.payload_nbytes(10, "int4")
