"""The planner check: lambdatrain.planning.planner's prediction against the local stack for N = 1, 2, 4.

    python -m bench.planner [--workers 1,2,4] [--samples 2048] [--width 0.125]

Runs tiny ``ops.local_train.train`` runs with the same total samples and global batch for each N, and
predicts the same with the planner calibrated on this machine: the worker's compute path
(``trainer.compute_sync`` on the prepared dataset, one thread, the run's micro-batch), a fresh
process's cold start, file bandwidth of ``write_array``/``stream_array``, storage "local" (no EFS
limits). The per-round fixed costs (invoke latency: the stream poller and the local Lambda
service; the combiner's fixed cost: claim, reads, update, writes, commit) are taken from the
N = 1 run, so N = 2 and 4 are true predictions. The runs do not prewarm (on-demand Lambda): round
0 pays the workers' and then the combiner's cold start, and is compared with the predicted first
round; the epoch, the sum over all rounds, with the predicted first epoch. Per-round figures are
medians over warm rounds: other sessions' load comes in bursts that a mean passes on to N = 2
and 4 through the N = 1 calibration. The local workers share this machine's cores: a worker gets
min(1, cores / N) of a core, which the planner sees as memory 1769 * min(1, cores / N) MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import add_data_args, emit, in_child, log, machine


def measured(prepared: Path, out: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    from lambdatrain.local.stack import LocalStackConfig
    from lambdatrain.ops.local_train import TrainRequest, train

    settings = {"workers": workers, "model": "vgg19_cifar", "width": args.width, "epochs": 1, "batch_size": 256,
                "micro_batch": 64, "max_train_samples": args.samples, "val_samples": 64, "seed": 0}
    stack = LocalStackConfig(state_dir=out / "stack", worker_concurrency=max(workers, 1))
    train(TrainRequest(data=prepared, out=out, settings=settings, stack=stack, prewarm=False))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    results = [i for i in json.loads((out / "ledger.json").read_text()) if i.get("kind") == "result"]
    warm = [m for m in metrics if m["round"] > 0]  # round 0 pays the cold starts
    return {"rounds": len(metrics), "round_s": statistics.median(m["round_s"] for m in warm),
            "first_round_s": next(m["round_s"] for m in metrics if m["round"] == 0),
            "epoch_s": sum(m["round_s"] for m in metrics), "wait_s": statistics.median(m["wait_s"] for m in warm),
            "combine_s": statistics.median(m["combine_s"] for m in warm),
            "worker_s": statistics.median(m["worker_s"] for m in warm),
            "worker_fixed_s": statistics.median(float(r["load_s"]) for r in results if int(r["round"]) > 0)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, workers=[1, 2, 4], samples=2048)
    parser.add_argument("--width", type=float, default=0.125)
    args = parser.parse_args(argv)
    from dataclasses import replace

    from lambdatrain.planning import planner
    from lambdatrain.protocol.limits import MB_PER_VCPU
    from lambdatrain.planning.calibration import calibrate
    from lambdatrain.training.data import resolve_dataset

    started = time.time()
    prepared = resolve_dataset(args.data, args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="lt-bench-planner-") as tmp:
        # The fixed per-round costs come from the first run below; the rest is measured here.
        params, cal = calibrate("vgg19_cifar", args.width, Path(tmp), micro_batch=64, data=prepared, repeats=3,
                                worker_fixed_s=0.0, per_invoke_s=0.0)
        log(f"calibration: {cal.seconds_per_image * 1e3:.2f} ms/image/core + {cal.compute_fixed_s * 1e3:.1f} "
            f"ms/round, cold start {cal.cold_start_s:.1f} s, read {cal.read_bps / 1e6:.0f} MB/s, "
            f"write {cal.write_bps / 1e6:.0f} MB/s")
        runs = {}
        for n in args.workers:
            log(f"local train with {n} workers")
            runs[n] = in_child(measured, prepared, Path(tmp) / f"n{n}", n, args)
    base = runs[args.workers[0]]
    cal = replace(cal, combiner_fixed_s=base["combine_s"], invoke_latency_s=base["wait_s"])
    local = planner.Storage(*(4 * [float("inf")]))
    cores = os.cpu_count() or 1
    rows = []
    for n, m in runs.items():
        scenario = planner.Scenario(params=params, workers=n, memory_mb=int(MB_PER_VCPU * min(1.0, cores / n)),
                                    batch_size=256, train_samples=args.samples)
        p = planner.predict(scenario, replace(cal, worker_fixed_s=m["worker_fixed_s"]), local)
        rows.append({"workers": n, "predicted_round_s": p["round_s"], "measured_round_s": m["round_s"],
                     "round_error": planner.relative_error(p["round_s"], m["round_s"]),
                     "predicted_first_round_s": p["first_round_s"], "measured_first_round_s": m["first_round_s"],
                     "first_round_error": planner.relative_error(p["first_round_s"], m["first_round_s"]),
                     "predicted_epoch_s": p["first_epoch_s"], "predicted_warm_epoch_s": p["epoch_s"],
                     "measured_epoch_s": m["epoch_s"],
                     "epoch_error": planner.relative_error(p["first_epoch_s"], m["epoch_s"]),
                     "predicted": {k: p[k] for k in ("worker_s", "compute_s", "combine_s", "invoke_s", "cold_start_s")},
                     "measured": m})
        log(f"N={n}: round {p['round_s']:.2f} s predicted vs {m['round_s']:.2f} s measured "
            f"({rows[-1]['round_error']:+.0%}); round 0 {p['first_round_s']:.1f} vs {m['first_round_s']:.1f} s; "
            f"epoch {p['first_epoch_s']:.1f} (warm {p['epoch_s']:.1f}) vs {m['epoch_s']:.1f} s "
            f"({rows[-1]['epoch_error']:+.0%})")
    emit({"rows": rows, "calibration": planner.calibration_dict(cal), "params": params,
          "wall_s": time.time() - started, "load_average": os.getloadavg(), "machine": machine()})


if __name__ == "__main__":
    main()
