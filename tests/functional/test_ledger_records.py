"""The ledger's records: what the table ledger answers, and that a ``local train`` export answers the same."""

from __future__ import annotations

import json

from lambdatrain.ledger.items import ResultRecord, RoundRecord, RunRecord, worker_set
from lambdatrain.ops.source import FolderLedger
from lambdatrain.roles.settings import STARTER

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 8, "augment": False,
         "max_train_samples": 128, "val_samples": 32, "epochs": 1}


def test_reads_return_records_decoded_from_the_items(system):
    run = system.invoke(STARTER, {"start": True, "workers": 2, "combine_shards": 2, **SMALL})["run"]
    system.run_to_end(run)
    record = system.ledger.get_run(run)
    assert isinstance(record, RunRecord) and record.state == "done" and record.stop_reason == "max epochs"
    assert record.n_params > 0 and record.num_classes == 10 and record.best_accuracy is not None
    assert record.samples_seen == sum(m["samples"] for m in system.ledger.metrics(run))
    last = system.ledger.get_round(run, record.round - 1)
    assert isinstance(last, RoundRecord) and last.status == "committed" and last.reported == {0, 1}
    assert last.shards_done == {0, 1} and last.claim is not None
    results = system.ledger.results(run, record.round - 1)
    assert [type(r) for r in results] == [ResultRecord, ResultRecord] and [r.worker for r in results] == [0, 1]
    assert all(len(r.range_checksums) == 2 and r.digest.checksum.startswith("xxh3_128:") for r in results)


def test_folder_ledger_answers_what_the_table_ledger_answers(system, tmp_path):
    run = system.invoke(STARTER, {"start": True, "workers": 2, **SMALL})["run"]
    system.run_to_end(run)
    # What `local train` writes beside the checkpoint (ops/local_train.py).
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(system.ledger.items(run), indent=1, sort_keys=True, default=str))
    folder, table = FolderLedger(path), system.ledger
    assert folder.get_run(run) == table.get_run(run) == folder.newest_run() == table.newest_run()
    for r in range(table.get_run(run).round):
        assert folder.get_round(run, r) == table.get_round(run, r)
        assert folder.results(run, r) == table.results(run, r)
    assert folder.get_round(run, 99) is None and table.get_round(run, 99) is None
    rounds = table.get_run(run).round
    for after in (-1, 0, rounds - 2, rounds - 1, 99):  # every round's metric, then those after a round
        expected = [r for r in range(rounds) if r > after]
        assert [m["round"] for m in table.metrics(run, after)] == expected
        assert folder.metrics(run, after) == table.metrics(run, after)
    assert table.metrics(run) == table.metrics(run, -1)  # the default: all of them


def test_worker_sets_are_stored_zero_padded_in_worker_order():
    assert sorted(worker_set([10, 2, 2])) == ["00002", "00010"]


def test_reopening_a_worker_under_a_claim_that_is_not_ours_is_claim_lost(system):
    # A second share of a sharded combine that found the same corrupt file, or a combiner whose
    # lease was taken over: a no-op at the handlers' edge, not a function error.
    import pytest

    from lambdatrain.protocol.errors import ClaimLost

    run = system.invoke(STARTER, {"start": True, "workers": 2, **SMALL})["run"]
    system.run_to_end(run)
    last = system.ledger.get_run(run).round - 1
    before = system.ledger.get_round(run, last)
    with pytest.raises(ClaimLost):
        system.ledger.claims.reopen_worker(run, last, 0, "0" * 32)
    assert system.ledger.get_round(run, last) == before
    assert [r.worker for r in system.ledger.results(run, last)] == [0, 1]
