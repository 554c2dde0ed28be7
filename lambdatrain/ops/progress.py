"""How a local run shows its progress: a bar over rounds, one line per evaluation.

On a terminal, rich draws the bar; elsewhere (CI, pipes) the same events print as plain lines.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

from lambdatrain.ops.local_train import Progress


def _epoch_line(m: dict[str, Any]) -> str:
    return (f"epoch {m['epoch']:.2f} (round {m['round'] + 1}): train loss {m['train_loss']:.4f}, "
            f"val loss {m['val_loss']:.4f}, val accuracy {m['val_accuracy']:.2%}")


def console_progress(console: Console) -> Progress:
    if not console.is_terminal:
        return Progress(
            on_start=lambda run, total: console.print(f"run {run}: {total} rounds", highlight=False),
            on_round=lambda m: console.print(
                f"round {m['round'] + 1}: loss {m['train_loss']:.4f}, {m['round_s']:.1f} s", highlight=False),
            on_epoch=lambda m: console.print(_epoch_line(m), highlight=False),
        )
    bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
              TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console)
    task: dict[str, int] = {}

    def on_start(run: str, total: int) -> None:
        bar.start()
        task["id"] = bar.add_task(f"run {run}", total=total, loss="-")

    def on_round(m: dict[str, Any]) -> None:
        bar.update(task["id"], completed=m["round"] + 1, loss=f"{m['train_loss']:.4f}")
        if bar.finished:
            bar.stop()

    return Progress(on_start=on_start, on_round=on_round, on_epoch=lambda m: bar.console.print(_epoch_line(m)))
