"""The combine math: flat vectors, streaming weighted sums, the optimizer step, transports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lambdatrain import layout as efs
from lambdatrain.combine import (FlatLayout, WorkerFile, apply_update, decode_chunk, encode, iter_slices, sgd_step,
                                 weighted_sum)
from lambdatrain.errors import CorruptFile
from lambdatrain.model import ModelSpec, build_model


def _files(tmp_path, vectors, samples):
    out = []
    for w, (v, n) in enumerate(zip(vectors, samples)):
        digest = efs.write_array(tmp_path / f"w{w:04d}.npy", v)
        out.append(WorkerFile(w, tmp_path / f"w{w:04d}.npy", digest, n))
    return out


def test_weighted_sum_equals_numpy(tmp_path):
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(10_000).astype(np.float32) for _ in range(5)]
    samples = [3, 5, 2, 7, 1]
    files = _files(tmp_path, vectors, samples)
    expected = sum(np.float32(n / sum(samples)) * v for v, n in zip(vectors, samples))
    assert np.allclose(weighted_sum(files, 10_000), expected, rtol=1e-6, atol=1e-7)


def test_weighted_sum_of_a_slice_matches_the_whole(tmp_path):
    rng = np.random.default_rng(1)
    files = _files(tmp_path, [rng.standard_normal(1001).astype(np.float32) for _ in range(3)], [1, 2, 3])
    whole = weighted_sum(files, 1001)
    parts = [weighted_sum(files, 1001, lo=lo, hi=hi) for lo, hi in iter_slices(1001, 4)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_weighted_sum_is_in_worker_order(tmp_path):
    rng = np.random.default_rng(2)
    files = _files(tmp_path, [rng.standard_normal(500).astype(np.float32) for _ in range(4)], [1, 1, 1, 1])
    assert np.array_equal(weighted_sum(files, 500), weighted_sum(list(reversed(files)), 500))


def test_corrupt_worker_file_is_refused(tmp_path):
    files = _files(tmp_path, [np.ones(100, dtype=np.float32)] * 2, [1, 1])
    raw = bytearray(files[1].path.read_bytes())
    raw[-1] ^= 1
    files[1].path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFile, match="w0001"):
        weighted_sum(files, 100)


def test_wrong_length_file_is_refused(tmp_path):
    files = _files(tmp_path, [np.ones(100, dtype=np.float32), np.ones(99, dtype=np.float32)], [1, 1])
    with pytest.raises(CorruptFile, match="99 elements"):
        weighted_sum(files, 100)


def test_sgd_step_equals_torch_optimizer_over_two_steps():
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(50).astype(np.float32)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(2)]
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=1e-3)
    p, buf = p0, None
    for g in grads:
        param.grad = torch.from_numpy(g)
        opt.step()
        p, buf = sgd_step(p, g, buf, lr=0.1, momentum=0.9, weight_decay=1e-3)
    assert np.array_equal(p, param.detach().numpy())


def test_batch_norm_buffers_are_averaged_not_stepped():
    weights = np.arange(6, dtype=np.float32)
    average = np.full(6, 10.0, dtype=np.float32)
    new, _ = apply_update(weights, average, None, mode="sync", n_params=4, lr=0.1, momentum=0.0, weight_decay=0.0)
    assert np.allclose(new[:4], weights[:4] - 1.0, atol=1e-6)
    assert np.array_equal(new[4:], average[4:])


def test_average_mode_adds_the_mean_delta():
    weights = np.ones(4, dtype=np.float32)
    new, state = apply_update(weights, np.full(4, 0.5, dtype=np.float32), None, mode="average", n_params=4,
                              lr=0.1, momentum=0.9, weight_decay=0.0)
    assert np.array_equal(new, np.full(4, 1.5, dtype=np.float32)) and state is None


@pytest.mark.parametrize("transport,tol", [("float32", 0), ("float16", 1e-3), ("bfloat16", 1e-2)])
def test_transports_round_trip(transport, tol):
    v = np.linspace(-3, 3, 1000, dtype=np.float32)
    encoded = encode(v, transport)
    assert encoded.nbytes == v.nbytes // (1 if transport == "float32" else 2)
    assert np.allclose(decode_chunk(encoded), v, rtol=tol, atol=tol)


def test_flat_layout_round_trips_a_batch_norm_model():
    torch.manual_seed(0)
    model = build_model(ModelSpec("vgg19_cifar", 0.0625))
    layout = FlatLayout.of(model)
    flat = layout.flatten(model)
    assert flat.size == layout.size and layout.n_params == sum(p.numel() for p in model.parameters())
    other = build_model(ModelSpec("vgg19_cifar", 0.0625))
    layout.load(other, flat)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
