"""The byte counter of the storage layer: categories by path, counts from real calls, the dump."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lambdatrain.storage import efs, traffic


@pytest.fixture(autouse=True)
def clean_counter(monkeypatch):
    monkeypatch.delenv(traffic.ENV_DIR, raising=False)
    traffic.reset()
    yield
    traffic.reset()


def test_categories_follow_the_run_layout(tmp_path):
    paths = efs.RunLayout(tmp_path, "run")
    assert traffic.category(paths.weights(3)) == "weights"
    assert traffic.category(paths.optim(3)) == "optim"
    assert traffic.category(paths.result(3, 7)) == "results"
    assert traffic.category(paths.metric(3)) == "metric"
    assert traffic.category(paths.config) == "config"
    assert traffic.category(efs.digest_path(paths.weights(3))) == "digests"
    assert traffic.category(paths.shard(3, 1)) == "weights"
    assert traffic.category(paths.shard_optim(3, 1)) == "optim"
    assert traffic.category(paths.shard_update(3, 1)) == "update"
    assert traffic.category(efs.digest_path(paths.shard_update(3, 1))) == "digests"
    assert traffic.category(tmp_path / "elsewhere.npy") == "other"


def test_array_round_trip_counts_the_file_bytes_both_ways(tmp_path):
    path = efs.RunLayout(tmp_path, "run").weights(0)
    digest = efs.write_array(path, np.arange(1001, dtype=np.float32))
    written = traffic.totals()
    assert written["weights"]["write"] == path.stat().st_size == digest.bytes
    assert written["digests"]["write"] == efs.digest_path(path).stat().st_size
    efs.read_array(path)  # reads the sidecar, then the file
    read = traffic.totals()
    assert read["weights"]["read"] == path.stat().st_size
    assert read["digests"]["read"] == efs.digest_path(path).stat().st_size


def test_a_range_read_counts_header_and_slice_only(tmp_path):
    path = efs.RunLayout(tmp_path, "run").result(0, 1)
    array = np.arange(4096, dtype=np.float32)
    efs.write_array(path, array)
    traffic.reset()
    [checksum] = efs.range_digests(array, [(100, 300)])
    chunks = list(efs.stream_range(path, 100, 300, checksum))
    header = path.stat().st_size - array.nbytes
    assert sum(c.nbytes for c in chunks) == 800
    assert traffic.totals() == {"results": {"read": header + 800}}


def test_json_counts_are_utf8_bytes(tmp_path):
    path = efs.RunLayout(tmp_path, "run").metric(2)
    efs.write_json(path, {"name": "é" * 3, "loss": 1.5})
    assert efs.read_json(path)["name"] == "ééé"
    size = path.stat().st_size
    assert traffic.totals() == {"metric": {"read": size, "write": size}}


def test_mapped_dataset_counts_the_mapped_length(tmp_path):
    np.save(tmp_path / "train_x.npy", np.zeros((10, 4, 4, 3), dtype=np.uint8))
    array = np.load(tmp_path / "train_x.npy", mmap_mode="r")
    traffic.mapped(tmp_path / "train_x.npy", array)
    # The header (128 bytes) sits in the first page, so mmap maps it too: the whole file.
    assert traffic.totals() == {"datasets": {"mapped": (tmp_path / "train_x.npy").stat().st_size}}


def test_dump_is_written_per_process_only_when_asked(tmp_path, monkeypatch):
    path = efs.RunLayout(tmp_path, "run").config
    efs.write_json(path, {"a": 1})
    assert not (tmp_path / "dumps").exists() and traffic.by_path() == {}
    monkeypatch.setenv(traffic.ENV_DIR, str(tmp_path / "dumps"))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lt-worker")
    efs.read_json(path)
    [dump] = (tmp_path / "dumps").glob("lt-worker-*.json")
    record = json.loads(dump.read_text())
    size = path.stat().st_size
    assert record["function"] == "lt-worker"
    assert record["totals"] == {"config": {"read": size, "write": size}}
    assert record["paths"] == {str(path): {"read": size}}  # per path only since asked


def test_bench_attributes_next_rounds_state_to_the_combine_that_wrote_it():
    from bench.traffic import round_of

    assert round_of("/m/runs/a/weights/r000003.npy", "read") == 3
    assert round_of("/m/runs/a/weights/r000003.npy.digest.json", "write") == 2
    assert round_of("/m/runs/a/optim/r000003.npy", "write") == 2
    assert round_of("/m/runs/a/rounds/r000003/w0001.npy", "write") == 3
    assert round_of("/m/runs/a/config.json", "read") is None


def test_bench_attributes_the_update_to_the_round_that_reads_it_and_a_workers_residual_to_its_writer():
    from bench.traffic import kind, round_of

    # round 3's combine writes state/a/update/r000003.npy; round 4's warm workers read it
    update = "s3://bucket/state/a/update/r000003.npy"
    assert round_of(update, "write") == 3 and round_of(update, "read") == 4
    assert round_of("/m/runs/a/rounds/r000003/update-s001.npy", "read") == 3  # a shard's slice, same combine
    # a worker in round 3 reads the residual it starts round 3 with and writes round 4's
    key = "s3://bucket/state/a/w0001/r000004.npy"
    assert round_of(key, "write") == 3 and round_of(key.replace("r000004", "r000003"), "read") == 3
    # the combine of round 3 reads its momentum (and residual) of round 3 and writes round 4's
    momentum = "s3://bucket/state/a/momentum-s000/r000004.npy"
    assert round_of(momentum, "write") == 3 and round_of(momentum.replace("r000004", "r000003"), "read") == 3
    assert kind(key) == kind(update) == "state" and kind("/m/runs/a/rounds/r000003/update-s000.npy") == "update"


def _worker_dump(pid: int, moved: dict[str, dict[str, int]]) -> dict:
    return {"function": "worker", "pid": pid, "totals": {}, "paths": moved}


def test_bench_counts_warm_worker_rounds_apart_from_cold_ones_and_state_apart_from_efs():
    from bench.traffic import attribute, worker_figures

    run, s3 = "/m/runs/a", "s3://b/state/a"
    warm = _worker_dump(1, {  # round 1 cold (full weights), round 2 warm: the update and its residual from S3
        f"{run}/weights/r000001.npy": {"read": 1000},
        f"{s3}/w0000/r000001.npy": {"read": 1000},
        f"{run}/rounds/r000001/w0000.npy": {"write": 60},
        f"{run}/rounds/r000001/w0000.npy.digest.json": {"write": 7},
        f"{s3}/w0000/r000002.npy": {"read": 1000, "write": 1000},
        f"{s3}/update/r000001.npy": {"read": 70},
        f"{run}/rounds/r000002/w0000.npy": {"write": 60},
        f"{run}/rounds/r000002/w0000.npy.digest.json": {"write": 7},
        f"{s3}/w0000/r000003.npy": {"write": 1000},
    })
    held = _worker_dump(2, {  # round 2 warm from a held residual: the update its only S3 read
        f"{s3}/update/r000001.npy": {"read": 70},
        f"{run}/rounds/r000002/w0001.npy": {"write": 60},
        f"{run}/rounds/r000002/w0001.npy.digest.json": {"write": 7},
        f"{s3}/w0001/r000003.npy": {"write": 1000},
    })
    figures = worker_figures(attribute([warm, held])["worker_rounds"], "ternary_ef")
    assert figures["warm_worker_rounds"] == 2 and figures["cold_worker_rounds"] == 1
    assert figures["up_bytes_per_worker_round"] == 67 and figures["down_bytes_per_worker_round"] == 0
    assert figures["state_store"] == "s3" and figures["state_reads_from_s3"] == 2
    assert figures["state_bytes_per_worker_round"] == (1000 + 70 + 1000 + 70 + 1000) / 2
    by_category = figures["worker_bytes_per_round_by_category"]
    assert by_category["digests"] == {"write": 7} and "update" not in by_category
    assert by_category["state"] == {"read": 570, "write": 1000}
    # a float transport reads the full weights every round by design: round 1 is warm there
    float32 = worker_figures(attribute([warm])["worker_rounds"], "float32")
    assert float32["warm_worker_rounds"] == 2 and float32["cold_worker_rounds"] == 0
    assert float32["state_store"] == "none"


def test_bench_counts_the_combiners_warm_rounds_apart_from_cold_ones():
    from bench.traffic import summarise

    run = "/m/runs/a"
    worker = _worker_dump(1, {f"{run}/rounds/r{r:06d}/w0000.npy": {"write": 60} for r in range(4)})

    def combine(r: int, cold: bool) -> dict[str, dict[str, int]]:
        moved = {f"{run}/rounds/r{r:06d}/w0000.npy": {"read": 60}, f"{run}/weights/r{r + 1:06d}.npy": {"write": 1000},
                 f"s3://b/state/a/residual-s000/r{r + 1:06d}.npy": {"write": 800}}  # in S3: counted apart
        if cold:  # another environment: its own state read back from EFS
            moved |= {f"{run}/weights/r{r:06d}.npy": {"read": 1000}, f"{run}/optim/r{r:06d}.npy": {"read": 900}}
        return moved

    paths: dict[str, dict[str, int]] = {}
    for r, cold in enumerate([True, False, True, False]):  # round 0 is every run's cold one
        for path, moved in combine(r, cold).items():
            paths.setdefault(path, {}).update(moved)
    combiner = {"function": "combiner", "pid": 2, "totals": {}, "paths": paths}
    settings = {"transport": "float32", "mode": "sync", "local_steps": 1, "workers": 1, "batch_size": 4}
    out = summarise({"dumps": [combiner, worker], "rounds": 4, "wall_s": 1.0}, settings, 1000)
    assert (out["combiner_warm_rounds"], out["combiner_cold_rounds"]) == (2, 1)  # rounds 1 and 3; round 2
    assert out["combiner_read_bytes_per_round"] == 60  # the warm rounds': the result only
    assert out["combiner_read_bytes_per_cold_round"] == 60 + 1000 + 900
    assert out["combiner_write_bytes_per_round"] == 1000
    assert out["combiner_state_write_bytes_per_round"] == 800 and out["combiner_state_read_bytes_per_round"] == 0


def test_bench_refuses_an_unknown_transport_in_one_line():
    import argparse

    from bench.traffic import configurations

    args = argparse.Namespace(transports="float32,ternary_xx", average_local_steps=4)
    with pytest.raises(SystemExit, match=r"^bench.traffic: unknown transport ternary_xx; choose from float32"):
        configurations(args)
    args.transports = "float16"
    assert configurations(args) == [("float16", "sync", 1), ("float32", "average", 4)]


def test_counts_from_the_combines_reader_threads_add_up_and_dump_safely(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv(traffic.ENV_DIR, str(tmp_path))
    traffic.reset()
    errors = []

    def reader() -> None:
        try:
            for i in range(2000):
                traffic.add(tmp_path / "runs/r/rounds/r0/w0000.npy", "read", 1)
                if i % 200 == 0:
                    traffic.done()
        except Exception as exc:  # noqa: BLE001 - the test reports any
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert traffic.totals()["results"]["read"] == 8 * 2000
    traffic.reset()
