"""The ledger's items as data: keys, run states, the records, and their encoding to and from items.

Everything about the ledger except the calls to the table (``lambdatrain.ledger.table`` and
``lambdatrain.ledger.claims`` make those). Domain code sees only the records (``RunRecord``,
``RoundRecord``, ``ResultRecord``); how they are spelled as items is decided here and nowhere
else. Kept apart from the calls because readers of items need the format but not the table:
``ops.source.FolderLedger`` decodes the same items from a ``ledger.json`` export, and both it and
the table's ``Ledger`` answer ``LedgerReader``. No boto3 and no numpy here. The item kinds
themselves are documented in ``lambdatrain.ledger.schema``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from lambdatrain.ledger import schema
from lambdatrain.storage.digest import Digest
from lambdatrain.protocol.config import RunConfig

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

# A run's states (the META item's "state").
RUNNING, STOPPED, DONE, FAILED = "running", "stopped", "done", "failed"


META = "META"  # the sort key of a run's own item


def pk(run: str) -> str:
    return f"RUN#{run}"


def round_sk(r: int) -> str:
    return f"ROUND#{r:08d}"


def result_sk(r: int, w: int) -> str:
    return f"RESULT#{r:08d}#{w:05d}"


def results_prefix(r: int) -> str:
    """The sort-key prefix of round r's RESULT items."""
    return f"RESULT#{r:08d}#"


METRIC_PREFIX = "METRIC#"


def metric_sk(r: int) -> str:
    return f"{METRIC_PREFIX}{r:08d}"


def metrics_after_range(after: int) -> tuple[str, str]:
    """The sort keys, first and last, of the METRIC items of every round after ``after``: a key
    range, so that a follower's query reads only the rounds it has not seen (sort keys order as
    strings, and a round's 8 zero-padded digits order as numbers; "~" sorts after every digit)."""
    return metric_sk(after + 1), METRIC_PREFIX + "~"


def worker_set(workers: Iterable[int]) -> set[str]:
    """Worker numbers as a round's ``reported`` string set holds them.

    A DynamoDB set, so ADDing a worker twice counts it once; strings, zero-padded, so the set
    reads in worker order in the console and in exports.
    """
    return {f"{w:05d}" for w in workers}


def shard_set(shards: Iterable[int]) -> set[str]:
    """Shard numbers as a round's ``shards_done`` string set holds them (as ``worker_set``)."""
    return {f"{s:03d}" for s in shards}


def numbers(members: Iterable[str]) -> frozenset[int]:
    """A worker or shard set as read back (``from_ddb`` gives a sorted list of strings)."""
    return frozenset(int(m) for m in members)


def to_ddb(value: Any) -> Any:
    """A plain Python value as boto3 writes it: floats as Decimal (boto3 rejects float), no None attributes."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_ddb(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [to_ddb(v) for v in value]
    return value


def from_ddb(value: Any) -> Any:
    """An item as boto3 reads it, as plain Python values: Decimal to int or float, sets to sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_ddb(v) for v in value]
    if isinstance(value, set):
        return sorted(value)
    return value


def run_item(run: str, config: RunConfig, *, state: str, round_no: int, rounds_per_epoch: int, weights: Digest,
             updated_at: float, created_at: float, **summary: Any) -> dict[str, Any]:
    """A run's META item, in the runs index (schema.py); ``summary`` holds what the run has measured
    so far (``RunRecord``'s other fields)."""
    return {"pk": pk(run), "sk": META, "kind": "run", "run": run, "state": state,
            "config": json.dumps(config.to_dict(), sort_keys=True), "workers": config.workers,
            "round": round_no, "epoch": round_no // rounds_per_epoch, "rounds_per_epoch": rounds_per_epoch,
            "weights_bytes": weights.bytes, "weights_checksum": weights.checksum, "updated_at": updated_at,
            **schema.runs_index_key(created_at), **summary}


def metric_item(run: str, metric: dict[str, Any], now: float) -> dict[str, Any]:
    """A METRIC item: what the combiner measured after round ``metric["round"]`` (also its metric.json)."""
    return {"pk": pk(run), "sk": metric_sk(metric["round"]), "kind": "metric", "run": run, "created_at": now,
            **metric}


def open_round_item(run: str, r: int, workers: int, epochsdone: int, now: float) -> dict[str, Any]:
    """A new round's item, open for results."""
    # "kind" and "status" are strings on purpose: the stream filter matches them (schema.py).
    return {"pk": pk(run), "sk": round_sk(r), "kind": "round", "run": run, "round": r,
            "workers": workers, "epochsdone": epochsdone, "status": schema.OPEN,
            "created_at": now, "updated_at": now}


def failed_condition(exc: ClientError) -> bool:
    """Whether a write failed on its own condition (rather than throttling, access, ...)."""
    # A transaction reports a failed condition per item, inside TransactionCanceledException.
    code = exc.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


@dataclass(frozen=True)
class RunRecord:
    """A run as its META item records it: settings, state, where it is, and what it has measured."""

    run: str
    state: str
    config: RunConfig
    round: int  # the current round: its starting weights are ``weights``
    epoch: int
    rounds_per_epoch: int
    weights: Digest
    n_params: int  # parameters at the front of the flat vector (buffers follow; the optimizer skips them)
    num_classes: int
    samples_seen: int = 0
    best_accuracy: float | None = None
    evals_without_best: int = 0  # evaluations since the best one: the plateau rule counts these
    last_train_loss: float | None = None
    last_val_loss: float | None = None
    last_val_accuracy: float | None = None
    stop_reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0  # the last write: for a finished run, the commit that finished it
    state_kept_round: int | None = None  # stopped or failed: the round whose residuals the watchdog kept
    redriven_round: int | None = None  # the round last re-driven (``Ledger.mark_redriven``), and when
    redriven_at: float = 0.0

    @property
    def workers(self) -> int:
        return self.config.workers


def record_from_meta(item: dict[str, Any]) -> RunRecord:
    """A run's META item (plain Python values) as a RunRecord."""
    return RunRecord(run=item["run"], state=item["state"], config=RunConfig(**json.loads(item["config"])),
                     round=item["round"], epoch=item["epoch"], rounds_per_epoch=item["rounds_per_epoch"],
                     weights=Digest(int(item["weights_bytes"]), item["weights_checksum"]),
                     n_params=int(item["n_params"]), num_classes=int(item["num_classes"]),
                     samples_seen=int(item.get("samples_seen", 0)), best_accuracy=item.get("best_accuracy"),
                     evals_without_best=int(item.get("evals_without_best", 0)),
                     last_train_loss=item.get("last_train_loss"), last_val_loss=item.get("last_val_loss"),
                     last_val_accuracy=item.get("last_val_accuracy"), stop_reason=item.get("stop_reason") or None,
                     created_at=float(item.get("created_at", 0)), updated_at=float(item.get("updated_at", 0)),
                     state_kept_round=None if item.get("state_kept_round") is None else int(item["state_kept_round"]),
                     redriven_round=None if item.get("redriven_round") is None else int(item["redriven_round"]),
                     redriven_at=float(item.get("redriven_at", 0)))


@dataclass(frozen=True)
class RoundRecord:
    """One round as its ROUND item records it."""

    run: str
    round: int
    status: str  # schema.OPEN -> READY -> COMBINING -> COMMITTED
    workers: int
    epochsdone: int
    reported: frozenset[int] = frozenset()  # workers whose result is recorded
    claim: str | None = None  # the token of the combiner that holds the round
    shards_done: frozenset[int] = frozenset()  # shares of a sharded combine done under the claim
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def missing(self) -> tuple[int, ...]:
        """Workers whose result is not recorded yet; none once the round holds all N."""
        return tuple(w for w in range(self.workers) if w not in self.reported)


def round_from_item(item: dict[str, Any]) -> RoundRecord:
    """A ROUND item (plain Python values) as a RoundRecord."""
    return RoundRecord(run=item["run"], round=int(item["round"]), status=item["status"], workers=int(item["workers"]),
                       epochsdone=int(item["epochsdone"]), reported=numbers(item.get("reported", ())),
                       claim=item.get("claim"), shards_done=numbers(item.get("shards_done", ())),
                       created_at=float(item.get("created_at", 0)), updated_at=float(item.get("updated_at", 0)))


@dataclass(frozen=True)
class ResultRecord:
    """One worker's result of a round: its file's digest and what the worker measured."""

    worker: int
    digest: Digest
    samples: int
    loss_sum: float
    correct: int
    truncated: bool  # stopped early to respect the Lambda deadline
    load_s: float
    compute_s: float
    write_s: float
    started_at: float
    range_checksums: tuple[str, ...] = ()  # one per slice, when the run's combine is sharded

    def stats(self) -> dict[str, Any]:
        """What the worker measured, as the RESULT item and the worker's log line hold it."""
        stats = {"samples": self.samples, "loss_sum": self.loss_sum, "correct": self.correct,
                 "truncated": self.truncated, "load_s": self.load_s, "compute_s": self.compute_s,
                 "write_s": self.write_s, "started_at": self.started_at}
        if self.range_checksums:
            stats["range_checksums"] = list(self.range_checksums)
        return stats


def result_item(run: str, r: int, result: ResultRecord, now: float) -> dict[str, Any]:
    """A RESULT item."""
    return {"pk": pk(run), "sk": result_sk(r, result.worker), "kind": "result", "run": run, "round": r,
            "worker": result.worker, "bytes": result.digest.bytes, "checksum": result.digest.checksum,
            "created_at": now, **result.stats()}


def result_from_item(item: dict[str, Any]) -> ResultRecord:
    """A RESULT item (plain Python values) as a ResultRecord."""
    return ResultRecord(worker=int(item["worker"]), digest=Digest(int(item["bytes"]), item["checksum"]),
                        samples=int(item["samples"]), loss_sum=float(item["loss_sum"]), correct=int(item["correct"]),
                        truncated=bool(item["truncated"]), load_s=float(item["load_s"]),
                        compute_s=float(item["compute_s"]), write_s=float(item["write_s"]),
                        started_at=float(item["started_at"]), range_checksums=tuple(item.get("range_checksums", ())))


class LedgerReader(Protocol):
    """The read calls of a run's items: the table's ``Ledger`` and a finished local run's ``FolderLedger``."""

    def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        ...

    def newest_run(self) -> RunRecord | None:
        """The run created last, None when there is none."""
        ...

    def get_run(self, run: str) -> RunRecord: ...
    def get_round(self, run: str, r: int) -> RoundRecord | None: ...
    def results(self, run: str, r: int) -> list[ResultRecord]: ...
    def metrics(self, run: str, after: int = -1) -> list[dict[str, Any]]:
        """The run's METRIC items of the rounds after ``after`` (all of them by default), by round."""
        ...

    def items(self, run: str) -> list[dict[str, Any]]:
        """Every item of the run as stored (what ``ledger.json`` holds)."""
        ...
