"""The handlers' shared edge: pick the path for an event, map benign races to no-op answers.

``functions/<name>/handler.py`` are three-line adapters over these functions. Bad input raises
(``InvalidEvent``: Lambda reports it as a function error with the one-line message); a duplicate or
late delivery (``StaleRound``, ``AlreadyDone``, ``ClaimLost``) is answered as a no-op, because
raising would make Lambda retry an event whose work is already done.

The watchdog's path imports neither torch nor numpy (every role module that needs them is imported
inside its branch): it runs every few minutes from deployment on, before setup has installed them,
and a cold tick should not pay for loading torch from EFS.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

from lambdatrain.roles import recovery
from lambdatrain.protocol.errors import AlreadyDone, ClaimLost, InvalidEvent, StaleRound
from lambdatrain.logs import logger
from lambdatrain.protocol.events import (CombineEvent, Outcome, check_run_id, event_kind, only_keys, parse_combine,
                                  parse_stream_records)
from lambdatrain.roles.runtime import Deadline, Runtime, get
from lambdatrain.roles.settings import COMBINER, STARTER, WORKER


def _answer(fn: Callable[[], Outcome]) -> dict[str, Any]:
    try:
        outcome = fn()
    except (StaleRound, AlreadyDone, ClaimLost) as exc:
        outcome = Outcome("noop", detail={"reason": str(exc)})
    logger.info("handled", extra={"outcome": outcome.to_dict()})
    return outcome.to_dict()


def _start(runtime: Runtime, event: dict[str, Any], context: Any) -> Outcome:
    kind = event_kind(event)
    if kind == "start":
        from lambdatrain.roles import starter  # torch is imported here, after setup has installed it

        return starter.start(runtime, event, getattr(context, "aws_request_id", None))
    if kind in ("stop", "resume"):
        only_keys(event, {kind})
        run = check_run_id(event[kind], kind)
        return recovery.stop(runtime, run) if kind == "stop" else recovery.resume(runtime, run)
    if kind == "records":
        from lambdatrain.roles import starter

        records = starter.s3_records(event)
        outcomes = [starter.start_from_s3(runtime, r, _s3_reader()) for r in records]
        return Outcome("started", detail={"runs": [o.run for o in outcomes]})
    if kind == "setup":
        from lambdatrain.roles.setup import setup  # torch-free path: the packages may not exist yet

        return setup(runtime, event, time_left=Deadline(context))  # a step starts only with its budget left
    raise InvalidEvent("event", f"the starter does not take '{kind}' events")


def _s3_reader():
    import boto3

    s3 = boto3.client("s3")
    return lambda bucket, key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _combine(runtime: Runtime, event: dict[str, Any], context: Any) -> Outcome:
    kind = event_kind(event)
    if kind == "watchdog":
        only_keys(event, {"watchdog"})
        if not installed("numpy", "torch"):
            # Before setup nothing can run: an error here would be retried and dead-lettered on every tick.
            return Outcome("noop", detail={"reason": "torch and numpy are not installed yet (run setup)"})
        return recovery.watchdog(runtime)
    from lambdatrain.roles import combiner  # numpy and torch: the combine path only

    if kind == "records":
        outcomes = [combiner.claim_or_skip(runtime, CombineEvent(run=t.run, round=t.round, workers=0, epochsdone=0))
                    for t in parse_stream_records(event)]
        return Outcome("batch", detail={"rounds": [o.to_dict() for o in outcomes]})
    if kind == "combine":
        return combiner.claim_or_skip(runtime, parse_combine(event))
    raise InvalidEvent("event", f"the combiner does not take '{kind}' events")


def installed(*names: str) -> bool:
    """Whether every package in ``names`` can be imported, without importing any of them."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in names)
    except (ImportError, ValueError):  # a broken or half-installed package counts as missing
        return False


def _work(runtime: Runtime, event: dict[str, Any], context: Any) -> Outcome:
    from lambdatrain.roles import worker

    kind = event_kind(event)
    if kind != "work":
        raise InvalidEvent("event", f"the worker does not take '{kind}' events")
    return worker.work(runtime, event, time_left=Deadline(context))


def dispatch(runtime: Runtime, name: str, event: Any, context: Any = None) -> dict[str, Any]:
    """Serve one event as function ``name`` with an explicit runtime (tests build their own)."""
    route = {STARTER: _start, COMBINER: _combine, WORKER: _work}[name]
    logger.clear_state()  # a warm process must not carry the last invocation's run and round
    logger.set_correlation_id(getattr(context, "aws_request_id", None))
    return _answer(lambda: route(runtime, event, context))


def handle(name: str, event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point of function ``name``: the process's runtime, built once."""
    return dispatch(get(name), name, event, context)
