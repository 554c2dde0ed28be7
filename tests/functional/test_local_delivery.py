"""The local stack's latency paths: write-woken stream reads and prewarmed execution environments."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3

from lambdatrain.ledger import schema
from lambdatrain.local.poller import StreamPoller
from lambdatrain.local.environment import FunctionConfig
from lambdatrain.local.service import LambdaService

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_moto_tells_listeners_about_writes_only():
    from lambdatrain.local.moto_server import MotoServer

    server = MotoServer()
    server.start()
    try:
        calls = []
        server.write_listeners.append(lambda: calls.append(1))
        dynamodb = boto3.resource("dynamodb", endpoint_url=server.url)
        table = dynamodb.create_table(**schema.create_table_kwargs(f"t-{uuid.uuid4().hex[:8]}"))
        calls.clear()
        table.put_item(Item={"pk": "a", "sk": "b"})
        table.update_item(Key={"pk": "a", "sk": "b"}, UpdateExpression="SET x = :x",
                          ExpressionAttributeValues={":x": 1})
        assert len(calls) == 2
        table.get_item(Key={"pk": "a", "sk": "b"})
        table.scan()
        assert len(calls) == 2
    finally:
        server.stop()


def test_moto_counts_the_time_it_serves_requests_and_only_that():
    """bench.planner's measure of what the stack's clients queue for (one request at a time)."""
    from lambdatrain.local.moto_server import MotoServer

    server = MotoServer()
    server.start()
    try:
        dynamodb = boto3.resource("dynamodb", endpoint_url=server.url)
        table = dynamodb.create_table(**schema.create_table_kwargs(f"t-{uuid.uuid4().hex[:8]}"))
        before = server.busy_s
        time.sleep(0.2)  # idle: counts nothing
        assert server.busy_s == before
        t0 = time.perf_counter()
        for i in range(5):
            table.put_item(Item={"pk": "a", "sk": str(i)})
        elapsed = time.perf_counter() - t0
        assert 0 < server.busy_s - before <= elapsed  # inside the requests' round trips
    finally:
        server.stop()


class _Streams:
    """A stream with one shard and no records; counts the reads of records and of the shard list."""

    def __init__(self):
        self.reads = self.listings = 0

    def describe_stream(self, StreamArn):  # noqa: N803 - boto3's names
        self.listings += 1
        return {"StreamDescription": {"Shards": [{"ShardId": "s"}]}}

    def get_shard_iterator(self, **kwargs):
        return {"ShardIterator": "it"}

    def get_records(self, ShardIterator, Limit):  # noqa: N803
        self.reads += 1
        return {"Records": [], "NextShardIterator": "it"}


def test_a_write_wakes_the_poller_long_before_its_idle_poll():
    streams = _Streams()
    poller = StreamPoller(streams, "arn", lambda batch: None, lambda batch, error: None, idle_poll_s=60)
    poller.start()
    try:
        deadline = time.monotonic() + 10
        while streams.reads < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert streams.reads == 1  # idle: no polling loop
        poller.wake()
        while streams.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert streams.reads == 2
    finally:
        poller.stop()
    assert not poller.thread.is_alive()
    assert streams.listings == 1  # the shard list read once, not on every read


def test_a_write_costs_the_poller_one_read_of_records():
    # A real moto with the ledger's table: after each write the poller reads the stream once, not a
    # second time to find it empty, and without listing the shards again.
    from lambdatrain.local.moto_server import MotoServer

    server = MotoServer()
    server.start()
    try:
        kwargs = {"endpoint_url": server.url, "region_name": "us-east-1", "aws_access_key_id": "x",
                  "aws_secret_access_key": "x"}
        dynamodb = boto3.client("dynamodb", **kwargs)
        dynamodb.create_table(**schema.create_table_kwargs("poller-reads"))
        arn = dynamodb.describe_table(TableName="poller-reads")["Table"]["LatestStreamArn"]
        calls: list[str] = []
        streams = boto3.client("dynamodbstreams", **kwargs)
        streams.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
        poller = StreamPoller(streams, arn, lambda batch: None, lambda batch, error: None, idle_poll_s=60)
        server.write_listeners.append(poller.wake)
        poller.start()
        try:
            deadline = time.monotonic() + 10
            while "GetRecords" not in calls and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            assert calls == ["DescribeStream", "GetShardIterator", "GetRecords"]  # the first read
            for n in range(3):
                before = len(calls)
                dynamodb.put_item(TableName="poller-reads", Item={"pk": {"S": f"p{n}"}, "sk": {"S": "s"}})
                deadline = time.monotonic() + 10
                while len(calls) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.3)  # room for a second, needless read
                assert calls[before:] == ["GetRecords"], calls
        finally:
            poller.stop()
    finally:
        server.stop()


def test_an_invocation_during_prewarm_takes_the_warming_environment(tmp_path):
    handler = tmp_path / "handler.py"
    # A slow init, so the invocation surely arrives while the environment is still warming.
    handler.write_text("import os, time\ntime.sleep(1.0)\n\ndef handler(event, context):\n    return os.getpid()\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    service = LambdaService([FunctionConfig("f", handler, concurrency=2)], env, tmp_path)
    try:
        fn = service.function("f")
        fn.prewarm(1)
        first = fn.invoke_sync({})  # waits for the warming environment
        assert fn.invoke_sync({}) == first  # and keeps using it, warm
        assert len(fn.all) == 1  # no cold start beside the prewarmed environment
        fn.prewarm(1)  # already there: nothing more starts
        assert fn.warming == 0 and len(fn.all) == 1
    finally:
        service.stop()
