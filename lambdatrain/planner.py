"""The planner: predicted epoch time and dollar cost of a run for worker counts, memory sizes and
combine shards, from a few constants measured on this machine and AWS's published limits and prices.

Per round (sync mode, global batch B split over N workers, all workers identical)::

    worker   = fixed + load + compute + write
      load    = model bytes  / min(client read,  fs read limit / N)   (N workers read at once)
      compute = (B / N) * seconds per image per vCPU / vCPUs            (perfect intra-op scaling)
      write   = result bytes / min(client write, fs write limit / N)
    combine  = fixed + N * result bytes / (S * min(client read, fs read limit / S)) + update / S
    epoch    = rounds per epoch * (worker + combine + invoke latency + per-invoke * N)

Assumptions, stated because they decide the answer:

* The combiner is one NFS client: its read bandwidth is the per-client limit, however many files
  it reads. The workers' aggregate is min(N * per-client, file-system limit).
* A shard reads only its slice of every file ((N / S) * result bytes). With today's whole-file
  SHA-256 digests every shard must read (and hash) whole files, so sharding needs per-slice
  digests to pay off (bench/combine.py measures exactly this).
* "client read" is the smaller of the EFS per-client limit and what this machine's verified
  reader (``layout.stream_array``: read + SHA-256) sustains, measured by ``calibrate``. Writes
  to EFS use the EFS limits only (``lambdatrain plan`` drops the local fsync rate).
* Compute scales perfectly with vCPUs and the worker's CPU is as fast as this machine's core;
  warm invocations only (a cold start adds seconds to the first round).
* Lambda gives 1 vCPU per 1,769 MB, up to 6 vCPUs at 10,240 MB
  (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).

Prices (us-east-1, as published on 2025-06-01; check before relying on them):

* Lambda https://aws.amazon.com/lambda/pricing/: x86 $0.0000166667 and arm64 $0.0000133334 per
  GB-second; $0.20 per 1M requests.
* EFS https://aws.amazon.com/efs/pricing/: Elastic Throughput reads $0.03/GB, writes $0.06/GB.
* DynamoDB https://aws.amazon.com/dynamodb/pricing/on-demand/: $0.625 per million write request
  units (on-demand, after the November 2024 price cut).
* EFS limits https://docs.aws.amazon.com/efs/latest/ug/performance.html: we assume 500 MiB/s per
  client and Elastic file-system limits of 10 GiB/s read and 3 GiB/s write (Region-dependent).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable

MB_PER_VCPU = 1769
MAX_VCPUS = 6
MiB, GiB, GB = 1 << 20, 1 << 30, 1e9


@dataclass(frozen=True)
class Prices:
    gb_second: float = 0.0000166667  # Lambda x86; arm64 is 0.0000133334
    request: float = 0.20 / 1e6
    efs_read_gb: float = 0.03
    efs_write_gb: float = 0.06
    dynamodb_wru: float = 0.625 / 1e6

    @classmethod
    def for_arch(cls, arch: str) -> "Prices":
        return cls(gb_second=0.0000133334) if arch == "arm64" else cls()


@dataclass(frozen=True)
class Storage:
    """Bandwidths in bytes/s; EFS() is the AWS assumption, the local stack uses measured ones."""

    client_read: float = 500 * MiB
    client_write: float = 500 * MiB
    fs_read: float = 10 * GiB
    fs_write: float = 3 * GiB


@dataclass(frozen=True)
class Calibration:
    """Constants of this machine (``calibrate``) and of the platform (defaults: AWS estimates)."""

    seconds_per_image: float  # one training image forward + backward on one vCPU
    read_bps: float  # layout.stream_array (read + SHA-256) of a model-sized file, bytes/s
    write_bps: float  # layout.write_array (hash + fsync), bytes/s
    update_s_per_param: float = 2e-9  # SGD step and bookkeeping in the combiner, per element
    worker_fixed_s: float = 0.15  # ledger reads and the conditional write, per invocation
    combiner_fixed_s: float = 0.2  # claim, ledger reads, weights read, commit (per combiner)
    invoke_latency_s: float = 0.5  # stream delivery to the combiner + async invoke, per round
    per_invoke_s: float = 0.03  # the combiner's fan-out calls are made one after another


@dataclass(frozen=True)
class Scenario:
    params: int  # elements of the flat vector (parameters + buffers)
    workers: int
    memory_mb: int
    shards: int = 1
    batch_size: int = 256  # global batch: samples per round over all workers
    train_samples: int = 45_000  # CIFAR-10's training split after the 10 % validation split
    result_bytes_per_param: int = 4  # 2 for float16/bfloat16 transport
    combiner_memory_mb: int = 3008


def vcpus(memory_mb: int) -> float:
    """CPU share: one vCPU per 1,769 MB; the 10,240 MB maximum gets the full 6 (not 5.79)."""
    return MAX_VCPUS if memory_mb >= 10240 else min(MAX_VCPUS, max(memory_mb, 128) / MB_PER_VCPU)


def rounds_per_epoch(s: Scenario) -> int:
    """As trainer.rounds_per_epoch: the smallest shard over the per-worker batch."""
    return max(1, (s.train_samples // s.workers) // max(1, s.batch_size // s.workers))


def predict(s: Scenario, c: Calibration, storage: Storage, prices: Prices = Prices()) -> dict[str, Any]:
    """Seconds per round and epoch, and dollars per epoch, of scenario ``s``."""
    model_bytes, result_bytes = 4 * s.params, s.result_bytes_per_param * s.params
    n, shards = s.workers, s.shards
    read = min(storage.client_read, c.read_bps)
    load = model_bytes / min(read, storage.fs_read / n)
    compute = (s.batch_size // n) * c.seconds_per_image / vcpus(s.memory_mb)
    write = result_bytes / min(storage.client_write, c.write_bps, storage.fs_write / n)
    worker = c.worker_fixed_s + load + compute + write
    combine_read = n * result_bytes / (shards * min(read, storage.fs_read / shards))
    update = s.params * c.update_s_per_param / shards + model_bytes / (shards * min(storage.client_write, c.write_bps))
    combine = c.combiner_fixed_s + combine_read + update
    invoke = c.invoke_latency_s + c.per_invoke_s * (n + shards)
    round_s = worker + combine + invoke
    rounds = rounds_per_epoch(s)
    gb_s = rounds * (n * worker * s.memory_mb + shards * combine * s.combiner_memory_mb) / 1024
    efs_read = rounds * (n * model_bytes + n * result_bytes) / GB
    efs_write = rounds * (n * result_bytes + 2 * model_bytes) / GB  # results, weights, momentum
    wru = rounds * (2 * n + 4 + shards)  # result record + round update each; claim, commit, metric
    cost = {"lambda": gb_s * prices.gb_second, "requests": rounds * (n + shards) * prices.request,
            "efs": efs_read * prices.efs_read_gb + efs_write * prices.efs_write_gb,
            "dynamodb": wru * prices.dynamodb_wru}
    return {"workers": n, "memory_mb": s.memory_mb, "shards": shards, "vcpus": vcpus(s.memory_mb),
            "rounds_per_epoch": rounds, "load_s": load, "compute_s": compute, "write_s": write,
            "worker_s": worker, "combine_s": combine, "invoke_s": invoke, "round_s": round_s,
            "epoch_s": rounds * round_s, "cost_usd": sum(cost.values()),
            "cost_breakdown": {k: round(v, 6) for k, v in cost.items()}}


def plan(params: int, c: Calibration, storage: Storage, *, workers: Iterable[int], memories: Iterable[int],
         shards: Iterable[int], prices: Prices = Prices(), **scenario: Any) -> list[dict[str, Any]]:
    return [predict(Scenario(params=params, workers=n, memory_mb=m, shards=s, **scenario), c, storage, prices)
            for m in memories for s in shards for n in workers]


def best(rows: list[dict[str, Any]], shards: int, memory_mb: int) -> dict[str, Any]:
    """The fastest row of one (S, memory) line: where adding workers stops paying."""
    return min((r for r in rows if r["shards"] == shards and r["memory_mb"] == memory_mb), key=lambda r: r["epoch_s"])


# --- calibration on this machine -----------------------------------------------------------------
def measure_seconds_per_image(model: str, width: float, *, batch: int = 4, steps: int = 2) -> float:
    """Forward + backward time per image with one thread (one vCPU's worth), after a warm-up step."""
    import torch
    import torch.nn.functional as F

    from lambdatrain.model import ModelSpec, build_model, input_size

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_model(ModelSpec(model, width)).train()
        size = input_size(model)
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            F.cross_entropy(net(x), y).backward()
            times.append(time.perf_counter() - t0)
        return min(times[1:]) / batch
    finally:
        torch.set_num_threads(threads)


def measure_file_bandwidth(params: int, folder: Path) -> tuple[float, float]:
    """(read, write) bytes/s of layout.stream_array / write_array on a ``params``-element file."""
    import numpy as np

    from lambdatrain import layout

    vector = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    path = folder / "planner-calibration.npy"
    try:
        t0 = time.perf_counter()
        digest = layout.write_array(path, vector)
        write = vector.nbytes / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in layout.stream_array(path, digest):
            pass
        return vector.nbytes / (time.perf_counter() - t0), write
    finally:
        path.unlink(missing_ok=True)
        layout.digest_path(path).unlink(missing_ok=True)


def model_params(model: str, width: float) -> int:
    from lambdatrain.combine import FlatLayout
    from lambdatrain.model import ModelSpec, build_model

    return FlatLayout.of(build_model(ModelSpec(model, width))).size


def calibrate(model: str, width: float, folder: Path, **overrides: Any) -> tuple[int, Calibration]:
    """(params, calibration) for ``model`` measured here; ``overrides`` replace measured fields."""
    params = model_params(model, width)
    fixed = {k: v for k, v in overrides.items() if v is not None}
    spi = fixed.pop("seconds_per_image", None) or measure_seconds_per_image(model, width)
    read, write = measure_file_bandwidth(min(params, 50_000_000), folder)
    return params, replace(Calibration(seconds_per_image=spi, read_bps=read, write_bps=write), **fixed)


def calibration_dict(c: Calibration) -> dict[str, Any]:
    """The calibration as strict JSON (an unlimited bandwidth is null, not Infinity)."""
    return {k: v if math.isfinite(v) else None for k, v in asdict(c).items()}


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Epoch time and cost per epoch against workers, one line per (S, memory), as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    for key in sorted({(r["shards"], r["memory_mb"]) for r in rows}):
        line = sorted((r for r in rows if (r["shards"], r["memory_mb"]) == key), key=lambda r: r["workers"])
        label = f"S={key[0]}, {key[1]} MB"
        xs = [r["workers"] for r in line]
        ax_t.plot(xs, [r["epoch_s"] / 60 for r in line], marker="o", ms=3, label=label)
        ax_c.plot(xs, [r["cost_usd"] for r in line], marker="o", ms=3, label=label)
        fastest = min(line, key=lambda r: r["epoch_s"])
        ax_t.annotate(f"N={fastest['workers']}", (fastest["workers"], fastest["epoch_s"] / 60), fontsize=7,
                      xytext=(0, 6), textcoords="offset points", ha="center")
    for ax, label in ((ax_t, "epoch time (min)"), (ax_c, "cost per epoch ($)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("workers N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured if measured else math.nan
