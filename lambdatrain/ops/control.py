"""Starting, stopping and resuming runs: always through the deployed starter, as on AWS.

``start`` sends the paper's payload (``{"start": true, "workers": N, ...settings}``) to the starter
(RequestResponse). ``start --via-s3`` instead writes ``start/<run>.json`` into the stack's bucket,
whose notification invokes the starter on AWS. moto does not deliver bucket notifications to our
local Lambda service, so against the local stack this module hands the starter the very record S3
would send; the starter's code path is the same either way.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Mapping

from lambdatrain.ops.target import Target
from lambdatrain.protocol.config import parse_config
from lambdatrain.protocol.events import check_run_id
from lambdatrain.roles.settings import START_PREFIX, START_SUFFIX


def start_event(settings: Mapping[str, Any], run: str | None) -> dict[str, Any]:
    """The start payload; bad settings raise InvalidEvent here, before anything is sent."""
    parse_config(settings)
    event: dict[str, Any] = {"start": True, **settings}
    if run is not None:
        event["run"] = check_run_id(run)
    return event


def start(target: Target, settings: Mapping[str, Any], *, run: str | None = None) -> dict[str, Any]:
    return target.invoke(start_event(settings, run))


def s3_record(bucket: str, key: str) -> dict[str, Any]:
    """The part of an S3 ObjectCreated notification record that the starter reads."""
    return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def start_via_s3(target: Target, settings: Mapping[str, Any], *, run: str | None = None) -> dict[str, Any]:
    """Upload ``start/<run>.json``; returns the run id, the object's URL and (local) the starter's answer."""
    run = check_run_id(run) if run is not None else f"run-{uuid.uuid4().hex[:12]}"
    event = start_event(settings, None)  # the file's name is the run id (see starter.start_from_s3)
    bucket, key = target.name("bucket"), f"{START_PREFIX}{run}{START_SUFFIX}"
    target.s3().put_object(Bucket=bucket, Key=key, Body=json.dumps(event).encode(), ContentType="application/json")
    result: dict[str, Any] = {"run": run, "object": f"s3://{bucket}/{key}"}
    if target.local:
        result["answer"] = target.invoke({"Records": [s3_record(bucket, key)]})
    return result


def stop(target: Target, run: str) -> dict[str, Any]:
    return target.invoke({"stop": check_run_id(run)})


def resume(target: Target, run: str) -> dict[str, Any]:
    return target.invoke({"resume": check_run_id(run)})
