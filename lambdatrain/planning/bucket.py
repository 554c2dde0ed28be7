"""What a compressed run moves through the stack's S3 bucket each round, as the planner prices it
(lambdatrain/storage/state.py; planner.py's docstring says where each transfer enters a round):

* each worker PUTs its error-feedback residual (float32, 4P), GETs the one it starts the round with
  (4P; skipped where its environment kept it, planned for as always happening: the worst case),
  and GETs the combiner's compressed update (payload(P) + 4B, the size of a result);
* the combiner PUTs its momentum (sync mode) and its residual, 4P each, and the update; S > 1
  shares each PUT and GET their slice of the first two (4P / S), and the share that completes the
  round PUTs the whole update. One combiner (S = 1) keeps its state warm (roles/warm.py): no GET.

Nothing else a round does touches the bucket; float transports move nothing here.
"""

from __future__ import annotations

from typing import Protocol


class Scenario(Protocol):  # what of planner.Scenario this needs (planner imports this module)
    params: int
    buffers: int
    shards: int
    mode: str

    @property
    def compressed(self) -> bool: ...

    def result_bytes(self) -> int: ...


class Calibration(Protocol):  # what of planner.Calibration this needs
    s3_bps: float
    s3_request_s: float
    s3_put_s_per_byte: float
    s3_clients: float


def worker_transfers(s: Scenario) -> dict[str, list[int]]:
    """The bytes of each object one worker PUTs and GETs per round (a transfer per entry)."""
    if not s.compressed:
        return {"put": [], "get": []}
    residual = 4 * (s.params - s.buffers)
    return {"put": [residual], "get": [residual, s.result_bytes()]}


def combiner_transfers(s: Scenario) -> dict[str, list[int]]:
    """The bytes of each object the combine (all S shares) PUTs and GETs per warm round."""
    if not s.compressed:
        return {"put": [], "get": []}
    arrays = 2 if s.mode == "sync" else 1  # momentum (sync mode) and residual
    piece = 4 * (s.params - s.buffers) // s.shards
    slices = [piece] * (arrays * s.shards)
    return {"put": slices + [s.result_bytes()], "get": slices if s.shards > 1 else []}


def state_bytes(s: Scenario) -> dict[str, int]:
    """Bytes one worker moves per round to and from the bucket, by direction."""
    return {d: sum(sizes) for d, sizes in worker_transfers(s).items()}


def combiner_state_bytes(s: Scenario) -> dict[str, int]:
    """Bytes the combine moves per round to and from the bucket, by direction."""
    return {d: sum(sizes) for d, sizes in combiner_transfers(s).items()}


def transfer_seconds(nbytes: int, c: Calibration, clients: float = 1.0, put: bool = False) -> float:
    """One object's transfer: a request's latency, then its parts, CONCURRENCY at once at ``s3_bps``
    each, and a PUT's ``s3_put_s_per_byte`` (the local stack's moto writes each object to its disk
    mirror, lambdatrain/local/durable.py); ``clients`` transferring at once through an endpoint
    that serves one request at a time (Calibration.s3_clients) each see 1/clients of it."""
    from lambdatrain.storage.state import CONCURRENCY, parts  # numpy and boto3: not for `plan --help`

    if not nbytes:
        return 0.0
    stored = nbytes * c.s3_put_s_per_byte if put else 0.0
    return clients * (c.s3_request_s + nbytes / (c.s3_bps * min(CONCURRENCY, parts(nbytes))) + stored)


def state_seconds(s: Scenario, c: Calibration) -> dict[str, float]:
    """A worker's time per round in the bucket: its residual's GET (started with the invocation,
    beside loading and compute), the update's GET (before compute: it makes the weights) and the
    residual's PUT (before its result is written)."""
    t, k = worker_transfers(s), c.s3_clients
    if not t["put"]:
        return {"get": 0.0, "update": 0.0, "put": 0.0}
    return {"get": transfer_seconds(t["get"][0], c, k), "update": transfer_seconds(t["get"][1], c, k),
            "put": transfer_seconds(t["put"][0], c, k, put=True)}


def combiner_seconds(s: Scenario, c: Calibration) -> float:
    """The combine's time per round in the bucket, on its critical path: one share's GETs and PUTs of
    its slices one after another (the shares run at once), then the update's PUT."""
    t = combiner_transfers(s)
    if not t["put"]:
        return 0.0
    *slices, update = t["put"]
    puts, gets = slices[: len(slices) // s.shards], t["get"][: len(t["get"]) // s.shards]
    return sum(transfer_seconds(n, c, put=True) for n in puts) + sum(transfer_seconds(n, c) for n in gets) + \
        transfer_seconds(update, c, put=True)
