"""The round protocol end to end in one process: start -> N workers -> stream -> combiner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lambdatrain.storage import efs as efs
from lambdatrain.training import trainer
from lambdatrain.training.step import learning_rate
from lambdatrain.protocol.config import parse_config
from lambdatrain.roles.settings import COMBINER, STARTER, WORKER

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
    assert system.ledger.get_round(run, 0).status == "ready"
    system.poller.poll_once()
    assert system.ledger.get_round(run, 0).status == "committed"
    assert system.ledger.get_run(run).round == 1
    combined = [a for name, a in system.answers if name == COMBINER]
    assert [r["status"] for a in combined for r in a["rounds"]] == ["committed"]


def test_run_trains_to_max_epochs_and_records_metrics(system):
    run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 2, **SMALL})["run"]
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "done" and record.epoch == 2
    assert record.stop_reason == "max epochs"
    metrics = system.ledger.metrics(run)
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
    assert record.stop_reason == "target accuracy reached"


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
        assert all(r.digest.checksum.startswith(f"{algorithm}:") for r in system.ledger.results(run, 0))
        finals.append(efs.read_array(efs.RunLayout(system.mount, run).weights(record.round)))
    assert np.array_equal(finals[0], finals[1])


@pytest.mark.parametrize("mode,extra", [("sync", {}), ("average", {"local_steps": 2})])
def test_cosine_schedule_sets_every_rounds_rate_and_records_it(system, mode, extra):
    settings = {"workers": 2, "epochs": 2, "mode": mode, **SMALL, **extra, "max_train_samples": 128,
                "lr": 0.2, "lr_schedule": "cosine", "warmup_epochs": 0.5}
    run = system.invoke(STARTER, {"start": True, **settings})["run"]
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "done"
    config = parse_config(settings)
    rates = [m["lr"] for m in system.ledger.metrics(run)]
    assert rates == [learning_rate(config, r, record.rounds_per_epoch) for r in range(len(rates))]
    assert len(rates) == 2 * record.rounds_per_epoch and rates[-1] < rates[len(rates) // 2] < max(rates)


def test_average_mode_takes_its_local_steps_at_the_rate_it_is_given(tiny_dataset):
    config = parse_config({"workers": 1, "mode": "average", **SMALL, "momentum": 0.0, "weight_decay": 0.0})
    data = trainer.dataset(str(tiny_dataset))
    model, layout = trainer.model_for(config, len(data.classes))
    weights = layout.flatten(model)
    indices = trainer.round_indices(config, trainer.train_size(config, data), 0, 0, 10)
    deltas = [trainer.compute_average(config, data, model, layout, weights, indices, round_no=0, worker=0,
                                      lr=lr).vector[:layout.n_params] for lr in (0.01, 0.02)]
    assert np.abs(deltas[0]).max() > 0
    # One plain SGD step: twice the rate, twice the move (up to float32 rounding of w + step - w).
    assert np.allclose(deltas[1], 2 * deltas[0], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_average_modes_local_steps_are_torch_sgd_bit_for_bit(tiny_dataset, nesterov):
    # The oracle: torch.optim.SGD stepping the same micro-batches (the workers step without the class).
    config = parse_config({"workers": 1, "mode": "average", "local_steps": 3, **SMALL, "momentum": 0.9,
                           "weight_decay": 5e-4, "nesterov": nesterov})
    data = trainer.dataset(str(tiny_dataset))
    model, layout = trainer.model_for(config, len(data.classes))
    weights = layout.flatten(model)
    indices = trainer.round_indices(config, trainer.train_size(config, data), 0, 0, 10)
    got = trainer.compute_average(config, data, model, layout, weights, indices, round_no=0, worker=0, lr=0.05)

    layout.load(model, weights)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    micro, size = 0, config.per_worker_batch
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        step_idx = indices[step * size:(step + 1) * size]
        for idx in trainer.micro_batches(step_idx, config.micro_batch):
            x, y = trainer.batch(config, data, idx, round_no=0, worker=0, micro=micro)
            (torch.nn.functional.cross_entropy(model(x), y, reduction="sum") / len(step_idx)).backward()
            micro += 1
        opt.step()
    flat = layout.flatten(model)
    assert got.samples == 3 * size
    assert np.array_equal(got.vector[:layout.n_params], flat[:layout.n_params] - weights[:layout.n_params])


def test_a_finished_run_keeps_its_checkpoints_and_metrics_not_every_rounds_files(system):
    run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 2, **SMALL, "max_train_samples": 128,
                                  "keep_rounds": 2})["run"]
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "done" and record.rounds_per_epoch == 4 and record.round == 8
    paths = efs.RunLayout(system.mount, run)
    assert paths.committed_rounds() == [0, 4, 7, 8]  # epoch boundaries and the newest two
    assert sorted(p.name for p in paths.optim(0).parent.glob("*.npy")) == ["r000004.npy", "r000007.npy", "r000008.npy"]
    assert [r for r in range(8) if paths.result(r, 0).exists()] == [7]  # the last round's results only
    assert all(paths.metric(r).exists() for r in range(8))
