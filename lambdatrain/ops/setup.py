"""``lambdatrain setup``: send the setup event asynchronously and follow it in the ledger to its end.

Setup takes minutes, longer than any client should hold a synchronous call open (the AWS CLI's
read timeout is 60 s, and it retries), so the event is queued (InvocationType Event) and this
module reads setup's STATUS item (``lambdatrain.ledger.setup``) until the attempt it started, or
the one already running that its event deferred to, has ended. ``SetupDisplay`` shows the steps:
on a terminal a bar over the steps with a spinner and the current message, elsewhere one line per
message.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lambdatrain.ledger.setup import FAILED, SetupLedger, SetupRecord
from lambdatrain.ops.errors import OpsError
from lambdatrain.ops.target import Target
from lambdatrain.ops.views import plural
from lambdatrain.roles.setup import parse_setup

STEPS = ("sweep", "pip", "packages", "dataset")  # in the order setup records them
# A queued event reaches a warm starter in seconds; a cold one imports nothing heavy first.
START_WAIT_S = 180.0


class SetupFailed(OpsError):
    """The setup attempt ended with an error (the ledger's one line)."""


class SetupTimeout(OpsError):
    """No setup started, or it did not end, in the time allowed."""


def setup_event(**fields: Any) -> dict[str, Any]:
    """The setup event; a bad field raises InvalidEvent here, before anything is sent."""
    event = {"setup": True, **{k: v for k, v in fields.items() if v is not None}}
    parse_setup(event)
    return event


def step_line(step: str, outcome: dict[str, Any]) -> str:
    """One finished step, as the user reads it."""
    if step == "sweep":
        removed = outcome.get("removed") or []
        return f"swept what a stopped setup left: {', '.join(removed)}" if removed else "nothing to sweep"
    if step == "pip":
        return f"pip runs: {outcome.get('version', '?')}"
    if step == "packages":
        count = plural(len(outcome.get("versions") or []), "pinned package")
        return f"{count} " + ("installed" if outcome.get("installed") else "already installed")
    return (f"dataset {'prepared' if outcome.get('prepared') else 'already prepared'}: "
            f"{outcome.get('train')} train, {outcome.get('val')} validation images")


class SetupDisplay:
    """Shows setup's progress: a bar over its steps on a terminal, a line per change elsewhere."""

    def __init__(self, console: Console):
        self.console, self.shown, self.message = console, set(), None
        self.live = console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("sending the setup event", total=len(STEPS))
        self.started = False  # the bar starts with the first update, so an error before it leaves no live display

    def update(self, record: SetupRecord | None, waiting: str = "") -> None:
        if self.live and not self.started:
            self.progress.start()
            self.started = True
        for step in STEPS:  # each finished step once, in order
            key = (record.attempt, step) if record else None
            if record and step in record.steps and key not in self.shown:
                self.shown.add(key)
                self.progress.console.print(f"{step}: {step_line(step, record.steps[step])}", markup=False,
                                            highlight=False)
        message = waiting or (record.message if record else "waiting for the starter")
        if message != self.message:
            self.message = message
            if not self.live:
                self.console.print(message, markup=False, highlight=False)
        self.progress.update(self.task, description=message, completed=len(record.steps) if record else 0)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def run_setup(target: Target, event: dict[str, Any], display: SetupDisplay | None = None, *, interval: float = 2.0,
              timeout: float = 1800.0, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> SetupRecord:
    """Queue ``event`` and follow setup to its end; the finished record, SetupFailed or SetupTimeout."""
    book = SetupLedger(target.ledger().table, time.time)
    before = book.read()
    # Our event is a no-op while another setup holds the lock: then that setup's end is ours too.
    follow_current = before is not None and not before.finished
    target.enqueue(event)
    started = clock()
    try:
        while True:
            record = book.read()
            ours = record is not None and (record.attempt > (before.attempt if before else 0) or follow_current)
            if display:
                display.update(record if ours else None, _waiting(record, ours, time.time()))
            if ours and record.finished:
                break
            _check_time(clock() - started, ours, timeout)
            sleep(interval)
    finally:
        if display:
            display.stop()
    if record.state == FAILED:
        raise SetupFailed(f"setup failed: {record.error}")
    return record


def _waiting(record: SetupRecord | None, ours: bool, now: float) -> str:
    if not ours:
        return "waiting for the starter to take the setup event"
    if not record.finished and record.lease_until is not None and record.lease_until < now:
        return (f"setup attempt {record.attempt} stopped renewing its lock (killed?); "
                "waiting for the retry that takes it over")
    return ""


def _check_time(elapsed: float, ours: bool, timeout: float) -> None:
    if not ours and elapsed > START_WAIT_S:
        raise SetupTimeout(f"no setup started within {START_WAIT_S:.0f} s of the event; see the starter's log "
                           "(aws logs tail /aws/lambda/<starter> --since 10m) and send setup again")
    if elapsed > timeout:
        raise SetupTimeout(f"setup did not end within {timeout:.0f} s; `lambdatrain setup` again follows it further")
