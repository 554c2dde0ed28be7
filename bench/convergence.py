"""The convergence benchmark: validation accuracy against wall time and samples seen, for sync and
average (local SGD) modes and for float32 against 16-bit worker results.

    python -m bench.convergence [--workers 2] [--samples 4000] [--epochs 1]

Every run is ``local.train`` on the first K training samples of the CIFAR-10 JPEG tarball with
vgg19_cifar at width 0.125, validation on the first 1000 validation samples, evaluated every few
rounds so each run gives several points. The runs are deterministic given their settings, so
16-bit transport is compared with float32 at equal samples (same rounds); the goal is that it
stays within 0.5 percentage points. With 1000 validation images one image is 0.1 point.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import add_data_args, emit, in_child, log, machine

RUNS = [
    ("sync-float32", {"mode": "sync", "transport": "float32"}),
    ("sync-bfloat16", {"mode": "sync", "transport": "bfloat16"}),
    ("sync-float16", {"mode": "sync", "transport": "float16"}),
    ("average4-float32", {"mode": "average", "local_steps": 4, "transport": "float32"}),
]


def run(prepared: Path, out: Path, args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    from lambdatrain.local.train import TrainRequest, train

    average = extra["mode"] == "average"
    settings = {"workers": args.workers, "model": "vgg19_cifar", "width": 0.125, "epochs": args.epochs,
                "batch_size": 256, "micro_batch": 64, "max_train_samples": args.samples, "val_samples": 1000,
                "seed": 0, "eval_every": 1 if average else args.eval_every, **extra}
    started = time.time()
    summary = train(TrainRequest(data=prepared, out=out, settings=settings))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    clock = 0.0  # seconds of rounds (fan-out to commit): wall time without the stack's start-up
    points = []
    for m in metrics:
        clock += m["round_s"]
        if "val_accuracy" in m:
            points.append({"round": m["round"], "samples_seen": m["samples_seen"], "train_s": round(clock, 2),
                           "val_accuracy": m["val_accuracy"], "val_loss": m["val_loss"]})
    return {"settings": settings, "points": points, "wall_s": time.time() - started,
            "final_accuracy": summary["val_accuracy"], "samples_seen": summary["samples_seen"]}


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """16-bit minus float32 accuracy (percentage points) at the evaluations both sync runs made."""
    base = {p["samples_seen"]: p["val_accuracy"] for p in results["sync-float32"]["points"]}
    out = {}
    for name in ("sync-bfloat16", "sync-float16"):
        gaps = [100 * (p["val_accuracy"] - base[p["samples_seen"]]) for p in results[name]["points"]
                if p["samples_seen"] in base]
        final = 100 * (results[name]["final_accuracy"] - results["sync-float32"]["final_accuracy"])
        out[name] = {"final_gap_pp": round(final, 2), "max_abs_gap_pp": round(max(map(abs, gaps), default=0), 2),
                     "within_0.5pp_at_end": abs(final) <= 0.5}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, workers=2, samples=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=5, help="rounds between evaluations (sync runs)")
    args = parser.parse_args(argv)
    from lambdatrain.data import resolve_dataset

    started = time.time()
    prepared = resolve_dataset(args.data, args.cache_dir)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lt-bench-convergence-") as tmp:
        for name, extra in RUNS:
            log(f"{name}: training")
            results[name] = in_child(run, prepared, Path(tmp) / name, args, extra)
            log(f"  {name}: " + ", ".join(f"{p['samples_seen']} samples/{p['train_s']:.0f} s -> "
                                          f"{p['val_accuracy']:.1%}" for p in results[name]["points"]))
    emit({"runs": results, "transport_vs_float32": compare(results), "wall_s": time.time() - started,
          "machine": machine()})


if __name__ == "__main__":
    main()
