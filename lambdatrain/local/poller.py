"""The local event source mapping: DynamoDB stream -> filter -> combiner, in batches, with retries.

Reads the table's stream through the DynamoDB Streams API (moto serves it), keeps only records that
match the shared filter pattern, and invokes the combiner synchronously with batches of at most
``STREAM_BATCH_SIZE`` records, shard by shard in order, as Lambda's mapping does. A batch the
function fails on is retried ``STREAM_MAX_RETRIES`` times and then written to a dead-letter file.
moto emits two INSERT records for an ``update_item`` that creates an item; the filter and the
combiner's conditional claim make such duplicates harmless.

When to read: the stack wakes the poller on every table write (``wake``, called by the moto
server), so a round's READY record reaches the combiner within milliseconds, without polling
moto ten times a second (which cost 16 % of a core on a 2-core machine). A slow read every
``idle_poll_s`` is the safety net for a write the hook did not see. ``latency_s`` delays each read
after a wakeup, to model AWS's own delivery delay (its mapping polls a shard 4 times a second).

What a read costs: one GetRecords per shard. The shard list (DescribeStream) is read again only
when a shard closes (its iterator ends: the stream rolled over to a child shard) or every
``SHARD_REFRESH_S``; and after a page the loop reads again at once only if the page was full,
since a write during the read has woken it anyway. Each moto request costs the stack's process
about 3.5 ms, and each write had cost two reads of two requests each: 18 ms of CPU per write (now
3 ms), two writes per worker and round, on the cores the workers compute on (docs/benchmarks.md
section 4).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable

from lambdatrain.ledger import schema
from lambdatrain.local.filtering import matches

PAGE_LIMIT = 1000  # records per GetRecords, DynamoDB Streams' maximum
SHARD_REFRESH_S = 60.0  # the shard list read again at least this often (new shards after a rollover)


def _as_delivered(record: dict[str, Any]) -> dict[str, Any]:
    """The record as Lambda delivers it: the creation time in epoch seconds, not a datetime."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
    return {**record, "dynamodb": dynamodb}


class StreamPoller:
    def __init__(self, streams_client, stream_arn: str, deliver: Callable[[dict[str, Any]], Any],
                 dead_letter: Callable[[dict[str, Any], dict[str, Any]], None], *, idle_poll_s: float = 1.0,
                 latency_s: float = 0.0, duplicate_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 0):
        self.streams, self.arn = streams_client, stream_arn
        self.deliver, self.dead_letter = deliver, dead_letter
        self.idle_poll_s, self.latency_s = idle_poll_s, latency_s
        self.duplicate_rate, self.drop_rate = duplicate_rate, drop_rate
        self.rng = random.Random(seed)
        self.iterators: dict[str, str | None] = {}
        self.shards: list[str] = []
        self._shards_read_at = -float("inf")  # time.monotonic() of the last DescribeStream
        self.full_page = False  # the last read stopped at PAGE_LIMIT: more may be waiting
        self.delivered = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="stream-poller")

    def start(self) -> None:
        self.thread.start()

    def request_stop(self) -> None:
        """Stop after the delivery in flight, which retries no more (see ``_deliver``)."""
        self._stop.set()
        self._wake.set()

    def stop(self) -> None:
        self.request_stop()
        self.thread.join(timeout=30)

    def wake(self) -> None:
        """The table was written: read the stream now (cheap; safe from any thread)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Cleared before reading: a write during the read wakes the next one, none is missed.
            self._wake.clear()
            try:
                busy = self.poll_once()
            except Exception:  # noqa: BLE001 - the endpoint may be restarting; poll again
                self._stop.wait(0.1)  # writes may keep waking us: don't spin on a failing endpoint
                busy = False
            if busy and self.full_page:
                continue  # more records may be waiting behind a full page
            if self._wake.wait(self.idle_poll_s) and self.latency_s:
                self._stop.wait(self.latency_s)

    def poll_once(self) -> bool:
        """Read every shard once; True if any record was read."""
        busy, self.full_page = False, False
        if time.monotonic() - self._shards_read_at > SHARD_REFRESH_S:
            self._read_shards()
        for sid in self.shards:
            if not self.iterators[sid]:
                continue
            page = self.streams.get_records(ShardIterator=self.iterators[sid], Limit=PAGE_LIMIT)
            self.iterators[sid] = page.get("NextShardIterator")
            if not self.iterators[sid]:
                self._shards_read_at = -float("inf")  # closed: its children appear in the next list
            read = page.get("Records", [])
            records = [_as_delivered(r) for r in read if matches(schema.STREAM_FILTER_PATTERN, r)]
            busy, self.full_page = busy or bool(read), self.full_page or len(read) >= PAGE_LIMIT
            for start in range(0, len(records), schema.STREAM_BATCH_SIZE):
                self._deliver({"Records": records[start:start + schema.STREAM_BATCH_SIZE]})
        return busy

    def _read_shards(self) -> None:
        """The stream's shards (DescribeStream), each new one read from its start."""
        shards = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        self.shards = [shard["ShardId"] for shard in shards]
        for sid in self.shards:
            if sid not in self.iterators:
                self.iterators[sid] = self.streams.get_shard_iterator(
                    StreamArn=self.arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        self._shards_read_at = time.monotonic()

    def _deliver(self, batch: dict[str, Any]) -> None:
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return
        copies = 2 if self.duplicate_rate and self.rng.random() < self.duplicate_rate else 1
        for _ in range(copies):
            error: dict[str, Any] = {}
            for _attempt in range(1 + schema.STREAM_MAX_RETRIES):
                try:
                    self.deliver(batch)
                    self.delivered += 1
                    error = {}
                    break
                except Exception as exc:  # noqa: BLE001 - a function error: retry, then dead-letter
                    if self._stop.is_set():
                        # The stack is shutting down and killed the function under this delivery:
                        # not the function's failure, so no dead letter (the watchdog of the next
                        # stack, or `resume`, re-drives the round).
                        return
                    # Lambda's error document where the function gave one (its errorType says
                    # whether the process died or the handler raised), else the message.
                    error = getattr(exc, "document", None) or {"errorMessage": str(exc)}
                    time.sleep(0.2)
            if error:
                self.dead_letter(batch, error)
