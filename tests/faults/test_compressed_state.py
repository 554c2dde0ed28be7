"""The compressed transports' state across environments: warm or cold, a worker writes the same bytes.

A worker's residual lives in S3 and its environment may keep it (storage/state.py); its weights
come from the previous round's plus the combiner's update when the environment holds them, else
from EFS (roles/worker.py). Which path a round takes depends on Lambda's routing, so the result
must not: a run whose every invocation lands in a fresh environment ends bit-identical to one
whose environment stays warm. The combiner's state, too: what a warm combiner keeps, and what a
sharded combine's shares read of it.
"""

from __future__ import annotations

import pytest

from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.protocol.errors import InvalidEvent
from lambdatrain.roles import warm, worker
from lambdatrain.storage import efs, state, traffic
from lambdatrain.training import feedback
from tests.faults.conftest import SETTINGS, assert_survived

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 8, "augment": False}


def _cold(system):
    """Every invocation in a fresh environment: forget what this process holds before each step."""
    step = system.step

    def cold_step() -> bool:
        worker._held.clear()
        state._held.clear()
        warm.forget()
        return step()

    system.step = cold_step
    return system


@pytest.mark.parametrize("transport", ["ternary_ef", "sign_ef"])
def test_cold_environments_end_bit_identical_to_a_warm_one(make_system, reference, transport):
    settings = {**SETTINGS, "transport": transport, "combine_shards": 2}
    system = _cold(make_system())
    traffic.reset()
    run = system.invoke("starter", {"start": True, **settings})["run"]
    system.run_to_end(run)
    assert traffic.totals()["state"]["read"] > 0  # the residuals came back from the bucket
    assert_survived(system, run, reference(settings))


def test_warm_worker_reads_the_compressed_update_not_the_weights(make_system):
    settings = {**SETTINGS, "transport": "ternary_ef"}
    system = make_system()
    worker._held.clear()
    traffic.reset()
    run = system.invoke("starter", {"start": True, **settings})["run"]
    system.run_to_end(run)
    record = system.ledger.get_run(run)
    weights_file = efs.RunLayout(system.mount, run).weights(0).stat().st_size
    # Read in full: by the combiner for round 0 (it keeps the later rounds', warm.py), by the
    # first worker of round 0 (cold), and by the end-of-run export; every later round's workers
    # built theirs from the update, which they read from the bucket (storage/state.py): this one
    # process holds its residuals and its combiner its state, so those are its only S3 reads.
    assert traffic.totals()["weights"]["read"] == 3 * weights_file
    size = efs.array_length(efs.RunLayout(system.mount, run).weights(0))
    update = feedback.update_nbytes(size, record.n_params, COMPRESSED["ternary_ef"])
    # Once a round: the first worker of the round rebuilds the weights, the others find them held.
    assert traffic.totals()["state"]["read"] == (record.round - 1) * (128 + update)


def test_compressed_start_on_a_stack_without_a_bucket_is_one_line_and_writes_nothing(make_system):
    system = make_system(bucket=None)
    with pytest.raises(InvalidEvent, match=r"^invalid field 'transport': sign_ef keeps each worker's residual in "
                                           r"the stack's bucket, and this stack has none \(LAMBDATRAIN_BUCKET"):
        system.invoke("starter", {"start": True, **SETTINGS, "transport": "sign_ef"})
    assert not (system.mount / "runs").exists() and system.ledger.list_runs() == []


def test_pruned_residuals_leave_no_hidden_version_in_the_versioned_bucket(make_system):
    """A plain delete in a versioned bucket only hides the bytes, which S3 keeps billing; the
    combiner deletes every version by its id, so what is left are the kept rounds' objects."""
    import boto3

    settings = {**SETTINGS, "transport": "ternary_ef", "keep_rounds": 1}
    system = make_system()
    run = system.invoke("starter", {"start": True, **settings})["run"]
    system.run_to_end(run)
    bucket = system.settings.bucket
    listing = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=f"state/{run}/")
    assert not listing.get("DeleteMarkers")
    assert listing["Versions"] and all(v["IsLatest"] for v in listing["Versions"])
    rounds = sorted({int(v["Key"].rsplit("/r", 1)[1].removesuffix(".npy")) for v in listing["Versions"]})
    record = system.ledger.get_run(run)
    # Kept: the epoch boundaries (checkpoints to resume from; round 0's update among them) and the
    # newest rounds; the rest went.
    assert set(rounds) < set(range(0, record.round + 1))
    assert all(r % record.rounds_per_epoch == 0 or r >= record.round - 1 for r in rounds), rounds


def _combiner_state_reads(monkeypatch) -> list[tuple[str, int, int, int]]:
    """(name, slice, round, elements) of every read of the combiner's state from the bucket."""
    reads, get = [], state.StateStore.get_combiner

    def counted(self, run, name, shard, round_no, size):
        reads.append((name, shard, round_no, size))
        return get(self, run, name, shard, round_no, size)

    monkeypatch.setattr(state.StateStore, "get_combiner", counted)
    return reads


@pytest.mark.parametrize("transport", ["ternary_ef", "float32"])
def test_a_warm_combiner_reads_none_of_its_own_state_back_and_ends_bit_identical(make_system, reference, transport,
                                                                                 monkeypatch):
    """The combiner keeps the weights, momentum and residual it wrote (roles/warm.py): warm, it
    reads them from EFS (or, compressed, the bucket) only for round 0, which the starter wrote; the
    run ends where a run whose combiner is cold every round (reading every file back) ends."""
    settings = {**SETTINGS, "transport": transport}
    system = make_system()
    bucket_reads = _combiner_state_reads(monkeypatch)
    traffic.reset()
    run = system.invoke("starter", {"start": True, **settings})["run"]
    system.run_to_end(run)
    warm_reads = traffic.totals()
    assert_survived(system, run, reference(settings))
    record = system.ledger.get_run(run)
    assert record.round > 2
    weights_file = efs.RunLayout(system.mount, run).weights(0).stat().st_size
    assert warm_reads.get("optim", {}).get("read", 0) == 0 and bucket_reads == []
    # Round 0's by the combiner; by the workers of round 0 (compressed: the first, then it holds
    # them) or of every round (float32); and the end-of-run export's.
    worker_reads = 1 if transport == "ternary_ef" else record.round * settings["workers"]
    assert warm_reads["weights"]["read"] == (1 + worker_reads + 1) * weights_file

    cold = make_system()
    step = cold.step

    def cold_combiner() -> bool:
        warm.forget()
        return step()

    cold.step = cold_combiner
    traffic.reset()
    run = cold.invoke("starter", {"start": True, **settings})["run"]
    cold.run_to_end(run)
    if transport == "float32":
        assert traffic.totals()["optim"]["read"] > 0
    else:  # each round's momentum and residual, from the bucket (round 0 starts from zeros)
        rounds = cold.ledger.get_run(run).round
        assert sorted(bucket_reads) == sorted((name, 0, r, record.n_params) for r in range(1, rounds)
                                              for name in ("momentum", "residual"))
    assert_survived(cold, run, reference(settings))


@pytest.mark.parametrize("transport", ["float32", "ternary_ef"])
def test_each_share_reads_only_its_slice_of_the_weights_and_state(make_system, transport, monkeypatch):
    """S shares read the weights and momentum files once between them, not S times: each its own
    slice (checked by the slice's checksum, recorded when the file was written, by the starter for
    round 0's weights), and the last share the S slices back to assemble them. A compressed run's
    momentum and residual are per-slice objects in the bucket, which each share stores and reads
    back itself (nothing to assemble). The planner prices exactly this (planner.efs_bytes)."""
    shards, system = 3, make_system()
    bucket_reads = _combiner_state_reads(monkeypatch)
    traffic.reset()
    run = system.invoke("starter", {"start": True, "workers": 2, "epochs": 1, "run": "sliced", **SMALL,
                                    "keep_rounds": 100, "max_train_samples": 128, "combine_shards": shards,
                                    "transport": transport})["run"]
    system.drain()
    moved = traffic.totals()  # before this test's own reads below
    record = system.ledger.get_run(run)
    assert record.state == "done" and record.round >= 2
    paths = efs.RunLayout(system.mount, run)  # every round's state files kept (keep_rounds)
    header = paths.weights(0).stat().st_size - 4 * efs.array_length(paths.weights(0))  # a .npy header: 128 bytes
    if transport == "float32":
        # Every round's slice files are the same sizes; retention has pruned all but the last round's.
        slices = [p.stat().st_size for p in paths.round_dir(record.round - 1).glob("optim-s*.npy")]
        assert len(slices) == shards
        # Rounds 1 on (round 0 starts without momentum): the shares' slices of the file, each
        # after the header; every round, the last share's read of the S slice files.
        shares = sum(paths.optim(r).stat().st_size - header + shards * header for r in range(1, record.round))
        assembled = record.round * sum(slices)
        assert moved["optim"]["read"] == shares + assembled
        assert len(efs.read_digest(paths.optim(1)).ranges) == shards
        assert bucket_reads == []
    else:
        assert "optim" not in moved and not list(paths.round_dir(record.round - 1).glob("optim-s*"))
        # Rounds 1 on: each share its own slice of each, once; the slices tile the parameters.
        sizes = {}
        for name, shard, r, size in bucket_reads:
            assert sizes.setdefault((name, shard), size) == size
        assert sorted(bucket_reads) == sorted((name, s, r, sizes[name, s]) for r in range(1, record.round)
                                              for name in ("momentum", "residual") for s in range(shards))
        assert sum(sizes["momentum", s] for s in range(shards)) == record.n_params
    # The weights too, from round 0's (the starter's): each share its slice, the last the S slices.
    whole = paths.weights(0).stat().st_size
    slices = [p.stat().st_size for p in paths.round_dir(record.round - 1).glob("combined-s*.npy")]
    assert len(efs.read_digest(paths.weights(0)).ranges) == shards
    # Each share also reads the header alone first, for the vector's length (efs.array_length).
    combiner = record.round * (whole - header + 2 * shards * header + sum(slices))
    # The workers' (float32: each, every round; ternary_ef: the first of round 0, which this one
    # process then holds, as test_a_warm_combiner_reads_none... says) and the export's.
    others = ((record.round * 2 if transport == "float32" else 1) + 1) * whole
    assert moved["weights"]["read"] == combiner + others
