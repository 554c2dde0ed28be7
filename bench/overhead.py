"""The overhead benchmark: images/second of the local stack with N workers against a plain
single-process PyTorch loop doing the same work.

    python -m bench.overhead [--workers 2] [--samples 1792] [--width 1] [--batch-size 448]

The defaults are the goal's setting, rounds of ~15-20 s of compute: the full-width CIFAR VGG19
with 224 samples per worker, 4 rounds (about 5 minutes here). Short rounds, where the fixed
per-round cost shows: ``--width 0.25 --batch-size 512 --samples 2048`` (about 80 s).

Same model (vgg19_cifar at ``--width``), same first K training samples, same global batch and
micro-batch, same augmentation, and the same thread budget: the stack's workers get one thread
each (worker_memory_mb 1769), so the single loop runs with N threads. The runs alternate
(distributed, single, distributed, single) so a drift in the machine's load hits both sides.

distributed_ips is samples / sum of round times (round_s: fan-out to commit, so it includes
loading weights, writing results, the combine and the waits; the combiner's evaluation, which
the single loop does not do, is taken out) and, end to end, samples / wall
time of ``ops.local_train.train`` (which adds starting the stack and the initial evaluation). Per-
invocation overhead comes from the ledger's result items: load_s and write_s of each worker; the
first round's invocations are each process's first (``ops.local_train.train`` prewarms the processes, so
torch is imported before round 0, but the first invocation builds the model and opens the data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import add_data_args, emit, in_child, log, machine, prepared_dataset
from lambdatrain.protocol.limits import MB_PER_VCPU

def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"workers": args.workers, "model": "vgg19_cifar", "width": args.width, "epochs": 1,
            "batch_size": args.batch_size, "micro_batch": 64, "max_train_samples": args.samples,
            "val_samples": 256, "seed": 0}


def distributed(prepared: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from lambdatrain.local.stack import LocalStackConfig
    from lambdatrain.ops.local_train import TrainRequest, train

    stack = LocalStackConfig(state_dir=out / "stack", worker_memory_mb=MB_PER_VCPU, worker_concurrency=args.workers)
    summary = train(TrainRequest(data=prepared, out=out, settings=settings(args), stack=stack))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    results = [i for i in json.loads((out / "ledger.json").read_text()) if i.get("kind") == "result"]
    samples = sum(m["samples"] for m in metrics)
    cold = [r for r in results if int(r["round"]) == 0]
    warm = [r for r in results if int(r["round"]) > 0]
    mean = lambda items, key: statistics.fmean(float(i[key]) for i in items) if items else None  # noqa: E731
    # The single loop does not evaluate, so the combiner's evaluations (at the epoch's end) are
    # taken out of the rounds; they are reported as eval_s.
    eval_s = sum(m.get("eval_s", 0.0) for m in metrics)
    return {"samples": samples, "rounds": len(metrics), "round_s": sum(m["round_s"] for m in metrics) - eval_s,
            "eval_s": eval_s, "warm_round_s": statistics.fmean(m["round_s"] - m.get("eval_s", 0.0) for m in metrics[1:])
            if len(metrics) > 1 else None,
            "wall_s": summary["wall_s"], "worker_compute_s": statistics.fmean(m["worker_compute_s"] for m in metrics),
            "combine_s": statistics.fmean(m["combine_s"] for m in metrics),
            "wait_s": statistics.fmean(m["wait_s"] for m in metrics),
            "cold_load_s": mean(cold, "load_s"), "warm_load_s": mean(warm, "load_s"),
            "cold_write_s": mean(cold, "write_s"), "warm_write_s": mean(warm, "write_s"),
            "cold_compute_s": mean(cold, "compute_s"), "warm_compute_s": mean(warm, "compute_s")}


def single(prepared: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same samples, batches and augmentation in one process with N threads, no files."""
    import numpy as np
    import torch

    from lambdatrain.training import trainer
    from lambdatrain.protocol.config import parse_config

    config = parse_config(settings(args))
    data = trainer.dataset(str(prepared))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.workers)
    try:
        torch.manual_seed(config.seed)
        model, _ = trainer.model_for(config, len(data.classes))
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
        n = trainer.train_size(config, data)
        order = np.random.default_rng(config.seed).permutation(n)
        steps = n // config.batch_size
        start = time.perf_counter()
        model.train()
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            for micro, mb in enumerate(trainer.micro_batches(idx, config.micro_batch)):
                x, y = trainer.batch(config, data, mb, round_no=step, worker=0, micro=micro)
                trainer._forward_backward(model, x, y, 1.0 / len(idx))
            opt.step()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {"samples": steps * config.batch_size, "seconds": seconds, "threads": args.workers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, workers=2, samples=1792)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=448)
    args = parser.parse_args(argv)
    started = time.time()
    prepared = prepared_dataset(args)
    dist, solo = [], []
    with tempfile.TemporaryDirectory(prefix="lt-bench-overhead-") as tmp:
        for rep in range(2):
            log(f"distributed run {rep + 1}/2: {args.workers} workers, {args.samples} samples")
            dist.append(in_child(distributed, prepared, args, Path(tmp) / f"d{rep}"))
            log(f"  {dist[-1]['samples'] / dist[-1]['round_s']:.1f} img/s over rounds, "
                f"{dist[-1]['samples'] / dist[-1]['wall_s']:.1f} img/s end to end")
            log(f"single-process run {rep + 1}/2: {args.workers} threads")
            threads = str(args.workers)  # set before torch starts, as the sandbox does for workers
            solo.append(in_child(single, prepared, args, env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}))
            log(f"  {solo[-1]['samples'] / solo[-1]['seconds']:.1f} img/s")
    rounds_ips = sum(d["samples"] for d in dist) / sum(d["round_s"] for d in dist)
    single_ips = sum(s["samples"] for s in solo) / sum(s["seconds"] for s in solo)
    emit({"distributed_ips": rounds_ips, "distributed_ips_end_to_end": sum(d["samples"] for d in dist) /
          sum(d["wall_s"] for d in dist), "single_ips": single_ips, "ratio": rounds_ips / single_ips,
          "settings": {**settings(args), "single_threads": args.workers, "worker_memory_mb": MB_PER_VCPU},
          "distributed_runs": dist, "single_runs": solo, "wall_s": time.time() - started, "machine": machine()})


if __name__ == "__main__":
    main()
