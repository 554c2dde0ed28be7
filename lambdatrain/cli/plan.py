"""``lambdatrain plan``: predicted round and epoch time and cost for every recipe (transport, mode,
local steps, batch), worker count, memory size and shard count given; with ``--recommend``, the
fastest configuration within ``--budget-per-epoch`` of a recipe whose accuracy has been measured.

Calibrates on this machine (a worker's compute on two micro-batches of generated images, a fresh
process's cold start, one model-sized file written and read back), then applies the model of
lambdatrain/planning/planner.py to the recipes of lambdatrain/planning/recipes.py (all of them
unless ``--transports``, ``--modes`` or ``--local-steps`` narrow them); a table grouped by recipe,
or the recommendation (lambdatrain/planning/recommend.py), and optionally a PNG or JSON.
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
from lambdatrain.planning.calibration import calibrate, calibration_dict, model_sizes
from lambdatrain.planning.plot import plot_plan
from lambdatrain.planning.recipes import RECIPES, Recipe, evidence_for, narrow
from lambdatrain.planning.transports import TRANSPORTS
from lambdatrain.planning.recommend import (NOT_MEASURED, SHORT, accuracy_note, recipe_of, recommend,
                                             workers_by_status)
from lambdatrain.protocol.config import DEFAULTS, MODES
from lambdatrain.protocol.limits import MAX_MEMORY_MB, MIN_MEMORY_MB


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in _names(text) or []]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of positive integers", param_hint=option)
    return values


def plan_command(
    model: Annotated[str, setting_option("model")] = DEFAULTS["model"],
    width: Annotated[float, setting_option("width")] = DEFAULTS["width"],
    workers: Annotated[str, typer.Option(help="comma-separated worker counts N")] = "1,2,4,8,17,32,64",
    memory: Annotated[str, typer.Option(help="comma-separated worker memory sizes (MB)")] = "10240",
    combiner_memory: Annotated[int, typer.Option(
        help="the combiner's memory (MB), as the stack's combinerMemory", min=MIN_MEMORY_MB,
        max=MAX_MEMORY_MB)] = planner.COMBINER_MEMORY_MB,
    shards: Annotated[str, typer.Option(help="comma-separated combine shard counts S")] = "1,4",
    batch_size: Annotated[Optional[int], typer.Option(
        help="global batch of every recipe (default: each recipe's own)", min=1)] = None,
    micro_batch: Annotated[int, setting_option("micro_batch", "calibration runs two")] = DEFAULTS["micro_batch"],
    train_samples: Annotated[int, typer.Option(help="training samples per epoch")] = 45_000,
    transports: Annotated[Optional[str], typer.Option(
        help=f"comma-separated transports to plan (default: every recipe's; known: {', '.join(TRANSPORTS)})")] = None,
    modes: Annotated[Optional[str], typer.Option(help=f"comma-separated modes ({', '.join(MODES)})")] = None,
    local_steps: Annotated[Optional[str], typer.Option(help="comma-separated local steps K to plan")] = None,
    arch: Annotated[str, typer.Option(help="Lambda's architecture, for its price: x86_64 or arm64")] = "x86_64",
    storage: Annotated[str, typer.Option(help="efs (AWS limits) or local (this machine's disk only)")] = "efs",
    client_read_mbps: Annotated[float, typer.Option(help="EFS per-client read limit, MiB/s")] = 500.0,
    fs_read_mbps: Annotated[float, typer.Option(help="EFS file-system read limit, MiB/s")] = 10240.0,
    seconds_per_image: Annotated[Optional[float], typer.Option(help="skip measuring: s per image per vCPU")] = None,
    cold_start: Annotated[Optional[float], typer.Option(help="skip measuring: cold start on one vCPU, s")] = None,
    provisioned: Annotated[bool, typer.Option(help="provisioned concurrency: no cold start in round 0")] = False,
    invoke_latency: Annotated[Optional[float], typer.Option(help="per-round invoke + stream latency, s")] = None,
    worker_fixed: Annotated[Optional[float], typer.Option(help="per-invocation fixed cost, s")] = None,
    s3_mbps: Annotated[Optional[float], typer.Option(
        help="S3 bandwidth per request for a compressed run's state, MB/s (default: AWS's 85)",
        min=0.001)] = None,
    png: Annotated[Optional[Path], typer.Option(help="write a plot of epoch time and cost (e.g. under out/)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    recommend_: Annotated[bool, typer.Option("--recommend", help=(
        "print the fastest configuration of a recipe whose accuracy has been measured, and the measurement"))] = False,
    budget_per_epoch: Annotated[Optional[float], typer.Option(
        help="with --recommend: dollars per warm epoch at most", min=0)] = None,
) -> None:
    """Predict round and epoch time and cost on Lambda.

    For every recipe (transport, mode, local steps, batch size) and ranges of worker counts N,
    memory sizes and combine shards S. With --recommend, the fastest configuration within
    --budget-per-epoch among recipes whose accuracy has been measured
    (lambdatrain/planning/recipes.py EVIDENCE); none: one line and exit status 1.

    Calibrates on this machine unless the constants are given. Model, width and micro-batch
    default as a run's do.
    """
    for value, known, hint in ((arch, planner.ARCHITECTURES, "--arch"), (storage, planner.STORAGES, "--storage")):
        if value not in known:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(known)}", param_hint=hint)
    if budget_per_epoch is not None and not recommend_:
        raise typer.BadParameter("a budget chooses a recommendation: add --recommend", param_hint="--budget-per-epoch")
    try:
        recipes = narrow(RECIPES, transports=_names(transports), modes=_names(modes),
                         local_steps=_ints(local_steps, "--local-steps"), batch_size=batch_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--transports/--modes/--local-steps") from None
    # On stderr: stdout may be the JSON a script reads.
    with Phase(Console(stderr=True), "calibrating on this machine") as phase:
        result = run_plan(model=model, width=width, workers=_ints(workers, "--workers"),
                          memories=_ints(memory, "--memory"), shards=_ints(shards, "--shards"), recipes=recipes,
                          combiner_memory_mb=combiner_memory,
                          micro_batch=micro_batch, train_samples=train_samples, arch=arch, storage=storage,
                          client_read_mbps=client_read_mbps, fs_read_mbps=fs_read_mbps,
                          seconds_per_image=seconds_per_image, cold_start_s=cold_start, provisioned=provisioned,
                          invoke_latency_s=invoke_latency, worker_fixed_s=worker_fixed,
                          s3_bps=None if s3_mbps is None else s3_mbps * 1e6, png=png, step=phase.step)
    if recommend_:
        # NoBackedRecipe (a domain error) reaches the CLI's edge: one line, exit status 1.
        result["recommended"] = [{**row, "backed_by": evidence.as_dict()}
                                 for row, evidence in recommend(result["rows"], budget_per_epoch)]
        result["budget_per_epoch"] = budget_per_epoch
    if as_json:
        print(json.dumps(result, default=str))
    elif recommend_:
        _print_recommendation(result)
    else:
        _print_table(result)


def run_plan(*, model: str, width: float, workers: list[int], memories: list[int], shards: list[int],
             recipes: list[Recipe], train_samples: int, arch: str, storage: str,
             client_read_mbps: float, fs_read_mbps: float, micro_batch: int = 64,
             seconds_per_image: float | None = None, cold_start_s: float | None = None,
             provisioned: bool = False, invoke_latency_s: float | None = None, worker_fixed_s: float | None = None,
             s3_bps: float | None = None, combiner_memory_mb: int = planner.COMBINER_MEMORY_MB,
             png: Path | None = None,
             step: Callable[[str], None] = lambda what: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="lt-plan-") as folder:
        params, calibration = calibrate(model, width, Path(folder), micro_batch=micro_batch, step=step,
                                                seconds_per_image=seconds_per_image, cold_start_s=cold_start_s,
                                                invoke_latency_s=invoke_latency_s, worker_fixed_s=worker_fixed_s,
                                                s3_bps=s3_bps)
    buffers = model_sizes(model, width)[1]  # built once with the params (cached): sent as float32 by a codec
    if storage == "efs":
        store = planner.Storage(client_read=client_read_mbps * planner.MiB, fs_read=fs_read_mbps * planner.MiB)
        # Local fsync speed says nothing about EFS writes (NFS commits on close): EFS limits only.
        calibration = dataclasses.replace(calibration, write_bps=float("inf"))
    else:
        store = planner.Storage(*(4 * [float("inf")]))
    rows = planner.plan(params, calibration, store, workers=workers, memories=memories, shards=shards,
                        recipes=recipes, prices=planner.Prices.for_arch(arch), train_samples=train_samples,
                        provisioned=provisioned, buffers=buffers, combiner_memory_mb=combiner_memory_mb)
    for row in rows:
        # Measured: its gap to float32 is recorded; shown: that gap is within the tolerance, what
        # --recommend may pick (recipes.py EVIDENCE and backing).
        evidence = evidence_for(recipe_of(row), row["workers"])
        row["accuracy_measured"] = evidence is not None
        row["accuracy_study"] = None if evidence is None else {"batch_size": evidence.batch_size,
                                                                "workers": evidence.workers}
        row["accuracy_shown"] = evidence is not None and evidence.shown  # what backing() says, looked up once
    fastest = [{"recipe": r.label, "shards": s, "memory_mb": m, "workers": planner.best(rows, s, m, r.label)["workers"]}
               for r in recipes for s in shards for m in memories]  # where adding workers stops paying, per line
    if png is not None:
        plot_plan(rows, png, f"{model} (width {width}, {params / 1e6:.1f} M params), {storage}, {arch}")
    return {"model": model, "width": width, "params": params, "buffers": buffers,
            "calibration": calibration_dict(calibration),
            "storage": storage, "rows": rows, "fastest_workers": fastest, "png": str(png) if png else None}


# The table's columns: header, width, and how a row fills it. Plain aligned text fits 80 columns,
# where a bordered table of eleven columns wraps its headers into ellipses.
COLUMNS = (("N", 4, lambda r: f"{r['workers']}"), ("MB", 6, lambda r: f"{r['memory_mb']}"),
           ("S", 3, lambda r: f"{r['shards']}"), ("round s", 8, lambda r: f"{r['round_s']:.2f}"),
           ("worker s", 9, lambda r: f"{r['worker_s']:.2f}"),
           ("combine s", 10, lambda r: f"{r['combine_s']:.2f}"),
           ("epoch min", 10, lambda r: f"{r['epoch_s'] / 60:.1f}"),
           ("$/round", 8, lambda r: f"{r['cost_per_round']:.2g}"),
           ("$/epoch", 8, lambda r: f"{r['cost_per_epoch']:.3g}"),
           ("EFS MB/round", 13, lambda r: f"{r['efs_bytes_per_round'] / 1e6:.4g}"))


def _print_table(result: dict) -> None:
    """One block per recipe (planner.plan keeps a recipe's rows together), then a sentence."""
    console = Console(highlight=False)
    console.print(f"{result['model']} ({result['params'] / 1e6:.1f} M params), storage {result['storage']}")
    for recipe in dict.fromkeys(r["recipe"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["recipe"] == recipe]
        console.print(f"\n{recipe}" + accuracy_note(rows) + _state_note(rows[0]), soft_wrap=True)
        console.print("".join(f"{name:>{width}}" for name, width, _ in COLUMNS), soft_wrap=True)
        for r in rows:
            console.print("".join(f"{cell(r):>{width}}" for _, width, cell in COLUMNS), soft_wrap=True)
    console.print("")
    console.print(_summary(result), soft_wrap=True)


def _state_note(r: dict) -> str:
    """Where a recipe's state goes, when it has any: its bytes and seconds are in the rows."""
    if r["state_store"] == "none":
        return ""
    return (f"; state in {r['state_store']}: {r['state_bytes_per_worker_round'] / 1e6:.0f} MB and "
            f"{r['state_s']:.2f} s per worker-round (in worker s), the combiner's "
            f"{r['combiner_state_bytes_per_round'] / 1e6:.0f} MB and {r['combiner_state_s']:.2f} s per round "
            f"(in combine s)")


def _where(r: dict) -> str:
    return (f"{r['recipe']} at N = {r['workers']}, S = {r['shards']}, {r['memory_mb']} MB "
            f"({r['epoch_s'] / 60:.1f} min and ${r['cost_per_epoch']:.2f} per epoch)")


def _summary(result: dict) -> str:
    """The table's last line, a sentence: the fastest and the cheapest configuration, said apart
    for the recipes whose accuracy has been measured where the fastest overall is not one."""
    rows = result["rows"]
    measured = [r for r in rows if r["accuracy_shown"]]
    fastest, cheapest = min(rows, key=lambda r: r["epoch_s"]), min(rows, key=lambda r: r["cost_per_epoch"])
    parts = [f"Fastest: {_where(fastest)}; cheapest: {_where(cheapest)}."]
    if measured and not (fastest["accuracy_shown"] and cheapest["accuracy_shown"]):
        parts.append(f"Of the recipes whose accuracy is measured and kept, fastest: "
                     f"{_where(min(measured, key=lambda r: r['epoch_s']))}; cheapest: "
                     f"{_where(min(measured, key=lambda r: r['cost_per_epoch']))}.")
    parts.append("An epoch is warm rounds; the first adds the cold start.")
    if result["png"]:
        parts.append(f"Plot: {result['png']}.")
    return " ".join(parts)


def _print_recommendation(result: dict) -> None:
    """Each measured recipe's fastest configuration within the budget with its measurement, the
    recipes left out, and last the recommendation as a sentence."""
    console = Console(highlight=False, soft_wrap=True)
    budget = result["budget_per_epoch"]
    within = "at any price" if budget is None else f"at most ${budget:.2f} per epoch"
    console.print(f"{result['model']} ({result['params'] / 1e6:.1f} M params), storage {result['storage']}; "
                  f"measured recipes, fastest configuration {within}:")
    for r in result["recommended"]:
        console.print(f"- {_where(r)}; accuracy: {r['backed_by']['summary']}")
    # One line per study: studies of one runs file (a source) differ in their commands.
    for source, command in dict.fromkeys((r["backed_by"]["source"], r["backed_by"]["command"])
                                         for r in result["recommended"]):
        console.print(f"Measured in {source}, by `{command}`.")
    left_out: dict[str, list[str]] = {SHORT: [], NOT_MEASURED: []}
    for recipe in dict.fromkeys(r["recipe"] for r in result["rows"]):
        by_status = workers_by_status([r for r in result["rows"] if r["recipe"] == recipe])
        for status, workers in by_status.items():
            if status in left_out:  # "at N = ..." where the recipe's other rows say otherwise
                left_out[status].append(recipe if len(by_status) == 1 else
                                        f"{recipe} at N = {', '.join(map(str, workers))}")
    for status, recipes in left_out.items():
        if recipes:
            console.print(f"Not recommended, accuracy {status}: {'; '.join(recipes)}.")
    console.print(f"Recommended: {_where(result['recommended'][0])}.")


def register(app: typer.Typer) -> None:
    app.command("plan", cls=Command)(plan_command)
