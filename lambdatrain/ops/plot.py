"""A run's curves and round timings as one PNG, and its raw metrics as CSV.

Top rows: training loss, validation loss and accuracy, against epoch and against the run's elapsed
time (seconds since it was created, as ``status`` counts it). Bottom row: one stacked bar per
round, numbered from 0 as the ledger and metrics.jsonl number it, of the seconds spent in workers
(``worker_s``, the slowest worker), combining (``combine_s``) and waiting for the slowest result
to be recorded and the stream to deliver it (``wait_s``), all as the combiner measured them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lambdatrain.protocol.errors import DataError
from lambdatrain.ops.source import RunSource

PHASES = (("worker_s", "workers"), ("combine_s", "combine"), ("wait_s", "waiting"))
SKIP_COLUMNS = {"pk", "sk", "kind", "run"}


def _metrics(source: RunSource) -> list[dict[str, Any]]:
    metrics = source.ledger.metrics(source.run)  # by round, as every LedgerReader returns them
    if not metrics:
        raise DataError(f"run {source.run} has no committed rounds yet: nothing to plot")
    return metrics


def write_csv(source: RunSource, path: Path) -> Path:
    metrics = _metrics(source)
    columns = ["round"] + sorted({k for m in metrics for k in m} - SKIP_COLUMNS - {"round"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(metrics)
    return path


def _curves(ax_loss, ax_acc, x: list[float], metrics: list[dict[str, Any]], xlabel: str) -> None:
    evals = [(xi, m) for xi, m in zip(x, metrics) if "val_accuracy" in m]
    ax_loss.plot(x, [m["train_loss"] for m in metrics], label="train loss", lw=1)
    if evals:
        ax_loss.plot([e[0] for e in evals], [e[1]["val_loss"] for e in evals], "o-", label="val loss")
        ax_acc.plot([e[0] for e in evals], [e[1]["val_accuracy"] for e in evals], "o-", label="val accuracy",
                    color="tab:green")
    if all("train_accuracy" in m for m in metrics):
        ax_acc.plot(x, [m["train_accuracy"] for m in metrics], label="train accuracy", lw=1, alpha=0.6)
    for ax, ylabel in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")


def plot(source: RunSource, path: Path, *, dpi: int = 100) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    metrics = _metrics(source)
    start = source.ledger.get_run(source.run).created_at
    fig = plt.figure(figsize=(12, 12), dpi=dpi)
    grid = fig.add_gridspec(3, 2)
    epochs = [float(m["epoch"]) for m in metrics]
    elapsed = [float(m["created_at"]) - start for m in metrics]  # at each round's commit
    _curves(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), epochs, metrics, "epoch")
    _curves(fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1]), elapsed, metrics,
            "seconds since the run was created")
    bars = fig.add_subplot(grid[2, :])
    rounds = [m["round"] for m in metrics]
    bottom = [0.0] * len(metrics)
    for key, label in PHASES:
        values = [float(m.get(key, 0.0)) for m in metrics]
        bars.bar(rounds, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    bars.xaxis.get_major_locator().set_params(integer=True)
    bars.set_xlabel("round (from 0)")
    bars.set_ylabel("seconds")
    bars.legend(loc="best", fontsize="small")
    bars.grid(alpha=0.3, axis="y")
    fig.suptitle(f"run {source.run}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
