"""The DynamoDB ledger: every call to the table, and the conditions that make the protocol safe.

The ledger is the protocol's source of truth for *what has happened*; EFS holds the bytes. Each
write that races is conditional, and a failed condition becomes a domain error (``AlreadyDone``,
``StaleRound``, ``ClaimLost``), never a silent overwrite. Item kinds are documented in
``lambdatrain.schema``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config
from botocore.exceptions import ClientError

from lambdatrain import schema
from lambdatrain.errors import AlreadyDone, ClaimLost, StaleRound, UnknownRun
from lambdatrain.digest import Digest, normalize
from lambdatrain.protocol import RunConfig

RUNNING, STOPPED, DONE, FAILED = "running", "stopped", "done", "failed"
_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=30)


def _pk(run: str) -> str:
    return f"RUN#{run}"


def _round_sk(r: int) -> str:
    return f"ROUND#{r:08d}"


def _result_sk(r: int, w: int) -> str:
    return f"RESULT#{r:08d}#{w:05d}"


def _metric_sk(r: int) -> str:
    return f"METRIC#{r:08d}"


def _to_ddb(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_ddb(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_ddb(v) for v in value]
    return value


def _from_ddb(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_from_ddb(v) for v in value]
    if isinstance(value, set):
        return sorted(value)
    return value


def _failed_condition(exc: ClientError) -> bool:
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
    # Items written before checksums named their algorithm hold a bare SHA-256 as weights_sha256.
    checksum = normalize(item["weights_checksum"] if "weights_checksum" in item else item["weights_sha256"])
    return RunRecord(run=item["run"], state=item["state"], config=RunConfig(**json.loads(item["config"])),
                     round=item["round"], epoch=item["epoch"], rounds_per_epoch=item["rounds_per_epoch"],
                     weights=Digest(item["weights_bytes"], checksum), item=item)


def result_digest(item: dict[str, Any]) -> Digest:
    """The digest a RESULT item records for the worker's file."""
    return Digest(int(item["bytes"]), normalize(item["checksum"] if "checksum" in item else item["sha256"]))


def result_range_checksum(item: dict[str, Any], shard: int) -> str:
    """The checksum a RESULT item records for the slice ``shard`` of a sharded combine reads."""
    ranges = item["range_checksums"] if "range_checksums" in item else item["range_sha256"]
    return normalize(ranges[shard])


class Ledger:
    """The run's items in one DynamoDB table."""

    def __init__(self, table_name: str, *, resource=None, clock=time.time):
        resource = resource or boto3.resource("dynamodb", config=_BOTO_CONFIG)
        self.table = resource.Table(table_name)
        self.client = self.table.meta.client
        self.clock = clock

    # --- runs --------------------------------------------------------------------------------
    def create_run(self, run: str, config: RunConfig, rounds_per_epoch: int, weights: Digest, *,
                   n_params: int, num_classes: int) -> None:
        """Create the run and its round 0 in one transaction; AlreadyDone if the run exists."""
        now = self.clock()
        meta = {"pk": _pk(run), "sk": "META", "kind": "run", "run": run, "state": RUNNING,
                "config": json.dumps(config.to_dict(), sort_keys=True), "workers": config.workers,
                "round": 0, "epoch": 0, "rounds_per_epoch": rounds_per_epoch,
                "weights_bytes": weights.bytes, "weights_checksum": weights.checksum, "n_params": n_params,
                "num_classes": num_classes, "samples_seen": 0, "created_at": now, "updated_at": now}
        try:
            self.client.transact_write_items(TransactItems=[
                # The run id is new: a duplicate start delivery must not reset a live run.
                {"Put": {"TableName": self.table.name, "Item": _to_ddb(meta),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
                {"Put": {"TableName": self.table.name, "Item": _to_ddb(self._round_item(run, 0, config.workers, 0, now)),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
            ])
        except ClientError as exc:
            if _failed_condition(exc):
                raise AlreadyDone(f"run {run} already exists") from exc
            raise

    def restore_run(self, run: str, config: RunConfig, *, round_no: int, rounds_per_epoch: int, weights: Digest,
                    state: str, meta: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        """Recreate a run's items from what EFS holds (see recovery.rebuild_from_efs)."""
        now = self.clock()
        item = {"pk": _pk(run), "sk": "META", "kind": "run", "run": run, "state": state,
                "config": json.dumps(config.to_dict(), sort_keys=True), "workers": config.workers,
                "round": round_no, "epoch": round_no // rounds_per_epoch, "rounds_per_epoch": rounds_per_epoch,
                "weights_bytes": weights.bytes, "weights_checksum": weights.checksum, "updated_at": now, **meta}
        items = [{"Put": {"TableName": self.table.name, "Item": _to_ddb(item),
                          # Never over a live ledger: rebuilding is for a run whose items are gone.
                          "ConditionExpression": "attribute_not_exists(pk)"}}]
        if state == RUNNING:
            items.append({"Put": {"TableName": self.table.name, "Item": _to_ddb(
                self._round_item(run, round_no, config.workers, round_no // rounds_per_epoch, now))}})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if _failed_condition(exc):
                raise AlreadyDone(f"run {run} already has a ledger") from exc
            raise
        # One put per metric, not batch_writer: BatchWriteItem would be one more IAM action for
        # the starter, for a path that runs once per lost ledger.
        for m in metrics:
            self.table.put_item(Item=_to_ddb({"pk": _pk(run), "sk": _metric_sk(m["round"]), "kind": "metric",
                                              "run": run, "created_at": now, **m}))

    def get_run(self, run: str) -> RunRecord:
        item = self.table.get_item(Key={"pk": _pk(run), "sk": "META"}, ConsistentRead=True).get("Item")
        if not item:
            raise UnknownRun(f"unknown run '{run}'")
        return record_from_meta({"run": run, **_from_ddb(item)})

    def find_run(self, run: str) -> RunRecord | None:
        try:
            return self.get_run(run)
        except UnknownRun:
            return None

    def _all(self, call, **kwargs) -> list[dict[str, Any]]:
        """Every item of a paginated query or scan."""
        items = []
        while True:
            page = call(**kwargs)
            items += [_from_ddb(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_runs(self) -> list[dict[str, Any]]:
        runs = self._all(self.table.scan, FilterExpression=Attr("kind").eq("run"))
        return sorted(runs, key=lambda i: i.get("created_at", 0))

    def set_state(self, run: str, state: str, *, expect: Iterable[str], reason: str = "") -> None:
        """Move a run between states (stop, resume); AlreadyDone if it is not in ``expect``."""
        names = {"#s": "state"}
        values = {":new": state, ":now": Decimal(repr(self.clock())), ":why": reason}
        conds = []
        for i, old in enumerate(expect):
            values[f":e{i}"] = old
            conds.append(f"#s = :e{i}")
        try:
            self.table.update_item(
                Key={"pk": _pk(run), "sk": "META"},
                UpdateExpression="SET #s = :new, updated_at = :now, stop_reason = :why",
                ConditionExpression=f"attribute_exists(pk) AND ({' OR '.join(conds)})",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as exc:
            if _failed_condition(exc):
                self.get_run(run)  # raises UnknownRun for a missing run
                raise AlreadyDone(f"run {run} is not in state {list(expect)}") from exc
            raise

    # --- rounds ------------------------------------------------------------------------------
    @staticmethod
    def _round_item(run: str, r: int, workers: int, epochsdone: int, now: float) -> dict[str, Any]:
        # "kind" and "status" are strings on purpose: the stream filter matches them (schema.py).
        return {"pk": _pk(run), "sk": _round_sk(r), "kind": "round", "run": run, "round": r,
                "workers": workers, "epochsdone": epochsdone, "status": schema.OPEN,
                "created_at": now, "updated_at": now}

    def get_round(self, run: str, r: int) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"pk": _pk(run), "sk": _round_sk(r)}, ConsistentRead=True).get("Item")
        return _from_ddb(item) if item else None

    def record_result(self, run: str, r: int, worker: int, digest: Digest, stats: dict[str, Any]) -> bool:
        """Record worker's result of round r; True when this record completed the set of N.

        Safe under duplicate delivery: the RESULT item is written once (a second delivery whose
        file has the same digest is a no-op), and the worker number is ADDed to a string set, so
        it counts once however often it is added.
        """
        now = self.clock()
        item = {"pk": _pk(run), "sk": _result_sk(r, worker), "kind": "result", "run": run, "round": r,
                "worker": worker, "bytes": digest.bytes, "checksum": digest.checksum, "created_at": now, **stats}
        try:
            self.table.put_item(Item=_to_ddb(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if not _failed_condition(exc):
                raise
        try:
            updated = self.table.update_item(
                Key={"pk": _pk(run), "sk": _round_sk(r)},
                UpdateExpression="ADD reported :w SET updated_at = :now",
                # Only an open round takes results: once ready, the set of N is final.
                ConditionExpression="attribute_exists(pk) AND #s = :open",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":w": {f"{worker:05d}"}, ":open": schema.OPEN,
                                           ":now": Decimal(repr(now))},
                ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as exc:
            if _failed_condition(exc):
                raise AlreadyDone(f"round {r} of run {run} no longer takes results") from exc
            raise
        if len(updated.get("reported", ())) < int(updated["workers"]):
            return False
        return self.mark_ready(run, r, int(updated["workers"]))

    def mark_ready(self, run: str, r: int, workers: int) -> bool:
        """Move round r to READY once all N have reported; False if someone else already did."""
        try:
            self.table.update_item(
                Key={"pk": _pk(run), "sk": _round_sk(r)},
                UpdateExpression="SET #s = :ready, ready_at = :now, updated_at = :now",
                # size(reported) = N: every worker has recorded; status = open: the transition
                # happens once, so the stream (which filters on status = ready) fires once.
                ConditionExpression="#s = :open AND size(reported) = :n",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":ready": schema.READY, ":open": schema.OPEN, ":n": workers,
                                           ":now": Decimal(repr(self.clock()))})
            return True
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise

    def results(self, run: str, r: int) -> list[dict[str, Any]]:
        # Paginated: with many workers (and per-slice digests) the results outgrow one 1 MB page.
        items = self._all(self.table.query, ConsistentRead=True,
                          KeyConditionExpression=Key("pk").eq(_pk(run)) & Key("sk").begins_with(f"RESULT#{r:08d}#"))
        return sorted(items, key=lambda i: i["worker"])

    def claim(self, run: str, r: int, token: str, lease_s: float) -> dict[str, Any]:
        """Claim a READY round for combining (or take over an expired claim); ClaimLost otherwise."""
        now = self.clock()
        try:
            return _from_ddb(self.table.update_item(
                Key={"pk": _pk(run), "sk": _round_sk(r)},
                # A new claim starts a sharded combine afresh: shares done under an old one don't count.
                UpdateExpression="SET #s = :combining, claim = :token, claimed_at = :now, updated_at = :now "
                                 "REMOVE shards_done",
                # Either the round is ready and unclaimed, or a combiner claimed it and died: its
                # lease ran out, so the work is redone (every step of a combine is idempotent).
                ConditionExpression="#s = :ready OR (#s = :combining AND claimed_at < :expired)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":combining": schema.COMBINING, ":ready": schema.READY,
                                           ":token": token, ":now": Decimal(repr(now)),
                                           ":expired": Decimal(repr(now - lease_s))},
                ReturnValues="ALL_NEW")["Attributes"])
        except ClientError as exc:
            if not _failed_condition(exc):
                raise
            # A retried request whose first attempt succeeded fails its own condition: it is ours.
            item = self.get_round(run, r) or {}
            if item.get("claim") == token and item.get("status") == schema.COMBINING:
                return item
            raise ClaimLost(f"round {r} of run {run} is not claimable") from exc

    def shard_done(self, run: str, r: int, shard: int, token: str, shards: int) -> bool:
        """Record one share of a sharded combine; True for the share that completes the set of S."""
        try:
            item = self.table.update_item(
                Key={"pk": _pk(run), "sk": _round_sk(r)},
                UpdateExpression="ADD shards_done :s SET updated_at = :now",
                # Only shares of the current claim count: a share from a taken-over claim is stale.
                ConditionExpression="#s = :combining AND claim = :token",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {f"{shard:03d}"}, ":combining": schema.COMBINING, ":token": token,
                                           ":now": Decimal(repr(self.clock()))},
                ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as exc:
            if _failed_condition(exc):
                raise ClaimLost(f"round {r} of run {run} is no longer combined under this claim") from exc
            raise
        return len(item.get("shards_done", ())) == shards

    def release(self, run: str, r: int, token: str) -> None:
        """Give a claimed round back (the combine failed): the next delivery may claim it at once."""
        try:
            self.table.update_item(
                Key={"pk": _pk(run), "sk": _round_sk(r)},
                UpdateExpression="SET #s = :ready REMOVE claim",
                ConditionExpression="#s = :combining AND claim = :token",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":ready": schema.READY, ":combining": schema.COMBINING, ":token": token})
        except ClientError as exc:
            if not _failed_condition(exc):
                raise

    def reopen_worker(self, run: str, r: int, worker: int, token: str) -> None:
        """Drop one worker's (corrupt) result so that worker runs again; the claim is released."""
        self.client.transact_write_items(TransactItems=[
            {"Delete": {"TableName": self.table.name, "Key": _to_ddb({"pk": _pk(run), "sk": _result_sk(r, worker)})}},
            {"Update": {"TableName": self.table.name, "Key": _to_ddb({"pk": _pk(run), "sk": _round_sk(r)}),
                        "UpdateExpression": "DELETE reported :w SET #s = :open REMOVE claim",
                        "ConditionExpression": "#s = :combining AND claim = :token",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": _to_ddb({":w": {f"{worker:05d}"}, ":open": schema.OPEN,
                                                                ":combining": schema.COMBINING, ":token": token})}},
        ])

    def commit(self, run: str, r: int, token: str, *, weights: Digest, epoch: int, finished: str | None,
               metric: dict[str, Any], meta_extra: dict[str, Any]) -> None:
        """Publish round r's outcome atomically: round committed, run advanced, metric, round r+1.

        ``finished`` is the run's final state when training ends with this round (round r+1 is
        then not created); otherwise the state is left alone, so a concurrent ``stop`` holds.
        """
        now = self.clock()
        meta_values = {":next": r + 1, ":r": r, ":epoch": epoch, ":wb": weights.bytes,
                       ":ws": weights.checksum, ":now": now}
        sets = ["#round = :next", "epoch = :epoch", "weights_bytes = :wb", "weights_checksum = :ws",
                "updated_at = :now"]
        if finished:
            sets.append("#s = :state")
            meta_values[":state"] = finished
        for i, (k, v) in enumerate(meta_extra.items()):
            sets.append(f"{k} = :x{i}")
            meta_values[f":x{i}"] = v
        items = [
            {"Update": {"TableName": self.table.name, "Key": _to_ddb({"pk": _pk(run), "sk": _round_sk(r)}),
                        "UpdateExpression": "SET #s = :committed, committed_at = :now, updated_at = :now",
                        # Only the claim holder commits, and only once.
                        "ConditionExpression": "#s = :combining AND claim = :token",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": _to_ddb({":committed": schema.COMMITTED, ":now": now,
                                                                ":combining": schema.COMBINING, ":token": token})}},
            {"Update": {"TableName": self.table.name, "Key": _to_ddb({"pk": _pk(run), "sk": "META"}),
                        "UpdateExpression": "SET " + ", ".join(sets),
                        # The run is still at round r: a stale combiner can never move it back.
                        "ConditionExpression": "#round = :r",
                        "ExpressionAttributeNames": {"#round": "round", **({"#s": "state"} if finished else {})},
                        "ExpressionAttributeValues": _to_ddb(meta_values)}},
            {"Put": {"TableName": self.table.name, "ConditionExpression": "attribute_not_exists(pk)",
                     "Item": _to_ddb({"pk": _pk(run), "sk": _metric_sk(r), "kind": "metric", "run": run,
                                        "round": r, "created_at": now, **metric})}},
        ]
        if not finished:
            items.append({"Put": {"TableName": self.table.name, "ConditionExpression": "attribute_not_exists(pk)",
                                  "Item": _to_ddb(self._round_item(run, r + 1, int(metric["workers"]), epoch, now))}})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not _failed_condition(exc):
                raise
            item = self.get_round(run, r) or {}
            if item.get("claim") == token and item.get("status") == schema.COMMITTED:
                return  # a retried request whose first attempt committed
            raise ClaimLost(f"round {r} of run {run} was committed or taken over by another combiner") from exc

    def metrics(self, run: str) -> list[dict[str, Any]]:
        return self._all(self.table.query, ConsistentRead=True,
                         KeyConditionExpression=Key("pk").eq(_pk(run)) & Key("sk").begins_with("METRIC#"))

    def items(self, run: str) -> list[dict[str, Any]]:
        """Every item of a run (for exports and for the operator commands' --out folders)."""
        return self._all(self.table.query, ConsistentRead=True, KeyConditionExpression=Key("pk").eq(_pk(run)))

    def check_current(self, run: str, r: int) -> RunRecord:
        """The run, if r is its current round and it is running; StaleRound otherwise."""
        record = self.get_run(run)
        if record.round != r:
            raise StaleRound(f"round {r} is not the current round ({record.round}) of run {run}")
        return record
