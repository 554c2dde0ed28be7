"""What the operator sees: a run's status, the table of runs, and the live watch.

Everything here is computed from ledger items only (META, ROUND#r, METRIC#r), so it reads the same
from DynamoDB and from a ``local train --out`` folder. Phase timings come from the METRIC items
the combiner writes; estimates are remaining rounds times the mean measured round time.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lambdatrain.ledger.items import RUNNING, record_from_meta
from lambdatrain.ops.source import RunSource


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _elapsed(meta: dict[str, Any], now: float) -> float:
    end = now if meta.get("state") == RUNNING else meta.get("updated_at", now)
    return float(end) - float(meta.get("created_at", end))


def status_of(source: RunSource, now: float | None = None) -> dict[str, Any]:
    """The run's status as one JSON-able dict (``status --json`` prints it as it is)."""
    now = time.time() if now is None else now
    record = source.ledger.get_run(source.run)
    meta, cfg = record.item, record.config
    metrics = sorted(source.ledger.metrics(source.run), key=lambda m: m["round"])
    total = record.rounds_per_epoch * cfg.epochs
    rounds = [float(m["round_s"]) for m in metrics if "round_s" in m]
    mean_round = sum(rounds) / len(rounds) if rounds else None
    remaining = max(0, total - record.round) if record.state == RUNNING else 0
    current = source.ledger.get_round(source.run, record.round) if record.state == RUNNING else None
    reported = sorted(int(w) for w in (current or {}).get("reported", []))
    last = metrics[-1] if metrics else {}
    return {
        "run": record.run, "state": record.state, "stop_reason": meta.get("stop_reason") or None,
        "round": record.round, "rounds_total": total, "rounds_per_epoch": record.rounds_per_epoch,
        "epoch": float(last.get("epoch", record.epoch)), "epochs": cfg.epochs, "workers": cfg.workers,
        "round_status": (current or {}).get("status"),
        "reported": reported if current else None,
        "missing": [w for w in range(cfg.workers) if w not in reported] if current else None,
        "train_loss": meta.get("last_train_loss"), "val_loss": meta.get("last_val_loss"),
        "val_accuracy": meta.get("last_val_accuracy"), "best_accuracy": meta.get("best_accuracy"),
        "samples_seen": meta.get("samples_seen"),
        "created_at": meta.get("created_at"), "elapsed_s": _elapsed(meta, now),
        "mean_round_s": mean_round, "remaining_rounds": remaining,
        "eta_s": 0.0 if not remaining else None if mean_round is None else remaining * mean_round,
        "phases_s": {k: sum(float(m.get(k, 0)) for m in metrics) for k in ("worker_s", "combine_s", "wait_s")},
        "settings": cfg.to_dict(),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _reported_line(s: dict[str, Any]) -> str:
    if s["reported"] is None:
        return "-"
    line = f"{len(s['reported'])} of {s['workers']} ({s['round_status']})"
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
        ("round", f"{s['round']} of {s['rounds_total']} ({s['rounds_per_epoch']} per epoch)"),
        ("epoch", f"{s['epoch']:.2f} of {s['epochs']}"),
        ("workers reported", _reported_line(s)),
        ("train loss", _num(s["train_loss"])),
        ("val loss / accuracy", f"{_num(s['val_loss'])} / {_pct(s['val_accuracy'])} (best {_pct(s['best_accuracy'])})"),
        ("elapsed", _duration(s["elapsed_s"])),
        ("time per round", "-" if s["mean_round_s"] is None else f"{s['mean_round_s']:.2f} s"),
        ("time in workers / combine / waiting",
         " / ".join(f"{s['phases_s'][k]:.1f} s" for k in ("worker_s", "combine_s", "wait_s"))),
        ("estimated time to finish", _duration(s["eta_s"]) + (f" ({s['remaining_rounds']} rounds)"
                                                              if s["remaining_rounds"] else "")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def runs_table(metas: list[dict[str, Any]], now: float | None = None) -> Table:
    now = time.time() if now is None else now
    table = Table(title="runs", title_justify="left")
    for name in ("run", "state", "workers", "epoch", "best val acc", "started", "elapsed"):
        table.add_column(name, justify="right" if name in ("workers", "epoch", "best val acc") else "left")
    for meta in sorted(metas, key=lambda m: m.get("created_at", 0), reverse=True):
        record = record_from_meta(meta)
        started = datetime.fromtimestamp(float(meta.get("created_at", 0))).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(record.run, record.state, str(record.workers), f"{record.epoch} of {record.config.epochs}",
                      _pct(meta.get("best_accuracy")), started, _duration(_elapsed(meta, now)))
    return table


def _round_line(m: dict[str, Any], total: int) -> str:
    line = f"round {m['round'] + 1}/{total}: train loss {m['train_loss']:.4f}, {m.get('round_s', 0):.1f} s"
    if "val_accuracy" in m:
        line += f", val loss {m['val_loss']:.4f}, val accuracy {m['val_accuracy']:.2%}"
    return line


def watch(source: RunSource, console: Console, *, interval: float = 2.0, timeout: float | None = None,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Follow the run until its state is no longer running; returns the final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: set[int] = set()
    bar = None
    if console.is_terminal:
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        bar.start()
    task = None
    try:
        while True:
            s = status_of(source)
            if bar is not None and task is None:
                task = bar.add_task(f"run {s['run']}", total=s["rounds_total"], info="")
            for m in sorted(source.ledger.metrics(source.run), key=lambda m: m["round"]):
                if m["round"] not in seen:
                    seen.add(m["round"])
                    console.print(_round_line(m, s["rounds_total"]), highlight=False)
            if bar is not None:
                bar.update(task, completed=s["round"], info=f"{_reported_line(s)}  eta {_duration(s['eta_s'])}")
            if s["state"] != RUNNING:
                break
            if deadline is not None and time.monotonic() > deadline:
                console.print(f"still running after {timeout:.0f} s; stopped watching", highlight=False)
                return s
            sleep(interval)
    finally:
        if bar is not None:
            bar.stop()
    console.print(f"run {s['run']} {s['state']}" + (f" ({s['stop_reason']})" if s["stop_reason"] else "")
                  + f" after {s['round']} rounds, {_duration(s['elapsed_s'])}; val accuracy {_pct(s['val_accuracy'])}",
                  highlight=False)
    return s
