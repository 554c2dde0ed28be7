"""Event schemas of the round protocol: start, work, combine, control; validation and parsing.

Every event is validated here before any side effect, and every problem raises ``InvalidEvent``
naming the field. The paper's keys (``start``, ``workers``, ``workerno``, ``epochsdone``,
``combine``) are kept as they are; the rest are ours.

- start:   ``{"start": true, "workers": 6, ...settings}``
- work:    ``{"workerno": 3, "workers": 6, "epochsdone": 7, "run": ID, "round": R}``
- combine: ``{"combine": true, "workers": 6, "epochsdone": 7, "run": ID, "round": R}``
- control: ``{"stop": ID}``, ``{"resume": ID}``, ``{"watchdog": true}``, ``{"setup": true}``
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from lambdatrain.storage.digest import ALGORITHMS as CHECKSUMS
from lambdatrain.protocol.errors import InvalidEvent

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MODES = ("sync", "average")
TRANSPORTS = ("float32", "float16", "bfloat16")
LR_SCHEDULES = ("constant", "cosine")
MAX_WORKERS = 1000


@dataclass(frozen=True)
class RunConfig:
    """A run's settings; stored with the run and with every checkpoint so a run describes itself."""

    workers: int  # N: worker invocations per round, one data shard each
    model: str = "vgg19_cifar"  # a key of lambdatrain.training.model.MODELS
    width: float = 1.0  # channel multiplier of the model (tests and CPU demos use 0.0625-0.125)
    epochs: int = 1  # stop after this many passes over the training split
    batch_size: int = 128  # samples per optimizer step, over all workers (the global batch)
    micro_batch: int = 64  # samples per forward/backward; batch-norm statistics are per micro-batch
    lr: float = 0.02  # SGD learning rate (the peak, under a schedule)
    lr_schedule: str = "constant"  # constant, or cosine: annealed to 0 over the run (combine.learning_rate)
    warmup_epochs: float = 0.0  # linear warm-up from lr/W to lr over the first W rounds, then the schedule
    momentum: float = 0.9  # SGD momentum (state kept on EFS beside the weights)
    weight_decay: float = 5e-4  # L2 penalty applied by the optimizer step
    seed: int = 0  # seeds the initial weights, shard permutations and augmentation
    target_accuracy: float | None = None  # stop once validation accuracy reaches this (0..1)
    patience: int | None = None  # stop after this many evaluations without a new best accuracy
    data: str | None = None  # prepared dataset folder, relative to the mount (None: the stack's)
    max_train_samples: int | None = None  # use only the first K training samples
    val_samples: int | None = None  # evaluate on the first K validation samples (None: all)
    augment: bool = True  # random crop + flip on training batches
    mode: str = "sync"  # sync: one optimizer step per round; average: local SGD, deltas averaged
    local_steps: int = 1  # average mode: optimizer steps each worker takes per round
    transport: str = "float32"  # dtype of worker results on EFS; sums stay float32
    combine_shards: int = 1  # S combiner invocations, each reducing one slice of the parameters
    checksum: str = "xxh3_128"  # algorithm of the EFS files' checksums (see lambdatrain/storage/digest.py)
    round_deadline_s: float = 960.0  # a round with no progress for this long is re-driven
    eval_every: int = 0  # also evaluate every K rounds (0: at epoch boundaries only)
    keep_rounds: int = 3  # weights kept on EFS: the newest K rounds' and every epoch's (0: all; retention.py)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> "RunConfig":
        """A run's config as stored (ledger item, config.json), possibly by an older version: a
        setting added since gets the value that keeps that run doing what it did when it started."""
        return cls(**{**STORED_BEFORE_SETTING_EXISTED, **stored})

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.workers


# Runs started before retention existed kept every file; resuming one must not start pruning it.
STORED_BEFORE_SETTING_EXISTED: dict[str, Any] = {"keep_rounds": 0}

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    f.name: (bool,) if f.type == "bool" else
    (int,) if f.type in ("int", "int | None") else
    (int, float) if f.type in ("float", "float | None") else (str,)
    for f in dataclasses.fields(RunConfig)
}
_OPTIONAL = {f.name for f in dataclasses.fields(RunConfig) if "None" in str(f.type)}


def _typed(event: Mapping[str, Any], key: str, types: tuple[type, ...], *, optional: bool) -> Any:
    value = event.get(key)
    if value is None:
        if optional:
            return None
        raise InvalidEvent(key, "is required")
    # bool is an int in Python; a setting that wants a number must not accept true/false.
    if isinstance(value, bool) and bool not in types:
        raise InvalidEvent(key, f"must be {_type_name(types)}, got a boolean")
    if not isinstance(value, types):
        raise InvalidEvent(key, f"must be {_type_name(types)}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvent(key, "must be a finite number")
    return value


def _type_name(types: tuple[type, ...]) -> str:
    return {(bool,): "a boolean", (int,): "an integer", (int, float): "a number"}.get(types, "a string")


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise InvalidEvent(key, problem)


def parse_config(event: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig from a start event (unknown keys are refused, not ignored)."""
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", "must be a JSON object")
    known = set(_FIELD_TYPES) | {"start"}
    for key in event:
        _require(key in known, str(key), "is not a known setting")
    merged = {**(defaults or {}), **{k: v for k, v in event.items() if k != "start"}}
    values = {}
    for name, types in _FIELD_TYPES.items():
        if name in merged:
            values[name] = _typed(merged, name, types, optional=name in _OPTIONAL)
    _require("workers" in values, "workers", "is required")
    config = RunConfig(**values)
    _check_ranges(config)
    return config


def _check_ranges(c: RunConfig) -> None:
    from lambdatrain.training.model import MODELS  # local import: keeps torch out of the parser's import

    # Upper bounds too: a value DynamoDB, torch or a day of Lambda time cannot hold is a typo.
    _require(1 <= c.workers <= MAX_WORKERS, "workers", f"must be between 1 and {MAX_WORKERS}")
    _require(c.model in MODELS, "model", f"unknown model, expected one of {sorted(MODELS)}")
    _require(1 / 64 <= c.width <= 4, "width", "must be in [1/64, 4]")
    _require(1 <= c.epochs <= 10_000, "epochs", "must be between 1 and 10000")
    _require(c.workers <= c.batch_size <= 1_000_000, "batch_size", "must be at least the number of workers "
                                                                   "and at most 1000000")
    _require(1 <= c.micro_batch <= 65_536, "micro_batch", "must be between 1 and 65536")
    _require(0 < c.lr <= 100, "lr", "must be in (0, 100]")
    _require(c.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {list(LR_SCHEDULES)}")
    _require(0 <= c.warmup_epochs <= c.epochs, "warmup_epochs", f"must be between 0 and epochs ({c.epochs})")
    _require(0 <= c.momentum < 1, "momentum", "must be in [0, 1)")
    _require(0 <= c.weight_decay <= 1, "weight_decay", "must be in [0, 1]")
    _require(0 <= c.seed < 2**32, "seed", "must be in [0, 2**32)")
    if c.target_accuracy is not None:
        _require(0 < c.target_accuracy <= 1, "target_accuracy", "must be in (0, 1]")
    if c.patience is not None:
        _require(1 <= c.patience <= 10_000, "patience", "must be between 1 and 10000")
    if c.data is not None:
        check_relative_path(c.data, "data")
    if c.max_train_samples is not None:
        _require(1 <= c.max_train_samples <= 10**9, "max_train_samples", "must be between 1 and 10**9")
    if c.val_samples is not None:
        _require(1 <= c.val_samples <= 10**9, "val_samples", "must be between 1 and 10**9")
    _require(c.mode in MODES, "mode", f"must be one of {list(MODES)}")
    _require(1 <= c.local_steps <= 10_000, "local_steps", "must be between 1 and 10000")
    _require(c.mode == "average" or c.local_steps == 1, "local_steps", "only applies to mode 'average'")
    _require(c.transport in TRANSPORTS, "transport", f"must be one of {list(TRANSPORTS)}")
    _require(c.checksum in CHECKSUMS, "checksum", f"must be one of {list(CHECKSUMS)}")
    _require(1 <= c.combine_shards <= 64, "combine_shards", "must be between 1 and 64")
    _require(0 < c.round_deadline_s <= 86_400, "round_deadline_s", "must be in (0, 86400]")
    _require(0 <= c.eval_every <= 10**6, "eval_every", "must be between 0 and 10**6")
    _require(0 <= c.keep_rounds <= 10**6, "keep_rounds", "must be between 0 (keep all) and 10**6")


def check_relative_path(value: str, key: str) -> str:
    """A path from an event must stay below the mount: relative, no '..', no empty parts."""
    parts = value.split("/")
    _require(bool(value) and not value.startswith("/"), key, "must be a relative path below the mount")
    _require(all(p not in ("", ".", "..") for p in parts), key, "must not contain '..', '.' or empty parts")
    _require(all(re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in parts), key, "has characters outside [A-Za-z0-9._-]")
    return value


def check_run_id(value: Any, key: str = "run") -> str:
    _require(isinstance(value, str), key, "must be a string")
    _require(bool(RUN_ID_PATTERN.match(value)), key, "must be 1-64 letters, digits, '-' or '_'")
    return value


@dataclass(frozen=True)
class WorkEvent:
    run: str
    round: int
    workerno: int
    workers: int
    epochsdone: int

    def to_event(self) -> dict[str, Any]:
        return {"workerno": self.workerno, "workers": self.workers, "epochsdone": self.epochsdone,
                "run": self.run, "round": self.round}


@dataclass(frozen=True)
class CombineEvent:
    run: str
    round: int
    workers: int
    epochsdone: int
    shard: int = 0  # which slice of the parameter vector this combiner reduces
    claim: str | None = None  # set on a sharded combine's share: the claim it works under

    def to_event(self) -> dict[str, Any]:
        event = {"combine": True, "workers": self.workers, "epochsdone": self.epochsdone,
                 "run": self.run, "round": self.round, "shard": self.shard}
        return event if self.claim is None else {**event, "claim": self.claim}


def _int_field(event: Mapping[str, Any], key: str, minimum: int) -> int:
    value = _typed(event, key, (int,), optional=False)
    _require(value >= minimum, key, f"must be at least {minimum}")
    return value


def only_keys(event: Mapping[str, Any], allowed: set[str]) -> None:
    for key in event:
        _require(key in allowed, str(key), "is not a known field of this event")


def parse_work(event: Mapping[str, Any]) -> WorkEvent:
    _require(isinstance(event, Mapping), "event", "must be a JSON object")
    only_keys(event, {"workerno", "workers", "epochsdone", "run", "round"})
    workers = _int_field(event, "workers", 1)
    workerno = _int_field(event, "workerno", 0)
    _require(workerno < workers, "workerno", "must be below workers")
    return WorkEvent(run=check_run_id(event.get("run")), round=_int_field(event, "round", 0),
                     workerno=workerno, workers=workers, epochsdone=_int_field(event, "epochsdone", 0))


def parse_combine(event: Mapping[str, Any]) -> CombineEvent:
    _require(isinstance(event, Mapping), "event", "must be a JSON object")
    only_keys(event, {"combine", "workers", "epochsdone", "run", "round", "shard", "claim"})
    _require(event.get("combine") is True, "combine", "must be true")
    shard = _int_field(event, "shard", 0) if "shard" in event else 0
    claim = event.get("claim")
    _require(claim is None or (isinstance(claim, str) and re.fullmatch(r"[0-9a-f]{32}", claim) is not None),
             "claim", "must be a claim token")
    return CombineEvent(run=check_run_id(event.get("run")), round=_int_field(event, "round", 0),
                        workers=_int_field(event, "workers", 1),
                        epochsdone=_int_field(event, "epochsdone", 0), shard=shard, claim=claim)


@dataclass(frozen=True)
class StreamTrigger:
    """A round that became ready, as read from one DynamoDB stream record."""

    run: str
    round: int


def _typed_attr(image: Mapping[str, Any], name: str, tag: str) -> Any:
    """One attribute of a stream image in DynamoDB's typed form ({"S": ...}), or None."""
    value = image.get(name)
    if value is None:
        return None
    _require(isinstance(value, Mapping), f"Records.dynamodb.NewImage.{name}", "must be a typed attribute")
    return value.get(tag)


def parse_stream_records(event: Mapping[str, Any]) -> list[StreamTrigger]:
    """Rounds made ready in a DynamoDB event source mapping batch, deduplicated, oldest first."""
    records = event.get("Records")
    _require(isinstance(records, list) and bool(records), "Records", "must be a non-empty list of stream records")
    triggers = set()
    for record in records:
        _require(isinstance(record, Mapping), "Records", "must hold stream records (objects)")
        dynamodb = record.get("dynamodb") or {}
        _require(isinstance(dynamodb, Mapping), "Records.dynamodb", "must be an object")
        image = dynamodb.get("NewImage") or {}
        _require(isinstance(image, Mapping), "Records.dynamodb.NewImage", "must be an object")
        if _typed_attr(image, "kind", "S") != "round" or _typed_attr(image, "status", "S") != "ready":
            continue
        run = check_run_id(_typed_attr(image, "run", "S"), "Records.dynamodb.NewImage.run")
        round_no = _typed_attr(image, "round", "N")
        _require(isinstance(round_no, str) and re.fullmatch(r"[0-9]{1,12}", round_no) is not None,
                 "Records.dynamodb.NewImage.round", "must be a non-negative number")
        triggers.add(StreamTrigger(run=run, round=int(round_no)))
    return sorted(triggers, key=lambda t: (t.run, t.round))


def event_kind(event: Any) -> str:
    """Which handler path an event takes; InvalidEvent when it is none of them."""
    _require(isinstance(event, Mapping), "event", "must be a JSON object")
    if "Records" in event:
        return "records"
    for key in ("start", "combine", "watchdog", "setup"):
        if key in event:
            _require(event[key] is True, key, "must be true")
            return key
    for key in ("stop", "resume"):
        if key in event:
            return key
    if "workerno" in event:
        return "work"
    raise InvalidEvent("event", "has none of the keys start, workerno, combine, stop, resume, watchdog, setup")


@dataclass(frozen=True)
class Outcome:
    """What a handler returns: a small JSON-able summary."""

    status: str
    run: str | None = None
    round: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.run is not None:
            out["run"] = self.run
        if self.round is not None:
            out["round"] = self.round
        out.update(self.detail)
        return out
