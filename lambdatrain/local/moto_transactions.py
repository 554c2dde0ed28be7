"""TransactWriteItems for the local stack's moto, rolled back in place.

moto 5.2.5 (``DynamoDBBackend.transact_write_items``) backs a transaction up by deep-copying each
table it names, items and stream records both, and rolls a failed one back by putting the copies
in the tables' place. Two things followed for the local stack:

* A stream that went silent. The copy has its own stream shard, and every open shard iterator (the
  local stream poller's) went on reading the discarded one: after the first failed transaction (a
  duplicate start, a combine committed twice) no record reached the combiner again, and rounds
  went on only when the watchdog re-drove them, a round deadline each. DynamoDB Streams has no
  such gap: a cancelled transaction writes nothing, and the stream goes on.
* A cost that grew with the ledger's history: a two-item transaction took 7 ms on an empty table,
  73 ms at 1,000 items and 250 ms at 3,000, and every combine commits with one (ledger/claims.py).

Here a transaction makes moto's checks and writes, one operation after the other as moto does, but
backs up only the items it names (a deep copy of each, or its absence) and the length of each
table's stream; a rollback puts those items back on the same table objects and drops the stream
records the transaction added. The server runs one request at a time (moto_server.py), so no other
request sees a transaction half-applied.
"""

from __future__ import annotations

import copy
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType

MAX_ITEMS = 100  # TransactWriteItems' limit (moto's too)
_OPERATIONS = frozenset({"ConditionCheck", "Put", "Delete", "Update"})


class _Backup:
    """What a transaction may change: the items it names, as they were, and each stream's length."""

    def __init__(self, backend: DynamoDBBackend):
        self.backend = backend
        self.items: dict[tuple[str, Any, Any], tuple[Any, Any, Any, bool, Any]] = {}
        self.streams: dict[str, tuple[Any, int | None]] = {}

    def save(self, table_name: str, key: dict[str, Any]) -> None:
        table = self.backend.get_table(table_name)
        if table_name not in self.streams:
            self.streams[table_name] = (table, len(table.stream_shard.items) if table.stream_shard else None)
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        if (table_name, hash_value, range_value) not in self.items:
            self.items[(table_name, hash_value, range_value)] = (
                table, hash_value, range_value, hash_value in table.items,
                copy.deepcopy(table.get_item(hash_value, range_value)))

    def restore(self) -> None:
        for table, hash_value, range_value, had_hash, item in self.items.values():
            if item is not None:
                if range_value is not None:
                    table.items[hash_value][range_value] = item
                else:
                    table.items[hash_value] = item
            elif range_value is not None:
                table.items[hash_value].pop(range_value, None)
                if not had_hash and not table.items[hash_value]:
                    del table.items[hash_value]  # as it was: a put had made this hash's first entry
            else:
                table.items.pop(hash_value, None)
        for table, length in self.streams.values():
            if length is not None:
                del table.stream_shard.items[length:]


def _key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return op["Key"]
    table, attrs = backend.get_table(op["TableName"]), op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _apply(backend: DynamoDBBackend, op_type: str, op: dict[str, Any], key: dict[str, Any]) -> None:
    """One operation: its condition against the item as the transaction has left it, then the write."""
    names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
    condition = op.get("ConditionExpression")
    current = backend.get_item(op["TableName"], key)
    if condition is not None and not get_filter_expression(condition, names, values).expr(current):
        old = None
        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
            old = current.to_json()["Attributes"]
        failed = ConditionalCheckFailed(item=old)
        failed.old_item = old  # the cancellation's reason for this operation carries it
        raise failed
    written = {"condition_expression": condition, "expression_attribute_names": names,
               "expression_attribute_values": values}
    if op_type == "Put":
        backend.put_item(op["TableName"], op["Item"], **written)
    elif op_type == "Delete":
        backend.delete_item(op["TableName"], key, **written)
    elif op_type == "Update":
        backend.update_item(op["TableName"], key, update_expression=op["UpdateExpression"], **written)


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """moto's ``transact_write_items`` with the backup and rollback above (same checks, same errors)."""
    if len(transact_items) > MAX_ITEMS:
        raise TooManyTransactionsException()
    backup, targets = _Backup(self), set()
    errors: list[tuple[Any, Any, Any]] = []  # per operation: (code, message, item), Nones if it passed
    try:
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            try:
                op_type, op = next(iter(item.items()))
                if op_type not in _OPERATIONS:
                    raise ValueError("Unsupported transaction operation")
                key = _key(self, op_type, op)
                target = (str(op["TableName"]), str(dict(sorted(key.items()))))
                if target in targets:  # two operations on one item: the whole request is invalid
                    raise MultipleTransactionsException()
                targets.add(target)
                backup.save(op["TableName"], key)
                _apply(self, op_type, op, key)
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as exc:
                errors.append(("ConditionalCheckFailed", str(exc.message), getattr(exc, "old_item", None)))
            except Exception as exc:  # noqa: BLE001 - moto reports any other failure as this operation's
                errors.append((type(exc).__name__, str(exc), None))
    except Exception:
        backup.restore()
        raise
    if any(code is not None for code, _, _ in errors):
        backup.restore()
        raise TransactionCanceledException(errors)


def install() -> None:
    """Make every DynamoDB backend of this process's moto use ``transact_write_items`` (idempotent)."""
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
