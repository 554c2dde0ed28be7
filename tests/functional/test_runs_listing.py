"""Listing the runs (lambdatrain/ledger/listing.py): the runs index reads one item per run, and a
table made before the index lists every run while the watchdog puts them in it."""

from __future__ import annotations

import pytest

from lambdatrain.ledger import listing
from lambdatrain.ledger.items import META, pk
from lambdatrain.ledger.table import Ledger
from lambdatrain.roles.settings import COMBINER, STARTER

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 8, "augment": False,
         "max_train_samples": 64, "val_samples": 32, "epochs": 1}


class Reads:
    """What a ledger's client reads, from the responses botocore parsed: per operation, the items
    DynamoDB examined (``ScannedCount``: what it bills for) and the requests."""

    def __init__(self, ledger: Ledger):
        self.scanned: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        for op in ("Query", "Scan", "GetItem"):
            ledger.client.meta.events.register(f"after-call.dynamodb.{op}", self._count(op))

    def _count(self, op: str):
        def count(parsed, **_):
            self.requests[op] = self.requests.get(op, 0) + 1
            self.scanned[op] = self.scanned.get(op, 0) + parsed.get("ScannedCount", 1 if "Item" in parsed else 0)
        return count


def finished_runs(system, count: int) -> list[str]:
    runs = []
    for i in range(count):
        system.clock.advance(1)  # one created after the other
        runs.append(system.invoke(STARTER, {"start": True, "workers": 2, "run": f"run-listed-{i}", **SMALL})["run"])
        system.run_to_end(runs[-1])
    return runs


def every_item(system) -> list[dict]:
    return listing.every_item(system.ledger.table.scan, ConsistentRead=True)


def unindex(system, runs: list[str]) -> None:
    """The table as a lambdatrain from before the index left it: META items without the index's
    keys (one of them without created_at, as the first ones were written), and no marker."""
    for i, run in enumerate(runs):
        names = {"#l": listing.LISTED, **({"#c": listing.CREATED} if i == 0 else {})}
        system.ledger.table.update_item(Key={"pk": pk(run), "sk": META}, ExpressionAttributeNames=names,
                                        UpdateExpression="REMOVE " + ", ".join(names))
    system.ledger.table.delete_item(Key=listing.MARKER)


def index_holds(system) -> list[str]:
    return [i["run"] for i in listing.meta_items(system.ledger.table, use_index=True)]


def test_listing_the_runs_reads_their_meta_items_and_nothing_else(system):
    runs = finished_runs(system, 2)
    system.invoke(COMBINER, {"watchdog": True})  # a tick: the marker, on a table made with the index
    ledger = Ledger(system.ledger.table.name, clock=system.clock)
    reads = Reads(ledger)
    listed = ledger.list_runs()
    assert [r.run for r in listed] == runs and listed == [ledger.get_run(run) for run in runs]
    # Two items examined for two runs, however many rounds, results and metrics the table holds;
    # the scan it replaces examines every one of them.
    assert reads.scanned.get("Query") == 2 and "Scan" not in reads.requests
    assert [i["run"] for i in listing.meta_items(ledger.table, use_index=False)] == runs
    assert reads.scanned["Scan"] == len(every_item(system)) > 8 * len(runs)


def test_the_newest_run_is_one_item_read_whichever_way_the_table_is(system):
    ledger = Ledger(system.ledger.table.name, clock=system.clock)
    assert ledger.newest_run() is None  # no run yet: ops/source.py says how to start one
    runs = finished_runs(system, 3)
    unindex(system, runs)  # before the backfill: by the scan, the last of the listing
    assert ledger.newest_run() == ledger.list_runs()[-1] == ledger.get_run(runs[-1])
    system.invoke(COMBINER, {"watchdog": True})
    ledger = Ledger(system.ledger.table.name, clock=system.clock)
    reads = Reads(ledger)
    assert ledger.newest_run() == ledger.get_run(runs[-1])
    assert reads.scanned["Query"] == 1 and "Scan" not in reads.requests


def test_a_table_from_before_the_index_lists_every_run_and_the_watchdog_indexes_them(system):
    runs = finished_runs(system, 2)
    expected = system.ledger.list_runs()
    unindex(system, runs)
    assert index_holds(system) == []  # the index leaves out what lacks its keys
    before = Ledger(system.ledger.table.name, clock=system.clock)
    reads = Reads(before)
    # Until the watchdog has backfilled, a listing scans: every run, in the same order, lagging none.
    assert [r.run for r in before.list_runs()] == runs and reads.requests.get("Scan") == 1
    assert system.invoke(COMBINER, {"watchdog": True})["status"] == "checked"
    assert index_holds(system) == runs  # created_at restored as 0 for the first: it sorts first, as before
    after = Ledger(system.ledger.table.name, clock=system.clock)
    reads = Reads(after)
    assert [r.run for r in after.list_runs()] == [r.run for r in expected] and "Scan" not in reads.requests
    # The next ticks read the marker and find nothing to do.
    watchdog_reads = Reads(system.runtimes[COMBINER].ledger)
    system.invoke(COMBINER, {"watchdog": True})
    assert "Scan" not in watchdog_reads.requests


def test_a_backfill_cut_off_half_way_leaves_no_marker_and_the_next_one_finishes(system, monkeypatch):
    runs = finished_runs(system, 3)
    unindex(system, runs)
    table, calls = system.ledger.table, []
    real = table.update_item

    def dies_on_the_second(**kwargs):
        calls.append(kwargs["Key"]["pk"])
        if len(calls) == 2:
            raise ConnectionError("the watchdog's sandbox was killed")
        return real(**kwargs)

    monkeypatch.setattr(table, "update_item", dies_on_the_second)
    with pytest.raises(ConnectionError):
        system.ledger.backfill_runs_index()
    monkeypatch.undo()
    assert not listing.indexed(table) and len(index_holds(system)) == 1
    assert [r.run for r in system.ledger.list_runs()] == runs  # still every run, by the scan
    assert system.ledger.backfill_runs_index() == 2  # the two left; the first already has its keys
    assert listing.indexed(table) and index_holds(system) == runs
    assert system.ledger.backfill_runs_index() is None


def test_a_run_deleted_during_the_backfill_is_not_brought_back(system, monkeypatch):
    (run,) = finished_runs(system, 1)
    unindex(system, [run])
    gone = {"pk": pk("deleted-meanwhile"), "sk": META}  # listed by the scan, deleted before its update
    real = listing.every_item
    monkeypatch.setattr(listing, "every_item", lambda call, **kw: real(call, **kw) + [gone])
    assert system.ledger.backfill_runs_index() == 1
    monkeypatch.undo()
    assert "Item" not in system.ledger.table.get_item(Key=gone) and index_holds(system) == [run]


def test_a_run_the_code_before_the_index_started_is_listed_from_its_next_commit(system):
    system.invoke(COMBINER, {"watchdog": True})  # the table is marked as indexed
    run = system.invoke(STARTER, {"start": True, "workers": 2, **{**SMALL, "epochs": 2}})["run"]
    unindex(system, [run])  # as the old starter wrote it, after the backfill's scan
    system.ledger.table.put_item(Item={**listing.MARKER, "kind": "schema"})
    assert index_holds(system) == []
    system.run_to_end(run)
    assert index_holds(system) == [run]


def test_an_index_still_being_built_gets_no_marker_until_it_answers(system, monkeypatch):
    from botocore.exceptions import ClientError

    runs = finished_runs(system, 2)
    unindex(system, runs)
    table = system.runtimes[COMBINER].ledger.table
    real = table.query

    def building(**kwargs):  # what DynamoDB answers while it builds an index added to a deployed table
        if kwargs.get("IndexName"):
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": "Cannot read from backfilling global secondary index: runs"}},
                              "Query")
        return real(**kwargs)

    monkeypatch.setattr(table, "query", building)
    # The watchdog carries on (it re-drives what it must); the runs have their keys, but no marker.
    assert system.invoke(COMBINER, {"watchdog": True})["status"] == "checked"
    assert not listing.indexed(table) and [r.run for r in system.ledger.list_runs()] == runs
    monkeypatch.undo()
    assert system.invoke(COMBINER, {"watchdog": True})["status"] == "checked"
    assert listing.indexed(table) and index_holds(system) == runs
