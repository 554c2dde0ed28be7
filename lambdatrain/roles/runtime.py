"""What a handler works with: settings, ledger, invoker, clock and fault points, built once.

A Lambda process keeps module state between invocations, so the runtime (and its boto3 clients)
is built on the first invocation and reused by the warm ones.

``invoke_all`` is the fan-out (the starter's, the combiner's and the watchdog's): N asynchronous
invocations made concurrently by a bounded thread pool over one boto3 client, so a round's fan-out
takes about ceil(N / INVOKE_POOL) invocation latencies instead of N. A pool, not a tree (worker i
invoking workers 2i+1 and 2i+2): a tree would let workers invoke functions, which they never may
(tests/functional/test_runtime_security.py), and would put log2(N) asynchronous deliveries, each
queued by Lambda, one after another on the critical path.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import boto3
from botocore.config import Config

from lambdatrain.logs import logger
from lambdatrain.roles import settings as settings_mod
from lambdatrain.roles.faults import Faults
from lambdatrain.ledger.table import Ledger
from lambdatrain.roles.settings import RuntimeSettings
from lambdatrain.protocol.errors import ConfigError

if TYPE_CHECKING:
    from lambdatrain.storage.state import StateStore

# Concurrent invocations per fan-out. At ~20-30 ms per asynchronous invoke, 32 at a time fan out to
# 256 workers in about 8 latencies; botocore's own CPU per call (signing, serializing, holding the
# GIL; about 0.8 ms a call on bench.protocol's machine, HTTP stubbed) is the rest.
INVOKE_POOL = 32


class SupportsInvoke(Protocol):
    def invoke(self, logical: str, payload: dict[str, Any]) -> None: ...


class Invoker:
    """Asynchronous Lambda invocations (InvocationType=Event), as the paper's chain of calls."""

    def __init__(self, functions: dict[str, str], client=None):
        self.functions = functions
        # boto3 clients are thread-safe; one HTTP connection per pool thread, or urllib3 would
        # discard the extras ("Connection pool is full") and reconnect on every call.
        self.client = client or boto3.client(
            "lambda", config=Config(retries={"mode": "standard", "max_attempts": 8}, read_timeout=30,
                                    max_pool_connections=INVOKE_POOL))

    def invoke(self, logical: str, payload: dict[str, Any]) -> None:
        self.client.invoke(FunctionName=self.functions[logical], InvocationType="Event",
                           Payload=json.dumps(payload).encode())


def invoke_all(invoker: SupportsInvoke, logical: str, payloads: Sequence[dict[str, Any]],
               pool: int = INVOKE_POOL) -> None:
    """Invoke ``logical`` once per payload, up to ``pool`` at a time; raise after every one was tried.

    Each invocation keeps botocore's retries. One that still fails does not stop the others: they
    are all attempted, then the first error is raised, so the handler fails as a sequential loop
    would have (the watchdog re-drives what was not invoked) without leaving the rest uninvoked.
    The order of invocations is arbitrary, as Lambda's order of delivery is: results are keyed by
    worker (or shard) number, so no result depends on it.
    """
    if len(payloads) <= 1:  # no thread for one call (and a pool of none is an error)
        for payload in payloads:
            invoker.invoke(logical, payload)
        return
    with ThreadPoolExecutor(max_workers=min(pool, len(payloads)), thread_name_prefix="invoke") as executor:
        futures = [executor.submit(invoker.invoke, logical, payload) for payload in payloads]
    errors = [(p, f.exception()) for p, f in zip(payloads, futures) if f.exception() is not None]
    if errors:
        logger.error("invocations failed", extra={"function": logical, "failed": len(errors), "of": len(payloads),
                                                  "payloads": [p for p, _ in errors], "error": str(errors[0][1])})
        raise errors[0][1]


@dataclass
class Runtime:
    settings: RuntimeSettings
    ledger: Ledger
    invoker: Invoker
    handler: str
    clock: Callable[[], float] = time.time
    faults: Faults = field(default=None)  # type: ignore[assignment]
    _state_store: Any = field(default=None, repr=False)  # a storage.state.StateStore, built on first use

    def __post_init__(self) -> None:
        if self.faults is None:
            self.faults = Faults(self.settings.faults, self.handler, self.settings.mount / ".faults")

    @property
    def state_store(self) -> StateStore:
        """A compressed run's state between rounds (the workers' and the combiner's error-feedback
        residuals, the combiner's momentum and update), in the stack's bucket."""
        if self._state_store is None:
            if self.settings.bucket is None:
                raise ConfigError(f"{settings_mod.ENV_BUCKET} is not set: the compressed transports keep each "
                                  "worker's error-feedback residual in the stack's bucket")
            # Imported here: state.py needs numpy, and the starter must load before `setup` has
            # installed it on a fresh stack (tests/infra/test_archive.py).
            from lambdatrain.storage.digest import DEFAULT_ALGORITHM
            from lambdatrain.storage.state import StateStore

            self._state_store = StateStore(boto3.client("s3"), self.settings.bucket, settings_mod.STATE_PREFIX,
                                           DEFAULT_ALGORITHM, settings_mod.STATE_TAG, settings_mod.STATE_EXPIRING)
        return self._state_store

    def data_root(self, config) -> Path:
        """The run's prepared dataset: the stack's default, or a folder below the mount."""
        return self.settings.data if config.data is None else self.settings.mount / config.data

    @classmethod
    def from_env(cls, handler: str) -> "Runtime":
        s = settings_mod.load()
        return cls(settings=s, ledger=Ledger(s.table), invoker=Invoker(dict(s.functions)), handler=handler)


_RUNTIMES: dict[str, Runtime] = {}


def get(handler: str) -> Runtime:
    """The process's runtime for ``handler`` (built on the cold start, reused when warm)."""
    if handler not in _RUNTIMES:
        _RUNTIMES[handler] = Runtime.from_env(handler)
    return _RUNTIMES[handler]


class Deadline:
    """Seconds left in this invocation, from the Lambda context (inf when there is none)."""

    def __init__(self, context: Any, margin_s: float = 10.0):
        self.context, self.margin_s = context, margin_s

    def __call__(self) -> float:
        getter = getattr(self.context, "get_remaining_time_in_millis", None)
        return float("inf") if getter is None else getter() / 1000.0 - self.margin_s
