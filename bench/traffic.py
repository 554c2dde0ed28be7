"""The traffic benchmark: bytes each worker and the combiner move on EFS per round, per transport.

    python -m bench.traffic [--workers 4] [--transports float32,float16,bfloat16] [--average-local-steps 4]

Runs one short ``ops.local_train.train`` per transport (``sync`` mode) and one in ``average`` mode (float32,
``local_steps`` 4; 0 leaves it out) of the full-width ``vgg19_cifar`` (``--width 1``) on tiny
synthetic data (tests/datagen.py), with ``--rounds`` rounds of ``--batch-size`` samples. The bytes
are counted where they move: lambdatrain/storage/traffic.py counts every read and write call on
the run's files, and each local Lambda process dumps its counts per path
(``LAMBDATRAIN_TRAFFIC_DIR``); tests/functional/test_traffic_strace.py proves the counts equal
``strace -f``'s per file. A path names its round (``r000012``), so bytes are attributed to rounds:
everything a worker process reads or writes in round r's files is round r's; the combiner's writes
of ``weights/`` and ``optim/`` for round r + 1 belong to round r's combine. Per-round figures are
means over warm rounds (round 0 is each process's first invocation). The training images are
memory-mapped, which no read call shows: they are reported apart, as the mapped length per process,
and are not in the per-round figures. There is no per-worker state today: ``state_store`` is
"efs" and ``state_bytes_per_worker_round`` 0. Accepted transports: those of
lambdatrain.protocol.config.TRANSPORTS.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench._common import emit, in_child, log, machine
from lambdatrain.protocol.config import TRANSPORTS

ROUND = re.compile(r"/r(\d{6})(?:\.npy|/)")


def settings(args: argparse.Namespace, transport: str, mode: str, local_steps: int) -> dict[str, Any]:
    per_round = args.batch_size * local_steps
    return {"workers": args.workers, "model": "vgg19_cifar", "width": args.width, "epochs": 1,
            "batch_size": args.batch_size, "micro_batch": args.batch_size // args.workers,
            "max_train_samples": per_round * args.rounds, "val_samples": args.batch_size, "seed": 0,
            "transport": transport, "mode": mode, "local_steps": local_steps}


def trained(prepared: Path, out: Path, run_settings: dict[str, Any]) -> dict[str, Any]:
    """One ops.local_train.train with every Lambda process dumping its counts; returns the dumps."""
    from lambdatrain.local.stack import LocalStackConfig
    from lambdatrain.ops.local_train import TrainRequest, train
    from lambdatrain.protocol.limits import MB_PER_VCPU
    from lambdatrain.storage import traffic

    dumps = out / "traffic"
    stack = LocalStackConfig(state_dir=out / "stack", worker_memory_mb=MB_PER_VCPU,
                             worker_concurrency=run_settings["workers"], extra_env={traffic.ENV_DIR: str(dumps)})
    summary = train(TrainRequest(data=prepared, out=out, settings=run_settings, stack=stack))
    rounds = len((out / "metrics.jsonl").read_text().splitlines())
    return {"wall_s": summary["wall_s"], "rounds": rounds,
            "dumps": [json.loads(p.read_text()) for p in sorted(dumps.glob("*.json"))]}


def round_of(path: str, direction: str) -> int | None:
    """The round whose work moved these bytes: the path's round, less one for the combiner's
    writes of the next round's weights and momentum (None: no round in the path)."""
    m = ROUND.search(path)
    if m is None:
        return None
    shift = 1 if direction == "write" and Path(path).parent.name in ("weights", "optim") else 0
    return int(m.group(1)) - shift


def attribute(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per function: bytes per (round, direction), per (category, direction), and the mapped datasets."""
    from lambdatrain.storage import traffic

    per_round: dict[str, dict[tuple[int | None, str], int]] = defaultdict(lambda: defaultdict(int))
    per_cat: dict[str, dict[tuple[int | None, str, str], int]] = defaultdict(lambda: defaultdict(int))
    mapped: dict[str, list[int]] = defaultdict(list)
    for dump in dumps:
        fn = dump["function"]
        for path, moved in dump["paths"].items():
            for direction, n in moved.items():
                if direction == "mapped":
                    continue
                r = round_of(path, direction)
                per_round[fn][(r, direction)] += n
                per_cat[fn][(r, traffic.category(path), direction)] += n
        if "datasets" in dump["totals"]:
            mapped[fn].append(dump["totals"]["datasets"].get("mapped", 0))
    return {"per_round": per_round, "per_cat": per_cat, "mapped": mapped}


def summarise(run: dict[str, Any], run_settings: dict[str, Any], model_bytes: int) -> dict[str, Any]:
    seen = attribute(run["dumps"])
    workers, warm = run_settings["workers"], range(1, run["rounds"])
    if not warm:
        raise SystemExit("bench.traffic: need at least 2 rounds (round 0 is cold); raise --rounds")

    def mean(fn: str, direction: str, per: int = 1) -> float:
        return statistics.fmean(seen["per_round"][fn][(r, direction)] for r in warm) / per

    categories = defaultdict(dict)
    for (r, cat, direction), n in seen["per_cat"]["worker"].items():
        if r in warm:
            categories[cat][direction] = categories[cat].get(direction, 0) + n / (workers * len(warm))
    unattributed = {fn: {d: n for (r, d), n in rounds.items() if r is None} for fn, rounds in seen["per_round"].items()}
    return {"transport": run_settings["transport"], "mode": run_settings["mode"],
            "local_steps": run_settings["local_steps"], "workers": workers, "model_bytes": model_bytes,
            "samples_per_worker_round": run_settings["batch_size"] // workers * run_settings["local_steps"],
            "up_bytes_per_worker_round": mean("worker", "write", workers),
            "down_bytes_per_worker_round": mean("worker", "read", workers),
            "state_store": "efs", "state_bytes_per_worker_round": 0,
            "combiner_read_bytes_per_round": mean("combiner", "read"),
            "combiner_write_bytes_per_round": mean("combiner", "write"),
            "worker_bytes_per_round_by_category": dict(categories),
            "outside_rounds": unattributed,  # the run's config.json, read and written once
            "dataset_mapped_bytes_per_process": {fn: max(v) for fn, v in seen["mapped"].items()},
            "processes": {fn: sum(1 for d in run["dumps"] if d["function"] == fn) for fn in seen["per_round"]},
            "rounds": run["rounds"], "warm_rounds": len(warm), "wall_s": run["wall_s"]}


def configurations(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    wanted = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in TRANSPORTS]
    if unknown or not wanted:
        raise SystemExit(f"bench.traffic: unknown transport {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(TRANSPORTS)}")
    average = [("float32", "average", args.average_local_steps)] if args.average_local_steps > 0 else []
    return [(t, "sync", 1) for t in wanted] + average


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help=f"of {', '.join(TRANSPORTS)}")
    parser.add_argument("--average-local-steps", type=int, default=4, help="0: no average-mode run")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (per round and local step)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    runs = configurations(args)
    if args.workers < 1 or args.batch_size % args.workers or args.rounds < 2:
        raise SystemExit("bench.traffic: need --workers >= 1 dividing --batch-size, and --rounds >= 2")
    import numpy as np

    from tests.datagen import make_prepared

    started, results = time.time(), []
    with tempfile.TemporaryDirectory(prefix="lt-bench-traffic-") as tmp:
        largest = max(args.batch_size * steps * args.rounds for _, _, steps in runs)
        prepared = make_prepared(Path(tmp) / "data", n_train=largest, n_val=args.batch_size)
        for i, (transport, mode, steps) in enumerate(runs):
            run_settings = settings(args, transport, mode, steps)
            log(f"run {i + 1}/{len(runs)}: {transport}, {mode}, local_steps {steps}, {args.workers} workers")
            out = Path(tmp) / f"run{i}"
            run = in_child(trained, prepared, out, run_settings)
            [weights0] = (out / "stack" / "efs").glob("runs/*/weights/r000000.npy")
            model_bytes = int(np.load(weights0, mmap_mode="r").nbytes)
            results.append(summarise(run, run_settings, model_bytes))
            r = results[-1]
            log(f"  up {r['up_bytes_per_worker_round'] / 1e6:.2f} MB, down {r['down_bytes_per_worker_round'] / 1e6:.2f}"
                f" MB per worker round; combiner reads {r['combiner_read_bytes_per_round'] / 1e6:.1f} MB, "
                f"writes {r['combiner_write_bytes_per_round'] / 1e6:.1f} MB per round")
    base = next((r for r in results if r["transport"] == "float32" and r["mode"] == "sync"), None)
    for r in results:  # bytes per worker round relative to float32 sync: the ratios the issue asks
        r["up_ratio_to_float32"] = r["up_bytes_per_worker_round"] / base["up_bytes_per_worker_round"] if base else None
        r["down_ratio_to_float32"] = (r["down_bytes_per_worker_round"] / base["down_bytes_per_worker_round"]
                                      if base else None)
    emit({"results": results, "settings": dict(vars(args)), "wall_s": time.time() - started,
          "machine": machine()})


if __name__ == "__main__":
    main()
