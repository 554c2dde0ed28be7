"""An in-process system for functional tests: moto in memory, handlers called inline.

The same handler code as on AWS and on the local stack (``handlers.dispatch``), with asynchronous
invocations queued and run one after another, and the table's stream read by the real poller
(``lambdatrain.local.poller``) with the shared filter. Deterministic and fast: no processes.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import boto3

from lambdatrain import schema
from lambdatrain.handlers import dispatch
from lambdatrain.ledger import Ledger
from lambdatrain.local.poller import StreamPoller
from lambdatrain.runtime import Runtime
from lambdatrain.settings import COMBINER, STARTER, WORKER, load



class QueueInvoker:
    def __init__(self):
        self.queue: collections.deque = collections.deque()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def invoke(self, logical: str, payload: dict[str, Any]) -> None:
        self.queue.append((logical, payload))
        self.sent.append((logical, payload))


class FakeContext:
    """The Lambda context object, as powertools' tests fake it."""

    def __init__(self, request_id: str = "req-1", remaining_ms: int = 900_000):
        self.aws_request_id = request_id
        self.function_name = "test"
        self.memory_limit_in_mb = 1769
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:test"
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


class InlineSystem:
    """Talks to a moto server through ``AWS_ENDPOINT_URL`` (see the ``system`` fixture).

    moto's in-process mock does not serve the DynamoDB Streams API, its server does.
    """

    def __init__(self, mount: Path, table: str, env: dict[str, str] | None = None):
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(**schema.create_table_kwargs(table))
        arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        self.mount = mount
        self.settings = load({"LAMBDATRAIN_TABLE": table, "LAMBDATRAIN_MOUNT": str(mount), **(env or {})})
        self.ledger = Ledger(table)
        self.invoker = QueueInvoker()
        self.runtimes = {name: Runtime(settings=self.settings, ledger=self.ledger, invoker=self.invoker, handler=name)
                         for name in (STARTER, WORKER, COMBINER)}
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.stream_batches = 0
        self.poller = StreamPoller(boto3.client("dynamodbstreams"), arn, self._deliver_batch,
                                   lambda batch, error: (_ for _ in ()).throw(AssertionError(error)))

    def _deliver_batch(self, batch: dict[str, Any]) -> None:
        self.stream_batches += 1
        self.answers.append((COMBINER, dispatch(self.runtimes[COMBINER], COMBINER, batch, FakeContext())))

    def invoke(self, name: str, event: dict[str, Any], context: FakeContext | None = None) -> dict[str, Any]:
        return dispatch(self.runtimes[name], name, event, context or FakeContext())

    def step(self) -> bool:
        """Run one queued invocation or one stream poll; False when nothing is left."""
        if self.invoker.queue:
            name, event = self.invoker.queue.popleft()
            self.answers.append((name, self.invoke(name, event)))
            return True
        return self.poller.poll_once()

    def drain(self, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if not self.step():
                return
        raise AssertionError("the system did not settle")
