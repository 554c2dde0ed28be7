"""The plan as a picture: epoch time and cost per epoch against workers, one line per (recipe, S,
memory).

Colour says the recipe, line style and marker the shard count S and memory. Lines of one recipe
and different S often coincide in cost (S changes the combine's time, hardly its bytes), so each
(S, memory) line is drawn shifted sideways by a few percent of N, with its own marker and dash:
coinciding lines stay visible side by side instead of hiding each other.

Drawn with matplotlib's headless Agg backend, imported on the first plot so that the CLI (which
imports this module) starts without loading matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambdatrain.planning.recommend import accuracy_note

MARKERS, DASHES = "os^Dv<>p", ("-", "--", ":", "-.")
SHIFT = 1.06  # sideways factor between (S, memory) lines on the log2 N axis: about a twelfth of a doubling


def shifted(workers: int, line: int, lines: int) -> float:
    """Where line ``line`` of ``lines`` (S, memory) lines draws N: spread symmetrically around N."""
    return workers * SHIFT ** (line - (lines - 1) / 2)


def plot_plan(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Epoch time and cost per epoch against workers, one line per (recipe, S, memory), as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(dict.fromkeys(r["recipe"] for r in rows))  # in the plan's order
    lines = sorted({(r["shards"], r["memory_mb"]) for r in rows})
    colours = plt.get_cmap("tab10")
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=80)
    for i, recipe in enumerate(recipes):
        for j, key in enumerate(lines):
            line = sorted((r for r in rows if r["recipe"] == recipe and (r["shards"], r["memory_mb"]) == key),
                          key=lambda r: r["workers"])
            if not line:
                continue
            modelled = accuracy_note(line)
            style = {"color": colours(i % 10), "marker": MARKERS[j % len(MARKERS)], "ms": 3, "lw": 1,
                     "ls": DASHES[j % len(DASHES)], "label": f"{recipe}{modelled}, S={key[0]}, {key[1]} MB"}
            xs = [shifted(r["workers"], j, len(lines)) for r in line]
            ax_t.plot(xs, [r["epoch_s"] / 60 for r in line], **style)
            ax_c.plot(xs, [r["cost_per_epoch"] for r in line], **style)
    for ax, label in ((ax_t, "epoch time (min)"), (ax_c, "cost per epoch ($)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("workers N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(*ax_t.get_legend_handles_labels(), fontsize=6, loc="center right", frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.68, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
