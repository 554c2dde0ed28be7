"""The DynamoDB ledger: the calls to the table for runs, rounds and results, and their conditions.

The ledger is the protocol's source of truth for *what has happened*; EFS holds the bytes. Each
write that races is conditional, and a failed condition becomes a domain error (``AlreadyDone``,
``StaleRound``, ``ClaimLost``), never a silent overwrite. ``Ledger`` is the one entry point; the
combine's claim calls are its ``claims`` (``lambdatrain.ledger.claims``), on the same table. Reads
return records, never items: their keys and encoding come from ``lambdatrain.ledger.items``.
Item kinds are documented in ``lambdatrain.ledger.schema``.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Iterable

import boto3
from boto3.dynamodb.conditions import Key
from botocore.config import Config
from botocore.exceptions import ClientError

from lambdatrain.ledger import listing, schema
from lambdatrain.storage.digest import Digest
from lambdatrain.protocol.errors import AlreadyDone, StaleRound, UnknownRun
from lambdatrain.ledger.claims import Claims, read_round
from lambdatrain.ledger.items import (META, RUNNING, ResultRecord, RoundRecord, RunRecord, failed_condition, from_ddb,
                                      metric_item, metrics_after_range, open_round_item, pk, record_from_meta,
                                      result_from_item, result_item, results_prefix, round_from_item, round_sk,
                                      run_item, to_ddb, worker_set)
from lambdatrain.protocol.config import RunConfig

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=30)


class Ledger:
    """The run's items in one DynamoDB table (a ``LedgerReader``, and the writes of the protocol)."""

    def __init__(self, table_name: str, *, resource=None, clock=time.time):
        resource = resource or boto3.resource("dynamodb", config=_BOTO_CONFIG)
        self.table = resource.Table(table_name)
        self.client = self.table.meta.client
        self.clock = clock
        self.claims = Claims(self.table, clock)
        self._indexed = False  # whether the runs index is known to hold every run

    # --- runs --------------------------------------------------------------------------------
    def create_run(self, run: str, config: RunConfig, rounds_per_epoch: int, weights: Digest, *,
                   n_params: int, num_classes: int) -> None:
        """Create the run and its round 0 in one transaction; AlreadyDone if the run exists."""
        now = self.clock()
        meta = run_item(run, config, state=RUNNING, round_no=0, rounds_per_epoch=rounds_per_epoch, weights=weights,
                        updated_at=now, n_params=n_params, num_classes=num_classes, samples_seen=0, created_at=now)
        try:
            self.client.transact_write_items(TransactItems=[
                # The run id is new: a duplicate start delivery must not reset a live run.
                {"Put": {"TableName": self.table.name, "Item": to_ddb(meta),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
                {"Put": {"TableName": self.table.name, "Item": to_ddb(open_round_item(run, 0, config.workers, 0, now)),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
            ])
        except ClientError as exc:
            if failed_condition(exc):
                raise AlreadyDone(f"run {run} already exists") from exc
            raise

    def restore_run(self, run: str, config: RunConfig, *, round_no: int, rounds_per_epoch: int, weights: Digest,
                    state: str, meta: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        """Recreate a run's items from what EFS holds (see roles.rebuild.rebuild_from_efs)."""
        now = self.clock()
        item = run_item(run, config, state=state, round_no=round_no, rounds_per_epoch=rounds_per_epoch,
                        weights=weights, updated_at=now, **meta)
        items = [{"Put": {"TableName": self.table.name, "Item": to_ddb(item),
                          # Never over a live ledger: rebuilding is for a run whose items are gone.
                          "ConditionExpression": "attribute_not_exists(pk)"}}]
        if state == RUNNING:
            items.append({"Put": {"TableName": self.table.name, "Item": to_ddb(
                open_round_item(run, round_no, config.workers, round_no // rounds_per_epoch, now))}})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if failed_condition(exc):
                raise AlreadyDone(f"run {run} already has a ledger") from exc
            raise
        # One put per metric, not batch_writer: BatchWriteItem would be one more IAM action for
        # the starter, for a path that runs once per lost ledger.
        for m in metrics:
            self.table.put_item(Item=to_ddb(metric_item(run, m, now)))

    def get_run(self, run: str) -> RunRecord:
        item = self.table.get_item(Key={"pk": pk(run), "sk": META}, ConsistentRead=True).get("Item")
        if not item:
            raise UnknownRun(f"unknown run '{run}'")
        return record_from_meta({"run": run, **from_ddb(item)})

    def find_run(self, run: str) -> RunRecord | None:
        try:
            return self.get_run(run)
        except UnknownRun:
            return None

    _all = staticmethod(listing.every_item)

    def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first, from the runs index (lambdatrain/ledger/listing.py; eventually
        consistent: ``get_run`` reads one for sure)."""
        return [record_from_meta(item) for item in listing.meta_items(self.table, use_index=self._use_index())]

    def newest_run(self) -> RunRecord | None:
        """The run created last (None: no run yet), as ``list_runs`` would end, reading one item."""
        item = listing.newest_meta(self.table, use_index=self._use_index())
        return None if item is None else record_from_meta(item)

    def _use_index(self) -> bool:
        """Whether a listing may read the runs index: its marker, once seen, stays, so it is read
        only until then (a table the watchdog has not yet backfilled)."""
        self._indexed = self._indexed or listing.indexed(self.table)
        return self._indexed

    def backfill_runs_index(self) -> int | None:
        """Put the runs of a table made before the runs index in it (the watchdog, every tick):
        how many it added, or None when it had nothing to do."""
        return listing.backfill(self.table, self.clock)

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
                Key={"pk": pk(run), "sk": META},
                # A new state forgets the residuals kept for the old one (roles/recovery.py keep_state).
                UpdateExpression="SET #s = :new, updated_at = :now, stop_reason = :why REMOVE state_kept_round",
                ConditionExpression=f"attribute_exists(pk) AND ({' OR '.join(conds)})",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as exc:
            if failed_condition(exc):
                self.get_run(run)  # raises UnknownRun for a missing run
                raise AlreadyDone(f"run {run} is not in state {list(expect)}") from exc
            raise

    def mark_state_kept(self, run: str, round_no: int, states: Iterable[str]) -> bool:
        """Record that the residuals a run in one of ``states`` resumes from at ``round_no`` are kept;
        False (nothing written) if the run has moved on since (resumed, or another round)."""
        allowed = {f":s{i}": state for i, state in enumerate(states)}
        try:
            self.table.update_item(
                Key={"pk": pk(run), "sk": META}, UpdateExpression="SET state_kept_round = :r",
                ConditionExpression=f"#rd = :r AND #s IN ({', '.join(allowed)})",
                ExpressionAttributeNames={"#rd": "round", "#s": "state"},
                ExpressionAttributeValues={":r": round_no, **allowed})
        except ClientError as exc:
            if failed_condition(exc):
                return False
            raise
        return True

    def mark_redriven(self, run: str, round_no: int) -> bool:
        """Record that round ``round_no`` of the running run was re-driven now, so the watchdog waits
        a whole deadline before it re-drives it again; False (nothing written) if the run has moved
        on. On the META item, not the round's: a write to a ready round's item would reach the
        combiner through the stream filter (schema.py) once more."""
        try:
            self.table.update_item(
                Key={"pk": pk(run), "sk": META}, UpdateExpression="SET redriven_round = :r, redriven_at = :now",
                ConditionExpression="#rd = :r AND #s = :running",
                ExpressionAttributeNames={"#rd": "round", "#s": "state"},
                ExpressionAttributeValues={":r": round_no, ":running": RUNNING, ":now": Decimal(repr(self.clock()))})
        except ClientError as exc:
            if failed_condition(exc):
                return False
            raise
        return True

    # --- rounds ------------------------------------------------------------------------------
    def get_round(self, run: str, r: int) -> RoundRecord | None:
        return read_round(self.table, run, r)

    def record_result(self, run: str, r: int, result: ResultRecord) -> bool:
        """Record a worker's result of round r; True when the round now holds all N results (the
        caller then moves it to READY with ``mark_ready``: a separate write, which a worker that
        dies in between leaves undone, so a re-run worker and the watchdog finish it).

        Safe under duplicate delivery: the RESULT item is written once (a second put for the same
        worker is a no-op, whatever it carries: a re-run writes the same bytes), and the worker
        number is ADDed to a string set, so it counts once however often it is added.
        """
        now = self.clock()
        try:
            self.table.put_item(Item=to_ddb(result_item(run, r, result, now)), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if not failed_condition(exc):
                raise
        try:
            updated = self.table.update_item(
                Key={"pk": pk(run), "sk": round_sk(r)},
                UpdateExpression="ADD reported :w SET updated_at = :now",
                # Only an open round takes results: once ready, the set of N is final.
                ConditionExpression="attribute_exists(pk) AND #s = :open",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":w": worker_set([result.worker]), ":open": schema.OPEN,
                                           ":now": Decimal(repr(now))},
                ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as exc:
            if failed_condition(exc):
                raise AlreadyDone(f"round {r} of run {run} no longer takes results") from exc
            raise
        return not round_from_item(from_ddb(updated)).missing

    def mark_ready(self, run: str, r: int, workers: int) -> bool:
        """Move round r to READY once all N have reported; False if someone else already did."""
        try:
            self.table.update_item(
                Key={"pk": pk(run), "sk": round_sk(r)},
                UpdateExpression="SET #s = :ready, ready_at = :now, updated_at = :now",
                # size(reported) = N: every worker has recorded; status = open: the transition
                # happens once, so the stream (which filters on status = ready) fires once.
                ConditionExpression="#s = :open AND size(reported) = :n",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":ready": schema.READY, ":open": schema.OPEN, ":n": workers,
                                           ":now": Decimal(repr(self.clock()))})
            return True
        except ClientError as exc:
            if failed_condition(exc):
                return False
            raise

    def results(self, run: str, r: int) -> list[ResultRecord]:
        """Round r's results in worker order."""
        # Paginated: with many workers (and per-slice digests) the results outgrow one 1 MB page.
        items = self._all(self.table.query, ConsistentRead=True,
                          KeyConditionExpression=Key("pk").eq(pk(run)) & Key("sk").begins_with(results_prefix(r)))
        return sorted((result_from_item(i) for i in items), key=lambda res: res.worker)

    def metrics(self, run: str, after: int = -1) -> list[dict[str, Any]]:
        # A key range, not a filter: a filter would still read (and bill) every earlier metric.
        return self._all(self.table.query, ConsistentRead=True,
                         KeyConditionExpression=Key("pk").eq(pk(run)) & Key("sk").between(*metrics_after_range(after)))

    def items(self, run: str) -> list[dict[str, Any]]:
        """Every item of a run (for exports and for the operator commands' --out folders)."""
        return self._all(self.table.query, ConsistentRead=True, KeyConditionExpression=Key("pk").eq(pk(run)))

    def check_current(self, run: str, r: int) -> RunRecord:
        """The run, if r is its current round; StaleRound otherwise (its state is the caller's to check)."""
        record = self.get_run(run)
        if record.round != r:
            raise StaleRound(f"round {r} is not the current round ({record.round}) of run {run}")
        return record
