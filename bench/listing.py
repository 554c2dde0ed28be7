"""The listing benchmark: what listing the runs (``lambdatrain runs``, ``status`` without a run id,
the watchdog's every tick) reads from the ledger, as the table's history grows: the scan filtered
on the META items (before stop 35, and still on a table not yet backfilled) or the runs index
(lambdatrain/ledger/listing.py).

    python -m bench.listing [--runs 1,5,20] [--rounds 200] [--workers 8] [--lists 10]

Against a moto server in this process (the local stack's, lambdatrain/local/moto_server.py, which
serves one request at a time), a table made as the stack makes it, and ``--runs`` finished runs of
``--rounds`` rounds at N = ``--workers``, every item as the ledger writes it (its item builders: a
META item, and per round its ROUND item, N RESULT items and a METRIC item). Per listing, the
median over ``--lists``: the items DynamoDB examined (``ScannedCount``, summed over the pages:
what it bills a scan or a query for, whatever the filter keeps), the pages, the bytes of the HTTP
responses (botocore's, as received), moto's busy time (what the workers' ledger requests queue
behind on the local stack) and the client's wall time. ``results`` has one entry per runs and way
(``scan`` or ``index``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench._common import emit, inline_moto, int_list, log, machine
from bench.follow import METRIC


def fill(table, runs: int, rounds: int, workers: int) -> int:
    """``runs`` finished runs' items, written with the ledger's own builders; how many items."""
    from lambdatrain.ledger import schema
    from lambdatrain.ledger.items import (DONE, ResultRecord, metric_item, open_round_item, result_item, run_item,
                                          to_ddb)
    from lambdatrain.protocol.config import RunConfig
    from lambdatrain.storage.digest import Digest

    written, digest = 0, Digest(80_000_000, "xxh3_128:" + "0" * 32)
    with table.batch_writer() as batch:
        for i in range(runs):
            run, now = f"run-bench-{i:04d}", 1.7e9 + i
            config = RunConfig(workers=workers)
            batch.put_item(Item=to_ddb(run_item(run, config, state=DONE, round_no=rounds, rounds_per_epoch=rounds,
                                                weights=digest, updated_at=now, created_at=now, n_params=20_000_000,
                                                num_classes=10, samples_seen=rounds * 128)))
            for r in range(rounds):
                batch.put_item(Item=to_ddb({**open_round_item(run, r, workers, 0, now), "status": schema.COMMITTED,
                                            "reported": {f"{w:05d}" for w in range(workers)}, "claim": "0" * 32}))
                for w in range(workers):
                    result = ResultRecord(worker=w, digest=digest, samples=16, loss_sum=36.8, correct=3,
                                          truncated=False, load_s=0.41, compute_s=11.2, write_s=0.9, started_at=now)
                    batch.put_item(Item=to_ddb(result_item(run, r, result, now)))
                batch.put_item(Item=to_ddb(metric_item(run, {"round": r, **METRIC}, now)))
            written += 1 + rounds * (workers + 2)
    return written


def measure(runs: int, rounds: int, workers: int, lists: int) -> list[dict[str, Any]]:
    import boto3

    from lambdatrain.ledger import listing, schema
    from lambdatrain.ledger.table import Ledger

    server = inline_moto()
    try:
        name = f"bench-listing-{runs}-{time.monotonic_ns()}"
        boto3.client("dynamodb").create_table(**schema.create_table_kwargs(name))
        ledger = Ledger(name)
        items = fill(ledger.table, runs, rounds, workers)
        pages: list[tuple[int, int]] = []  # (items examined, response bytes) of each page
        for op in ("Query", "Scan"):
            ledger.client.meta.events.register(
                f"after-call.dynamodb.{op}",
                lambda http_response, parsed, **_: pages.append((parsed.get("ScannedCount", 0),
                                                                 len(http_response.content))))
        out = []
        for way in ("scan", "index"):
            samples = []
            for _ in range(lists):
                pages.clear()
                busy, t0 = server.busy_s, time.perf_counter()
                found = listing.meta_items(ledger.table, use_index=way == "index")
                samples.append((len(found), sum(p[0] for p in pages), len(pages), sum(p[1] for p in pages),
                                server.busy_s - busy, time.perf_counter() - t0))
            assert all(s[0] == runs for s in samples), (way, samples)  # both ways list every run
            med = lambda i: statistics.median(s[i] for s in samples)  # noqa: E731
            out.append({"runs": runs, "rounds": rounds, "workers": workers, "table_items": items, "way": way,
                        "examined_items_per_list": med(1), "pages_per_list": med(2),
                        "response_bytes_per_list": med(3), "moto_busy_ms_per_list": med(4) * 1e3,
                        "client_ms_per_list": med(5) * 1e3})
            log(f"{runs} runs ({items} items), {way}: {med(1):.0f} items examined in {med(2):.0f} pages, "
                f"{med(3) / 1e3:.1f} kB, moto {med(4) * 1e3:.1f} ms, client {med(5) * 1e3:.1f} ms a listing")
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int_list, default=[1, 5, 20])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--lists", type=int, default=10)
    args = parser.parse_args(argv)
    if args.lists < 1 or not args.runs or min(args.runs) < 1 or args.rounds < 1 or args.workers < 1:
        parser.error("--lists, --rounds, --workers and every --runs must be at least 1")
    started = time.time()
    results = [row for runs in args.runs for row in measure(runs, args.rounds, args.workers, args.lists)]
    emit({"results": results, "lists": args.lists, "wall_s": time.time() - started, "machine": machine()})


if __name__ == "__main__":
    main()
