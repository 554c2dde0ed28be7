"""Setup's items in the ledger table: the single-flight lock with a lease, and the progress record.

Setup (``lambdatrain.roles.setup``) must run once at a time per stack: two setups would install
packages and prepare the dataset into the same folders. Deliveries can overlap because an
asynchronous invocation is delivered at least once and retried, and a synchronous one is retried by
its client on a read timeout. So setup first takes the LOCK item with a conditional write; the
lock carries a lease that its holder renews while it works, so a setup that died (killed at the
function's timeout, whose cleanup never ran) frees the lock when its lease runs out, and the next
setup takes it over.

==========  ===================================================================================
``sk``      item (``pk`` is ``SETUP``)
==========  ===================================================================================
``LOCK``    ``owner`` (the holder's attempt id) and ``expires_at``; free when ``expires_at`` has
            passed (a release sets it to 0: the starter's role has no DeleteItem)
``STATUS``  the latest attempt: ``state`` running -> done | failed, ``attempt`` (counts every
            takeover), ``step`` and ``message`` (what it is doing), ``steps`` (each step's
            outcome: installed versions, dataset counts), ``error``, timestamps
==========  ===================================================================================

Lease times are the writers' clocks, so the lease assumes two hosts' clocks differ by far less
than a lease (tens of seconds), as the combine's claim leases do. Every write after the lock is
taken is conditional on ``owner``, so a holder that lost its lease cannot overwrite its
successor's progress. Failed conditions become ``SetupBusy`` or
``SetupLost`` (both ``ClaimLost``: the handlers' edge answers them as no-ops); everything else is
re-raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from botocore.exceptions import ClientError

from lambdatrain.ledger.items import failed_condition, from_ddb, to_ddb
from lambdatrain.protocol.errors import ClaimLost

PK = "SETUP"
LOCK, STATUS = "LOCK", "STATUS"
RUNNING, DONE, FAILED = "running", "done", "failed"


class SetupBusy(ClaimLost):
    """Another setup holds the lock and its lease is live."""


class SetupLost(ClaimLost):
    """This setup's lease ran out and another setup took the lock over."""


@dataclass(frozen=True)
class SetupRecord:
    """The STATUS item as read, with the lock's lease (None when the lock was never taken)."""

    state: str
    attempt: int
    owner: str
    step: str | None
    message: str
    steps: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    lease_until: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED)


def _key(sk: str) -> dict[str, str]:
    return {"pk": PK, "sk": sk}


def _number(value: float) -> Decimal:
    return Decimal(repr(float(value)))


class SetupLedger:
    """The lock and progress calls, on the ledger's table (``Ledger.table``).

    The transaction goes through the table resource's client, which takes plain values (boto3
    serializes them), as ``Ledger.create_run`` does.
    """

    def __init__(self, table, clock: Callable[[], float]):
        self.table, self.clock = table, clock
        self.client = table.meta.client

    def acquire(self, owner: str, lease_s: float) -> int:
        """Take the lock for ``lease_s`` seconds and open a new attempt; returns its number.

        SetupBusy (naming the holder and its lease) while another holder's lease is live.
        """
        now = self.clock()
        lock = {**_key(LOCK), "kind": "setup-lock", "owner": owner, "expires_at": now + lease_s, "acquired_at": now}
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {"TableName": self.table.name, "Item": to_ddb(lock),
                         # free: never taken (no item), or released or expired (expires_at in the
                         # past: a holder that died stopped renewing). Nothing else may take it.
                         "ConditionExpression": "attribute_not_exists(pk) OR expires_at < :now",
                         "ExpressionAttributeValues": {":now": _number(now)}}},
                {"Update": {"TableName": self.table.name, "Key": _key(STATUS),
                            # Unconditional: the lock above decides; a new attempt starts afresh.
                            "UpdateExpression": "SET #s = :running, #o = :me, kind = :kind, step = :none, "
                                                "message = :msg, steps = :empty, started_at = :now, "
                                                "updated_at = :now ADD attempt :one REMOVE #e, finished_at",
                            "ExpressionAttributeNames": {"#s": "state", "#o": "owner", "#e": "error"},
                            "ExpressionAttributeValues": to_ddb({
                                ":running": RUNNING, ":me": owner, ":kind": "setup", ":none": "",
                                ":msg": "started", ":empty": {}, ":now": now, ":one": 1})}},
            ])
        except ClientError as exc:
            if failed_condition(exc):
                held = from_ddb(self.table.get_item(Key=_key(LOCK), ConsistentRead=True).get("Item") or {})
                raise SetupBusy(f"setup {held.get('owner', '?')} is running (its lease ends in "
                                f"{max(0.0, float(held.get('expires_at', now)) - now):.0f} s)") from exc
            raise
        return self.read().attempt

    def renew(self, owner: str, lease_s: float) -> None:
        """Extend the lease; SetupLost if another setup has taken the lock."""
        self._update(LOCK, owner, "SET expires_at = :until", {":until": self.clock() + lease_s})

    def progress(self, owner: str, step: str, message: str, outcome: dict[str, Any] | None = None) -> None:
        """Record what the attempt is doing; with ``outcome``, the step's result (it is finished)."""
        values: dict[str, Any] = {":step": step, ":msg": message, ":now": self.clock()}
        expression = "SET step = :step, message = :msg, updated_at = :now"
        if outcome is None:
            return self._update(STATUS, owner, expression, values)
        values[":out"] = outcome
        self._update(STATUS, owner, expression + ", steps.#step = :out", values, names={"#step": step})

    def finish(self, owner: str, *, error: str | None = None) -> None:
        """Record the attempt's end (done, or failed with ``error``) and release the lock."""
        now = self.clock()
        values = {":state": FAILED if error else DONE, ":now": now, ":msg": error or "ready"}
        expression = "SET #s = :state, finished_at = :now, updated_at = :now, message = :msg"
        if error:
            values[":err"] = error
            expression += ", #e = :err"
        self._update(STATUS, owner, expression, values, names={"#s": "state", **({"#e": "error"} if error else {})})
        # Released by dating the lease in the past (the starter may not DeleteItem).
        self._update(LOCK, owner, "SET expires_at = :zero", {":zero": 0})

    def read(self) -> SetupRecord | None:
        """The latest attempt (consistent read), or None before the first setup."""
        status = self.table.get_item(Key=_key(STATUS), ConsistentRead=True).get("Item")
        if not status:
            return None
        item = from_ddb(status)
        lock = from_ddb(self.table.get_item(Key=_key(LOCK), ConsistentRead=True).get("Item") or {})
        lease = float(lock["expires_at"]) if lock.get("owner") == item.get("owner") and "expires_at" in lock else None
        return SetupRecord(state=item["state"], attempt=int(item.get("attempt", 0)), owner=item.get("owner", ""),
                           step=item.get("step") or None, message=item.get("message", ""),
                           steps=item.get("steps") or {}, error=item.get("error"),
                           started_at=float(item.get("started_at", 0)), updated_at=float(item.get("updated_at", 0)),
                           lease_until=lease)

    def _update(self, sk: str, owner: str, expression: str, values: dict[str, Any],
                names: dict[str, str] | None = None) -> None:
        try:
            self.table.update_item(
                Key=_key(sk), UpdateExpression=expression,
                # owner = :me: only the lock's holder writes; a setup whose lease ran out and was
                # taken over must not renew, report or release on its successor's behalf.
                ConditionExpression="#owner = :me",
                ExpressionAttributeNames={"#owner": "owner", **(names or {})},
                ExpressionAttributeValues=to_ddb({**values, ":me": owner}))
        except ClientError as exc:
            if failed_condition(exc):
                raise SetupLost(f"setup {owner} lost its lock to another setup") from exc
            raise
