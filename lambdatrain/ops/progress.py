"""Following a run: the one poll loop and the one progress display, for ``watch`` and ``local train``.

``follow`` reads the ledger through a ``RunSource`` (a table, local or on AWS) and reports each
committed round once, in order, until the run ends. ``ConsoleDisplay`` shows it: on a terminal a
bar over the rounds done (with the last loss, the reported workers and the time left) and a line
per evaluated round; elsewhere (CI, pipes) a line per round. Both commands end with the same line.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lambdatrain.ledger.items import RUNNING
from lambdatrain.ops.source import RunSource
from lambdatrain.ops.views import duration, pct, plural, read_run, reported_line, status_from


class Display:
    """What ``follow`` reports to; this one shows nothing (benchmarks, library callers).

    ``s`` is a status as ``views.status_of`` builds it.
    """

    def start(self, s: dict[str, Any]) -> None:
        """Before the first round is reported."""

    def round(self, metric: dict[str, Any], s: dict[str, Any]) -> None:
        """Once per committed round, in order, with its METRIC item."""

    def poll(self, s: dict[str, Any]) -> None:
        """After every read of the ledger."""

    def stop(self) -> None:
        """When following ends, however it ends."""

    def end(self, s: dict[str, Any]) -> None:
        """When the run has ended (not when a timeout ended the follow)."""


def round_line(m: dict[str, Any], total: int) -> str:
    """One committed round: its number as the ledger has it (from 0), then how many of the run's are done."""
    line = (f"round {m['round']} ({m['round'] + 1} of {total} done, epoch {float(m['epoch']):.2f}): "
            f"train loss {m['train_loss']:.4f}, {float(m.get('round_s', 0)):.1f} s")
    if "val_accuracy" in m:
        line += f", val loss {m['val_loss']:.4f}, val accuracy {m['val_accuracy']:.2%}"
    return line


def start_line(s: dict[str, Any]) -> str:
    return (f"run {s['run']}: {plural(s['rounds_total'], 'round')} ({s['rounds_per_epoch']} per epoch, "
            f"{plural(s['epochs'], 'epoch')}), {plural(s['workers'], 'worker')}")


def end_line(s: dict[str, Any]) -> str:
    return (f"run {s['run']} {s['state']}" + (f" ({s['stop_reason']})" if s["stop_reason"] else "")
            + f" after {plural(s['round'], 'round')} (epoch {s['epoch']:.2f}), {duration(s['elapsed_s'])}; "
            f"val accuracy {pct(s['val_accuracy'])}")


class ConsoleDisplay(Display):
    """The progress display of both commands (see the module docstring)."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.task = None

    def _print(self, text: str) -> None:
        # soft_wrap: a line stays one line in a log or a pipe, whatever width rich assumes there.
        self.console.print(text, highlight=False, soft_wrap=True)

    def start(self, s: dict[str, Any]) -> None:
        if not self.console.is_terminal:
            self._print(start_line(s))
            return
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
        self.bar.start()
        self.task = self.bar.add_task(f"run {s['run']}", total=s["rounds_total"], info="")

    def round(self, metric: dict[str, Any], s: dict[str, Any]) -> None:
        if self.bar is None or "val_accuracy" in metric:  # with a bar, only evaluations get a line
            self._print(round_line(metric, s["rounds_total"]))

    def poll(self, s: dict[str, Any]) -> None:
        if self.bar is not None:
            loss = "-" if s["train_loss"] is None else f"{s['train_loss']:.4f}"
            self.bar.update(self.task, completed=s["round"],
                            info=f"loss {loss}  {reported_line(s)}  eta {duration(s['eta_s'])}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def end(self, s: dict[str, Any]) -> None:
        self._print(end_line(s))


def follow(source: RunSource, display: Display | None = None, *, interval: float, timeout: float | None = None,
           check: Callable[[], None] = lambda: None, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Report the run's rounds until it ends (then ``display.end``) or ``timeout`` seconds pass.

    Returns the last status; its state is still ``running`` when the timeout ended the follow.
    ``check`` runs after each poll of a running run and raises to give up (``local train`` checks
    its stack's dead letters).
    """
    display = display or Display()
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: set[int] = set()
    s: dict[str, Any] | None = None
    try:
        while True:
            record, metrics, current = read_run(source)
            first, s = s is None, status_from(record, metrics, current, now=time.time())
            if first:
                display.start(s)
            for m in metrics:
                if m["round"] not in seen:
                    seen.add(m["round"])
                    display.round(m, s)
            display.poll(s)
            if s["state"] != RUNNING:
                break
            check()
            if deadline is not None and time.monotonic() > deadline:
                return s
            sleep(interval)
    finally:
        display.stop()
    display.end(s)
    return s


def watch(source: RunSource, console: Console, *, interval: float = 2.0, timeout: float | None = None,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """``lambdatrain watch``: follow the run on the console; returns the last status."""
    s = follow(source, ConsoleDisplay(console), interval=interval, timeout=timeout, sleep=sleep)
    if s["state"] == RUNNING:
        console.print(f"still running after {timeout:g} s; stopped watching", highlight=False)
    return s
