"""Compressed rounds with error feedback (training/feedback.py) and the workers' residual store
(storage/state.py), checked against plain NumPy oracles: decode, subtract, add."""

from __future__ import annotations

import boto3
import numpy as np
import pytest
from moto import mock_aws

from lambdatrain.storage import state, traffic
from lambdatrain.storage.state import MissingState, StateStore
from lambdatrain.training import feedback
from lambdatrain.training.compress import decode, payload_nbytes
from lambdatrain.training.step import apply_update as float_step

CODECS = ["ternary", "sign"]
SGD = {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}


def _vector(rng, n):
    return (rng.standard_normal(n) * rng.uniform(0.01, 2)).astype(np.float32)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("n_params, buffers", [(1, 0), (239, 3), (1000, 17), (5 * 256 + 7, 1)])
def test_result_file_is_the_payload_of_corrected_then_the_buffers_and_keeps_what_it_could_not_say(codec, n_params,
                                                                                                    buffers):
    rng = np.random.default_rng(n_params)
    vector, residual = _vector(rng, n_params + buffers), _vector(rng, n_params)
    data, new_residual = feedback.pack(vector, n_params, codec, residual)
    plen = payload_nbytes(n_params, codec)
    assert data.dtype == np.uint8 and data.size == feedback.file_nbytes(n_params, n_params + buffers, codec)
    corrected = vector[:n_params] + residual
    decoded = decode(data[:plen], n_params, codec)
    assert np.array_equal(new_residual, corrected - decoded)  # error feedback: nothing is lost, only late
    assert np.array_equal(data[plen:].view("<f4"), vector[n_params:])  # buffers travel exactly
    first, _ = feedback.pack(vector, n_params, codec, None)  # no residual: zeros
    assert np.array_equal(decode(first[:plen], n_params, codec), decode(feedback.pack(
        vector, n_params, codec, np.zeros(n_params, np.float32))[0][:plen], n_params, codec))


@pytest.mark.parametrize("codec", CODECS)
def test_decoded_payloads_sum_to_the_inputs_sum_minus_the_last_residual(codec):
    rng = np.random.default_rng(1)
    residual, sent, total = None, np.zeros(700, np.float64), np.zeros(700, np.float64)
    for _ in range(30):
        g = _vector(rng, 700)
        data, residual = feedback.pack(g, 700, codec, residual)
        sent += decode(data, 700, codec)
        total += g
    np.testing.assert_allclose(sent + residual, total, rtol=0, atol=1e-4)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("n_params, size, shards", [(1000, 1010, 3), (256 * 4, 256 * 4 + 5, 4), (300, 302, 5),
                                                    (10, 12, 3)])
def test_slices_tile_the_vector_on_block_boundaries_and_their_bytes_tile_the_file(codec, n_params, size, shards):
    bounds = feedback.slices(n_params, size, shards, codec)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    ranges = [feedback.byte_range(lo, hi, n_params, size, codec) for lo, hi in bounds]
    assert ranges[0][0] == 0 and ranges[-1][1] == feedback.file_nbytes(n_params, size, codec)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("mode", ["sync", "average"])
def test_sharded_combine_step_is_bit_identical_to_one_combiner_and_workers_rebuild_its_weights(codec, mode):
    rng = np.random.default_rng(7)
    n_params, size, workers = 256 * 6 + 11, 256 * 6 + 11 + 4, 3
    weights = _vector(rng, size)
    momentum, residual = _vector(rng, n_params), _vector(rng, n_params) * np.float32(0.01)
    files = [feedback.pack(_vector(rng, size), n_params, codec, _vector(rng, n_params))[0] for _ in range(workers)]
    share = [np.float32(s) for s in (0.5, 0.25, 0.25)]

    def combine(lo, hi):
        a, b = feedback.byte_range(lo, hi, n_params, size, codec)
        acc = np.zeros(hi - lo, np.float32)
        for f, w in zip(files, share):
            feedback.add_slice(f[a:b], lo, hi, n_params, codec, acc, w)
        k = max(0, min(hi, n_params) - lo)
        return feedback.step_slice(weights[lo:hi], acc, momentum[lo:lo + k], residual[lo:lo + k], mode=mode,
                                   n_params=k, lr=0.05, sgd=SGD, codec=codec)

    whole = combine(0, size)
    parts = [combine(lo, hi) for lo, hi in feedback.slices(n_params, size, 4, codec)]
    for i in range(4):  # weights, momentum, residual, update data: the slices laid end to end
        assert np.array_equal(np.concatenate([p[i] for p in parts]), whole[i])
    new, _, new_residual, update = whole
    # Oracle of the sum: decode each file in full and add in worker order.
    plen = payload_nbytes(n_params, codec)
    average = np.zeros(size, np.float32)
    for f, w in zip(files, share):
        average[:n_params] += w * decode(f[:plen], n_params, codec)
        average[n_params:] += w * f[plen:].view("<f4")
    stepped, _ = float_step(weights, average, momentum, mode=mode, n_params=n_params, lr=0.05, sgd=SGD)
    intended = stepped[:n_params] - weights[:n_params] if mode == "sync" else average[:n_params]
    sent = decode(update[:plen], n_params, codec)
    assert np.array_equal(new_residual, (intended + residual) - sent)  # the combiner's error feedback
    assert np.array_equal(new[:n_params], weights[:n_params] + sent)  # what it applied is what it sent
    assert np.array_equal(new[n_params:], stepped[n_params:])  # buffers: the workers' average
    assert np.array_equal(feedback.apply_update(weights, update, n_params, codec), new)  # a warm worker's copy


def test_update_of_the_wrong_length_is_refused():
    weights = np.zeros(300, np.float32)
    with pytest.raises(ValueError, match="has 72 bytes, got 71"):
        feedback.apply_update(weights, np.zeros(71, np.uint8), 300, "sign")


@pytest.fixture
def store():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="stack")
        s3.put_bucket_versioning(Bucket="stack", VersioningConfiguration={"Status": "Enabled"})  # as the stack's
        state._held.clear()
        yield StateStore(s3, "stack", "state/", "xxh3_128", "lambdatrain-state", "round"), s3
        state._held.clear()


def test_residual_round_trips_through_the_bucket_under_its_round_key(store):
    residuals, s3 = store
    r = np.arange(10, dtype=np.float32)
    residuals.put("run-a", 3, 5, r)
    assert s3.list_objects_v2(Bucket="stack")["Contents"][0]["Key"] == "state/run-a/w0003/r000005.npy"
    state._held.clear()  # another environment: read from S3
    traffic.reset()
    assert np.array_equal(residuals.get("run-a", 3, 5, 10), r)
    assert traffic.totals()["state"]["read"] == 128 + 40  # .npy header and data, counted as state


def test_residual_larger_than_a_part_moves_in_parts_and_comes_back_whole(store):
    residuals, s3 = store
    r = np.random.default_rng(0).standard_normal((state.PART_BYTES * 5 // 2) // 4).astype(np.float32)
    residuals.put("run-a", 1, 2, r)
    state._held.clear()
    assert np.array_equal(residuals.prefetch("run-a", 1, 2, r.size).result(), r)


def _tags(s3, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="stack", Key=key)["TagSet"]}


@pytest.mark.parametrize("size", [10, (state.PART_BYTES * 3 // 2) // 4])  # one request; a multipart upload
def test_every_residual_is_written_tagged_for_the_lifecycle_rule_to_expire(store, size):
    residuals, s3 = store
    residuals.put("run-a", 2, 7, np.ones(size, np.float32))
    assert _tags(s3, residuals.key("run-a", 2, 7)) == {"lambdatrain-state": "round"}


def test_retag_marks_the_residuals_of_the_rounds_that_exist_and_skips_the_rest(store):
    residuals, s3 = store
    for worker in (0, 1):
        residuals.put("run-a", worker, 4, np.ones(3, np.float32))
    residuals.put("run-a", 0, 5, np.ones(3, np.float32))  # round 4 half done: worker 1 has no round 5 yet
    residuals.put("run-a", 0, 3, np.ones(3, np.float32))  # not asked for
    assert residuals.retag("run-a", [4, 5], "kept") == 3
    for worker, r in ((0, 4), (1, 4), (0, 5)):
        assert _tags(s3, residuals.key("run-a", worker, r)) == {"lambdatrain-state": "kept"}
    assert _tags(s3, residuals.key("run-a", 0, 3)) == {"lambdatrain-state": "round"}


def test_environment_that_wrote_a_residual_reads_it_without_a_request(store):
    residuals, s3 = store
    residuals.put("run-a", 0, 1, np.ones(4, np.float32))
    s3.delete_object(Bucket="stack", Key=residuals.key("run-a", 0, 1))  # would fail a GET
    assert np.array_equal(residuals.get("run-a", 0, 1, 4), np.ones(4, np.float32))
    assert residuals.get("run-a", 0, 0, 4) is None  # round 0 starts from zeros


def test_missing_or_damaged_residual_is_a_clear_error_not_zeros(store):
    residuals, s3 = store
    with pytest.raises(MissingState, match=r"worker 2's residual for round 4 is not in the bucket"):
        residuals.get("run-a", 2, 4, 10)
    residuals.put("run-a", 2, 4, np.ones(10, np.float32))
    state._held.clear()
    key = residuals.key("run-a", 2, 4)
    body = bytearray(s3.get_object(Bucket="stack", Key=key)["Body"].read())
    body[-1] ^= 1
    meta = s3.head_object(Bucket="stack", Key=key)["Metadata"]
    s3.put_object(Bucket="stack", Key=key, Body=bytes(body), Metadata=meta)
    with pytest.raises(MissingState, match="does not match its checksum"):
        residuals.get("run-a", 2, 4, 10)


def test_prune_deletes_every_workers_residual_of_the_rounds(store):
    residuals, s3 = store
    for w in range(3):
        for r in (1, 2, 3):
            residuals.put("run-a", w, r, np.zeros(2, np.float32))
    residuals.put("run-a", 1, 2, np.ones(2, np.float32))  # a re-driven worker's second PUT: a second version
    residuals.put("run-b", 0, 1, np.zeros(2, np.float32))  # another run's, never touched
    assert residuals.prune("run-a", [1, 2, 9]) == 7  # round 9 was never written: no error
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="stack")["Contents"])
    assert keys == [residuals.key("run-a", w, 3) for w in range(3)] + [residuals.key("run-b", 0, 1)]
    # Gone for good: no hidden version is left to bill, and no delete marker stands in for one.
    listing = s3.list_object_versions(Bucket="stack")
    assert sorted(v["Key"] for v in listing["Versions"]) == keys and not listing.get("DeleteMarkers")


def test_combiner_state_and_update_round_trip_under_their_own_keys_and_follow_the_rounds(store):
    """The combiner's momentum and residual slices and the update live beside the workers'
    residuals (storage/state.py): each under its owner and round, checked on the way back, and
    retagged and pruned with the round whatever its owner."""
    residuals, s3 = store
    momentum, update = np.arange(6, dtype=np.float32), np.arange(9, dtype=np.uint8)
    residuals.put_combiner("run-a", "momentum", 2, 5, momentum)
    residuals.put_combiner("run-a", "residual", 2, 5, -momentum)
    residuals.put_update("run-a", 4, update)
    residuals.put("run-a", 0, 5, np.ones(3, np.float32))
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="stack")["Contents"])
    assert keys == ["state/run-a/momentum-s002/r000005.npy", "state/run-a/residual-s002/r000005.npy",
                    "state/run-a/update/r000004.npy", "state/run-a/w0000/r000005.npy"]
    assert np.array_equal(residuals.get_combiner("run-a", "momentum", 2, 5, 6), momentum)
    assert np.array_equal(residuals.get_combiner("run-a", "residual", 2, 5, 6), -momentum)
    assert np.array_equal(residuals.get_update("run-a", 4, 9), update)
    with pytest.raises(MissingState, match=r"holds uint8 \(9,\), not 10 uint8"):
        residuals.get_update("run-a", 4, 10)
    with pytest.raises(MissingState, match=r"the combiner's momentum \(slice 1\) for round 5 is not in the bucket"):
        residuals.get_combiner("run-a", "momentum", 1, 5, 6)
    with pytest.raises(ValueError, match="one of momentum, residual"):
        residuals.put_combiner("run-a", "weights", 0, 5, momentum)
    assert residuals.retag("run-a", [5], "kept") == 3  # round 5's three, not round 4's update
    assert _tags(s3, "state/run-a/momentum-s002/r000005.npy") == {"lambdatrain-state": "kept"}
    assert _tags(s3, "state/run-a/update/r000004.npy") == {"lambdatrain-state": "round"}
    assert residuals.prune("run-a", [4, 5]) == 4
    assert "Contents" not in s3.list_objects_v2(Bucket="stack")
