"""The combine math: flat vectors (flat.py), streaming weighted sums (reduce.py), the optimizer step
(step.py), transports (codec.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lambdatrain.storage import efs as efs
from lambdatrain.training import reduce
from lambdatrain.training.codec import decode_chunk, encode
from lambdatrain.training.flat import FlatLayout, iter_slices
from lambdatrain.training.reduce import WorkerFile, weighted_sum
from lambdatrain.training.step import apply_update, learning_rate, sgd_options, sgd_step
from lambdatrain.protocol.errors import CorruptFile
from lambdatrain.training.model import ModelSpec, build_model
from lambdatrain.protocol.config import parse_config


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


@pytest.mark.parametrize("transport", ["float32", "float16", "bfloat16"])
def test_many_chunk_files_in_groups_sum_exactly_as_one_file_at_a_time(tmp_path, monkeypatch, transport):
    # 4 KB chunks and groups of three files: every file spans several chunks, so each ring of read
    # buffers comes round many times and is reused by the next group; the first file's terms are
    # written into the accumulator, the others added, all in worker order.
    monkeypatch.setattr(reduce, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(reduce, "_parallel_reads", lambda size, lo, hi: 3)
    rng = np.random.default_rng(4)
    size, samples = 10_007, [3, 5, 2, 7, 1, 4, 6]
    vectors = [decode_chunk(encode(rng.standard_normal(size).astype(np.float32), transport)) for _ in samples]
    files = []
    for w, (v, n) in enumerate(zip(vectors, samples)):
        path = tmp_path / f"w{w:04d}.npy"
        slices = efs.range_digests(encode(v, transport), list(iter_slices(size, 3)))
        files.append((WorkerFile(w, path, efs.write_array(path, encode(v, transport)), n), slices))
    expected = np.float32(samples[0] / sum(samples)) * vectors[0]
    for v, n in zip(vectors[1:], samples[1:]):
        expected += np.float32(n / sum(samples)) * v
    assert np.array_equal(weighted_sum([f for f, _ in files], size), expected)
    for s, (lo, hi) in enumerate(iter_slices(size, 3)):  # a sharded combine's share reads only its slice
        shard = [WorkerFile(f.worker, f.path, f.digest, f.samples, slices[s]) for f, slices in files]
        assert np.array_equal(weighted_sum(shard, size, lo=lo, hi=hi), expected[lo:hi])


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


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step_equals_torch_optimizer_over_two_steps(nesterov):
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(50).astype(np.float32)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(2)]
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    p, buf = p0, None
    sgd = sgd_options(parse_config({"workers": 1, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": nesterov}))
    for g in grads:
        param.grad = torch.from_numpy(g)
        opt.step()
        p, buf = sgd_step(p, g, buf, lr=0.1, sgd=sgd)
    assert np.array_equal(p, param.detach().numpy())


def test_stepping_does_not_import_torchs_compiler():
    # torch.optim.SGD's first construction in a process imports torch._dynamo (about 1 s of CPU):
    # a cold combiner's first round would pay it. A fresh interpreter, so no other test imported it.
    code = ("import sys, numpy as np; from lambdatrain.training.step import sgd_step; "
            "sgd_step(np.ones(4, np.float32), np.ones(4, np.float32), None, lr=0.1, "
            "sgd={'momentum': 0.9, 'weight_decay': 1e-4, 'nesterov': True}); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_nesterov_changes_the_second_step():
    rng = np.random.default_rng(4)
    p0, g = rng.standard_normal(20).astype(np.float32), rng.standard_normal(20).astype(np.float32)
    ends = []
    for nesterov in (False, True):
        sgd = sgd_options(parse_config({"workers": 1, "nesterov": nesterov}))
        p, buf = sgd_step(p0, g, None, lr=0.1, sgd=sgd)
        ends.append(sgd_step(p, g, buf, lr=0.1, sgd=sgd)[0])
    assert not np.array_equal(*ends)


def test_cosine_schedule_is_torchs_cosine_annealing_one_step_per_round():
    config = parse_config({"workers": 2, "epochs": 3, "lr": 0.1, "lr_schedule": "cosine"})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3 * 7)
    for round_no in range(3 * 7):
        assert learning_rate(config, round_no, 7) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()
    assert learning_rate(config, 3 * 7 - 1, 7) < 0.01 * 0.1  # the last round barely moves the weights


def test_warmup_rises_linearly_then_the_schedule_starts_from_the_peak():
    cosine = parse_config({"workers": 2, "epochs": 2, "lr": 0.4, "lr_schedule": "cosine", "warmup_epochs": 0.5})
    assert [learning_rate(cosine, r, 8) for r in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert learning_rate(cosine, 4, 8) == pytest.approx(0.4)  # cosine over the remaining 12 rounds
    assert learning_rate(cosine, 10, 8) == pytest.approx(0.2)
    constant = parse_config({"workers": 2, "epochs": 2, "lr": 0.4, "warmup_epochs": 0.25})
    assert [learning_rate(constant, r, 8) for r in (0, 1, 2, 15)] == pytest.approx([0.2, 0.4, 0.4, 0.4])
    assert learning_rate(parse_config({"workers": 2, "lr": 0.4}), 99, 8) == 0.4


def test_batch_norm_buffers_are_averaged_not_stepped():
    weights = np.arange(6, dtype=np.float32)
    average = np.full(6, 10.0, dtype=np.float32)
    new, _ = apply_update(weights, average, None, mode="sync", n_params=4, lr=0.1, sgd={"momentum": 0.0, "weight_decay": 0.0})
    assert np.allclose(new[:4], weights[:4] - 1.0, atol=1e-6)
    assert np.array_equal(new[4:], average[4:])


def test_average_mode_adds_the_mean_delta():
    weights = np.ones(4, dtype=np.float32)
    new, state = apply_update(weights, np.full(4, 0.5, dtype=np.float32), None, mode="average", n_params=4,
                              lr=0.1, sgd={"momentum": 0.9, "weight_decay": 0.0})
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


def _payload_files(tmp_path, codec, n_params, size, samples, seed=0):
    """Worker result files of a compressed transport (feedback.pack, as roles/worker.py writes
    them) and their data, in worker order."""
    from lambdatrain.training import feedback

    rng = np.random.default_rng(seed)
    files, datas = [], []
    for w, n in enumerate(samples):
        data, _ = feedback.pack(rng.standard_normal(size, dtype=np.float32), n_params, codec, None)
        path = tmp_path / f"{codec}-w{w:04d}.npy"
        files.append(WorkerFile(w, path, efs.write_array(path, data), n))
        datas.append(data)
    return files, datas


@pytest.mark.parametrize("codec", ["ternary", "sign"])
@pytest.mark.parametrize("shards", [1, 3])
def test_a_compressed_sum_in_threads_is_bit_identical_to_one_thread_and_to_decoding_in_worker_order(
        tmp_path, codec, shards):
    from lambdatrain.training import feedback
    from lambdatrain.training.compress import decode

    n_params, size = 9 * 256 * 7 + 13, 9 * 256 * 7 + 13 + 11  # a partial last block, then 11 buffers
    samples = [5, 3, 8, 1, 7]
    files, datas = _payload_files(tmp_path, codec, n_params, size, samples)
    total = sum(samples)
    for lo, hi in feedback.slices(n_params, size, shards, codec):
        # The oracle: every file decoded whole, weighted, added in worker order, then sliced.
        oracle = np.zeros(size, dtype=np.float32)
        for data, n in zip(datas, samples):
            whole = np.empty(size, dtype=np.float32)
            plen = feedback.payload_nbytes(n_params, codec)
            decode(data[:plen], n_params, codec, out=whole[:n_params])
            whole[n_params:] = data[plen:].view("<f4")
            oracle += np.float32(n / total) * whole
        one = reduce.compressed_sum(files, lo=lo, hi=hi, n_params=n_params, size=size, codec=codec, threads=1)
        assert np.array_equal(one, oracle[lo:hi])
        for threads in (2, 3, 5):
            spans = reduce.decode_spans(lo, hi, n_params, codec, threads)
            assert len(spans) > 1 or hi - lo < 2 * 256
            many = reduce.compressed_sum(files, lo=lo, hi=hi, n_params=n_params, size=size, codec=codec,
                                         threads=threads)
            assert many.tobytes() == one.tobytes()


@pytest.mark.parametrize("codec", ["ternary", "sign"])
@pytest.mark.parametrize("lo,hi,n_params,parts", [(0, 10_000, 10_000, 3), (480, 9_613, 9_600, 4), (0, 100, 90, 8),
                                                  (9_600, 9_613, 9_600, 4), (0, 7_680, 10_000, 2)])
def test_decode_spans_tile_the_slice_on_block_boundaries_buffers_last(codec, lo, hi, n_params, parts):
    from lambdatrain.training.compress.layout import codec_of

    block = codec_of(codec).block
    lo = lo // block * block if lo < n_params else lo  # a share's slice starts on a block
    spans = reduce.decode_spans(lo, hi, n_params, codec, parts)
    assert spans[0][0] == lo and spans[-1][1] == hi and len(spans) <= parts
    assert all(x < y for x, y in spans) and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(y % block == 0 for _, y in spans[:-1])  # every inner boundary on a block
    assert all(y <= n_params for _, y in spans[:-1])  # the buffers only in the last span


def test_a_compressed_sums_spans_are_decoded_at_the_same_time(tmp_path, monkeypatch):
    """Two spans of each file meet at a barrier inside the decode: one thread at a time would
    wait there forever (the barrier's timeout turns that into a failure)."""
    import threading

    from lambdatrain.training import feedback

    n_params = size = 4 * 256 * 8
    files, _ = _payload_files(tmp_path, "sign", n_params, size, [1, 1, 1])
    barrier, real, seen = threading.Barrier(2, timeout=10), feedback.add_slice, set()

    def meeting(*args, **kwargs):
        seen.add(threading.current_thread().name)
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(feedback, "add_slice", meeting)
    threaded = reduce.compressed_sum(files, lo=0, hi=size, n_params=n_params, size=size, codec="sign", threads=2)
    monkeypatch.setattr(feedback, "add_slice", real)
    alone = reduce.compressed_sum(files, lo=0, hi=size, n_params=n_params, size=size, codec="sign", threads=1)
    assert threaded.tobytes() == alone.tobytes() and len(seen) == 2


def test_a_corrupt_result_fails_a_threaded_compressed_sum_with_its_path(tmp_path):
    n_params = size = 4 * 256 * 8
    files, _ = _payload_files(tmp_path, "ternary", n_params, size, [2, 2, 2, 2])
    raw = bytearray(files[2].path.read_bytes())
    raw[-5] ^= 0xFF
    files[2].path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFile) as err:
        reduce.compressed_sum(files, lo=0, hi=size, n_params=n_params, size=size, codec="ternary", threads=3)
    assert err.value.path == files[2].path


def test_a_compressed_sum_takes_a_thread_per_core_for_large_slices_only(monkeypatch):
    monkeypatch.setattr(reduce, "cores_available", lambda: 6)
    assert reduce.decode_threads(20_000_000) == 6
    assert reduce.decode_threads(3 * reduce.MIN_DECODE_SPAN) == 3
    assert reduce.decode_threads(reduce.MIN_DECODE_SPAN - 1) == 1
    monkeypatch.setattr(reduce, "cores_available", lambda: 64)
    assert reduce.decode_threads(10**9) == reduce.MAX_DECODE_THREADS
