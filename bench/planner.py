"""The planner check: lambdatrain.planning.planner's prediction against the local stack, per recipe
(float32, ternary_ef, sign_ef, average mode) and N = 1, 2, 4, each measured R times.

    python -m bench.planner [--recipes float32,ternary_ef,sign_ef,average] [--repeats 5]
                            [--workers 1,2,4] [--samples 4096] [--width 0.125]
    python -m bench.planner --from docs/results/planner-local.json   # a saved run, predicted again

Runs tiny ``ops.local_train.train`` runs with the same total samples and global batch for each N, and
predicts the same with the planner calibrated on this machine: the worker's compute path
(``trainer.compute_sync`` on the prepared dataset, one thread, the run's micro-batch), a fresh
process's cold start, file bandwidth of ``write_array``/``stream_array``, storage "local" (no EFS
limits), the codecs' CPU per parameter (planning/codec_timing.py, at this width's size),
and, for the compressed transports, the S3 that holds each worker's residual: here the
local stack's moto on loopback, with its durable mirror (lambdatrain/local/durable.py), timed
through the worker's own ``StateStore.put`` and ``get`` (a one-element residual gives the
per-request latency, a model-sized one the bandwidth). The per-round fixed costs (invoke latency:
the stream poller and the local Lambda service; the combiner's fixed cost: claim, ledger, commit)
are each recipe's own, what its runs at the first N (the median over the repeats) leave once the
planner's own terms are taken out (``predicted``), so the other N are true predictions. The runs do
not prewarm (on-demand Lambda): round 0 pays the workers' and then the combiner's cold start, and
is compared with the predicted first round; the epoch, the sum over all rounds, with the predicted
first epoch. A run's round time is the median over its warm rounds (other sessions' load comes in
bursts; 4,096 samples at the global batch of 256 give 15 of them, twice as many as 2,048 did);
a recipe and N's is the median over its R runs, with their min-max spread, and agrees when
within ``TOLERANCE``. Repeats go round by round over all recipes and N, so a slow spell of the
machine hits each of them; for the same reason the calibration's machine-dependent times (the
per-image times, the compute's fixed cost per round, moto's busy time, the CPU per invocation)
are taken again before each repeat and predicted with at their medians (``machine_sample``: one
slow spell while calibrating had skewed every N > 1 by 50-90 %).

What the local stack shares that Lambda does not, given to the planner as this machine's constants
for each N (``local_calibration``), never fitted to the runs:

* The cores. A worker gets min(1, cores / N) of a core, which the planner sees as memory
  1769 * min(1, cores / N) MB; and a core may compute slower while the others compute too (shared
  caches, memory bandwidth, the host's scheduling of this VM's vCPUs), so the calibration also
  times the compute path in ``cores`` processes at once, right after one, and N workers are
  predicted at the per-image time of min(N, cores) busy cores (interpolated between one and all;
  all busy is one core's time by the median of the samples' own ratios, ``median_sample``). The
  slowdown is the CPU's, not the compute's: the other CPU seconds per worker (``serial_s_per_worker``,
  ``cpu_s_per_worker``, timed with one process busy) are slowed by the same factor. On this host
  all cores busy has cost from 0 to 52 % more per image, varying by the hour; slowing only the
  compute had put the N = 4 rounds of a slow spell 15-24 % short (docs/benchmarks.md section 4).
* S3. The stack's moto serves one request at a time (lambdatrain/local/moto_server.py), so the N
  workers' transfers (residuals, the update) queue behind each other: each worker sees 1/N of the
  bandwidth and N times the request latency the calibration measured with one client
  (``s3_clients``); the combiner's, after the workers' phase, see them whole. A PUT also pays what
  moto's disk mirror (lambdatrain/local/durable.py) costs it per byte beyond a GET
  (``s3_put_s_per_byte``), which ``measure_s3`` times apart.
* The ledger. For the same reason the workers' DynamoDB requests queue too: ``measure_worker``
  times moto's busy seconds in each worker invocation of a two-worker float32 run (the real
  handlers, tests/harness.py), which the planner adds once per worker (``serial_s_per_worker``);
  the N = 1 runs' measured wait, which holds one worker's, is the rest of the invoke latency.
* The CPU besides compute. A worker invocation also spends CPU outside the trainer's compute (the
  handler, its ledger, EFS and S3 clients, the codec, and moto answering them), which with N > 1
  takes cores from the other workers' compute; so does the stream poller's read of each worker's
  ledger writes, which the stack does while the other workers compute. ``measure_worker`` takes
  both per recipe from the same run (the process's CPU seconds less those inside the compute),
  and the planner's workers' phase lasts at least the N workers' CPU over the ``cores``
  (``host_cores``, ``cpu_s_per_worker``), less the read of the last one's writes
  (``delivery_cpu_s``: it follows the phase and starts the combine, so N = 1's invoke latency holds
  it). Not in it: the local Lambda service's own CPU (about 2.5 ms an invocation, client and
  server). ``measure_worker`` also times what of a worker's CPU
  falls outside its timed window (``outside_cpu_s``: the ledger's checks before it, the record
  and the ready transition after it), which N = 1's invoke latency holds already; taking one
  worker's off the cores' bound did not predict better (docs/benchmarks.md section 4), so the
  model does not use it.

Average mode (bench.convergence's ``AVERAGE``, K local steps) trains K times the samples, so that it
has as many rounds as sync.
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

from bench._common import add_data_args, emit, in_child, inline_moto, log, machine, prepared_dataset
from bench.convergence import AVERAGE
from lambdatrain.planning.codec_timing import CODEC_CONSTANTS
from lambdatrain.protocol.config import COMPRESSED

# Each recipe's start settings; the global batch, 256, is every recipe's.
RECIPES: dict[str, dict[str, Any]] = {
    "float32": {"transport": "float32", "mode": "sync", "local_steps": 1},
    **{name: {"transport": name, "mode": "sync", "local_steps": 1} for name in COMPRESSED},
    "average": dict(AVERAGE),
}
BATCH = 256
REPEATS = 5  # runs of each recipe and N by default (main)
TOLERANCE = 0.15  # issue 14: a warm round within 15 % of the local stack, on the median of the runs
S3_REPEATS = 9  # timings of each S3 size in the calibration, the median kept
BUSY_REPEATS = 20  # micro-batches each busy core times: seconds, so the processes overlap
# Rounds of measure_worker's two-worker run in each machine sample: 30 warm invocations to take the
# median of. With 14 (8 rounds) one recipe's CPU moved by up to 20 ms between two samples a minute
# apart, as much as the difference between recipes.
WORKER_ROUNDS = 16


def recipe_list(text: str) -> tuple[str, ...]:
    """``--recipes``: names of ``RECIPES``, comma-separated, in the order given, each once."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        what = f"unknown recipe {unknown[0]!r}" if unknown else "no recipe given"
        raise argparse.ArgumentTypeError(f"{what}; known: {', '.join(RECIPES)}")
    return names


def settings_for(recipe: str, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run's start settings: average mode trains local_steps times the samples (as many rounds)."""
    extra = RECIPES[recipe]
    return {"workers": workers, "model": "vgg19_cifar", "width": args.width, "epochs": 1, "batch_size": BATCH,
            "micro_batch": 64, "max_train_samples": args.samples * extra["local_steps"], "val_samples": 64,
            "seed": 0, **extra}


def measured(prepared: Path, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """One local-stack run (in a child process: a clean moto), summarised per warm round."""
    from lambdatrain.local.stack import LocalStackConfig
    from lambdatrain.ops.local_train import TrainRequest, train

    stack = LocalStackConfig(state_dir=out / "stack", worker_concurrency=max(settings["workers"], 1))
    train(TrainRequest(data=prepared, out=out, settings=settings, stack=stack, prewarm=False))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    results = [i for i in json.loads((out / "ledger.json").read_text()) if i.get("kind") == "result"]
    warm = [m for m in metrics if m["round"] > 0]  # round 0 pays the cold starts
    return {"rounds": len(metrics), "round_s": statistics.median(m["round_s"] for m in warm),
            "first_round_s": next(m["round_s"] for m in metrics if m["round"] == 0),
            "epoch_s": sum(m["round_s"] for m in metrics), "wait_s": statistics.median(m["wait_s"] for m in warm),
            "combine_s": statistics.median(m["combine_s"] for m in warm),
            "worker_s": statistics.median(m["worker_s"] for m in warm),
            # The worker's window, phase by phase (each worker's, the median over the warm rounds).
            **{key: statistics.median(float(r[key]) for r in results if int(r["round"]) > 0)
               for key in ("load_s", "compute_s", "write_s")}}


def measure_s3(elements: int, folder: Path) -> dict[str, float]:
    """(In a child process.) The local stack's S3 as a worker meets it: moto on loopback, the
    durable mirror writing each PUT to ``folder``, ``StateStore.put`` then ``get`` (checksums
    and .npy framing included), each timed. A one-element residual's PUT and GET are a request's
    latency each; a model-sized GET's extra time is its bytes at ``s3_bps``, and what a PUT's takes
    beyond that, ``s3_put_s_per_byte``: the mirror writes each object to disk, and a PUT had taken
    about twice a GET (7.0-8.8 ms against 3.3-4.1 for 1.27 MB), which the worker's path waits for
    where the GET runs beside its compute (docs/benchmarks.md section 4, stop 36)."""
    import boto3
    import numpy as np

    from lambdatrain.local.durable import DurableBucket
    from lambdatrain.local.moto_server import MotoServer
    from lambdatrain.local.names import ACCESS_KEY, BUCKET, REGION
    from lambdatrain.roles.settings import STATE_EXPIRING, STATE_PREFIX, STATE_TAG
    from lambdatrain.storage import state
    from lambdatrain.storage.digest import DEFAULT_ALGORITHM

    server = MotoServer()
    server.start()
    try:
        s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION, **ACCESS_KEY)
        s3.create_bucket(Bucket=BUCKET)
        server.s3_listeners.append(DurableBucket(folder, BUCKET).sync)
        store = state.StateStore(s3, BUCKET, STATE_PREFIX, DEFAULT_ALGORITHM, STATE_TAG, STATE_EXPIRING)

        def put_get(size: int, round_no: int) -> tuple[float, float]:
            residual = np.random.default_rng(round_no).standard_normal(size, dtype=np.float32)
            t0 = time.perf_counter()
            store.put("calibration", 0, round_no, residual)
            t1 = time.perf_counter()
            state._held.clear()  # a worker whose environment does not hold it: the GET goes to S3
            store.get("calibration", 0, round_no, size)
            return t1 - t0, time.perf_counter() - t1

        def medians(size: int, first: int) -> tuple[float, float]:
            timed = [put_get(size, first + r) for r in range(S3_REPEATS)]
            return statistics.median(p for p, _ in timed), statistics.median(g for _, g in timed)

        put_get(elements, 1)  # connections, moto's first bucket write
        (small_put, small_get), (large_put, large_get) = medians(1, 2), medians(elements, 2 + S3_REPEATS)
    finally:
        server.stop()
    nbytes, get_s = 4 * elements, max(large_get - small_get, 1e-6)
    return {"s3_request_s": (small_put + small_get) / 2, "s3_bps": nbytes / get_s,
            "s3_put_s_per_byte": max(large_put - small_put - get_s, 0.0) / nbytes}


def measure_worker(width: float, recipe: str, rounds: int = WORKER_ROUNDS) -> dict[str, float]:
    """(In a child process, one thread.) What one worker invocation of ``recipe`` costs besides its
    compute, the medians over a two-worker run's warm rounds of the real handlers (tests/harness.py)
    and the real stream poller against a MotoServer in this process, on generated images:
    ``serial_s_per_worker``, the seconds moto spends serving the invocation (what the N workers
    queue for), and ``cpu_s_per_worker``, the process's CPU seconds in it (handler, clients, codec,
    moto serving them; a compressed transport's residual GET included, which the planner plans for
    every round) less those inside the trainer's compute (the calibration's seconds per image cover
    those), plus ``delivery_cpu_s``: the poller's read of the worker's ledger writes when the round
    is not yet complete (its records pass no filter: no combiner runs), about 12 ms, as much again
    as the invocation's own, which the model had lacked (docs/benchmarks.md section 4); and
    ``outside_cpu_s``, of the invocation's CPU what falls outside the worker's timed window."""
    import torch

    from lambdatrain.logs import logger
    from lambdatrain.roles.settings import WORKER
    from lambdatrain.storage import efs, state
    from lambdatrain.training import trainer
    from tests.datagen import make_prepared
    from tests.harness import InlineSystem

    torch.set_num_threads(1)
    logger.setLevel("WARNING")
    server = inline_moto()
    compute_cpu = [0.0]
    # The process's CPU clock where the worker's timed window opens (its dataset's open, just after
    # t0 in roles/worker.py) and where it closes (the end of its result's write): what falls outside
    # it (the ledger's checks before, the record and the ready transition after) is, at N = 1, in
    # the round's invoke latency already, not in the workers' phase.
    window: dict[str, float] = {}
    per_round: list[tuple[int, float, float, float]] = []
    deliveries: list[tuple[int, float]] = []

    def timed(compute):
        def wrapper(*args, **kwargs):
            t0 = time.process_time()
            try:
                return compute(*args, **kwargs)
            finally:
                compute_cpu[0] += time.process_time() - t0
        return wrapper

    def opens(call):
        def wrapper(*args, **kwargs):
            window.setdefault("opened", time.process_time())
            return call(*args, **kwargs)
        return wrapper

    def closes(call):
        def wrapper(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            finally:
                window["closed"] = time.process_time()
        return wrapper

    patched = {(trainer, "compute_sync"): timed(trainer.compute_sync),
               (trainer, "compute_average"): timed(trainer.compute_average),
               (trainer, "dataset"): opens(trainer.dataset), (efs, "write_array"): closes(efs.write_array)}
    originals = {key: getattr(*key) for key in patched}
    for (module, name), call in patched.items():
        setattr(module, name, call)

    class Timed(InlineSystem):
        def invoke(self, name, event, context=None):
            if name != WORKER:
                return super().invoke(name, event, context)
            # The residual's GET too, as the planner plans for it (an environment that does not hold it).
            state._held.clear()
            window.clear()
            busy, cpu, compute_cpu[0] = server.busy_s, time.process_time(), 0.0
            try:
                answer = super().invoke(name, event, context)
            finally:
                end = time.process_time()
                # None: no window (an invocation that wrote nothing; none does in this run)
                outside = window["opened"] - cpu + end - window["closed"] if "closed" in window else None
                per_round.append((event["round"], server.busy_s - busy, end - cpu - compute_cpu[0], outside))
            # The stack's poller reads the worker's writes at once (each one wakes it). Until the
            # round's last result none passes the stream filter, so no combiner runs: that read is
            # what every worker but the last costs the stack. The last one's delivery is the combine
            # (it queues the next round's workers), which the runs time themselves.
            queued, cpu = len(self.invoker.queue), time.process_time()
            self.poller.poll_once()
            if len(self.invoker.queue) == queued:
                deliveries.append((event["round"], time.process_time() - cpu))
            return answer

    extra = RECIPES[recipe]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-planner-worker-") as tmp:
            mount = Path(tmp) / "efs"
            (mount / "datasets").mkdir(parents=True)
            samples = 16 * rounds * extra["local_steps"]
            data = make_prepared(Path(tmp) / "data", n_train=samples, n_val=16)
            (mount / "datasets" / "cifar10").symlink_to(data, target_is_directory=True)
            name = f"bench-worker-{os.getpid()}-{time.monotonic_ns()}"  # moto's backends outlive a server
            system = Timed(mount, table=name, bucket=name if extra["transport"] in COMPRESSED else None)
            run = system.invoke("starter", {"start": True, "workers": 2, "model": "vgg19_cifar", "width": width,
                                            "epochs": 1, "batch_size": 16, "micro_batch": 16, "val_samples": 16,
                                            "max_train_samples": samples, **extra})["run"]
            system.run_to_end(run)
    finally:
        server.stop()
        for (module, name), call in originals.items():
            setattr(module, name, call)
    warm = [(busy, cpu, outside) for r, busy, cpu, outside in per_round if r > 0]
    delivery = statistics.median(cpu for r, cpu in deliveries if r > 0)
    return {"serial_s_per_worker": statistics.median(b for b, _, _ in warm),
            "cpu_s_per_worker": statistics.median(c for _, c, _ in warm) + delivery, "delivery_cpu_s": delivery,
            "outside_cpu_s": statistics.median(o for _, _, o in warm if o is not None)}


def busy_compute(width: float, prepared: Path, cores: int, repeats: int) -> float:
    """Seconds per image of the worker's compute path while ``cores`` processes run it at once
    (the median over them): what a core computes at when every core is busy."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(cores) as pool:
        timings = pool.starmap(_compute_in_child, [(width, prepared, repeats)] * cores)
    return statistics.median(spi for spi, _ in timings)


def _compute_in_child(width: float, prepared: Path, repeats: int) -> tuple[float, float]:
    from lambdatrain.planning.calibration import measure_compute
    from lambdatrain.training.data import open_prepared

    return measure_compute("vgg19_cifar", width, micro_batch=64, repeats=repeats, data=open_prepared(prepared))


def local_calibration(cal: Any, n: int, busy_seconds_per_image: float, cores: int) -> Any:
    """The calibration of N local workers (module docstring): per-image time of min(N, cores) busy
    cores, and the other per-worker CPU (moto's serving, the invocation's) slowed as much; S3's
    bandwidth and request latency shared by the N workers, and the ``cores`` they share. The
    codecs' seconds per parameter (CPU too) are slowed as much."""
    from dataclasses import replace

    share = (min(n, cores) - 1) / max(cores - 1, 1)  # 0 with one worker busy, 1 with all cores busy
    # Busy cores do not compute faster than one alone: a busy time below the single one is the two
    # timings' noise (seen: 0.58 against 0.64 ms an image), not a speed-up to predict with.
    slowdown = 1 + share * max(busy_seconds_per_image / cal.seconds_per_image - 1, 0.0)
    slowed = ("seconds_per_image", "serial_s_per_worker", "cpu_s_per_worker", "delivery_cpu_s", *CODEC_CONSTANTS)
    return replace(cal, s3_clients=n, host_cores=cores, **{k: getattr(cal, k) * slowdown for k in slowed})


def spread(values: list[float]) -> dict[str, Any]:
    """The median of the runs, their min-max, and the spread relative to the median."""
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values), "runs": list(values),
            "spread": (max(values) - min(values)) / median if median else float("nan")}


def within(error: float, tolerance: float = TOLERANCE) -> bool:
    return abs(error) <= tolerance  # False for NaN


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Key by key, the median over the runs of one recipe and N."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def compare(recipe: str, n: int, runs: list[dict[str, Any]], p: dict[str, Any], planner) -> dict[str, Any]:
    """One recipe and N: the prediction against the runs' medians (``rows``' fields, as before)."""
    m = median_run(runs)
    round_s = spread([r["round_s"] for r in runs])
    err = planner.relative_error
    return {"recipe": recipe, **{k: RECIPES[recipe][k] for k in ("transport", "mode", "local_steps")},
            "workers": n, "predicted_round_s": p["round_s"], "measured_round_s": round_s["median"],
            "measured_round_s_runs": round_s["runs"], "measured_round_s_min": round_s["min"],
            "measured_round_s_max": round_s["max"], "measured_round_s_spread": round_s["spread"],
            "round_error": err(p["round_s"], round_s["median"]),
            "predicted_first_round_s": p["first_round_s"], "measured_first_round_s": m["first_round_s"],
            "first_round_error": err(p["first_round_s"], m["first_round_s"]),
            "predicted_epoch_s": p["first_epoch_s"], "predicted_warm_epoch_s": p["epoch_s"],
            "measured_epoch_s": m["epoch_s"], "epoch_error": err(p["first_epoch_s"], m["epoch_s"]),
            "predicted": {k: p[k] for k in ("worker_s", "compute_s", "state_s", "combine_s", "invoke_s",
                                            "cold_start_s")},
            "fixed_costs": p.get("fixed_costs"), "calibration": p.get("calibration"), "measured": m,
            "measured_runs": runs}


def result_of(row: dict[str, Any]) -> dict[str, Any]:
    """``results``' entry of a row: the warm round, its runs and spread, and the verdict."""
    return {"recipe": row["recipe"], "transport": row["transport"], "mode": row["mode"],
            "local_steps": row["local_steps"], "workers": row["workers"],
            "predicted_round_s": row["predicted_round_s"], "measured_round_s_median": row["measured_round_s"],
            "measured_round_s_runs": row["measured_round_s_runs"], "measured_round_s_min": row["measured_round_s_min"],
            "measured_round_s_max": row["measured_round_s_max"], "spread": row["measured_round_s_spread"],
            "error": row["round_error"], "within_tolerance": within(row["round_error"])}


def calibrated(args: argparse.Namespace, prepared: Path, folder: Path) -> tuple[int, int, Any, dict[str, Any]]:
    """(params, buffers, calibration, the first ``machine_sample``) of this machine; the fixed
    per-round costs come from the runs (each row's ``fixed_costs``: the calibration's defaults for
    them are not used)."""
    from dataclasses import replace

    from lambdatrain.planning.calibration import calibrate, model_sizes

    # The first sample's compute timing is the calibration's: calibrate() skips what it is given.
    sample = machine_sample(args, prepared)
    params, cal = calibrate("vgg19_cifar", args.width, folder, micro_batch=64, data=prepared, repeats=3,
                            worker_fixed_s=0.0, per_invoke_s=0.0, seconds_per_image=sample["seconds_per_image"],
                            compute_fixed_s=sample["compute_fixed_s"],
                            serial_s_per_worker=sample["serial_s_per_worker"])
    buffers = model_sizes("vgg19_cifar", args.width)[1]
    if any(RECIPES[r]["transport"] in COMPRESSED for r in args.recipes):
        cal = replace(cal, **in_child(measure_s3, params - buffers, folder / "s3"))
    busy, cpu = sample["busy"], sample["cpu"]
    log(f"calibration: {sample['seconds_per_image'] * 1e3:.2f} ms/image/core ({busy * 1e3:.2f} with all "
        f"{os.cpu_count() or 1} cores busy) + {sample['compute_fixed_s'] * 1e3:.1f} ms/round, cold start "
        f"{cal.cold_start_s:.1f} s, read "
        f"{cal.read_bps / 1e6:.0f} MB/s, write {cal.write_bps / 1e6:.0f} MB/s, S3 {cal.s3_request_s * 1e3:.1f} "
        f"ms/request + {cal.s3_bps / 1e6:.0f} MB/s (a PUT {cal.s3_put_s_per_byte * 1e9:.1f} ns/byte more), "
        f"ledger {cal.serial_s_per_worker * 1e3:.1f} ms/worker "
        f"(moto, one request at a time); codecs " +
        ", ".join(f"{k.split('_s_')[0]} {getattr(cal, k) * 1e9:.2f} ns" for k in CODEC_CONSTANTS) +
        "/param; CPU per worker invocation besides compute, its writes' stream read "
        f"included, " +
        ", ".join(f"{r} {v * 1e3:.1f} ms" for r, v in cpu.items()))
    return params, buffers, cal, sample


def machine_sample(args: argparse.Namespace, prepared: Path) -> dict[str, Any]:
    """What the machine's state moves, timed once: moto's busy seconds per worker and each recipe's
    CPU per worker invocation with, of it, the stream poller's read of the worker's writes
    (``measure_worker``); then the per-image time and the fixed cost per round on one core and,
    right after it, the per-image time with every core busy (``median_sample`` takes their ratio
    from the same sample). ``main`` takes one before each repeat and predicts with their medians,
    so one slow spell during the calibration does not skew every prediction (the runs, too, go
    round in repeats)."""
    cores = os.cpu_count() or 1
    # The ledger's requests are every recipe's; S3's, the compressed ones', are measure_s3's.
    per_worker = {r: in_child(measure_worker, args.width, r) for r in dict.fromkeys(("float32", *args.recipes))}
    seconds_per_image, compute_fixed_s = in_child(_compute_in_child, args.width, prepared, 3)
    busy = busy_compute(args.width, prepared, cores, BUSY_REPEATS) if cores > 1 else seconds_per_image
    return {"seconds_per_image": seconds_per_image, "compute_fixed_s": compute_fixed_s, "busy": busy,
            "serial_s_per_worker": per_worker["float32"]["serial_s_per_worker"],
            "cpu": {r: per_worker[r]["cpu_s_per_worker"] for r in args.recipes},
            "delivery_cpu": {r: per_worker[r]["delivery_cpu_s"] for r in args.recipes},
            "outside_cpu": {r: per_worker[r]["outside_cpu_s"] for r in args.recipes}}


def median_sample(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each quantity of ``machine_sample``'s, the median over the samples; the busy cores' per-image
    time is the one core's times the median of each sample's ratio of the two. The ratio of the two
    medians mixed timings half a minute and more apart: the one-core time moved by up to 30 %
    between samples (0.50 to 0.64 ms an image in one run), and two runs' slowdowns of 1.12-1.13
    were 1.05-1.09 sample by sample, the runs whose float32 at N = 4 was predicted 17-19 % long."""
    med = statistics.median
    one_core = med(s["seconds_per_image"] for s in samples)
    # Runs before stop 31 timed the fixed cost once, in the calibration (None: keep that one).
    fixed = med(s["compute_fixed_s"] for s in samples) if all("compute_fixed_s" in s for s in samples) else None
    return {"seconds_per_image": one_core, "compute_fixed_s": fixed,
            "busy": one_core * med(s["busy"] / s["seconds_per_image"] for s in samples),
            "serial_s_per_worker": med(s["serial_s_per_worker"] for s in samples),
            # delivery_cpu is in the samples since stop 30, outside_cpu since stop 32
            **{key: {r: med(s[key][r] for s in samples) for r in samples[0][key]}
               for key in ("cpu", "delivery_cpu", "outside_cpu") if key in samples[0]}}


def predicted(recipe: str, n: int, runs: dict[tuple[str, int], list[dict[str, Any]]], params: int, buffers: int,
              cal: Any, busy: float, cpu: dict[str, float], args: argparse.Namespace,
              delivery: dict[str, float] | None = None) -> dict[str, Any]:
    """The planner's round for ``recipe`` at N = ``n``, its fixed costs from the recipe's first N:
    what the first N's measured combine, wait and worker load leave once the planner's own terms for
    them (the combiner's reads, update, writes and bucket transfers; the ledger's requests; the
    weights' read or the update's GET) are taken out. Taking the measured times whole would count
    those terms twice (a compressed combiner's S3 PUTs, about 40 ms a round, had put its N = 1
    rounds 11-15 % high), and a worker's load measured at N itself is not a prediction."""
    from dataclasses import replace

    from lambdatrain.planning import planner
    from lambdatrain.planning.calibration import calibration_dict
    from lambdatrain.protocol.limits import MB_PER_VCPU

    extra, cores, storage = RECIPES[recipe], os.cpu_count() or 1, planner.Storage(*(4 * [float("inf")]))

    def predict(workers: int, **fixed: float) -> dict[str, Any]:
        # Runs before stop 30 did not time the delivery apart (None: none taken off the cores' bound).
        mine = replace(cal, **fixed, cpu_s_per_worker=cpu[recipe], delivery_cpu_s=(delivery or {}).get(recipe, 0.0))
        local = local_calibration(mine, workers, busy, cores)
        scenario = planner.Scenario(params=params, buffers=buffers, workers=workers,
                                    memory_mb=int(MB_PER_VCPU * min(1.0, cores / workers)), batch_size=BATCH,
                                    train_samples=args.samples * extra["local_steps"], transport=extra["transport"],
                                    mode=extra["mode"], local_steps=extra["local_steps"])
        return {**planner.predict(scenario, local, storage), "calibration": calibration_dict(local)}

    first = args.workers[0]
    base = median_run(runs[(recipe, first)])
    modelled = predict(first, combiner_fixed_s=0.0, invoke_latency_s=0.0, worker_fixed_s=0.0)
    fixed = {"combiner_fixed_s": max(base["combine_s"] - modelled["combine_s"], 0.0),
             "invoke_latency_s": max(base["wait_s"] - modelled["invoke_s"], 0.0),
             "worker_fixed_s": max(base["load_s"] - modelled["load_s"], 0.0)}
    return {**predict(n, **fixed), "fixed_costs": fixed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, workers=[1, 2, 4], samples=4096)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--recipes", type=recipe_list, default=tuple(RECIPES),
                        help=f"comma-separated, of {', '.join(RECIPES)} (default: all)")
    # 5, not 3: on this 2-core host one configuration's error has moved by up to 21 points from one
    # run of the command to the next (float32 at N = 2: -4 to +17 %, medians of 3); as run, 6 of
    # 7 runs of 3 had one or two of the 12 past 15 %, 1 of 3 runs of 5 (docs/benchmarks.md section 4).
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="runs of each recipe and N (the median is compared)")
    parser.add_argument("--from", dest="saved", type=Path, metavar="JSON",
                        help="no runs: predict again, with this code, what a run of this command measured "
                             "(its output, e.g. docs/results/planner-local.json)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: at least 1")
    started = time.time()
    if args.saved is not None:
        try:
            measurements = saved(args.saved)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            parser.error(f"--from {args.saved}: not the output of bench.planner ({type(exc).__name__}: {exc})")
        args.samples, args.repeats = measurements.pop("samples"), measurements.pop("repeats")
        args.recipes = tuple(dict.fromkeys(r for r, _ in measurements["runs"]))
        args.workers = sorted({n for _, n in measurements["runs"]})
        report(args, started, **measurements, predicted_from=str(args.saved))
        return
    prepared = prepared_dataset(args)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(r, n): [] for r in args.recipes for n in args.workers}
    with tempfile.TemporaryDirectory(prefix="lt-bench-planner-") as tmp:
        params, buffers, cal, first = calibrated(args, prepared, Path(tmp))
        samples = [first]
        for i in range(args.repeats):
            if i:
                samples.append(machine_sample(args, prepared))
                log(f"repeat {i + 1}: {samples[-1]['seconds_per_image'] * 1e3:.2f} ms/image/core "
                    f"({samples[-1]['busy'] * 1e3:.2f} with all cores busy) + "
                    f"{samples[-1]['compute_fixed_s'] * 1e3:.1f} ms/round, CPU per worker invocation " +
                    ", ".join(f"{r} {v * 1e3:.1f} ms" for r, v in samples[-1]["cpu"].items()))
            for recipe, n in runs:
                log(f"run {i + 1}/{args.repeats}: {recipe} with {n} workers")
                out = Path(tmp) / f"{recipe}-n{n}-r{i}"
                runs[(recipe, n)].append(in_child(measured, prepared, out, settings_for(recipe, n, args)))
    report(args, started, runs=runs, machine_samples=samples, params=params, buffers=buffers, cal=cal)


def saved(path: Path) -> dict[str, Any]:
    """What a run of this command measured, from its output's last line: ``report``'s arguments."""
    from lambdatrain.planning.calibration import calibration_from_dict

    out = json.loads(path.read_text().strip().splitlines()[-1])
    # Stop 28's outputs called a worker's load worker_fixed_s.
    runs = {(row["recipe"], row["workers"]): [{"load_s": run.get("worker_fixed_s"), **run}
                                              for run in row["measured_runs"]] for row in out["rows"]}
    first = out["rows"][0]
    # Outputs before stop 30 do not say the samples: a sync run's rounds times the global batch.
    samples = out.get("samples") or first["measured"]["rounds"] * BATCH // RECIPES[first["recipe"]]["local_steps"]
    cal = calibration_from_dict(out["calibration"])
    return {"runs": runs, "samples": samples, "repeats": out["repeats"], "machine_samples": out["machine_samples"],
            "params": out["params"], "buffers": out["buffers"], "cal": cal}


def report(args: argparse.Namespace, started: float, *, runs: dict[tuple[str, int], list[dict[str, Any]]],
           machine_samples: list[dict[str, Any]], params: int, buffers: int, cal: Any,
           predicted_from: str | None = None) -> None:
    """Predict each recipe and N, compare with its runs, log the rows and print the JSON object."""
    from dataclasses import replace

    from lambdatrain.planning import planner
    from lambdatrain.planning.calibration import calibration_dict

    sample = median_sample(machine_samples)
    busy, cpu = sample["busy"], sample["cpu"]
    fixed = cal.compute_fixed_s if sample["compute_fixed_s"] is None else sample["compute_fixed_s"]
    cal = replace(cal, seconds_per_image=sample["seconds_per_image"], compute_fixed_s=fixed,
                  serial_s_per_worker=sample["serial_s_per_worker"])
    delivery = sample.get("delivery_cpu")
    rows = [compare(recipe, n, done, predicted(recipe, n, runs, params, buffers, cal, busy, cpu, args, delivery),
                    planner) for (recipe, n), done in runs.items()]
    for row in rows:
        log(f"{row['recipe']} N={row['workers']}: round {row['predicted_round_s']:.2f} s predicted vs "
            f"{row['measured_round_s']:.2f} s measured ({row['measured_round_s_min']:.2f}-"
            f"{row['measured_round_s_max']:.2f}) ({row['round_error']:+.0%}); round 0 "
            f"{row['predicted_first_round_s']:.1f} vs {row['measured_first_round_s']:.1f} s; epoch "
            f"{row['predicted_epoch_s']:.1f} vs {row['measured_epoch_s']:.1f} s ({row['epoch_error']:+.0%})")
    results = [result_of(row) for row in rows]
    emit({"results": results, "tolerance": TOLERANCE,
          "all_within_tolerance": all(r["within_tolerance"] for r in results),
          "recipes": list(args.recipes), "repeats": args.repeats, "rows": rows,
          "calibration": calibration_dict(cal), "busy_seconds_per_image": busy,
          "cpu_s_per_worker": cpu, "delivery_cpu_s": sample.get("delivery_cpu"),
          "outside_cpu_s": sample.get("outside_cpu"), "machine_samples": machine_samples,
          "params": params, "buffers": buffers, "samples": args.samples, "predicted_from": predicted_from,
          "wall_s": time.time() - started, "load_average": os.getloadavg(), "machine": machine()})


if __name__ == "__main__":
    main()
