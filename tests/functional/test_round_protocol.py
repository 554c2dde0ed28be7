"""The round protocol end to end in one process: start -> N workers -> stream -> combiner."""

from __future__ import annotations

import numpy as np
import pytest

from lambdatrain import layout as efs
from lambdatrain.settings import COMBINER, STARTER, WORKER

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 8, "augment": False}


def test_start_fans_out_one_work_event_per_worker(system):
    answer = system.invoke(STARTER, {"start": True, "workers": 3, **SMALL})
    assert answer["status"] == "started"
    sent = [e for name, e in system.invoker.sent if name == WORKER]
    assert sorted(e["workerno"] for e in sent) == [0, 1, 2]
    assert all(e["workers"] == 3 and e["epochsdone"] == 0 and e["round"] == 0 and e["run"] == answer["run"]
               for e in sent)
    assert efs.RunLayout(system.mount, answer["run"]).weights(0).exists()


def test_last_worker_makes_round_ready_and_stream_triggers_one_combine(system):
    run = system.invoke(STARTER, {"start": True, "workers": 2, **SMALL})["run"]
    for _ in range(2):
        system.step()  # the two workers
    assert system.ledger.get_round(run, 0)["status"] == "ready"
    system.poller.poll_once()
    assert system.ledger.get_round(run, 0)["status"] == "committed"
    assert system.ledger.get_run(run).round == 1
    combined = [a for name, a in system.answers if name == COMBINER]
    assert [r["status"] for a in combined for r in a["rounds"]] == ["committed"]


def test_run_trains_to_max_epochs_and_records_metrics(system):
    run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 2, **SMALL})["run"]
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "done" and record.epoch == 2
    assert record.item["stop_reason"] == "max epochs"
    metrics = sorted(system.ledger.metrics(run), key=lambda m: m["round"])
    assert len(metrics) == record.round == 2 * record.rounds_per_epoch
    evaluated = [m for m in metrics if "val_accuracy" in m]
    assert [m["epochs_done"] for m in evaluated] == [1, 2]
    assert metrics[-1]["samples_seen"] == sum(m["samples"] for m in metrics)
    for key in ("worker_s", "combine_s", "wait_s", "round_s", "train_loss"):
        assert all(np.isfinite(m[key]) for m in metrics), key


def test_target_accuracy_stops_the_run_early(system):
    run = system.invoke(STARTER, {"start": True, "workers": 1, "epochs": 5, "target_accuracy": 0.01, **SMALL})["run"]
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "done" and record.epoch == 1
    assert record.item["stop_reason"] == "target accuracy reached"


def test_sum_is_in_worker_order_whatever_the_arrival_order(system, tmp_path):
    """Two runs, workers executed in opposite orders, give bit-identical weights."""
    runs = []
    for order in ([0, 1, 2], [2, 1, 0]):
        run = system.invoke(STARTER, {"start": True, "workers": 3, "run": f"order-{order[0]}", **SMALL})["run"]
        queued = {e["workerno"]: e for name, e, _ in list(system.invoker.queue) if e.get("run") == run}
        system.invoker.queue.clear()
        for w in order:
            system.invoke(WORKER, queued[w])
        system.poller.poll_once()
        runs.append(run)
    a, b = (efs.read_array(efs.RunLayout(system.mount, r).weights(1)) for r in runs)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("mode,extra", [("average", {"local_steps": 2}), ("sync", {"transport": "bfloat16"}),
                                        ("sync", {"transport": "float16"})])
def test_other_modes_and_transports_train(system, mode, extra):
    run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 1, "mode": mode, **SMALL, **extra})["run"]
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "done"
    metrics = system.ledger.metrics(run)
    assert all(np.isfinite(m["train_loss"]) for m in metrics)


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_combine_is_bit_identical_to_one_combiner(system, shards):
    finals = []
    for s in (1, shards):
        run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 1, "run": f"shards-{s}", **SMALL,
                                      "max_train_samples": 128, "combine_shards": s})["run"]
        system.drain()
        record = system.ledger.get_run(run)
        assert record.state == "done"
        finals.append(efs.read_array(efs.RunLayout(system.mount, run).weights(record.round)))
    assert np.array_equal(finals[0], finals[1])
    shares = [a for name, a in system.answers if name == COMBINER and a.get("status") == "share"]
    assert len(shares) == (shards - 1) * system.ledger.get_run(f"shards-{shards}").round


def test_checksum_algorithm_changes_nothing_but_the_records(system):
    finals = []
    for algorithm in ("xxh3_128", "sha256"):
        run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 1, "run": f"sum-{algorithm}", **SMALL,
                                      "max_train_samples": 128, "combine_shards": 2, "checksum": algorithm})["run"]
        system.drain()
        record = system.ledger.get_run(run)
        assert record.state == "done" and record.weights.checksum.startswith(f"{algorithm}:")
        assert all(r["checksum"].startswith(f"{algorithm}:") for r in system.ledger.results(run, 0))
        finals.append(efs.read_array(efs.RunLayout(system.mount, run).weights(record.round)))
    assert np.array_equal(finals[0], finals[1])
