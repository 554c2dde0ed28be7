"""The combine benchmark: ``weighted_sum`` over N worker files against a plain-NumPy floor.

    python -m bench.combine [--workers 2,8,17,32,64] [--params P] [--shards 1,2] [--repeat R] [--checksum A] [--cold]
                            [--codecs ternary,sign]

Writes N result files of a P-element float32 vector (default: the size of vgg19_cifar at width 1)
with ``lambdatrain.storage.efs.write_array`` (checksums: ``--checksum``, default the runs' default, XXH3-128) into a
temporary folder on local disk, then for every N:

* floor: one fresh process reads each file with ``np.load`` and adds it into an accumulator;
  ``floor_seconds_per_file`` is that time divided by N;
* S = 1: one fresh process runs ``weighted_sum(files, P)``;
* S = 2: S fresh processes start together (a barrier after their imports) and each reduces its
  slice ``[lo, hi)`` from ``iter_slices``, reading and verifying only that slice of every file
  (the per-slice digests workers record, see lambdatrain/roles/sharding.py), as S combiner shares
  would; ``seconds`` is from the first start to the last finish.

Each process reports its peak resident set (VmHWM) and its resident set after the imports (the
interpreter, NumPy and torch: a fixed cost whatever N is), so the combine's own memory is the
difference. Every measurement runs ``--repeat`` times (default 3), floor and combines interleaved,
and reports the median: a fresh process's first touch of ~100 MB of memory varies by tens of
milliseconds from run to run here, as much as the whole difference being measured at N = 2.
Compressed codecs (``--codecs``, lambdatrain/training/compress/; ``--codecs ''`` skips them): for
each codec a fresh process compresses a P-element gradient with error feedback (a nonzero
residual), encodes it again without feedback, decodes the payload into a buffer, and reads one
payload file with ``np.load`` and adds it with ``decode_add``, the combiner's per-file work; that
last time sits beside the float32 floor measured for one file in the same loop, interleaved.
Output buffers are touched before the clock starts; throughput is GB/s of float32 input (4 P bytes
over the time), from wall and from CPU time (the process's own, which other processes on a shared
machine inflate far less); bytes per parameter come from the real payload's length.
Local disk (or the page cache, unless ``--cold``) is not EFS: EFS reads run at
roughly 100-500 MB/s per client, so on Lambda the reads dominate and these numbers are the CPU
side of the combine only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import drop_page_cache, emit, int_list, log, machine, peak_rss_bytes, rss_bytes
from lambdatrain.storage.digest import ALGORITHMS, DEFAULT_ALGORITHM
from lambdatrain.training.compress import CODECS


def default_params() -> int:
    from lambdatrain.training.flat import FlatLayout
    from lambdatrain.training.model import ModelSpec, build_model

    return FlatLayout.of(build_model(ModelSpec("vgg19_cifar", 1.0))).size


def write_files(folder: Path, count: int, params: int, shards: list[int], checksum: str) -> list[tuple]:
    """``count`` result files (distinct contents, unequal sample counts) as
    (path, bytes, checksum, samples, {S: per-slice checksums}), as workers write and record them."""
    from lambdatrain.training.flat import iter_slices
    from lambdatrain.storage.efs import range_digests, write_array

    base = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    files = []
    for w in range(count):
        path = folder / f"w{w:04d}.npy"
        vector = base * np.float32(1 + w / 64)
        digest = write_array(path, vector, checksum=checksum)
        slices = {s: range_digests(vector, list(iter_slices(params, s)), checksum) for s in shards if s > 1}
        files.append((str(path), digest.bytes, digest.checksum, 60 + w % 5, slices))
    return files


def _combine_child(files, params: int, shards: int, shard: int, barrier, results) -> None:
    from lambdatrain.training.flat import iter_slices
    from lambdatrain.training.reduce import WorkerFile, weighted_sum
    from lambdatrain.storage.efs import Digest

    lo, hi = list(iter_slices(params, shards))[shard]
    worker_files = [WorkerFile(i, Path(p), Digest(b, h), n, slices[shards][shard] if shards > 1 else None)
                    for i, (p, b, h, n, slices) in enumerate(files)]
    baseline = rss_bytes()
    barrier.wait()
    start = time.time()
    weighted_sum(worker_files, params, lo=lo, hi=hi)
    results.put({"start": start, "end": time.time(), "peak": peak_rss_bytes(), "baseline": baseline})


def _floor_child(files, params: int, barrier, results) -> None:
    baseline = rss_bytes()
    barrier.wait()
    start, cpu = time.time(), time.process_time()
    acc = np.zeros(params, dtype=np.float32)
    for path, *_ in files:
        acc += np.load(path, allow_pickle=False)
    results.put({"start": start, "end": time.time(), "cpu": time.process_time() - cpu, "peak": peak_rss_bytes(),
                 "baseline": baseline})


def run_children(target, arg_sets: list[tuple], cold: bool) -> list[dict[str, Any]]:
    """Run one fresh 'spawn' process per argument tuple, released together after their imports."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(arg_sets) + 1), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in arg_sets]
    for p in procs:
        p.start()
    if cold:
        drop_page_cache()
    barrier.wait()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"benchmark child failed with exit code {p.exitcode}")
    return out


def measure(files, params: int, shards: int, cold: bool) -> dict[str, Any]:
    runs = run_children(_combine_child, [(files, params, shards, s) for s in range(shards)], cold)
    return {"seconds": max(r["end"] for r in runs) - min(r["start"] for r in runs),
            "peak_rss_bytes": max(r["peak"] for r in runs),
            "baseline_rss_bytes": max(r["baseline"] for r in runs)}


def floor(files, params: int, cold: bool) -> float:
    (run,) = run_children(_floor_child, [(files, params)], cold)
    return (run["end"] - run["start"]) / len(files)


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (the lower middle one for an even count), all times beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "seconds_runs": [r["seconds"] for r in runs]}


def _vectors(params: int) -> tuple[np.ndarray, np.ndarray]:
    """A gradient (write_files' base vector) and a nonzero residual, so feedback's add is real."""
    grad = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    return grad, np.random.default_rng(1).standard_normal(params, dtype=np.float32) * np.float32(0.1)


def _codec_child(payload_path: str, params: int, codec: str, barrier, results) -> None:
    from lambdatrain.training import compress as C

    grad, residual = _vectors(params)
    # np.full, not np.zeros: calloc'd zeros are not touched, and the first write would fault them in
    payload = np.full(C.payload_nbytes(params, codec), 0, dtype=np.uint8)
    new_residual, decoded = np.full(params, 0, dtype=np.float32), np.full(params, 0, dtype=np.float32)

    def read_decode_add() -> None:
        acc = np.zeros(params, dtype=np.float32)  # as the floor's: first touched by the adds
        C.decode_add(np.load(payload_path, allow_pickle=False), params, codec, acc, 0.5)

    barrier.wait()
    out = {}
    for name, step in (("compress", lambda: C.compress(grad, residual, codec, out=payload, new_residual=new_residual)),
                       ("encode", lambda: C.encode(grad, codec, out=payload)),
                       ("decode", lambda: C.decode(payload, params, codec, out=decoded)),
                       ("read_decode_add", read_decode_add)):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        out[f"{name}_seconds"], out[f"{name}_cpu_seconds"] = time.perf_counter() - wall, time.process_time() - cpu
    results.put({"seconds": out["read_decode_add_seconds"], **out})


CODEC_STEPS = ("compress", "encode", "decode", "read_decode_add")


def median(values: list[float]) -> float:
    """The median (the lower middle one for an even count), as median_runs picks."""
    return sorted(values)[(len(values) - 1) // 2]


def bench_codecs(codecs: list[str], params: int, files, folder: Path, cold: bool, repeat: int) -> list[dict[str, Any]]:
    """Each codec's compress, encode, decode and read + decode_add, beside the one-file float32 floor;
    wall and CPU time (the machine is shared: CPU time is what other sessions' load inflates least)."""
    from lambdatrain.training import compress as C

    model_bytes, rows = 4 * params, []
    for codec in codecs:
        payload, _ = C.compress(*_vectors(params), codec)
        path = folder / f"payload-{codec}.npy"
        np.save(path, payload)
        floors, runs = [], []
        for _ in range(repeat):  # interleaved, as the combine's runs are
            (f,) = run_children(_floor_child, [(files[:1], params)], cold)
            floors.append({"seconds": f["end"] - f["start"], "cpu_seconds": f["cpu"]})
            runs.append(run_children(_codec_child, [(str(path), params, codec)], cold)[0])
        floor_s, floor_cpu = median([f["seconds"] for f in floors]), median([f["cpu_seconds"] for f in floors])
        row = {"codec": codec, "params": params, "payload_bytes": int(payload.size),
               "bits_per_param": 8 * payload.size / params, "vs_float32_bytes": payload.size / model_bytes,
               "floor_seconds_per_file": floor_s, "floor_cpu_seconds_per_file": floor_cpu,
               "floor_gbps": model_bytes / floor_s / 1e9, "floor_cpu_gbps": model_bytes / floor_cpu / 1e9,
               "floor_runs": floors, "runs": runs}
        for step in CODEC_STEPS:
            for kind in ("", "_cpu"):
                seconds = median([r[f"{step}{kind}_seconds"] for r in runs])
                row[f"{step}{kind}_seconds"], row[f"{step}{kind}_gbps"] = seconds, model_bytes / seconds / 1e9
        row["vs_floor"] = row["read_decode_add_seconds"] / floor_s
        row["vs_floor_cpu"] = row["read_decode_add_cpu_seconds"] / floor_cpu
        log(f"{codec}: {row['bits_per_param']:.3f} bits/param (1/{1 / row['vs_float32_bytes']:.1f} of float32); GB/s "
            + ", ".join(f"{s} {row[f'{s}_gbps']:.2f} (CPU {row[f'{s}_cpu_gbps']:.2f})" for s in CODEC_STEPS)
            + f"; float32 floor {row['floor_gbps']:.2f} (CPU {row['floor_cpu_gbps']:.2f}): read + decode_add "
            f"x{row['vs_floor']:.2f} its time (CPU x{row['vs_floor_cpu']:.2f})")
        rows.append(row)
    return rows


def bench(workers: list[int], params: int, shards: list[int], files, cold: bool,
          checksum: str, repeat: int) -> list[dict[str, Any]]:
    model_bytes = params * 4
    results = []
    for n in workers:
        floors, runs = [], {s: [] for s in shards}
        for _ in range(repeat):  # interleaved, so drift in the machine's speed hits all alike
            floors.append({"seconds": floor(files[:n], params, cold)})
            for s in shards:
                runs[s].append(measure(files[:n], params, s, cold))
        floor_s = median_runs(floors)["seconds"]
        for s in shards:
            m = median_runs(runs[s])
            worst = max(runs[s], key=lambda r: r["peak_rss_bytes"] - r["baseline_rss_bytes"])  # memory: the worst run
            m.update(peak_rss_bytes=worst["peak_rss_bytes"], baseline_rss_bytes=worst["baseline_rss_bytes"])
            row = {"workers": n, "shards": s, "checksum": checksum, "model_bytes": model_bytes, "floor_seconds_per_file": floor_s,
                   "floor_seconds_per_file_runs": [f["seconds"] for f in floors],
                   "seconds_per_file": m["seconds"] / n, "vs_floor": m["seconds"] / n / floor_s,
                   "combine_rss_bytes": m["peak_rss_bytes"] - m["baseline_rss_bytes"], **m}
            row["rss_vs_model"] = row["combine_rss_bytes"] / model_bytes
            log(f"N={n:3d} S={s}: {m['seconds']:.2f} s, {row['seconds_per_file'] * 1e3:.1f} ms/file "
                f"(floor {floor_s * 1e3:.1f} ms, x{row['vs_floor']:.2f}), peak RSS {m['peak_rss_bytes'] / 1e6:.0f} MB "
                f"({row['combine_rss_bytes'] / 1e6:.0f} MB above the {m['baseline_rss_bytes'] / 1e6:.0f} MB after imports)")
            results.append(row)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int_list, default=[2, 8, 17, 32, 64])
    parser.add_argument("--params", type=int, default=None, help="elements per file (default: vgg19_cifar's)")
    parser.add_argument("--shards", type=int_list, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per measurement (median)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--checksum", choices=ALGORITHMS, default=DEFAULT_ALGORITHM, help="file checksum algorithm")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every measurement")
    parser.add_argument("--codecs", type=lambda t: [c.strip() for c in t.split(",") if c.strip()], default=["ternary", "sign"],
                        help="compressed codecs to measure beside float32 ('' for none)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if not args.workers:
        parser.error("--workers needs at least one N")
    unknown = [c for c in args.codecs if c not in CODECS]
    if unknown:
        parser.error(f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(CODECS)}")
    params = args.params or default_params()
    cold = args.cold and drop_page_cache()
    if args.cold and not cold:
        log("cannot drop the page cache (not root?): measuring with the files in the page cache")
    log("local disk, not EFS: this measures the CPU side of the combine; EFS reads are slower")
    folder = Path(tempfile.mkdtemp(prefix="lt-bench-combine-", dir=args.dir))
    started = time.time()
    try:
        log(f"writing {max(args.workers)} files of {params * 4 / 1e6:.1f} MB into {folder}")
        files = write_files(folder, max(args.workers), params, args.shards, args.checksum)
        results = bench(args.workers, params, args.shards, files, cold, args.checksum, args.repeat)
        codecs = bench_codecs(args.codecs, params, files, folder, cold, args.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    goals = {"time_within_1.3x_floor": all(r["vs_floor"] <= 1.3 for r in results if r["shards"] == 1),
             "combine_rss_below_3x_model": all(r["rss_vs_model"] < 3 for r in results)}
    emit({"results": results, "codecs": codecs, "params": params, "cache": "cold" if cold else "warm (page cache)",
          "repeat": args.repeat, "goals": goals, "wall_s": time.time() - started, "machine": machine()})


if __name__ == "__main__":
    main()
