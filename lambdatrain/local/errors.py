"""How a local invocation fails: the two errors the Lambda service's callers handle.

Kept apart from service.py and api.py so both can raise and catch them without importing each other.
"""

from __future__ import annotations

from typing import Any


class InvocationError(Exception):
    """A failed invocation, carrying Lambda's error document (errorMessage, errorType)."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        super().__init__(document.get("errorMessage", "function error"))


class Throttled(Exception):
    """A synchronous invocation refused because the function's reserved concurrency is in use."""

    def __init__(self, function: str, concurrency: int):
        self.function = function
        super().__init__(f"{function} is at its reserved concurrency ({concurrency})")
