"""What a handler works with: settings, ledger, invoker, clock and fault points, built once.

A Lambda process keeps module state between invocations, so the runtime (and its boto3 clients)
is built on the first invocation and reused by the warm ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config

from lambdatrain.roles import settings as settings_mod
from lambdatrain.roles.faults import Faults
from lambdatrain.ledger.table import Ledger
from lambdatrain.roles.settings import RuntimeSettings


class Invoker:
    """Asynchronous Lambda invocations (InvocationType=Event), as the paper's chain of calls."""

    def __init__(self, functions: dict[str, str], client=None):
        self.functions = functions
        self.client = client or boto3.client(
            "lambda", config=Config(retries={"mode": "standard", "max_attempts": 8}, read_timeout=30))

    def invoke(self, logical: str, payload: dict[str, Any]) -> None:
        self.client.invoke(FunctionName=self.functions[logical], InvocationType="Event",
                           Payload=json.dumps(payload).encode())


@dataclass
class Runtime:
    settings: RuntimeSettings
    ledger: Ledger
    invoker: Invoker
    handler: str
    clock: Callable[[], float] = time.time
    faults: Faults = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.faults is None:
            self.faults = Faults(self.settings.faults, self.handler, self.settings.mount / ".faults")

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
