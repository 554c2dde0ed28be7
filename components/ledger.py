"""Ledger: the DynamoDB table that records every run, round and result, and its stream.

The schema and the stream view come from ``lambdatrain.ledger.schema``, the same
definitions the runtime and the local stack use. The stream is what wakes the combiner: the event
source mapping in ``components/functions.py`` filters it down to rounds turning ready. Its one
index, on the runs' META items alone, is what lists the runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from lambdatrain.ledger.schema import (
    ATTRIBUTES,
    BILLING_MODE,
    HASH_KEY,
    RANGE_KEY,
    RUNS_INDEX,
    RUNS_INDEX_KEYS,
    RUNS_INDEX_PROJECTION,
    STREAM_VIEW_TYPE,
)


@dataclass
class LedgerArgs:
    protect: bool
    tags: dict[str, str]


class Ledger(pulumi.ComponentResource):
    table: aws.dynamodb.Table

    def __init__(self, name: str, args: LedgerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("lambdatrain:ledger:Ledger", name, None, opts)
        self.table = aws.dynamodb.Table(
            f"{name}-table",
            attributes=[{"name": n, "type": t} for n, t in ATTRIBUTES],
            hash_key=HASH_KEY,
            range_key=RANGE_KEY,
            billing_mode=BILLING_MODE,
            # Listing the runs reads one item per run (lambdatrain/ledger/listing.py). Adding it to a
            # deployed table is an update in place (UpdateTable builds the index online), not a replacement.
            global_secondary_indexes=[{
                "name": RUNS_INDEX,
                "key_schemas": [{"attribute_name": n, "key_type": k} for n, _, k in RUNS_INDEX_KEYS],
                "projection_type": RUNS_INDEX_PROJECTION,
            }],
            stream_enabled=True,
            stream_view_type=STREAM_VIEW_TYPE,
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True},  # AWS-managed KMS key, not the default owned key
            deletion_protection_enabled=args.protect,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.register_outputs(
            {"table_name": self.table.name, "table_arn": self.table.arn, "stream_arn": self.table.stream_arn}
        )
