"""The follow benchmark: what one poll of a run's progress (``local train``, ``watch``) reads from
the ledger, as the run grows: every METRIC item of the run (before stop 34) or only those of the
rounds after the last one seen (``Ledger.metrics(run, after)``, ops/progress.py ``follow``).

    python -m bench.follow [--rounds 100,1000,5000] [--polls 20]

Against a moto server in this process (the local stack's, lambdatrain/local/moto_server.py, which
serves one request at a time), a table made as the stack makes it, and one run's METRIC items as
the combiner writes them (``metric_item``, with the keys a committed round's metric has). Per
poll: the items the query returned (counted from its pages: DynamoDB bills a query by what it
reads), the bytes of its HTTP responses (botocore's, as received), moto's busy time (what the
workers' ledger requests queue behind on the local stack) and the client's wall time; the median
over ``--polls`` polls. ``results`` has one entry per rounds and way (``all`` or ``new``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench._common import emit, inline_moto, int_list, log, machine

# What a committed round's METRIC item holds besides its keys (roles/claimed.py), with typical values.
METRIC = {"workers": 17, "epochs_done": 0, "epoch": 0.5, "samples": 4352, "train_loss": 1.25, "train_accuracy": 0.55,
          "worker_compute_s": 11.2, "worker_s": 12.9, "samples_seen": 100_000, "lr": 0.05, "sum_s": 0.41,
          "write_s": 0.33, "combine_s": 1.2, "round_s": 15.1, "wait_s": 1.0, "pruned_files": 17}


def measure(rounds: int, polls: int) -> list[dict[str, Any]]:
    import boto3

    from lambdatrain.ledger import schema
    from lambdatrain.ledger.items import metric_item, to_ddb
    from lambdatrain.ledger.table import Ledger

    server = inline_moto()
    try:
        table = f"bench-follow-{rounds}-{time.monotonic_ns()}"
        boto3.client("dynamodb").create_table(**schema.create_table_kwargs(table))
        ledger, run = Ledger(table), "bench-run"
        with ledger.table.batch_writer() as batch:
            for r in range(rounds):
                batch.put_item(Item=to_ddb(metric_item(run, {"round": r, **METRIC}, time.time())))
        received: list[int] = []
        ledger.client.meta.events.register(
            "after-call.dynamodb.Query", lambda http_response, **_: received.append(len(http_response.content)))
        out = []
        for way, after in (("all", -1), ("new", rounds - 2)):  # "new": the last round committed since the last poll
            samples = []
            for _ in range(polls):
                received.clear()
                busy, t0 = server.busy_s, time.perf_counter()
                items = ledger.metrics(run, after)
                samples.append((len(items), sum(received), server.busy_s - busy, time.perf_counter() - t0))
            med = lambda i: statistics.median(s[i] for s in samples)  # noqa: E731
            out.append({"rounds": rounds, "way": way, "items_per_poll": med(0), "response_bytes_per_poll": med(1),
                        "moto_busy_ms_per_poll": med(2) * 1e3, "client_ms_per_poll": med(3) * 1e3})
            log(f"{rounds} rounds, {way}: {med(0):.0f} items, {med(1) / 1e3:.1f} kB, moto {med(2) * 1e3:.1f} ms, "
                f"client {med(3) * 1e3:.1f} ms a poll")
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int_list, default=[100, 1000, 5000])
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args(argv)
    if args.polls < 1 or not args.rounds or min(args.rounds) < 2:
        parser.error("--polls must be at least 1 and every --rounds at least 2")
    started = time.time()
    results = [row for rounds in args.rounds for row in measure(rounds, args.polls)]
    emit({"results": results, "polls": args.polls, "wall_s": time.time() - started, "machine": machine()})


if __name__ == "__main__":
    main()
