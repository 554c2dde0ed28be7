"""The planner: predicted round and epoch time and dollar cost of a run for a recipe (transport,
mode, local steps, global batch: recipes.py), worker counts, memory sizes and combine shards, from
a few constants measured on this machine and AWS's published limits and prices.

Per round (global batch split over N workers, K local steps per round: K = 1 in sync mode, K
optimizer steps per worker in average mode; all workers identical)::

    worker   = max(fixed + max(load + apply + compute, state GET) + pack + write + state PUT,
                   fixed + host CPU)
      load    = down bytes   / min(client read,  fs read limit / N)   (N workers read at once;
                compressed: the update's GET from the bucket instead)
      compute = K * (batch / N) * seconds per image per vCPU / vCPUs    (perfect intra-op scaling)
                + per-round compute / min(1, vCPUs)                      (weights in, result out: once a round)
      write   = result bytes / min(client write, fs write limit / N)
      state   = the residual's PUT, and what its GET outlasts of load + compute (compressed; else 0)
      apply, pack = the update applied to the weights, the result compressed (compressed: codecs.py)
      host CPU = (N * (compute on one core + CPU per invocation besides it) - the last one's delivery)
                 / cores of the machine the N workers share (the local stack; 0 on AWS, each has its own)
    combine  = fixed + N * result bytes / (S * min(client read, fs read limit / S)) + update / S
               + the combiner's transfers in the bucket (compressed: bucket.combiner_seconds)
               + its codec CPU: (P / S) * (N * decode_add / threads' speedup + pack + apply) (codecs.py)
    epoch    = rounds per epoch * (worker + combine + invoke)
    invoke   = invoke latency + per-invoke * fan-out waves + serial * N  (serial: 0 on AWS)
    rounds per epoch = (samples / N) // (K * batch / N)                  (K local steps: K times fewer)
    first epoch = epoch + worker cold start + combiner cold start   (on-demand concurrency)

What moves per round, as the roles move it (``efs_bytes``, ``state_bytes``). The flat vector has
P parameters and B batch-norm buffer elements (``Scenario.params`` = P + B, ``buffers`` = B,
small); weights are float32 whatever the transport, model = 4(P + B) bytes; a result is P + B
elements in a float transport (2 or 4 bytes each), or payload(P) + 4B bytes in a compressed one
(the codec's ``payload_nbytes`` of the parameters, the buffers as float32). The combiner's
float32 state files on EFS: weights 4(P + B) and, for a float transport in sync mode, momentum 4P
(a compressed run keeps its momentum, its residual and the update in the bucket: bucket.py)::

    worker read     N * model              (compressed, a warm worker: nothing; the update is in S3)
    worker write    N * result
    combiner read   N * result              (S > 1: + state + state, + the update's slices)
    combiner write  state                   (S > 1: + state, + the update's slices)

One combiner (S = 1) keeps the state it wrote for its next round in memory (roles/warm.py) and, in
the warm round planned here, reads none of it back. Each of S > 1 shares reads its slice of the
weights and state files, a state in all (lambdatrain/roles/claimed.py ``reduce_slice``: the
combine that wrote them recorded each slice's checksum), and writes its slice; the share that
completes the round reads the slices back and writes the whole files (roles/sharding.py
``_assemble``). Those reads are in ``combiner_fixed_s`` for time (bench.planner calibrates it), in
the bytes for dollars; the small digest sidecars beside each file are in neither.

A compressed transport (``ternary_ef``, ``sign_ef``): a warm worker holds the previous round's
weights and GETs only the combiner's compressed update, payload(P) + 4B (a cold worker reads the
full weights from EFS once; not in the warm round). The run's state lives in the stack's S3 bucket
(lambdatrain/storage/state.py; through the VPC's S3 gateway endpoint, no per-GB charge in the
Region), every transfer as bucket.py lists it: a worker's residual (4P) PUT and GET (planned as
always happening, the worst case) and the update's GET; the combiner's momentum and residual PUTs
(4P each) and the update's, each at ``s3_bps`` after ``s3_request_s`` (bucket.py); retention lists
the run's state and sends one DeleteObjects a round (an epoch's last state stays, a checkpoint, until
the lifecycle rule expires it).

Assumptions, stated because they decide the answer:

* The combiner is one NFS client: its read bandwidth is the per-client limit, however many files
  it reads. The workers' aggregate is min(N * per-client, file-system limit).
* A shard reads only its slice of every file ((N / S) * result bytes): workers record a checksum
  per slice (``efs.range_digests``) and a shard verifies only the bytes it reads
  (lambdatrain/roles/sharding.py; bench/combine.py measures the slice reduction).
* "client read" is the smaller of the EFS per-client limit and what this machine's verified
  reader (``efs.stream_array``: read + the file's checksum, XXH3-128 by default, see
  lambdatrain/storage/digest.py) sustains, measured by ``calibrate``. Writes to EFS use its limits only.
* Seconds per image is the slope of the worker's own compute path over its images, and the fixed
  compute cost its intercept (``trainer.compute_sync`` on one thread at the run's micro-batch:
  decode, augment, normalize, forward, backward; calibration.py), so every per-image cost
  a worker pays is in it. Compute scales perfectly with vCPUs and the worker's CPU is as fast as
  this machine's core; single-threaded work (the per-round weight copies, a cold start's imports)
  gains nothing above one vCPU and slows below it.
* A cold start (a fresh process imports what a worker imports and builds the model) is paid once
  by the first round's workers, whose N new sandboxes start in parallel, and once more by the
  combiner, whose first invocation follows them; none with provisioned concurrency (what the
  local stack's prewarm models). Sandboxes Lambda recycles later are not modelled, and cost is
  per warm epoch.
* Lambda gives 1 vCPU per 1,769 MB, up to 6 vCPUs at 10,240 MB (lambdatrain/protocol/limits.py).

Dollars per epoch by item: costs.py; prices, with their sources: prices.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from lambdatrain.planning.prices import (  # noqa: F401  (re-exported: the planner's public names)
    ARCHITECTURES, DAYS_PER_MONTH, STATE_EXPIRY_DAYS, STATE_KEPT_DAYS, Prices,
)
from lambdatrain.planning.costs import epoch_cost
from lambdatrain.planning.recipes import RECIPES, Recipe
from lambdatrain.planning.transports import transport
from lambdatrain.planning.bucket import combiner_seconds, combiner_state_bytes, state_bytes, state_seconds
from lambdatrain.planning.codecs import combiner_codec_s, worker_codec_s
from lambdatrain.protocol.limits import MAX_MEMORY_MB, MAX_VCPUS, MB_PER_VCPU, MIN_MEMORY_MB
from lambdatrain.roles.runtime import INVOKE_POOL

STORAGES = ("efs", "local")  # AWS's EFS limits, or this machine's disk only (the local stack)
COMBINER_MEMORY_MB = 3008  # the stack's default combinerMemory (components/config.py)
MiB, GiB = 1 << 20, 1 << 30


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

    seconds_per_image: float  # one image through trainer.compute_sync (batch, forward, backward) on one vCPU
    read_bps: float  # efs.stream_array (read + checksum) of a model-sized file, bytes/s
    write_bps: float  # efs.write_array (checksum + fsync), bytes/s
    compute_fixed_s: float  # per round in compute_sync, whatever the images: weights in, gradients out, first pass
    cold_start_s: float  # a fresh process on one vCPU: imports a worker's modules, builds the model
    update_s_per_param: float = 2e-9  # SGD step and bookkeeping in the combiner, per element
    worker_fixed_s: float = 0.15  # ledger reads and the conditional write, per invocation
    combiner_fixed_s: float = 0.2  # claim, ledger reads, weights read, commit (per combiner)
    invoke_latency_s: float = 0.5  # stream delivery to the combiner + async invoke, per round
    per_invoke_s: float = 0.03  # one async invoke's latency; a fan-out runs INVOKE_POOL of them at a time
    s3_bps: float = 85e6  # one S3 request's bandwidth inside the Region, bytes/s (module docstring)
    s3_request_s: float = 0.03  # one S3 request's latency before its bytes flow
    s3_put_s_per_byte: float = 0.0  # a PUT's seconds per byte beyond a GET's (the local stack's mirror; AWS 0)
    # Workers sharing an S3 that serves one request at a time, each at 1/k of it: 1 on AWS, N on the
    s3_clients: float = 1.0  # local stack's moto (bench.planner); the combiner's, after theirs, see it whole
    serial_s_per_worker: float = 0.0  # per worker-round on a service serving one request at a time (moto; AWS 0)
    # The cores the N workers share on one machine (the local stack; inf on AWS, each its own): their phase
    # lasts at least their CPU over them, compute and ``cpu_s_per_worker``, what an invocation costs besides it
    # (handler, ledger, storage and S3 clients, the services answering them, codec), taken from others' compute.
    host_cores: float = math.inf
    cpu_s_per_worker: float = 0.0
    delivery_cpu_s: float = 0.0  # of it, the stack's read of the worker's writes: the last's follows the phase
    pack_s_per_param: float = 0.0  # the codecs (codecs.py): seconds per parameter on one vCPU, 0 where a
    apply_s_per_param: float = 0.0  # calibration was saved before they were measured
    decode_add_s_per_param: float = 0.0
    sum_thread_efficiency: float = 1.0  # what each thread of the combiner's sum past the first adds of one


@dataclass(frozen=True)
class Scenario:
    params: int  # elements of the flat vector (parameters + buffers)
    workers: int
    memory_mb: int
    shards: int = 1
    batch_size: int = 256  # global batch: samples per round over all workers
    train_samples: int = 45_000  # CIFAR-10's training split after the 10 % validation split
    transport: str = "float32"  # a name in transports.TRANSPORTS
    mode: str = "sync"  # sync: one optimizer step per round; average: local SGD
    local_steps: int = 1  # average mode: optimizer steps per worker per round
    combiner_memory_mb: int = COMBINER_MEMORY_MB
    provisioned: bool = False  # provisioned concurrency: sandboxes initialised before round 0, no cold start
    buffers: int = 0  # of ``params``, batch-norm buffer elements: float32 in every transport, no momentum or residual

    def __post_init__(self) -> None:
        Recipe(self.transport, self.mode, self.local_steps, self.batch_size)  # validates them together
        if not 0 <= self.buffers <= self.params:
            raise ValueError(f"buffers {self.buffers}: between 0 and params ({self.params})")

    @property
    def compressed(self) -> bool:
        return transport(self.transport).codec is not None

    def result_bytes(self) -> int:
        """One worker's result (and, compressed, the combiner's update): payload(P) + 4B, or
        (P + B) elements of the float transport."""
        t = transport(self.transport)
        if t.codec is None:
            return t.payload_bytes(self.params)
        return t.payload_bytes(self.params - self.buffers) + 4 * self.buffers


def vcpus(memory_mb: int) -> float:
    """CPU share: one vCPU per 1,769 MB; the 10,240 MB maximum gets the full 6 (not 5.79)."""
    if memory_mb >= MAX_MEMORY_MB:
        return MAX_VCPUS
    return min(MAX_VCPUS, max(memory_mb, MIN_MEMORY_MB) / MB_PER_VCPU)


def single_thread_s(seconds_on_one_vcpu: float, memory_mb: int) -> float:
    """Time of single-threaded work: more vCPUs do not help it, a fraction of one slows it."""
    return seconds_on_one_vcpu / min(1.0, vcpus(memory_mb))


def cold_start(s: Scenario, c: Calibration) -> float:
    """Seconds the first round adds: the workers' sandboxes start in parallel, so one cold start,
    then the combiner's, whose first invocation comes once the workers' results are in."""
    if s.provisioned:
        return 0.0
    return single_thread_s(c.cold_start_s, s.memory_mb) + single_thread_s(c.cold_start_s, s.combiner_memory_mb)


def rounds_per_epoch(s: Scenario) -> int:
    """As trainer.rounds_per_epoch: the smallest shard over what a worker takes per round (its batch
    times its local steps)."""
    return max(1, (s.train_samples // s.workers) // (max(1, s.batch_size // s.workers) * s.local_steps))


def efs_bytes(s: Scenario) -> dict[str, int]:
    """Bytes read and written on EFS per round by all workers and by the combiner (module docstring)."""
    model, result, n, p = 4 * s.params, s.result_bytes(), s.workers, s.params - s.buffers
    # The weights, and a float transport's momentum; a compressed run keeps its momentum, residual
    # and update in the bucket (bucket.py), and its warm workers read nothing here.
    state = model + (4 * p if s.mode == "sync" and not s.compressed else 0)
    # S shares' slices of the state (and of a compressed update), written then read back whole
    assembled = state + (result if s.compressed else 0) if s.shards > 1 else 0
    return {"worker_read": 0 if s.compressed else n * model, "worker_write": n * result,
            # One combiner, warm, keeps the state it wrote (roles/warm.py); S shares read it back, a slice each.
            "combiner_read": n * result + (state + assembled if s.shards > 1 else 0),
            "combiner_write": state + assembled}


def fanout_waves(workers: int, shards: int) -> int:
    """Invocation latencies on a round's critical path: the shares' fan-out, then the workers',
    each INVOKE_POOL at a time (lambdatrain/roles/runtime.py; bench.protocol measures it)."""
    return math.ceil(shards / INVOKE_POOL) + math.ceil(workers / INVOKE_POOL)


def host_cpu_s(s: Scenario, c: Calibration) -> float:
    """Seconds the N workers' CPU keeps a shared machine's cores busy per round (0 on AWS, where
    each worker has its own): their compute at one core's speed and what else each invocation
    costs it (the last one's ``delivery_cpu_s`` follows the phase, in the invoke latency), over ``host_cores``."""
    if not math.isfinite(c.host_cores):
        return 0.0
    per_worker = s.local_steps * (s.batch_size // s.workers) * c.seconds_per_image + c.compute_fixed_s
    return (s.workers * (per_worker + c.cpu_s_per_worker) - c.delivery_cpu_s) / c.host_cores


def predict(s: Scenario, c: Calibration, storage: Storage, prices: Prices = Prices()) -> dict[str, Any]:
    """Seconds per round and epoch (warm, and the first with its cold start), and dollars per warm
    epoch, of scenario ``s``."""
    model_bytes, result_bytes = 4 * s.params, s.result_bytes()
    n, shards, moved = s.workers, s.shards, efs_bytes(s)
    read, write_bps = min(storage.client_read, c.read_bps), min(storage.client_write, c.write_bps)
    state = state_seconds(s, c)
    # The weights: in full from EFS (float transports), or the previous round's and the update from the bucket.
    load = moved["worker_read"] / n / min(read, storage.fs_read / n) + state["update"]
    compute = s.local_steps * (s.batch_size // n) * c.seconds_per_image / vcpus(s.memory_mb) + \
        single_thread_s(c.compute_fixed_s, s.memory_mb)
    write = result_bytes / min(write_bps, storage.fs_write / n)
    codec = {k: single_thread_s(v, s.memory_mb) for k, v in worker_codec_s(s, c).items()}
    # The GET runs beside load and compute (roles/worker.py prefetches it): only what it outlasts waits.
    worker = c.worker_fixed_s + max(load + codec["apply"] + compute, state["get"]) + codec["pack"] + write + \
        state["put"]
    host_cpu = host_cpu_s(s, c)
    worker = max(worker, c.worker_fixed_s + host_cpu)
    combine_read = n * result_bytes / (shards * min(read, storage.fs_read / shards))
    update = s.params * c.update_s_per_param / shards + model_bytes / (shards * write_bps)  # the new weights
    combine = c.combiner_fixed_s + combine_read + update + combiner_seconds(s, c) + \
        combiner_codec_s(s, c, vcpus(s.combiner_memory_mb))
    invoke = c.invoke_latency_s + c.per_invoke_s * fanout_waves(n, shards) + c.serial_s_per_worker * n
    round_s = worker + combine + invoke
    rounds, cold = rounds_per_epoch(s), cold_start(s, c)
    cost = epoch_cost(s, rounds, worker, combine, moved, prices)
    total = sum(cost.values())
    return {"workers": n, "memory_mb": s.memory_mb, "shards": shards, "transport": s.transport,
            "runnable": transport(s.transport).runnable, "mode": s.mode, "local_steps": s.local_steps,
            "batch_size": s.batch_size, "recipe": Recipe(s.transport, s.mode, s.local_steps, s.batch_size).label,
            "vcpus": vcpus(s.memory_mb), "model_bytes": model_bytes, "result_bytes": result_bytes,
            "efs_bytes": moved, "efs_bytes_per_round": sum(moved.values()),
            "state_store": "s3" if s.compressed else "none",
            "state_bytes_per_worker_round": sum(state_bytes(s).values()),
            "combiner_state_bytes_per_round": sum(combiner_state_bytes(s).values()),
            "combiner_state_s": combiner_seconds(s, c),
            "rounds_per_epoch": rounds, "load_s": load, "compute_s": compute, "write_s": write,
            "state_s": sum(state.values()), "codec_s": sum(codec.values()),
            "state_wait_s": max(0.0, state["get"] - load - compute) + state["update"] + state["put"],
            "host_cpu_s": host_cpu, "worker_s": worker, "combine_s": combine, "invoke_s": invoke, "round_s": round_s,
            "cold_start_s": cold, "first_round_s": round_s + cold, "epoch_s": rounds * round_s,
            "first_epoch_s": rounds * round_s + cold, "cost_per_round": total / rounds,
            "cost_per_epoch": total, "cost_usd": total,
            "cost_breakdown": {k: round(v, 6) for k, v in cost.items()}}


def plan(params: int, c: Calibration, storage: Storage, *, workers: Iterable[int], memories: Iterable[int],
         shards: Iterable[int], recipes: Iterable[Recipe] = RECIPES, prices: Prices = Prices(),
         **scenario: Any) -> list[dict[str, Any]]:
    """One row per recipe, memory, S and N, in that order (so a recipe's rows stay together)."""
    return [predict(Scenario(params=params, workers=n, memory_mb=m, shards=s, transport=r.transport, mode=r.mode,
                             local_steps=r.local_steps, batch_size=r.batch_size, **scenario), c, storage, prices)
            for r in recipes for m in memories for s in shards for n in workers]


def best(rows: list[dict[str, Any]], shards: int, memory_mb: int, recipe: str | None = None) -> dict[str, Any]:
    """The fastest row of one (S, memory) line (of one recipe, when given): where adding workers
    stops paying."""
    return min((r for r in rows if r["shards"] == shards and r["memory_mb"] == memory_mb
                and recipe in (None, r["recipe"])), key=lambda r: r["epoch_s"])


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured if measured else math.nan
