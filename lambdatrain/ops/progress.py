"""Following a run: the one poll loop and the one progress display, for ``watch`` and ``local train``;
and ``Phase``, what every slow step before it shows (preparing a dataset, starting the local stack,
calibrating the planner).

``follow`` reads the ledger through a ``RunSource`` (a table, local or on AWS) and reports each
committed round once, in order, until the run ends. ``ConsoleDisplay`` shows it: on a terminal a
bar over the rounds done (with the last loss, the reported workers and the time left) and a line
per evaluated round; elsewhere (CI, pipes) a line per round. Both commands end with the same line.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Callable

from rich.console import Console
from rich.status import Status
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lambdatrain.ledger.items import RUNNING
from lambdatrain.ops.source import RunSource
from lambdatrain.ops.views import duration, pct, plural, read_run, reported_line, status_from


Step = Callable[[str], None]  # what a slow function calls with the name of each step it starts


class Phase:
    """A slow step, shown as rich shows work in progress: on a terminal a spinner with the phase's
    name and current step, elsewhere (CI, pipes, logs) one plain line per step; both end with a
    line saying how long it took.

    A lazy phase shows nothing until its first step, for work that may turn out to be done already
    (a dataset prepared on an earlier run). ``step`` is the callback the slow function is given.
    """

    def __init__(self, console: Console, name: str, *, lazy: bool = False):
        self.console, self.name, self.lazy = console, name, lazy
        self.status: Status | None = None
        self.shown = False
        self.t0 = 0.0

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def _show(self, text: str) -> None:
        if not self.shown:
            self.shown = True
            if self.console.is_terminal:
                self.status = Status(text, console=self.console)
                self.status.start()
                return
        if self.status is not None:
            self.status.update(text)
        else:
            self._line(text)

    def step(self, what: str) -> None:
        self._show(f"{self.name}: {what}")

    def begin(self) -> "Phase":
        self.t0 = time.monotonic()
        if not self.lazy:
            self._show(f"{self.name} ...")
        return self

    def end(self, *, ok: bool = True) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        if self.shown and ok:  # a failure says itself, in the error line that follows
            self._line(f"{self.name}: done in {time.monotonic() - self.t0:.1f} s")
        self.shown = False

    def __enter__(self) -> "Phase":
        return self.begin()

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.end(ok=kind is None)


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

    def note(self, text: str) -> None:
        """A line that is not a round: something the run recovers from on its own."""

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
        self.pending: Phase | None = None

    def starting(self, name: str) -> None:
        """Show ``name`` as a phase until the run's first report (``local train``: the stack's start
        and the starter's work, seconds in which nothing else would show)."""
        self.pending = Phase(self.console, name).begin()

    def _started(self, *, ok: bool) -> None:
        if self.pending is not None:
            self.pending.end(ok=ok)
            self.pending = None

    def _print(self, text: str) -> None:
        # soft_wrap: a line stays one line in a log or a pipe, whatever width rich assumes there.
        self.console.print(text, highlight=False, soft_wrap=True)

    def start(self, s: dict[str, Any]) -> None:
        self._started(ok=True)
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

    def note(self, text: str) -> None:
        self._print(text)

    def stop(self) -> None:
        self._started(ok=False)  # the run never reported: the error that follows says why
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
    # Each poll reads only the rounds committed since the last (rounds commit in order, each
    # with its metric): reading every metric each time cost a long run's follower, and the
    # table, more with every round (a query of thousands of items every poll).
    metrics: list[dict[str, Any]] = []
    s: dict[str, Any] | None = None
    try:
        while True:
            record, new, current = read_run(source, after=metrics[-1]["round"] if metrics else -1)
            metrics += new
            first, s = s is None, status_from(record, metrics, current, now=time.time())
            if first:
                display.start(s)
            for m in new:
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
