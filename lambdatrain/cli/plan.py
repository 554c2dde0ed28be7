"""``lambdatrain plan``: predicted epoch time and cost for worker counts, memory sizes and shards.

Calibrates on this machine (a worker's compute on two micro-batches of generated images, a fresh
process's cold start, one model-sized file written and read back), then applies the model of
lambdatrain/planning/planner.py; a table, and optionally a PNG or JSON.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from lambdatrain.cli.edge import Command
from lambdatrain.cli.settings import setting_option
from lambdatrain.ops.progress import Phase
from lambdatrain.planning import planner
from lambdatrain.planning.calibration import calibrate
from lambdatrain.planning.plot import plot_plan
from lambdatrain.protocol.config import DEFAULTS


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def plan_command(
    model: Annotated[str, setting_option("model")] = DEFAULTS["model"],
    width: Annotated[float, setting_option("width")] = DEFAULTS["width"],
    workers: Annotated[str, typer.Option(help="comma-separated worker counts N")] = "1,2,4,8,17,32,64",
    memory: Annotated[str, typer.Option(help="comma-separated worker memory sizes (MB)")] = "10240",
    shards: Annotated[str, typer.Option(help="comma-separated combine shard counts S")] = "1,4",
    batch_size: Annotated[int, setting_option("batch_size")] = DEFAULTS["batch_size"],
    micro_batch: Annotated[int, setting_option("micro_batch", "calibration runs two")] = DEFAULTS["micro_batch"],
    train_samples: Annotated[int, typer.Option(help="training samples per epoch")] = 45_000,
    transport: Annotated[str, setting_option("transport")] = DEFAULTS["transport"],
    arch: Annotated[str, typer.Option(help="x86_64 or arm64 (prices)")] = "x86_64",
    storage: Annotated[str, typer.Option(help="efs (AWS limits) or local (this machine's disk only)")] = "efs",
    client_read_mbps: Annotated[float, typer.Option(help="EFS per-client read limit, MiB/s")] = 500.0,
    fs_read_mbps: Annotated[float, typer.Option(help="EFS file-system read limit, MiB/s")] = 10240.0,
    seconds_per_image: Annotated[Optional[float], typer.Option(help="skip measuring: s per image per vCPU")] = None,
    cold_start: Annotated[Optional[float], typer.Option(help="skip measuring: cold start on one vCPU, s")] = None,
    provisioned: Annotated[bool, typer.Option(help="provisioned concurrency: no cold start in round 0")] = False,
    invoke_latency: Annotated[Optional[float], typer.Option(help="per-round invoke + stream latency, s")] = None,
    worker_fixed: Annotated[Optional[float], typer.Option(help="per-invocation fixed cost, s")] = None,
    png: Annotated[Optional[Path], typer.Option(help="write a plot of epoch time and cost")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """Predict epoch time and cost on Lambda.

    For ranges of worker counts N, memory sizes and combine shards S.

    Calibrates on this machine unless the constants are given. The run's settings (model, width,
    batch size, micro-batch, transport) default as a run's do.
    """
    # On stderr: stdout may be the JSON a script reads.
    with Phase(Console(stderr=True), "calibrating on this machine") as phase:
        result = run_plan(model=model, width=width, workers=_ints(workers), memories=_ints(memory),
                          shards=_ints(shards), batch_size=batch_size, micro_batch=micro_batch,
                          train_samples=train_samples, transport=transport, arch=arch, storage=storage,
                          client_read_mbps=client_read_mbps, fs_read_mbps=fs_read_mbps,
                          seconds_per_image=seconds_per_image, cold_start_s=cold_start, provisioned=provisioned,
                          invoke_latency_s=invoke_latency, worker_fixed_s=worker_fixed, png=png, step=phase.step)
    if as_json:
        print(json.dumps(result, default=str))
    else:
        _print_table(result)


def run_plan(*, model: str, width: float, workers: list[int], memories: list[int], shards: list[int],
             batch_size: int, train_samples: int, transport: str, arch: str, storage: str,
             client_read_mbps: float, fs_read_mbps: float, micro_batch: int = 64,
             seconds_per_image: float | None = None, cold_start_s: float | None = None,
             provisioned: bool = False, invoke_latency_s: float | None = None, worker_fixed_s: float | None = None,
             png: Path | None = None, step: Callable[[str], None] = lambda what: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="lt-plan-") as folder:
        params, calibration = calibrate(model, width, Path(folder), micro_batch=micro_batch, step=step,
                                                seconds_per_image=seconds_per_image, cold_start_s=cold_start_s,
                                                invoke_latency_s=invoke_latency_s, worker_fixed_s=worker_fixed_s)
    if storage == "efs":
        store = planner.Storage(client_read=client_read_mbps * planner.MiB, fs_read=fs_read_mbps * planner.MiB)
        # Local fsync speed says nothing about EFS writes (NFS commits on close): EFS limits only.
        calibration = dataclasses.replace(calibration, write_bps=float("inf"))
    else:
        store = planner.Storage(*(4 * [float("inf")]))
    rows = planner.plan(params, calibration, store, workers=workers, memories=memories, shards=shards,
                        prices=planner.Prices.for_arch(arch), batch_size=batch_size, train_samples=train_samples,
                        result_bytes_per_param=4 if transport == "float32" else 2, provisioned=provisioned)
    fastest = {f"S={s},{m}MB": planner.best(rows, s, m)["workers"] for s in shards for m in memories}
    if png is not None:
        plot_plan(rows, png, f"{model} (width {width}, {params / 1e6:.1f} M params), batch {batch_size}, "
                             f"{storage}, {arch}")
    return {"model": model, "width": width, "params": params, "calibration": planner.calibration_dict(calibration),
            "storage": storage, "rows": rows, "fastest_workers": fastest, "png": str(png) if png else None}


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} ({result['params'] / 1e6:.1f} M params), storage {result['storage']}")
    for col in ("N", "MB", "S", "round s", "worker s", "combine s", "cold start s", "epoch min", "$ / epoch"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(str(r["workers"]), str(r["memory_mb"]), str(r["shards"]), f"{r['round_s']:.2f}",
                      f"{r['worker_s']:.2f}", f"{r['combine_s']:.2f}", f"{r['cold_start_s']:.1f}",
                      f"{r['epoch_s'] / 60:.1f}", f"{r['cost_usd']:.3f}")
    console = Console()
    console.print(table)
    lines = dict.fromkeys((r["shards"], r["memory_mb"]) for r in result["rows"])  # in the table's order
    fastest = "; ".join(f"N = {planner.best(result['rows'], s, m)['workers']} with S = {s} and {m} MB workers"
                        for s, m in lines)
    console.print(f"An epoch is warm rounds; the first adds the cold start. Fastest: {fastest}."
                  + (f" Plot: {result['png']}" if result["png"] else ""), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("plan", cls=Command)(plan_command)
