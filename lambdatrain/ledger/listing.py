"""Listing the runs: a query of the runs index, and the index's backfill on a table made before it.

A run's META item carries the keys of ``schema.RUNS_INDEX`` (``items.run_item``) and no other item
does, so the index holds one entry per run and a listing reads the runs' META items and nothing
else. Before it, listing meant a scan filtered on ``kind``, which reads (and DynamoDB bills: "the
filter is applied after the items are read", Filter expressions for Scan, DynamoDB developer
guide) every item of every run the table keeps, rounds, results and metrics, so its cost grew with
the table's whole history: ``lambdatrain runs``, ``status`` without a run id (which now reads
the newest run alone, ``newest_meta``), and the watchdog on every tick (docs/benchmarks.md section 8).

A table deployed by an earlier lambdatrain has META items without the index's keys, which the index
leaves out. ``backfill`` gives every such item its keys, then writes the MARKER item; until the
marker exists, ``list_runs`` scans as before, so a listing never misses a run whichever way it
reads. The watchdog backfills (roles/recovery.py), so its first tick after a deploy mends an older
table, and every later tick costs one read of the marker. A backfill cut off half-way writes no
marker; the next tick starts again (each update is idempotent, and conditional on the item still
being there, so a run deleted meanwhile is not brought back as a stub). A run that the old code
starts after the backfill's scan (a starter still running while the deploy replaces it) gets the
keys at its first commit under the new code: every commit sets them too (ledger/claims.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from lambdatrain.ledger import schema
from lambdatrain.ledger.items import failed_condition, from_ddb

(LISTED, _, _), (CREATED, _, _) = schema.RUNS_INDEX_KEYS
MARKER = {"pk": "SCHEMA", "sk": f"INDEX#{schema.RUNS_INDEX}"}  # written once every META item is in the index
# The update that puts a META item in the index, the backfill's and every commit's. A META item
# from before created_at was written sorts first, as the scan had it.
INDEX_SET = "#listed = :listed, #created = if_not_exists(#created, :zero)"
INDEX_NAMES = {"#listed": LISTED, "#created": CREATED}
INDEX_VALUES = {":listed": schema.RUNS_LISTED, ":zero": 0}
# A query of the index's one partition: every run, oldest first (newest first with ScanIndexForward
# False); and what a scan keeps of the table, its runs' META items.
RUNS_QUERY = {"IndexName": schema.RUNS_INDEX, "KeyConditionExpression": Key(LISTED).eq(schema.RUNS_LISTED)}
IS_RUN = Attr("kind").eq("run")


def every_item(call: Callable[..., dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a paginated query or scan, as plain Python values."""
    items = []
    while True:
        page = call(**kwargs)
        items += [from_ddb(i) for i in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def indexed(table) -> bool:
    """Whether every run of the table is in the runs index (the marker is there)."""
    return "Item" in table.get_item(Key=MARKER, ConsistentRead=True)


def meta_items(table, *, use_index: bool) -> list[dict[str, Any]]:
    """Every run's META item, oldest first: from the index, or (a table not yet backfilled) by a scan.
    Eventually consistent either way (a GSI has no consistent reads): a run created a moment ago
    may be missing, and a state may lag; ``Ledger.get_run`` reads one for sure."""
    if use_index:
        items = every_item(table.query, **RUNS_QUERY)
    else:
        items = every_item(table.scan, FilterExpression=IS_RUN)
    return sorted(items, key=lambda item: (item.get(CREATED, 0), item["run"]))  # the run's id breaks a tie


def newest_meta(table, *, use_index: bool) -> dict[str, Any] | None:
    """The META item of the run created last (None: no run yet), as ``meta_items`` reads them: from
    the index, one item; by a scan, every item of the table."""
    if not use_index:
        items = meta_items(table, use_index=False)
        return items[-1] if items else None
    page = table.query(**RUNS_QUERY, ScanIndexForward=False, Limit=1)
    return next((from_ddb(item) for item in page.get("Items", [])), None)


def backfill(table, clock: Callable[[], float]) -> int | None:
    """Put every run of a table made before the runs index in it (module docstring): how many META
    items were given the index's keys, or None when the marker says there is nothing to do."""
    if indexed(table):
        return None
    mended = 0
    for item in every_item(table.scan, ProjectionExpression="pk, sk",
                           FilterExpression=IS_RUN & Attr(LISTED).not_exists()):
        try:
            table.update_item(
                Key={"pk": item["pk"], "sk": item["sk"]}, UpdateExpression=f"SET {INDEX_SET}",
                ConditionExpression="attribute_exists(pk)", ExpressionAttributeNames=INDEX_NAMES,
                ExpressionAttributeValues=INDEX_VALUES)
            mended += 1
        except ClientError as exc:
            if not failed_condition(exc):  # the run was deleted since the scan: nothing to list
                raise
    # The marker sends every listing to the index, so only once the index answers: one added to a
    # deployed table is unreadable until DynamoDB has built it from the items ("Cannot read from
    # backfilling global secondary index"; IndexStatus CREATING, then ACTIVE: DescribeTable,
    # DynamoDB API reference). Until then this raises, and the next tick tries again.
    table.query(**RUNS_QUERY, Limit=1)
    table.put_item(Item={**MARKER, "kind": "schema", "backfilled_at": Decimal(repr(clock())), "mended": mended})
    return mended
