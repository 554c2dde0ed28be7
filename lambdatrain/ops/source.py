"""Where a run's items come from: the ledger table of a target, or a ``local train --out`` folder.

``local train`` leaves ``ledger.json`` (every item of the run) beside the checkpoint, so a finished
local run can be inspected after its stack is gone. ``FolderLedger`` answers the same read calls as
``lambdatrain.ledger.table.Ledger`` from that file (both are a ``LedgerReader``, and decode items the
same way); the commands do not care which one they hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdatrain.protocol.errors import UnknownRun
from lambdatrain.ledger.items import (LedgerReader, ResultRecord, RoundRecord, RunRecord, record_from_meta,
                                      result_from_item, round_from_item)
from lambdatrain.ops.errors import MissingSetting
from lambdatrain.ops.target import Target, TargetOptions, resolve
from lambdatrain.protocol.events import RUN_ID_PATTERN

LEDGER_FILE = "ledger.json"


class FolderLedger:
    """A ``LedgerReader`` over a ``ledger.json`` written by ``local train``."""

    def __init__(self, path: Path):
        try:
            items = json.loads(Path(path).read_text())
        except ValueError as exc:
            raise MissingSetting(f"{path} is not a ledger export (not JSON)") from exc
        if not isinstance(items, list):
            raise MissingSetting(f"{path} is not a ledger export (not a list of items)")
        self.path = Path(path)
        self._items = items

    def _kind(self, kind: str, run: str) -> list[dict[str, Any]]:
        return sorted((i for i in self._items if i.get("kind") == kind and i.get("run") == run),
                      key=lambda i: (i.get("round", 0), i.get("worker", 0)))

    def list_runs(self) -> list[RunRecord]:
        runs = (record_from_meta(i) for i in self._items if i.get("kind") == "run")
        return sorted(runs, key=lambda record: (record.created_at, record.run))  # as the table's (ledger/listing.py)

    def newest_run(self) -> RunRecord | None:
        runs = self.list_runs()
        return runs[-1] if runs else None

    def get_run(self, run: str) -> RunRecord:
        found = [record for record in self.list_runs() if record.run == run]
        if not found:
            raise UnknownRun(f"unknown run '{run}' in {self.path}")
        return found[0]

    def get_round(self, run: str, r: int) -> RoundRecord | None:
        return next((round_from_item(i) for i in self._kind("round", run) if i["round"] == r), None)

    def results(self, run: str, r: int) -> list[ResultRecord]:
        return [result_from_item(i) for i in self._kind("result", run) if i["round"] == r]

    def metrics(self, run: str, after: int = -1) -> list[dict[str, Any]]:
        return [m for m in self._kind("metric", run) if m["round"] > after]

    def items(self, run: str) -> list[dict[str, Any]]:
        return [i for i in self._items if i.get("run") == run]


def ledger_file(arg: str | Path | None) -> Path | None:
    """The ledger.json that ``arg`` names (the file or its folder), or None when it is a run id."""
    if arg is None:
        return None
    path = Path(arg)
    if path.is_file() and path.name == LEDGER_FILE:
        return path
    if path.is_dir():
        if not (path / LEDGER_FILE).is_file():
            raise MissingSetting(f"{path} has no {LEDGER_FILE}: pass a run id or the --out folder of `local train`")
        return path / LEDGER_FILE
    return None


@dataclass
class RunSource:
    """A run id and where its items, weights and files are."""

    ledger: LedgerReader  # the target's Ledger, or a FolderLedger
    run: str
    folder: Path | None = None  # the `local train --out` folder, if that is the source
    target: Target | None = None


def open_ledger(arg: str | Path | None, options: TargetOptions) -> tuple[LedgerReader, Path | None, Target | None]:
    path = ledger_file(arg)
    if path is not None:
        return FolderLedger(path), path.parent, None
    target = resolve(options)
    return target.ledger(), None, target


def newest_run(ledger: LedgerReader) -> str:
    newest = ledger.newest_run()
    if newest is None:
        raise UnknownRun("no runs yet: start one with `lambdatrain start --workers N`")
    return newest.run


def open_run(arg: str | None, options: TargetOptions, *, default_newest: bool = False) -> RunSource:
    """The run that ``arg`` names: a folder (its one run), a run id, or (if allowed) the newest run."""
    if arg is None and not default_newest:
        raise MissingSetting("which run? pass a run id or a `local train --out` folder")
    if arg is not None and ledger_file(arg) is None and not RUN_ID_PATTERN.match(str(arg)):
        raise MissingSetting(f"'{arg}' is neither a run id nor a `local train --out` folder")
    ledger, folder, target = open_ledger(arg, options)
    run = newest_run(ledger) if folder is not None or arg is None else str(arg)
    ledger.get_run(run)  # UnknownRun now, with the run's name, rather than later
    return RunSource(ledger=ledger, run=run, folder=folder, target=target)
