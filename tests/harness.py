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

from lambdatrain.ledger import schema
from lambdatrain.roles.faults import Faults, InjectedCrash
from lambdatrain.roles.edge import dispatch
from lambdatrain.ledger.table import Ledger
from lambdatrain.local.poller import StreamPoller
from lambdatrain.roles.runtime import Runtime
from lambdatrain.roles.settings import COMBINER, STARTER, WORKER, load



LAMBDA_ASYNC_RETRIES = 2


class FakeClock:
    """Time that moves only when a test says so (leases and round deadlines)."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class QueueInvoker:
    """Asynchronous invocations, queued; ``duplicate`` delivers every event twice (at least once)."""

    def __init__(self, duplicate: bool = False):
        self.queue: collections.deque = collections.deque()
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.duplicate = duplicate

    def invoke(self, logical: str, payload: dict[str, Any]) -> None:
        for _ in range(2 if self.duplicate else 1):
            self.queue.append((logical, payload, 0))
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

    def __init__(self, mount: Path, table: str, *, faults: str | None = None, duplicate: bool = False,
                 stream_duplicate_rate: float = 0.0, seed: int = 0, bucket: str | None = None):
        dynamodb = boto3.client("dynamodb")
        if bucket is not None:  # the stack's bucket: exports, and the compressed transports' residuals
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})  # as the stack's
        dynamodb.create_table(**schema.create_table_kwargs(table))
        self.stream_arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        self.mount, self.table = mount, table
        self.settings = load({"LAMBDATRAIN_TABLE": table, "LAMBDATRAIN_MOUNT": str(mount),
                              **({"LAMBDATRAIN_BUCKET": bucket} if bucket else {})})
        self.clock = FakeClock()
        self.ledger = Ledger(table, clock=self.clock)
        self.invoker = QueueInvoker(duplicate)
        self.crashes: list[tuple[str, str]] = []
        self.runtimes = {name: Runtime(settings=self.settings, ledger=self.ledger, invoker=self.invoker, handler=name,
                                       clock=self.clock, faults=Faults(faults, name, mount / ".faults", self._crash(name)))
                         for name in (STARTER, WORKER, COMBINER)}
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.dead_letters: list[Any] = []
        self.poller = StreamPoller(boto3.client("dynamodbstreams"), self.stream_arn, self._deliver_batch,
                                   lambda batch, error: self.dead_letters.append((batch, error)),
                                   duplicate_rate=stream_duplicate_rate, seed=seed)

    def _crash(self, name: str):
        def crash(point: str) -> None:
            self.crashes.append((name, point))
            raise InjectedCrash(f"{name}:{point}")
        return crash

    def _deliver_batch(self, batch: dict[str, Any]) -> None:
        try:
            self.answers.append((COMBINER, dispatch(self.runtimes[COMBINER], COMBINER, batch, FakeContext())))
        except InjectedCrash as exc:  # the function died: the mapping retries the batch
            raise RuntimeError(f"combiner died at {exc}") from None

    def invoke(self, name: str, event: dict[str, Any], context: FakeContext | None = None) -> dict[str, Any]:
        return dispatch(self.runtimes[name], name, event, context or FakeContext())

    def step(self) -> bool:
        """Run one queued invocation or one stream poll; False when nothing is left.

        A crashed asynchronous invocation is retried twice, as Lambda does, then dropped.
        """
        if self.invoker.queue:
            name, event, attempt = self.invoker.queue.popleft()
            try:
                self.answers.append((name, self.invoke(name, event)))
            except InjectedCrash:
                if attempt < LAMBDA_ASYNC_RETRIES:
                    self.invoker.queue.append((name, event, attempt + 1))
                else:
                    self.dead_letters.append((name, event))
            return True
        return self.poller.poll_once()

    def run_to_end(self, run: str, *, max_watchdogs: int = 20) -> None:
        """Drain; while the run is unfinished, let its deadline pass and fire the watchdog."""
        for _ in range(max_watchdogs):
            self.drain()
            record = self.ledger.get_run(run)
            if record.state != "running":
                return
            self.clock.advance(record.config.round_deadline_s + 1)
            self.invoker.queue.append((COMBINER, {"watchdog": True}, 0))
        raise AssertionError(f"run {run} did not finish: {self.ledger.get_run(run)}")

    def drain(self, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if not self.step():
                return
        raise AssertionError("the system did not settle")
