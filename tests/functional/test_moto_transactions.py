"""The local stack's TransactWriteItems (lambdatrain/local/moto_transactions.py) against DynamoDB's
documented behaviour: all of a transaction or none of it, in the table and in its stream, and a
stream that goes on after a cancelled one (moto's own rollback left open iterators on a discarded
shard)."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models.table import Table

from lambdatrain.ledger import schema
from lambdatrain.local.moto_server import MotoServer


@pytest.fixture(scope="module")
def server():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def table(server):
    """(client, streams client, table name, an iterator at the stream's start)."""
    kwargs = {"endpoint_url": server.url, "region_name": "us-east-1"}
    client, streams = boto3.client("dynamodb", **kwargs), boto3.client("dynamodbstreams", **kwargs)
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.create_table(**schema.create_table_kwargs(name))
    arn = client.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return client, streams, name, [iterator["ShardIterator"]]


def _key(pk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": "s"}}


def _read(streams, iterator: list[str]) -> list[tuple[str, str]]:
    """The records since the last read, through the same iterator chain, as (event, pk)."""
    page = streams.get_records(ShardIterator=iterator[0])
    iterator[0] = page["NextShardIterator"]
    return [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in page["Records"]]


def _items(client, name: str) -> dict[str, dict]:
    return {i["pk"]["S"]: i for i in client.scan(TableName=name, ConsistentRead=True)["Items"]}


def _seed(client, streams, name, iterator) -> dict[str, dict]:
    client.put_item(TableName=name, Item={**_key("kept"), "n": {"N": "1"}})
    client.put_item(TableName=name, Item={**_key("gone"), "n": {"N": "2"}})
    assert _read(streams, iterator) == [("INSERT", "kept"), ("INSERT", "gone")]
    return _items(client, name)


def test_a_cancelled_transaction_changes_no_item_and_streams_nothing(table):
    client, streams, name, iterator = table
    before = _seed(client, streams, name, iterator)
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {**_key("new"), "n": {"N": "3"}}}},
            {"Update": {"TableName": name, "Key": _key("kept"), "UpdateExpression": "SET n = :n",
                        "ExpressionAttributeValues": {":n": {"N": "10"}}}},
            {"Delete": {"TableName": name, "Key": _key("gone")}},
            {"ConditionCheck": {"TableName": name, "Key": _key("absent"), "ConditionExpression": "attribute_exists(pk)"}},
        ])
    error = raised.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in error["CancellationReasons"]] == ["None", "None", "None", "ConditionalCheckFailed"]
    assert _items(client, name) == before
    assert _read(streams, iterator) == []


def test_the_stream_goes_on_after_a_cancelled_transaction(table):
    client, streams, name, iterator = table
    _seed(client, streams, name, iterator)
    with pytest.raises(ClientError, match="TransactionCanceled"):
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": _key("kept"), "ConditionExpression": "attribute_not_exists(pk)"}}])
    client.put_item(TableName=name, Item=_key("after"))
    assert _read(streams, iterator) == [("INSERT", "after")]  # the iterator opened before it


def test_a_transaction_that_passes_writes_every_operation_in_order(table):
    client, streams, name, iterator = table
    _seed(client, streams, name, iterator)
    client.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": {**_key("new"), "n": {"N": "3"}}}},
        {"Update": {"TableName": name, "Key": _key("kept"), "UpdateExpression": "SET n = n + :one",
                    "ConditionExpression": "n = :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"Delete": {"TableName": name, "Key": _key("gone")}},
    ])
    assert {pk: item["n"]["N"] for pk, item in _items(client, name).items()} == {"new": "3", "kept": "2"}
    assert _read(streams, iterator) == [("INSERT", "new"), ("MODIFY", "kept"), ("REMOVE", "gone")]


def test_two_operations_on_one_item_are_refused_with_nothing_written(table):
    client, streams, name, iterator = table
    before = _seed(client, streams, name, iterator)
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": _key("new")}},
            {"Update": {"TableName": name, "Key": _key("new"), "UpdateExpression": "SET n = :n",
                        "ExpressionAttributeValues": {":n": {"N": "1"}}}},
        ])
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert _items(client, name) == before
    assert _read(streams, iterator) == []


def test_a_cancelled_put_of_a_new_partition_leaves_no_trace(table):
    client, streams, name, iterator = table
    with pytest.raises(ClientError, match="TransactionCanceled"):
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": _key("first")}},
            {"ConditionCheck": {"TableName": name, "Key": _key("absent"), "ConditionExpression": "attribute_exists(pk)"}},
        ])
    assert _items(client, name) == {}
    assert client.describe_table(TableName=name)["Table"]["ItemCount"] == 0
    assert _read(streams, iterator) == []


def test_a_transaction_backs_up_its_items_not_whole_tables(table, monkeypatch):
    # moto's own backup deep-copied each table named, its history included: a cost that grew with it.
    client, streams, name, iterator = table
    _seed(client, streams, name, iterator)

    def refuse(self, memo):
        raise AssertionError("a whole table was copied")

    monkeypatch.setattr(Table, "__deepcopy__", refuse, raising=False)
    client.transact_write_items(TransactItems=[{"Put": {"TableName": name, "Item": _key("new")}}])
    with pytest.raises(ClientError, match="TransactionCanceled"):
        client.transact_write_items(TransactItems=[
            {"Delete": {"TableName": name, "Key": _key("new")}},
            {"ConditionCheck": {"TableName": name, "Key": _key("absent"), "ConditionExpression": "attribute_exists(pk)"}},
        ])
    assert set(_items(client, name)) == {"kept", "gone", "new"}
