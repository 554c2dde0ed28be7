"""The traffic benchmark: bytes each worker and the combiner move per round, per transport.

    python -m bench.traffic [--workers 4] [--transports float32,float16,ternary_ef,sign_ef] [--average-local-steps 4]

Runs one short ``ops.local_train.train`` per transport (``sync`` mode) and one in ``average`` mode (float32,
``local_steps`` 4; 0 leaves it out) of the full-width ``vgg19_cifar`` (``--width 1``) on tiny
synthetic data (tests/datagen.py), with ``--rounds`` rounds of ``--batch-size`` samples. The bytes
are counted where they move: lambdatrain/storage/traffic.py counts every read and write call on
the run's files, and every S3 transfer of a compressed run's state (category ``state``, path
``s3://bucket/key``: the workers' residuals, the combiner's momentum, residual and update); each
local Lambda process dumps its counts per path (``LAMBDATRAIN_TRAFFIC_DIR``);
tests/functional/test_traffic_strace.py proves the file counts equal ``strace -f``'s per file. A
path names its round (``r000012``), so bytes are attributed to rounds (:func:`round_of`): what a
round's work writes for the next round (weights, momentum, residuals) is that round's, and round
r's compressed update is read by round r + 1's workers.

Worker figures are means per warm worker-round: a worker result written by a process in round 1 or
later that, for a compressed transport, rebuilt its weights from the update rather than reading
them in full (the local stack routes worker i to any of several environments, so some worker-rounds
are cold; they are counted apart). ``up``/``down`` are EFS bytes only, digests included; what a
worker moves in S3 (its residual, the update it reads) is ``state_bytes_per_worker_round``, and the
combiner's ``combiner_state_*_bytes_per_round``. Combiner figures are means over its warm rounds 1
and later: a combine that took its own state from the environment that wrote it (roles/warm.py)
rather than reading the weights back; the cold ones (another environment) are counted apart, with
their mean reads (over all rounds when none was warm).
The training images are memory-mapped, which no read call shows: they are reported apart, as the
mapped length per process, and are not in the per-round figures. Accepted transports: those of
lambdatrain.protocol.config.TRANSPORTS.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench._common import emit, in_child, log, machine
from lambdatrain.protocol.config import COMPRESSED, TRANSPORTS

ROUND = re.compile(r"/r(\d{6})(?:\.npy|/)")
# Files that hold the state a round *starts* with: round r's work writes round r + 1's.
NEXT_ROUND_STATE = ("weights", "optim")


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


def kind(path: str) -> str:
    """storage/traffic.py's category of a dumped path: S3 keys (``s3://``) are a compressed run's state."""
    from lambdatrain.storage import traffic
    from lambdatrain.storage.state import STATE_KIND

    return STATE_KIND if path.startswith("s3://") else traffic.category(path)


def round_of(path: str, direction: str) -> int | None:
    """The round whose work moved these bytes (None: no round in the path). The path's round, except:
    writes of the next round's starting state (weights and momentum on EFS; in S3 a worker's
    residual, the combiner's momentum and residual) belong to the round that computed it, one less;
    reads of round r's compressed update (S3's ``update/r``) are round r + 1's workers rebuilding
    their weights, one more."""
    m = ROUND.search(path)
    if m is None:
        return None
    p = Path(path.removesuffix(".digest.json"))
    update = path.startswith("s3://") and p.parent.name == "update"
    if direction == "write" and not update and (p.parent.name in NEXT_ROUND_STATE or path.startswith("s3://")):
        return int(m.group(1)) - 1
    if direction == "read" and update:
        return int(m.group(1)) + 1
    return int(m.group(1))


def attribute(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per function, bytes per (round, category, direction); per worker process and round, the same
    and the worker results it wrote (its worker-rounds); the mapped datasets per function."""
    per_cat: dict[str, dict[tuple[int | None, str, str], int]] = defaultdict(lambda: defaultdict(int))
    worker_rounds: dict[tuple[int, int | None], dict[str, Any]] = {}
    mapped: dict[str, list[int]] = defaultdict(list)
    for dump in dumps:
        fn = dump["function"]
        for path, moved in dump["paths"].items():
            for direction, n in moved.items():
                if direction == "mapped":
                    continue
                r, cat = round_of(path, direction), kind(path)
                per_cat[fn][(r, cat, direction)] += n
                if fn != "worker":
                    continue
                entry = worker_rounds.setdefault((dump["pid"], r), {"round": r, "results": 0, "bytes": Counter()})
                entry["bytes"][(cat, direction)] += n
                entry["results"] += cat == "results" and direction == "write" and path.endswith(".npy")
        if "datasets" in dump["totals"]:
            mapped[fn].append(dump["totals"]["datasets"].get("mapped", 0))
    return {"per_cat": per_cat, "worker_rounds": list(worker_rounds.values()), "mapped": mapped}


def is_warm(entry: dict[str, Any], transport: str) -> bool:
    """A worker-round from a warm environment: not round 0 (each process's first invocation) and,
    for a compressed transport, one that rebuilt the weights from the update (or held them) rather
    than reading the full weights (its environment was cold, or held another round's)."""
    if entry["round"] is None or entry["round"] == 0 or not entry["results"]:
        return False
    return transport not in COMPRESSED or not entry["bytes"].get(("weights", "read"))


def worker_figures(worker_rounds: list[dict[str, Any]], transport: str) -> dict[str, Any]:
    """Means per warm worker-round: EFS bytes up and down (every category but ``state``), the S3
    residual's bytes apart, and bytes by category; with the counts of warm and cold worker-rounds."""
    from lambdatrain.storage.state import STATE_KIND

    warm = [e for e in worker_rounds if is_warm(e, transport)]
    cold = [e for e in worker_rounds if e["round"] and not is_warm(e, transport)]
    if not warm:
        raise SystemExit("bench.traffic: no warm worker-round; raise --rounds")
    count = sum(e["results"] for e in warm)
    total: Counter = sum((e["bytes"] for e in warm), Counter())

    def efs(direction: str) -> float:
        return sum(n for (cat, d), n in total.items() if d == direction and cat != STATE_KIND) / count

    categories: dict[str, dict[str, float]] = defaultdict(dict)
    for (cat, direction), n in sorted(total.items()):
        categories[cat][direction] = n / count
    state = categories.get(STATE_KIND, {})
    return {"up_bytes_per_worker_round": efs("write"), "down_bytes_per_worker_round": efs("read"),
            "state_store": "s3" if transport in COMPRESSED else "none",
            "state_bytes_per_worker_round": state.get("read", 0) + state.get("write", 0),
            "state_read_bytes_per_worker_round": state.get("read", 0),
            "state_write_bytes_per_worker_round": state.get("write", 0),
            # the rest found their residual in their environment's memory (storage/state.py)
            "state_reads_from_s3": sum(e["results"] for e in warm if e["bytes"].get((STATE_KIND, "read"))),
            "worker_bytes_per_round_by_category": dict(categories),
            "worker_rounds": sum(e["results"] for e in worker_rounds), "warm_worker_rounds": count,
            "cold_worker_rounds": sum(e["results"] for e in cold),  # rounds >= 1 that read the full weights
            "round0_worker_rounds": sum(e["results"] for e in worker_rounds if e["round"] == 0)}


def summarise(run: dict[str, Any], run_settings: dict[str, Any], model_bytes: int) -> dict[str, Any]:
    from lambdatrain.storage.state import STATE_KIND

    seen = attribute(run["dumps"])
    workers, warm = run_settings["workers"], range(1, run["rounds"])
    if not warm:
        raise SystemExit("bench.traffic: need at least 2 rounds (round 0 is cold); raise --rounds")

    combined = seen["per_cat"]["combiner"]
    # A warm combiner takes its own state from memory (roles/warm.py); a round's combine that landed
    # in another environment reads the weights back (and the momentum and residual): cold.
    cold = [w for w in warm if combined.get((w, "weights", "read"))]
    kept = [w for w in warm if w not in cold] or list(warm)

    def combiner(direction: str, rounds=kept, in_s3: bool = False) -> float:
        """Mean bytes per round on EFS (or, ``in_s3``, the bucket's state objects)."""
        return statistics.fmean(sum(n for (r, cat, d), n in combined.items()
                                    if r == w and d == direction and (cat == STATE_KIND) == in_s3) for w in rounds)

    unattributed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for fn, moved in seen["per_cat"].items():
        for (r, _, direction), n in moved.items():
            if r is None:
                unattributed[fn][direction] += n
    figures = worker_figures(seen["worker_rounds"], run_settings["transport"])
    reads = combiner("read")
    return {"transport": run_settings["transport"], "mode": run_settings["mode"],
            "local_steps": run_settings["local_steps"], "workers": workers, "model_bytes": model_bytes,
            "samples_per_worker_round": run_settings["batch_size"] // workers * run_settings["local_steps"],
            **figures,
            "combiner_read_bytes_per_round": reads, "combiner_write_bytes_per_round": combiner("write"),
            # a compressed run's momentum, residual and update, in S3 (storage/state.py): not EFS bytes
            "combiner_state_read_bytes_per_round": combiner("read", in_s3=True),
            "combiner_state_write_bytes_per_round": combiner("write", in_s3=True),
            "combiner_read_model_sizes": reads / model_bytes,
            "combiner_warm_rounds": len(warm) - len(cold), "combiner_cold_rounds": len(cold),
            "combiner_read_bytes_per_cold_round": combiner("read", cold) if cold else None,
            "outside_rounds": {fn: dict(d) for fn, d in unattributed.items()},  # config.json, once
            "dataset_mapped_bytes_per_process": {fn: max(v) for fn, v in seen["mapped"].items()},
            "processes": {fn: sum(1 for d in run["dumps"] if d["function"] == fn) for fn in seen["per_cat"]},
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
    parser.add_argument("--dumps", type=Path, help="also keep each run's per-process counts here (runN.json)")
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
            if args.dumps:
                args.dumps.mkdir(parents=True, exist_ok=True)
                (args.dumps / f"run{i}.json").write_text(json.dumps({"settings": run_settings, **run}))
            [weights0] = (out / "stack" / "efs").glob("runs/*/weights/r000000.npy")
            model_bytes = int(np.load(weights0, mmap_mode="r").nbytes)
            results.append(summarise(run, run_settings, model_bytes))
            r = results[-1]
            log(f"  up {r['up_bytes_per_worker_round'] / 1e6:.2f} MB, down {r['down_bytes_per_worker_round'] / 1e6:.2f}"
                f" MB per worker round; combiner reads {r['combiner_read_bytes_per_round'] / 1e6:.1f} MB, "
                f"writes {r['combiner_write_bytes_per_round'] / 1e6:.1f} MB per round (S3: reads "
                f"{r['combiner_state_read_bytes_per_round'] / 1e6:.1f} MB, writes "
                f"{r['combiner_state_write_bytes_per_round'] / 1e6:.1f} MB); worker state "
                f"{r['state_bytes_per_worker_round'] / 1e6:.2f} MB; {r['cold_worker_rounds']} cold worker-rounds, "
                f"{r['combiner_cold_rounds']} cold combiner rounds")
    base = next((r for r in results if r["transport"] == "float32" and r["mode"] == "sync"), None)
    for r in results:  # bytes per worker round relative to float32 sync: the ratios the issue asks
        r["up_ratio_to_float32"] = r["up_bytes_per_worker_round"] / base["up_bytes_per_worker_round"] if base else None
        r["down_ratio_to_float32"] = (r["down_bytes_per_worker_round"] / base["down_bytes_per_worker_round"]
                                      if base else None)
    emit({"results": results, "settings": dict(vars(args)), "wall_s": time.time() - started,
          "machine": machine()})


if __name__ == "__main__":
    main()
