"""What the operator sees: a run's status and the table of runs, and the formats they share with ``watch``.

Everything here is computed from ledger items only (META, ROUND#r, METRIC#r), so it reads the same
from DynamoDB and from a ``local train --out`` folder. Phase timings come from the METRIC items
the combiner writes; estimates are remaining rounds times the mean measured round time. A round
is named by its number in the ledger, counted from 0 (as in metrics.jsonl, the CSV and the plot);
how far a run has got is a count ("4 of 4 rounds done").
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.table import Table

from lambdatrain.ledger.items import RUNNING, RoundRecord, RunRecord
from lambdatrain.ops.source import RunSource


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def plural(n: int | float, noun: str) -> str:
    """``1 epoch``, ``2 epochs``, ``0 rounds``."""
    return f"{n:g} {noun}" + ("" if n == 1 else "s")


def elapsed_s(record: RunRecord, now: float) -> float:
    """The one elapsed time of a run: from its creation to now while it runs, else to its last update.

    For a finished run the last update is the commit of its last round (which sets the final state
    in the same transaction); for a stopped one, the stop. ``status``, ``runs``, ``watch`` and
    ``local train`` (console and summary.json) all show this number.
    """
    end = now if record.state == RUNNING else record.updated_at
    return end - record.created_at


def read_run(source: RunSource, after: int = -1) -> tuple[RunRecord, list[dict[str, Any]], RoundRecord | None]:
    """The run's META, its METRIC items by round (of the rounds after ``after``: all by default),
    and its open round (None once it has ended)."""
    # META first: a commit writes its METRIC in the same transaction, so every round the META
    # counts as done has its metric in the read that follows.
    record = source.ledger.get_run(source.run)
    metrics = source.ledger.metrics(source.run, after)  # by round, as every LedgerReader returns them
    current = source.ledger.get_round(source.run, record.round) if record.state == RUNNING else None
    return record, metrics, current


def status_of(source: RunSource, now: float | None = None) -> dict[str, Any]:
    """The run's status as one JSON-able dict (``status --json`` prints it as it is)."""
    return status_from(*read_run(source), now=time.time() if now is None else now)


def status_from(record: RunRecord, metrics: list[dict[str, Any]], current: RoundRecord | None,
                now: float) -> dict[str, Any]:
    """The status of what ``read_run`` read. ``round`` is the ledger's: rounds are numbered from 0,
    so the run's current round is also the number of rounds done."""
    cfg = record.config
    total = record.rounds_per_epoch * cfg.epochs
    rounds = [float(m["round_s"]) for m in metrics if "round_s" in m]
    mean_round = sum(rounds) / len(rounds) if rounds else None
    remaining = max(0, total - record.round) if record.state == RUNNING else 0
    reported = sorted(current.reported) if current else []
    last = metrics[-1] if metrics else {}
    return {
        "run": record.run, "state": record.state, "stop_reason": record.stop_reason,
        "round": record.round, "rounds_total": total, "rounds_per_epoch": record.rounds_per_epoch,
        "epoch": float(last.get("epoch", record.epoch)), "epochs": cfg.epochs, "workers": cfg.workers,
        "round_status": current.status if current else None,
        "reported": reported if current else None,
        "missing": list(current.missing) if current else None,
        "train_loss": record.last_train_loss, "val_loss": record.last_val_loss,
        "val_accuracy": record.last_val_accuracy, "best_accuracy": record.best_accuracy,
        "samples_seen": record.samples_seen,
        "created_at": record.created_at, "elapsed_s": elapsed_s(record, now),
        "mean_round_s": mean_round, "remaining_rounds": remaining,
        "eta_s": 0.0 if not remaining else None if mean_round is None else remaining * mean_round,
        "phases_s": {k: sum(float(m.get(k, 0)) for m in metrics) for k in ("worker_s", "combine_s", "wait_s")},
        "settings": cfg.to_dict(),
    }


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def reported_line(s: dict[str, Any]) -> str:
    """``1 of 2 workers reported (open); missing: 1`` for the run's current round; ``-`` once it has ended."""
    if s["reported"] is None:
        return "-"
    line = f"{len(s['reported'])} of {plural(s['workers'], 'worker')} reported ({s['round_status']})"
    if s["missing"]:
        shown = ", ".join(str(w) for w in s["missing"][:20]) + (" ..." if len(s["missing"]) > 20 else "")
        line += f"; missing: {shown}"
    return line


def status_table(s: dict[str, Any]) -> Table:
    table = Table(title=f"run {s['run']}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    state = s["state"] + (f" ({s['stop_reason']})" if s["stop_reason"] else "")
    rows = [
        ("state", state),
        ("rounds done", f"{s['round']} of {s['rounds_total']} ({s['rounds_per_epoch']} per epoch)"),
        ("epoch", f"{s['epoch']:.2f} of {s['epochs']}"),
        ("current round", "-" if s["reported"] is None else f"{s['round']}: {reported_line(s)}"),
        ("train loss", _num(s["train_loss"])),
        ("val loss / accuracy", f"{_num(s['val_loss'])} / {pct(s['val_accuracy'])} (best {pct(s['best_accuracy'])})"),
        ("elapsed", duration(s["elapsed_s"])),
        ("time per round", "-" if s["mean_round_s"] is None else f"{s['mean_round_s']:.2f} s"),
        ("time in workers / combine / waiting",
         " / ".join(f"{s['phases_s'][k]:.1f} s" for k in ("worker_s", "combine_s", "wait_s"))),
        ("estimated time to finish", duration(s["eta_s"]) + (f" ({plural(s['remaining_rounds'], 'round')})"
                                                             if s["remaining_rounds"] else "")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def runs_table(records: list[RunRecord], now: float | None = None) -> Table:
    now = time.time() if now is None else now
    table = Table(title="runs", title_justify="left")
    for name in ("run", "state", "workers", "epoch", "best val acc", "started", "elapsed"):
        table.add_column(name, justify="right" if name in ("workers", "epoch", "best val acc") else "left")
    for record in sorted(records, key=lambda r: r.created_at, reverse=True):
        started = datetime.fromtimestamp(record.created_at).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(record.run, record.state, str(record.workers), f"{record.epoch} of {record.config.epochs}",
                      pct(record.best_accuracy), started, duration(elapsed_s(record, now)))
    return table
