"""A compressed transport's per-worker state outside EFS, as the planner prices it: each worker's
error-feedback residual, float32 4P, PUT to and GET from the stack's S3 bucket every round
(lambdatrain/storage/state.py; planner.py's docstring says where it enters a round and its cost).
"""

from __future__ import annotations

from typing import Protocol


class Scenario(Protocol):  # what of planner.Scenario this needs (planner imports this module)
    params: int
    buffers: int

    @property
    def compressed(self) -> bool: ...


class Calibration(Protocol):  # what of planner.Calibration this needs
    s3_bps: float
    s3_request_s: float


def state_bytes(s: Scenario) -> dict[str, int]:
    """Bytes one worker moves per round to and from its state store outside EFS: its residual's
    PUT and (worst case) GET, float32 4P each, for a compressed transport; nothing otherwise."""
    residual = 4 * (s.params - s.buffers) if s.compressed else 0
    return {"put": residual, "get": residual}


def transfer_seconds(nbytes: int, c: Calibration) -> float:
    """One residual transfer: a request's latency, then its parts, CONCURRENCY at once at ``s3_bps`` each."""
    from lambdatrain.storage.state import CONCURRENCY, parts  # numpy and boto3: not for `plan --help`

    if not nbytes:
        return 0.0
    return c.s3_request_s + nbytes / (c.s3_bps * min(CONCURRENCY, parts(nbytes)))


def state_seconds(s: Scenario, c: Calibration) -> dict[str, float]:
    """A worker's time per round for its residual's GET (started with the invocation, beside
    loading and compute) and PUT (before its result is written)."""
    moved = state_bytes(s)
    return {"get": transfer_seconds(moved["get"], c), "put": transfer_seconds(moved["put"], c)}
