"""The planner check: lambdatrain.planner's prediction against the local stack for N = 1, 2, 4.

    python -m bench.planner [--workers 1,2,4] [--samples 2048] [--width 0.125]

Runs tiny ``local.train`` runs with the same total samples and global batch for each N, and
predicts the same with the planner calibrated on this machine: seconds per image measured with
one thread at the run's micro-batch, file bandwidth of ``write_array``/``stream_array``, storage
"local" (no EFS limits). The per-round fixed costs (invoke latency: the stream poller and the
local Lambda service; the combiner's fixed cost: claim, reads, update, writes, commit) are taken
from the N = 1 run, so N = 2 and 4 are true predictions. Round times are means over warm rounds
(round 0 pays cold starts); the epoch is the sum over all rounds, cold start included, which
the planner does not model. The local workers share this machine's cores: a worker gets
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

from bench._common import add_data_args, emit, in_child, int_list, log, machine


def measured(prepared: Path, out: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    from lambdatrain.local.stack import LocalStackConfig
    from lambdatrain.local.train import TrainRequest, train

    settings = {"workers": workers, "model": "vgg19_cifar", "width": args.width, "epochs": 1, "batch_size": 256,
                "micro_batch": 64, "max_train_samples": args.samples, "val_samples": 64, "seed": 0}
    stack = LocalStackConfig(state_dir=out / "stack", worker_concurrency=max(workers, 1))
    train(TrainRequest(data=prepared, out=out, settings=settings, stack=stack))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    results = [i for i in json.loads((out / "ledger.json").read_text()) if i.get("kind") == "result"]
    warm = [m for m in metrics if m["round"] > 0]  # round 0 pays the cold starts
    return {"rounds": len(metrics), "round_s": statistics.fmean(m["round_s"] for m in warm),
            "epoch_s": sum(m["round_s"] for m in metrics), "wait_s": statistics.fmean(m["wait_s"] for m in warm),
            "combine_s": statistics.fmean(m["combine_s"] for m in warm),
            "worker_s": statistics.fmean(m["worker_s"] for m in warm),
            "worker_fixed_s": statistics.fmean(float(r["load_s"]) for r in results if int(r["round"]) > 0)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, workers=[1, 2, 4], samples=2048)
    parser.add_argument("--width", type=float, default=0.125)
    args = parser.parse_args(argv)
    from dataclasses import replace

    from lambdatrain import planner
    from lambdatrain.data import resolve_dataset

    started = time.time()
    prepared = resolve_dataset(args.data, args.cache_dir)
    params = planner.model_params("vgg19_cifar", args.width)
    spi = planner.measure_seconds_per_image("vgg19_cifar", args.width, batch=64, steps=2)
    with tempfile.TemporaryDirectory(prefix="lt-bench-planner-") as tmp:
        read, write = planner.measure_file_bandwidth(params, Path(tmp))
        log(f"calibration: {spi * 1e3:.2f} ms/image/core, read {read / 1e6:.0f} MB/s, write {write / 1e6:.0f} MB/s")
        runs = {}
        for n in args.workers:
            log(f"local train with {n} workers")
            runs[n] = in_child(measured, prepared, Path(tmp) / f"n{n}", n, args)
    base = runs[args.workers[0]]
    cal = planner.Calibration(seconds_per_image=spi, read_bps=read, write_bps=write, worker_fixed_s=0.0,
                              combiner_fixed_s=base["combine_s"], invoke_latency_s=base["wait_s"], per_invoke_s=0.0)
    local = planner.Storage(*(4 * [float("inf")]))
    cores = os.cpu_count() or 1
    rows = []
    for n, m in runs.items():
        scenario = planner.Scenario(params=params, workers=n, memory_mb=int(1769 * min(1.0, cores / n)),
                                    batch_size=256, train_samples=args.samples)
        p = planner.predict(scenario, replace(cal, worker_fixed_s=m["worker_fixed_s"]), local)
        rows.append({"workers": n, "predicted_round_s": p["round_s"], "measured_round_s": m["round_s"],
                     "round_error": planner.relative_error(p["round_s"], m["round_s"]),
                     "predicted_epoch_s": p["epoch_s"], "measured_epoch_s": m["epoch_s"],
                     "epoch_error": planner.relative_error(p["epoch_s"], m["epoch_s"]),
                     "predicted": {k: p[k] for k in ("worker_s", "compute_s", "combine_s", "invoke_s")},
                     "measured": m})
        log(f"N={n}: round {p['round_s']:.2f} s predicted vs {m['round_s']:.2f} s measured "
            f"({rows[-1]['round_error']:+.0%}); epoch {p['epoch_s']:.1f} vs {m['epoch_s']:.1f} s")
    emit({"rows": rows, "calibration": planner.calibration_dict(cal), "params": params,
          "wall_s": time.time() - started, "machine": machine()})


if __name__ == "__main__":
    main()
