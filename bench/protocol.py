"""The protocol benchmark: what a round's orchestration costs as N grows, with a fixed latency per AWS call.

    python -m bench.protocol --workers 8,64,256 --invoke-latency 0.02

The real handlers run in-process (tests/harness.py's InlineSystem: DynamoDB on a moto server, the
stream read by the real poller) on a tiny model (one sample per worker per round). Every AWS call
the handlers make takes ``--invoke-latency`` seconds: the ledger's DynamoDB calls (a botocore
``before-send`` hook sleeps, then the request goes to moto, whose own time is measured and taken
out, because it grows with moto's table where DynamoDB's does not) and the workers' invocations
(the production ``Invoker`` with its boto3 client and thread pool, whose ``before-send`` hook sleeps
and then answers 202, queueing the event in the system as Lambda would).

The system runs one handler at a time, so a round's time is put together from measured parts as
the parallel system would run them: round r takes

    max over workers w (accepted_w - F_r + worker_wall_w) + (F_{r+1} - combiner_start_r)

where F_r is when round r's fan-out sent its first invocation, accepted_w when worker w's
invocation was accepted, worker_wall_w the worker handler's wall time (less moto's), and the
combiner's part runs from its start to the next round's first invocation (the claim, the results
query, the sum, the commit and the fan-out's ledger read; less moto's time). The stream's delivery
of the ready record is AWS's and is left out (one record per round passes the filter, whatever N).

Per N, ``results`` holds ``fanout_s`` (round r's first invocation sent to its last accepted),
``round_overhead_s`` (the round's time minus the slowest worker's compute minus the combine's
reduce-and-step), ``api_calls_per_round`` (DynamoDB calls and invocations by every party), and
the parts, each the median over the measured rounds (every round but the first, which is cold and
fanned out by the starter, and the last, which evaluates and exports).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import emit, inline_moto, int_list, log, machine

ROUNDS = 4  # round 0 (cold, the starter's fan-out), two measured, the last (evaluation, export)


class Raw:
    """The body of an accepted asynchronous Invoke: empty."""

    def stream(self, **_: Any):
        yield b""


class Timeline:
    """What the hooks saw: invocations (sent, accepted), handler walls, API calls by role and round."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.invocations: dict[int, list[tuple[float, float, int]]] = collections.defaultdict(list)
        self.workers: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
        self.combiner_start: dict[int, float] = {}
        self.reduce_s: dict[int, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self.combiner_ops: collections.Counter = collections.Counter()  # (round, operation) -> seconds
        self.round = 0  # the round whose handler is running (handlers run one at a time)
        self.role = ""
        self.handler: tuple[int, int | None] = (0, None)  # (round, worker), or (round, None): the combiner
        self.emulator_s: collections.Counter = collections.Counter()  # handler -> seconds inside moto
        self.local = threading.local()

    def count(self, what: str, round_no: int | None = None) -> None:
        with self.lock:
            self.calls[(self.round if round_no is None else round_no, what)] += 1


def build(root: Path, table: str, latency: float, timeline: Timeline):
    """An InlineSystem whose AWS calls each take ``latency`` more, observed by ``timeline``."""
    from botocore.awsrequest import AWSResponse

    from lambdatrain.protocol.events import parse_stream_records
    from lambdatrain.roles import combiner
    from lambdatrain.roles.runtime import Invoker
    from lambdatrain.roles.settings import COMBINER, STARTER, WORKER
    from tests.harness import InlineSystem

    class Observed(InlineSystem):
        def invoke(self, name, event, context=None):
            if name != WORKER:
                return super().invoke(name, event, context)
            timeline.round, timeline.role = event["round"], WORKER
            timeline.handler = (event["round"], event["workerno"])
            t0 = time.perf_counter()
            answer = super().invoke(name, event, context)
            timeline.workers[event["round"]].append((event["workerno"], time.perf_counter() - t0))
            return answer

        def _deliver_batch(self, batch):
            timeline.round, timeline.role = parse_stream_records(batch)[0].round, COMBINER
            timeline.handler = (timeline.round, None)
            timeline.combiner_start.setdefault(timeline.round, time.perf_counter())
            return super()._deliver_batch(batch)

    system = Observed(root, table)

    def ledger_call(**_: Any) -> None:
        timeline.count("dynamodb")
        time.sleep(latency)
        timeline.local.sent = time.perf_counter()

    def ledger_answered(**_: Any) -> None:  # moto's own time, which grows with its table (see measure_round)
        timeline.emulator_s[timeline.handler] += time.perf_counter() - timeline.local.sent

    def call_started(**_: Any) -> None:
        timeline.local.t0 = time.perf_counter()

    def call_ended(model, **_: Any) -> None:  # each DynamoDB call of the combiner, latency and moto included
        if timeline.role == COMBINER:
            timeline.combiner_ops[(timeline.round, model.name)] += time.perf_counter() - timeline.local.t0

    events = system.ledger.client.meta.events
    events.register("before-send.dynamodb", ledger_call)
    events.register("response-received.dynamodb", ledger_answered)
    events.register("before-call.dynamodb", call_started)
    events.register("after-call.dynamodb", call_ended)

    invoker = Invoker({n: n for n in (STARTER, WORKER, COMBINER)})  # the production client and its settings

    def accept(request, **_: Any) -> AWSResponse:
        sent = time.perf_counter()
        time.sleep(latency)
        payload = json.loads(request.body)
        logical = request.url.split("/functions/")[1].split("/")[0]
        system.invoker.invoke(logical, payload)
        if logical == WORKER:
            with timeline.lock:
                timeline.invocations[payload["round"]].append((sent, time.perf_counter(), payload["workerno"]))
        timeline.count("invoke", payload.get("round"))
        return AWSResponse(request.url, 202, {}, Raw())

    invoker.client.meta.events.register("before-send.lambda.Invoke", accept)
    for runtime in system.runtimes.values():
        runtime.invoker = invoker

    reduce_slice = combiner.reduce_slice

    def timed_reduce(runtime, record, round_no, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return reduce_slice(runtime, record, round_no, *args, **kwargs)
        finally:
            timeline.reduce_s[round_no] += time.perf_counter() - t0

    combiner.reduce_slice = timed_reduce
    return system


def measure_round(timeline: Timeline, results: dict[int, Any], r: int) -> dict[str, float]:
    sends = timeline.invocations[r]
    first = min(s for s, _, _ in sends)
    accepted = {w: a for _, a, w in sends}
    walls = dict(timeline.workers[r])
    emu = timeline.emulator_s
    # Each DynamoDB call costs the fixed latency, not moto's time: moto's grows with its table (it
    # deep-copies the table for every TransactWriteItems and walks the partition for a Query),
    # DynamoDB's does not. With moto's time left in, the same sum is round_overhead_with_emulator_s.
    workers_s = max(accepted[w] - first + walls[w] - emu[(r, w)] for w in walls)
    raw_workers_s = max(accepted[w] - first + walls[w] for w in walls)
    raw_combiner_s = min(s for s, _, _ in timeline.invocations[r + 1]) - timeline.combiner_start[r]
    combiner_s = raw_combiner_s - emu[(r, None)]
    compute_s = max(res.compute_s for res in results[r])
    round_s = workers_s + combiner_s
    calls = {what: n for (rr, what), n in timeline.calls.items() if rr == r}
    return {"fanout_s": max(accepted.values()) - first, "round_s": round_s, "worker_compute_s": compute_s,
            "combine_arithmetic_s": timeline.reduce_s[r], "workers_phase_s": workers_s, "combiner_s": combiner_s,
            "round_overhead_s": round_s - compute_s - timeline.reduce_s[r],
            "round_overhead_with_emulator_s": raw_workers_s + raw_combiner_s - compute_s - timeline.reduce_s[r],
            "combiner_emulator_s": emu[(r, None)],
            "dynamodb_calls_per_round": calls.get("dynamodb", 0), "invocations_per_round": calls.get("invoke", 0),
            "api_calls_per_round": sum(calls.values())}


def run_one(workers: int, latency: float, data: Path, scratch: Path) -> dict[str, Any]:
    from lambdatrain.ops.local_train import link_dataset
    from lambdatrain.roles.settings import STARTER

    mount = scratch / f"efs-{workers}"
    link_dataset(mount, data)  # where the stack's default data setting points
    timeline = Timeline()
    system = build(mount, f"bench-{uuid.uuid4().hex[:8]}", latency, timeline)
    settings = {"workers": workers, "model": "vgg19_cifar", "width": 0.0625, "batch_size": workers, "micro_batch": 1,
                "max_train_samples": workers * ROUNDS, "val_samples": 8, "epochs": 1, "augment": False, "seed": 0}
    t0 = time.perf_counter()
    run = system.invoke(STARTER, {"start": True, **settings})["run"]
    system.drain(max_steps=100_000)
    assert system.ledger.get_run(run).state == "done", system.ledger.get_run(run)
    results = {r: system.ledger.results(run, r) for r in range(ROUNDS)}
    rounds = [measure_round(timeline, results, r) for r in range(1, ROUNDS - 1)]
    row = {key: statistics.median(m[key] for m in rounds) for key in rounds[0]}
    ops = {op for _, op in timeline.combiner_ops}
    row["combiner_calls_s"] = {op: statistics.median(timeline.combiner_ops[(r, op)] for r in range(1, ROUNDS - 1))
                               for op in sorted(ops)}
    row.update(workers=workers, measured_rounds=len(rounds), wall_s=time.perf_counter() - t0)
    log(f"N={workers}: fanout {row['fanout_s']:.3f} s, overhead {row['round_overhead_s']:.3f} s (workers' phase "
        f"{row['workers_phase_s']:.3f} s, combiner {row['combiner_s']:.3f} s), {row['api_calls_per_round']:.0f} calls "
        f"per round ({row['wall_s']:.0f} s)")
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int_list, default=[8, 64, 256], help="N to measure, comma-separated")
    parser.add_argument("--invoke-latency", type=float, default=0.02, help="seconds added to every AWS call")
    args = parser.parse_args(argv)
    if args.invoke_latency < 0 or min(args.workers) < 1:
        parser.error("--invoke-latency must be >= 0 and every --workers >= 1")
    import torch

    from lambdatrain.roles.runtime import INVOKE_POOL
    from tests.datagen import make_prepared

    from lambdatrain.logs import logger

    torch.set_num_threads(1)  # one Lambda's worth of CPU per handler, as the tests run them
    logger.setLevel("WARNING")  # thousands of INFO lines would bury the result (and cost time Lambda spends too)
    server = inline_moto()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-protocol-") as tmp:
            data = make_prepared(Path(tmp) / "data", n_train=max(args.workers) * ROUNDS, n_val=16)
            rows = [run_one(n, args.invoke_latency, data, Path(tmp)) for n in args.workers]
    finally:
        server.stop()
    by_n = {row["workers"]: row for row in rows}
    lo, hi = min(by_n), max(by_n)
    emit({"benchmark": "protocol", "invoke_latency_s": args.invoke_latency, "invoke_pool": INVOKE_POOL,
          "machine": machine(), "results": rows,
          "overhead_ratio": by_n[hi]["round_overhead_s"] / by_n[lo]["round_overhead_s"],
          "ratio_of": [hi, lo]})


if __name__ == "__main__":
    main()
