"""``lambdatrain local train``: one training run on the local stack, watched to the end.

Starts the stack in ``<out>/stack``, links the prepared dataset into the mount, invokes the starter
exactly as ``aws lambda invoke`` would, follows the ledger as ``lambdatrain watch`` does (the same
loop and display, ``ops.progress``), and leaves in ``<out>``: ``checkpoint.pt``, ``metrics.jsonl``,
``ledger.json`` (the run's items, which the operator commands read after the stack is gone) and
``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdatrain.ledger.items import RUNNING
from lambdatrain.local.stack import LocalStack, LocalStackConfig
from lambdatrain.ops.progress import Display, follow
from lambdatrain.ops.source import RunSource
from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.roles.settings import COMBINER, DEFAULT_DATA, STARTER, WORKER
from lambdatrain.training import checkpoint


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


def link_dataset(mount: Path, prepared: Path) -> None:
    link = mount / DEFAULT_DATA
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(prepared.resolve(), target_is_directory=True)


def _no_dead_letters(stack: LocalStack) -> None:
    letters = [d for f in (STARTER, WORKER, COMBINER, "stream") for d in stack.service.dead_letters(f)]
    if letters:
        raise LambdaTrainError(f"an invocation failed for good: {letters[0]['error'].get('errorMessage')} "
                               f"(logs in {stack.state_dir / 'logs'})")


def export_run(stack: LocalStack, run: str, out: Path) -> Path:
    """Write checkpoint, metrics and ledger items of a finished run into ``out``; returns the checkpoint."""
    ledger = stack.ledger()
    record = ledger.get_run(run)
    metrics = sorted(ledger.metrics(run), key=lambda m: m["round"])
    ckpt = checkpoint.save(out / "checkpoint.pt",
                           checkpoint.final_model(stack.mount, run, record.round, record.weights, metrics))
    (out / "metrics.jsonl").write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))
    (out / "ledger.json").write_text(json.dumps(ledger.items(run), indent=1, sort_keys=True, default=str))
    return ckpt


def summary_of(s: dict[str, Any], *, checkpoint_path: Path, wall_s: float) -> dict[str, Any]:
    """summary.json, from the run's final status: the same numbers ``status`` shows for the run."""
    return {"run_id": s["run"], "workers": s["workers"], "rounds": s["round"],
            "epochs_done": s["round"] // s["rounds_per_epoch"],
            "samples_seen": s["samples_seen"] or 0, "elapsed_s": round(s["elapsed_s"], 3),
            # The command's own time, the stack's start and the export included (what `time` would say).
            "wall_s": round(wall_s, 3),
            "val_loss": s["val_loss"], "val_accuracy": s["val_accuracy"], "train_loss": s["train_loss"],
            "state": s["state"], "stop_reason": s["stop_reason"], "checkpoint": str(checkpoint_path),
            "settings": s["settings"]}


def train(request: TrainRequest, display: Display | None = None) -> dict[str, Any]:
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
        run = stack.invoke(STARTER, {"start": True, **request.settings})["run"]
        final = follow(RunSource(ledger=stack.ledger(), run=run), display, interval=request.poll_s,
                       timeout=request.timeout_s, check=lambda: _no_dead_letters(stack))
        if final["state"] == RUNNING:
            raise LambdaTrainError(f"run {run} did not finish within {request.timeout_s:.0f} s")
        ckpt = export_run(stack, run, out)
    summary = summary_of(final, checkpoint_path=ckpt, wall_s=time.time() - started)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
