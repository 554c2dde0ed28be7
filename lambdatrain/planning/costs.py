"""Dollars per warm epoch of a planned run, by item (Lambda GB-seconds and requests, EFS, DynamoDB, and
a compressed transport's S3 requests and storage: bucket.py's transfers), from the round's times
and bytes that planner.py predicts; the prices and their sources are prices.py's.
"""

from __future__ import annotations

from typing import Protocol

from lambdatrain.planning.prices import DAYS_PER_MONTH, STATE_KEPT_DAYS, Prices
from lambdatrain.planning.bucket import combiner_state_bytes, combiner_transfers, state_bytes, worker_transfers

GB = 1e9


class Scenario(Protocol):  # what of planner.Scenario this needs (planner imports this module)
    workers: int
    shards: int
    memory_mb: int
    combiner_memory_mb: int
    params: int
    buffers: int

    @property
    def compressed(self) -> bool: ...


def epoch_cost(s: Scenario, rounds: int, worker_s: float, combine_s: float, moved: dict[str, int],
               prices: Prices) -> dict[str, float]:
    """Dollars per warm epoch by item: Lambda GB-seconds and requests, EFS, DynamoDB, S3 requests."""
    n, shards = s.workers, s.shards
    gb_s = rounds * (n * worker_s * s.memory_mb + shards * combine_s * s.combiner_memory_mb) / 1024
    efs_read = rounds * (moved["worker_read"] + moved["combiner_read"]) / GB
    efs_write = rounds * (moved["worker_write"] + moved["combiner_write"]) / GB
    wru = rounds * (2 * n + 4 + shards)  # result record + round update each; claim, commit, metric
    cost = {"lambda": gb_s * prices.gb_second, "requests": rounds * (n + shards) * prices.request,
            "efs": efs_read * prices.efs_read_gb + efs_write * prices.efs_write_gb,
            "dynamodb": wru * prices.dynamodb_wru}
    if s.compressed:  # every transfer of bucket.py, in parts; the combiner's listing and DeleteObjects
        from lambdatrain.storage.state import requests

        def billed(transfers: dict[str, list[int]]) -> float:
            return sum(requests(b)[d] * (prices.s3_put if d == "put" else prices.s3_get)
                       for d, sizes in transfers.items() for b in sizes)

        cost["s3_requests"] = rounds * (n * billed(worker_transfers(s)) + billed(combiner_transfers(s)) +
                                        2 * prices.s3_put)
        # The epoch boundary's state (every worker's residual, the combiner's), kept STATE_KEPT_DAYS.
        stored_gb = (n * state_bytes(s)["put"] + combiner_state_bytes(s)["put"]) / GB
        cost["s3_storage"] = stored_gb * prices.s3_gb_month * STATE_KEPT_DAYS / DAYS_PER_MONTH
    return cost
