"""``lambdatrain local train``: one training run on the local stack, watched to the end.

Starts the stack in ``<out>/stack``, links the prepared dataset into the mount, invokes the starter
exactly as ``aws lambda invoke`` would, follows the ledger (a progress bar over rounds, a line per
epoch), and leaves in ``<out>``: ``checkpoint.pt``, ``metrics.jsonl``, ``ledger.json`` (the run's
items, which the operator commands read after the stack is gone) and ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lambdatrain.training import checkpoint
from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.ledger.items import RUNNING
from lambdatrain.local.stack import LocalStack, LocalStackConfig
from lambdatrain.roles.settings import COMBINER, DEFAULT_DATA, STARTER, WORKER


@dataclass
class TrainRequest:
    data: Path  # a prepared dataset directory (see data.resolve_dataset)
    out: Path
    settings: dict[str, Any]  # the start event's settings (workers, epochs, model, ...)
    stack: LocalStackConfig | None = None
    timeout_s: float = 6 * 3600.0
    poll_s: float = 0.5
    # Initialise the N workers and a combiner while the starter runs (provisioned concurrency),
    # so round 0 does not pay their imports; False gives on-demand Lambda's cold round 0.
    prewarm: bool = True


@dataclass
class Progress:
    """Callbacks a front end implements (the CLI shows a bar; tests collect)."""

    on_start: Callable[[str, int], None] = lambda run, total: None  # run id, total rounds
    on_round: Callable[[dict[str, Any]], None] = lambda metric: None
    on_epoch: Callable[[dict[str, Any]], None] = lambda metric: None
    seen: set[int] = field(default_factory=set)


def link_dataset(mount: Path, prepared: Path) -> None:
    link = mount / DEFAULT_DATA
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(prepared.resolve(), target_is_directory=True)


def _dead_letters(stack: LocalStack) -> list[dict[str, Any]]:
    return [d for f in (STARTER, WORKER, COMBINER, "stream") for d in stack.service.dead_letters(f)]


def _follow(stack: LocalStack, run: str, request: TrainRequest, progress: Progress) -> dict[str, Any]:
    ledger, deadline = stack.ledger(), time.monotonic() + request.timeout_s
    while True:
        for metric in sorted(ledger.metrics(run), key=lambda m: m["round"]):
            if metric["round"] not in progress.seen:
                progress.seen.add(metric["round"])
                progress.on_round(metric)
                if "val_accuracy" in metric:
                    progress.on_epoch(metric)
        record = ledger.get_run(run)
        if record.state != RUNNING:
            return record.item
        letters = _dead_letters(stack)
        if letters:
            raise LambdaTrainError(f"an invocation failed for good: {letters[0]['error'].get('errorMessage')} "
                                   f"(logs in {stack.state_dir / 'logs'})")
        if time.monotonic() > deadline:
            raise LambdaTrainError(f"run {run} did not finish within {request.timeout_s:.0f} s")
        time.sleep(request.poll_s)


def export_run(stack: LocalStack, run: str, out: Path) -> dict[str, Any]:
    """Write checkpoint, metrics and ledger items of a finished run into ``out``."""
    ledger = stack.ledger()
    record = ledger.get_run(run)
    paths = efs.RunLayout(stack.mount, run)
    meta = efs.read_json(paths.config)
    flat = efs.read_array(paths.weights(record.round), record.weights)
    metrics = sorted(ledger.metrics(run), key=lambda m: m["round"])
    last = next((m for m in reversed(metrics) if "val_accuracy" in m), {})
    ckpt = checkpoint.save(out / "checkpoint.pt", flat=flat, config=meta["config"], classes=meta["classes"],
                           mean=meta["mean"], std=meta["std"], run=run, round_no=record.round, metrics=last)
    (out / "metrics.jsonl").write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))
    (out / "ledger.json").write_text(json.dumps(ledger.items(run), indent=1, sort_keys=True, default=str))
    return {"checkpoint": ckpt, "metrics": metrics, "last": last, "record": record}


def train(request: TrainRequest, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or Progress()
    out = request.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stack_dir = out / "stack"
    shutil.rmtree(stack_dir, ignore_errors=True)  # moto's state is in memory: start clean
    config = request.stack or LocalStackConfig(state_dir=stack_dir)
    config.state_dir = stack_dir
    started = time.time()
    with LocalStack(config) as stack:
        workers = request.settings.get("workers")
        if request.prewarm and isinstance(workers, int) and workers > 0:  # bad settings: the starter says why
            stack.prewarm({WORKER: workers, COMBINER: 1})
        link_dataset(stack.mount, request.data)
        answer = stack.invoke(STARTER, {"start": True, **request.settings})
        run = answer["run"]
        per_epoch = int(answer["rounds_per_epoch"])
        progress.on_start(run, per_epoch * int(request.settings.get("epochs", 1)))
        final = _follow(stack, run, request, progress)
        exported = export_run(stack, run, out)
    wall = time.time() - started
    last = exported["last"]
    summary = {"run_id": run, "workers": exported["record"].workers, "rounds": final["round"],
               "epochs_done": final["epoch"], "samples_seen": final.get("samples_seen", 0), "wall_s": round(wall, 3),
               "val_loss": last.get("val_loss"), "val_accuracy": last.get("val_accuracy"),
               "train_loss": final.get("last_train_loss"), "state": final["state"],
               "stop_reason": final.get("stop_reason"),
               "checkpoint": str(exported["checkpoint"]), "settings": exported["record"].config.to_dict()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary

