"""The ledger's items as data: keys, run states, DynamoDB encoding, and what a reader makes of them.

Everything about the ledger except the calls to the table (``lambdatrain.ledger.table`` and
``lambdatrain.ledger.claims`` make those). Kept apart because readers of items need the format
but not the table: ``ops.source.FolderLedger`` reads the same items from a ``ledger.json``
export, and the combiner reads RESULT items the ledger has already fetched. No boto3 and no
numpy here. The item kinds themselves are documented in ``lambdatrain.ledger.schema``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from lambdatrain.ledger import schema
from lambdatrain.storage.digest import Digest
from lambdatrain.protocol.config import RunConfig

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

# A run's states (the META item's "state").
RUNNING, STOPPED, DONE, FAILED = "running", "stopped", "done", "failed"


def pk(run: str) -> str:
    return f"RUN#{run}"


def round_sk(r: int) -> str:
    return f"ROUND#{r:08d}"


def result_sk(r: int, w: int) -> str:
    return f"RESULT#{r:08d}#{w:05d}"


def results_prefix(r: int) -> str:
    """The sort-key prefix of round r's RESULT items."""
    return f"RESULT#{r:08d}#"


def metric_sk(r: int) -> str:
    return f"METRIC#{r:08d}"


def to_ddb(value: Any) -> Any:
    """A plain Python value as boto3 writes it: floats as Decimal (boto3 rejects float), no None attributes."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_ddb(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [to_ddb(v) for v in value]
    return value


def from_ddb(value: Any) -> Any:
    """An item as boto3 reads it, as plain Python values: Decimal to int or float, sets to sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_ddb(v) for v in value]
    if isinstance(value, set):
        return sorted(value)
    return value


def open_round_item(run: str, r: int, workers: int, epochsdone: int, now: float) -> dict[str, Any]:
    """A new round's item, open for results."""
    # "kind" and "status" are strings on purpose: the stream filter matches them (schema.py).
    return {"pk": pk(run), "sk": round_sk(r), "kind": "round", "run": run, "round": r,
            "workers": workers, "epochsdone": epochsdone, "status": schema.OPEN,
            "created_at": now, "updated_at": now}


def failed_condition(exc: ClientError) -> bool:
    """Whether a write failed on its own condition (rather than throttling, access, ...)."""
    # A transaction reports a failed condition per item, inside TransactionCanceledException.
    code = exc.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


@dataclass(frozen=True)
class RunRecord:
    run: str
    state: str
    config: RunConfig
    round: int
    epoch: int
    rounds_per_epoch: int
    weights: Digest
    item: dict[str, Any]

    @property
    def workers(self) -> int:
        return self.config.workers


def record_from_meta(item: dict[str, Any]) -> RunRecord:
    """A run's META item (plain Python values) as a RunRecord."""
    checksum = item["weights_checksum"]
    return RunRecord(run=item["run"], state=item["state"], config=RunConfig(**json.loads(item["config"])),
                     round=item["round"], epoch=item["epoch"], rounds_per_epoch=item["rounds_per_epoch"],
                     weights=Digest(item["weights_bytes"], checksum), item=item)


def result_digest(item: dict[str, Any]) -> Digest:
    """The digest a RESULT item records for the worker's file."""
    return Digest(int(item["bytes"]), item["checksum"])


def result_range_checksum(item: dict[str, Any], shard: int) -> str:
    """The checksum a RESULT item records for the slice ``shard`` of a sharded combine reads."""
    return item["range_checksums"][shard]
