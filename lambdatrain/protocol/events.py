"""Event schemas of the round protocol: start, work, combine, control; validation and parsing.

Every event is validated here before any side effect, and every problem raises ``InvalidEvent``
naming the field. The paper's keys (``start``, ``workers``, ``workerno``, ``epochsdone``,
``combine``) are kept as they are; the rest are ours.

- start:   ``{"start": true, "workers": 6, ...settings}`` (the settings: lambdatrain/protocol/config.py)
- work:    ``{"workerno": 3, "workers": 6, "epochsdone": 7, "run": ID, "round": R}``
- combine: ``{"combine": true, "workers": 6, "epochsdone": 7, "run": ID, "round": R}``
- control: ``{"stop": ID}``, ``{"resume": ID}``, ``{"watchdog": true}``, ``{"setup": true}``
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from lambdatrain.protocol.errors import InvalidEvent

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def typed(event: Mapping[str, Any], key: str, types: tuple[type, ...], *, optional: bool) -> Any:
    """``event[key]`` if it is of one of ``types``; InvalidEvent naming ``key`` otherwise."""
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


def require(condition: bool, key: str, problem: str) -> None:
    """InvalidEvent naming ``key`` unless ``condition``: the one way an event's field is refused."""
    if not condition:
        raise InvalidEvent(key, problem)


def check_relative_path(value: str, key: str) -> str:
    """A path from an event must stay below the mount: relative, no '..', no empty parts."""
    parts = value.split("/")
    require(bool(value) and not value.startswith("/"), key, "must be a relative path below the mount")
    require(all(p not in ("", ".", "..") for p in parts), key, "must not contain '..', '.' or empty parts")
    require(all(re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in parts), key, "has characters outside [A-Za-z0-9._-]")
    return value


def check_run_id(value: Any, key: str = "run") -> str:
    require(isinstance(value, str), key, "must be a string")
    require(bool(RUN_ID_PATTERN.match(value)), key, "must be 1-64 letters, digits, '-' or '_'")
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
    value = typed(event, key, (int,), optional=False)
    require(value >= minimum, key, f"must be at least {minimum}")
    return value


def only_keys(event: Mapping[str, Any], allowed: set[str]) -> None:
    for key in event:
        require(key in allowed, str(key), "is not a known field of this event")


def parse_work(event: Mapping[str, Any]) -> WorkEvent:
    require(isinstance(event, Mapping), "event", "must be a JSON object")
    only_keys(event, {"workerno", "workers", "epochsdone", "run", "round"})
    workers = _int_field(event, "workers", 1)
    workerno = _int_field(event, "workerno", 0)
    require(workerno < workers, "workerno", "must be below workers")
    return WorkEvent(run=check_run_id(event.get("run")), round=_int_field(event, "round", 0),
                     workerno=workerno, workers=workers, epochsdone=_int_field(event, "epochsdone", 0))


def parse_combine(event: Mapping[str, Any]) -> CombineEvent:
    require(isinstance(event, Mapping), "event", "must be a JSON object")
    only_keys(event, {"combine", "workers", "epochsdone", "run", "round", "shard", "claim"})
    require(event.get("combine") is True, "combine", "must be true")
    shard = _int_field(event, "shard", 0) if "shard" in event else 0
    claim = event.get("claim")
    require(claim is None or (isinstance(claim, str) and re.fullmatch(r"[0-9a-f]{32}", claim) is not None),
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
    require(isinstance(value, Mapping), f"Records.dynamodb.NewImage.{name}", "must be a typed attribute")
    return value.get(tag)


def parse_stream_records(event: Mapping[str, Any]) -> list[StreamTrigger]:
    """Rounds made ready in a DynamoDB event source mapping batch, deduplicated, oldest first."""
    records = event.get("Records")
    require(isinstance(records, list) and bool(records), "Records", "must be a non-empty list of stream records")
    triggers = set()
    for record in records:
        require(isinstance(record, Mapping), "Records", "must hold stream records (objects)")
        dynamodb = record.get("dynamodb") or {}
        require(isinstance(dynamodb, Mapping), "Records.dynamodb", "must be an object")
        image = dynamodb.get("NewImage") or {}
        require(isinstance(image, Mapping), "Records.dynamodb.NewImage", "must be an object")
        if _typed_attr(image, "kind", "S") != "round" or _typed_attr(image, "status", "S") != "ready":
            continue
        run = check_run_id(_typed_attr(image, "run", "S"), "Records.dynamodb.NewImage.run")
        round_no = _typed_attr(image, "round", "N")
        require(isinstance(round_no, str) and re.fullmatch(r"[0-9]{1,12}", round_no) is not None,
                 "Records.dynamodb.NewImage.round", "must be a non-negative number")
        triggers.add(StreamTrigger(run=run, round=int(round_no)))
    return sorted(triggers, key=lambda t: (t.run, t.round))


def event_kind(event: Any) -> str:
    """Which handler path an event takes; InvalidEvent when it is none of them."""
    require(isinstance(event, Mapping), "event", "must be a JSON object")
    if "Records" in event:
        return "records"
    for key in ("start", "combine", "watchdog", "setup"):
        if key in event:
            require(event[key] is True, key, "must be true")
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
