"""The plan as a picture: epoch time and cost per epoch against workers, one line per (S, memory).

Drawn with matplotlib's headless Agg backend, imported on the first plot so that the CLI (which
imports this module) starts without loading matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_plan(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
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
