"""The combine's side of the ledger: claiming a ready round, its shares, and committing or releasing it.

Every write here is conditioned on the claim token (``claim = :token``), so a combiner whose claim
was taken over (its lease ran out) can record nothing more: its writes fail with ``ClaimLost``.
The claim's lifecycle (ready -> combining -> committed, or back to ready/open) is a protocol of its
own, used only by the combiner, so it is an object of its own on the same table: ``Ledger.claims``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from botocore.exceptions import ClientError

from lambdatrain.ledger import listing, schema
from lambdatrain.storage.digest import Digest
from lambdatrain.protocol.errors import ClaimLost
from lambdatrain.ledger.items import (META, RoundRecord, failed_condition, from_ddb, metric_item, open_round_item, pk,
                                      result_sk, round_from_item, round_sk, shard_set, to_ddb, worker_set)


def read_round(table: Any, run: str, r: int) -> RoundRecord | None:
    """Round r as the table holds it now (a consistent read), or None if it has no item."""
    item = table.get_item(Key={"pk": pk(run), "sk": round_sk(r)}, ConsistentRead=True).get("Item")
    return round_from_item(from_ddb(item)) if item else None


class Claims:
    """The combine's calls on the ledger table (a boto3 ``Table``), timed by ``clock``."""

    def __init__(self, table: Any, clock: Callable[[], float]):
        self.table = table
        self.client = table.meta.client
        self.clock = clock

    def _ours(self, run: str, r: int, token: str, status: str) -> RoundRecord | None:
        """Round r if it is in ``status`` under ``token``: a retried request whose first attempt
        succeeded fails its own condition, and this tells it apart from a lost race."""
        item = read_round(self.table, run, r)
        return item if item is not None and item.claim == token and item.status == status else None

    def claim(self, run: str, r: int, token: str, lease_s: float) -> RoundRecord:
        """Claim a READY round for combining (or take over an expired claim); ClaimLost otherwise."""
        now = self.clock()
        try:
            return round_from_item(from_ddb(self.table.update_item(
                Key={"pk": pk(run), "sk": round_sk(r)},
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
                ReturnValues="ALL_NEW")["Attributes"]))
        except ClientError as exc:
            if not failed_condition(exc):
                raise
            ours = self._ours(run, r, token, schema.COMBINING)
            if ours is not None:
                return ours
            raise ClaimLost(f"round {r} of run {run} is not claimable") from exc

    def shard_done(self, run: str, r: int, shard: int, token: str, shards: int) -> bool:
        """Record one share of a sharded combine; True for the share that completes the set of S."""
        try:
            item = self.table.update_item(
                Key={"pk": pk(run), "sk": round_sk(r)},
                UpdateExpression="ADD shards_done :s SET updated_at = :now",
                # Only shares of the current claim count: a share from a taken-over claim is stale.
                ConditionExpression="#s = :combining AND claim = :token",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": shard_set([shard]), ":combining": schema.COMBINING, ":token": token,
                                           ":now": Decimal(repr(self.clock()))},
                ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as exc:
            if failed_condition(exc):
                raise ClaimLost(f"round {r} of run {run} is no longer combined under this claim") from exc
            raise
        return len(round_from_item(from_ddb(item)).shards_done) == shards

    def release(self, run: str, r: int, token: str) -> None:
        """Give a claimed round back (the combine failed): the next delivery may claim it at once."""
        try:
            self.table.update_item(
                Key={"pk": pk(run), "sk": round_sk(r)},
                UpdateExpression="SET #s = :ready REMOVE claim",
                ConditionExpression="#s = :combining AND claim = :token",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":ready": schema.READY, ":combining": schema.COMBINING, ":token": token})
        except ClientError as exc:
            if not failed_condition(exc):
                raise

    def reopen_worker(self, run: str, r: int, worker: int, token: str) -> None:
        """Drop one worker's (corrupt) result so that worker runs again; the claim is released.

        ClaimLost when the claim is no longer ours: another share of a sharded combine found the
        same file and reopened the round first, or the lease was taken over.
        """
        try:
            self.client.transact_write_items(TransactItems=[
                {"Delete": {"TableName": self.table.name,
                            "Key": to_ddb({"pk": pk(run), "sk": result_sk(r, worker)})}},
                {"Update": {"TableName": self.table.name, "Key": to_ddb({"pk": pk(run), "sk": round_sk(r)}),
                            "UpdateExpression": "DELETE reported :w SET #s = :open REMOVE claim",
                            "ConditionExpression": "#s = :combining AND claim = :token",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": to_ddb({":w": worker_set([worker]), ":open": schema.OPEN,
                                                                    ":combining": schema.COMBINING,
                                                                    ":token": token})}},
            ])
        except ClientError as exc:
            if not failed_condition(exc):
                raise
            raise ClaimLost(f"round {r} of run {run} is no longer combined under this claim") from exc

    def commit(self, run: str, r: int, token: str, *, weights: Digest, epoch: int, finished: str | None,
               metric: dict[str, Any], meta_extra: dict[str, Any]) -> None:
        """Publish round r's outcome atomically: round committed, run advanced, metric, round r+1.

        ``finished`` is the run's final state when training ends with this round (round r+1 is
        then not created); otherwise the state is left alone, so a concurrent ``stop`` holds.
        """
        now = self.clock()
        meta_values = {":next": r + 1, ":r": r, ":epoch": epoch, ":wb": weights.bytes,
                       ":ws": weights.checksum, ":now": now}
        # The runs index's keys too: a run the code before the index started is listed from here on.
        sets = ["#round = :next", "epoch = :epoch", "weights_bytes = :wb", "weights_checksum = :ws",
                "updated_at = :now", listing.INDEX_SET]
        meta_values.update(listing.INDEX_VALUES)
        if finished:
            sets.append("#s = :state")
            meta_values[":state"] = finished
        for i, (k, v) in enumerate(meta_extra.items()):
            sets.append(f"{k} = :x{i}")
            meta_values[f":x{i}"] = v
        items = [
            {"Update": {"TableName": self.table.name, "Key": to_ddb({"pk": pk(run), "sk": round_sk(r)}),
                        "UpdateExpression": "SET #s = :committed, committed_at = :now, updated_at = :now",
                        # Only the claim holder commits, and only once.
                        "ConditionExpression": "#s = :combining AND claim = :token",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": to_ddb({":committed": schema.COMMITTED, ":now": now,
                                                                ":combining": schema.COMBINING, ":token": token})}},
            {"Update": {"TableName": self.table.name, "Key": to_ddb({"pk": pk(run), "sk": META}),
                        "UpdateExpression": "SET " + ", ".join(sets),
                        # The run is still at round r: a stale combiner can never move it back.
                        "ConditionExpression": "#round = :r",
                        "ExpressionAttributeNames": {"#round": "round", **listing.INDEX_NAMES,
                                                     **({"#s": "state"} if finished else {})},
                        "ExpressionAttributeValues": to_ddb(meta_values)}},
            {"Put": {"TableName": self.table.name, "ConditionExpression": "attribute_not_exists(pk)",
                     "Item": to_ddb(metric_item(run, metric, now))}},
        ]
        if not finished:
            items.append({"Put": {"TableName": self.table.name, "ConditionExpression": "attribute_not_exists(pk)",
                                  "Item": to_ddb(open_round_item(run, r + 1, int(metric["workers"]), epoch, now))}})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not failed_condition(exc):
                raise
            if self._ours(run, r, token, schema.COMMITTED) is not None:
                return  # a retried request whose first attempt committed
            raise ClaimLost(f"round {r} of run {run} was committed or taken over by another combiner") from exc
