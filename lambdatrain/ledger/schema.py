"""The ledger table's schema and the stream filter: one definition for AWS and the local stack.

``components/ledger.py`` builds the DynamoDB table and ``components/functions.py`` the event
source mapping from these constants; ``lambdatrain.local`` creates the moto table and filters the
stream with the same ones. Change them here and both sides follow.

Item kinds of a run (``pk`` is ``RUN#<run_id>``; setup's lock and progress, under ``pk`` ``SETUP``, are
documented in ``lambdatrain.ledger.setup``):

===================  =========================================================================
``sk``               item
===================  =========================================================================
``META``             the run: settings, state, current round and epoch, best accuracy
``ROUND#<r>``        one round: ``reported`` (string set of worker numbers), ``status``
                     open -> ready -> combining -> committed, the claim, timings
``RESULT#<r>#<w>``   one worker's result for round r: file, length, checksum, samples, loss
``METRIC#<r>``       what the combiner measured after round r (losses, accuracy, timings)
===================  =========================================================================

The META items alone carry ``RUNS_INDEX``'s keys (``listed``, always ``RUNS_LISTED``, and
``created_at``), so that sparse global secondary index holds one entry per run, oldest first, every
attribute projected: listing the runs reads their META items and nothing else
(``lambdatrain.ledger.listing``, which also backfills the key on a table made before the index and
owns the marker item, ``pk`` ``SCHEMA``, that says it has).
"""

from __future__ import annotations

HASH_KEY = "pk"
RANGE_KEY = "sk"
KEY_ATTRIBUTES = ((HASH_KEY, "S"), (RANGE_KEY, "S"))
# The runs index (module docstring): one partition, runs in the order they were created. Every
# write of a META item (one per commit) writes it too; one partition takes 1,000 write units a
# second ("Designing partition keys", DynamoDB developer guide), a META item 1 or 2: hundreds of
# commits a second over all of a stack's runs, far more than its rounds can commit.
RUNS_INDEX = "runs"
RUNS_LISTED = "run"
RUNS_INDEX_KEYS = (("listed", "S", "HASH"), ("created_at", "N", "RANGE"))
RUNS_INDEX_PROJECTION = "ALL"
# Every attribute the table's keys and its index's keys name: what the table declares.
ATTRIBUTES = (*KEY_ATTRIBUTES, *((name, kind) for name, kind, _ in RUNS_INDEX_KEYS))
STREAM_VIEW_TYPE = "NEW_AND_OLD_IMAGES"
BILLING_MODE = "PAY_PER_REQUEST"

# Round statuses.
OPEN, READY, COMBINING, COMMITTED = "open", "ready", "combining", "committed"

# Only the transition of a round to READY reaches the combiner. DynamoDB numbers travel as strings
# in stream records and numeric filters never match them, so the filter keys on string attributes.
STREAM_FILTER_PATTERN: dict = {
    "eventName": ["INSERT", "MODIFY"],
    "dynamodb": {"NewImage": {"kind": {"S": ["round"]}, "status": {"S": [READY]}}},
}

# Event source mapping settings (AWS) mirrored by the local stream poller.
STREAM_BATCH_SIZE = 10
STREAM_MAX_RETRIES = 3
STREAM_MAX_RECORD_AGE_S = 3600


def runs_index_key(created_at: float) -> dict:
    """The attributes that put a run's META item in ``RUNS_INDEX`` (no other item has them)."""
    (listed, _, _), (created, _, _) = RUNS_INDEX_KEYS
    return {listed: RUNS_LISTED, created: created_at}


def create_table_kwargs(table_name: str) -> dict:
    """Arguments for ``dynamodb.create_table`` (the local stack's table)."""
    return {
        "TableName": table_name,
        "KeySchema": [
            {"AttributeName": HASH_KEY, "KeyType": "HASH"},
            {"AttributeName": RANGE_KEY, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in ATTRIBUTES],
        "GlobalSecondaryIndexes": [{
            "IndexName": RUNS_INDEX,
            "KeySchema": [{"AttributeName": n, "KeyType": k} for n, _, k in RUNS_INDEX_KEYS],
            "Projection": {"ProjectionType": RUNS_INDEX_PROJECTION},
        }],
        "BillingMode": BILLING_MODE,
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": STREAM_VIEW_TYPE},
    }
