"""Starting, stopping and resuming runs: always through the deployed starter, as on AWS.

``start`` sends the paper's payload (``{"start": true, "workers": N, ...settings}``) to the starter
(RequestResponse), with a run id made here when none is given: the starter treats a start with a
run id it knows as a duplicate, so ``start`` retries a timed-out, throttled or failed (5xx)
invocation with backoff and never starts a second run. ``start --via-s3`` instead writes
``start/<run>.json`` into the stack's bucket, whose notification invokes the starter on AWS. moto
does not deliver bucket notifications to our local Lambda service, so against the local stack this
module hands the starter the very record S3 would send; the starter's code path is the same.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any, Callable, Mapping

from botocore.exceptions import ClientError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError

from lambdatrain.ops.errors import StartUnanswered
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


def new_run_id() -> str:
    """A run id made by the client, so every retry of its start names the same run (UTC time first,
    so ids sort by start time; random hex after, so two starts in one second differ)."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


# Lambda's Invoke answers 429 (TooManyRequestsException) before running the function, and 5xx
# (ServiceException, EC2/ENI/EFS errors) for transient service faults: docs.aws.amazon.com/lambda/
# latest/api/API_Invoke.html. Both are safe to retry; so is a timeout, because the run id is fixed.
START_ATTEMPTS = 5
BACKOFF_BASE_S, BACKOFF_CAP_S = 1.0, 20.0
_TIMEOUTS = (ReadTimeoutError, ConnectTimeoutError, ConnectionClosedError)


def retryable(exc: Exception) -> bool:
    if isinstance(exc, _TIMEOUTS):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status == 429 or status >= 500 or "Throttl" in str(exc.response.get("Error", {}).get("Code"))
    return False


def start(target: Target, settings: Mapping[str, Any], *, run: str | None = None,
          attempts: int = START_ATTEMPTS, sleep: Callable[[float], None] = time.sleep,
          rng: random.Random | None = None) -> dict[str, Any]:
    """Start a run; a retryable failure is retried with exponential backoff and full jitter
    (aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter), the same run id each time.
    Any other error, or the last attempt's, is raised (the CLI says it in one line)."""
    run_id = run if run is not None else new_run_id()
    event = start_event(settings, run_id)
    rng = rng or random.Random()
    for attempt in range(attempts):
        try:
            return target.invoke(event)
        except (*_TIMEOUTS, ClientError) as exc:
            if not retryable(exc):
                raise
            if attempt == attempts - 1:
                # The starter may have run: the id is what lets the user look, or retry as a no-op.
                raise StartUnanswered(f"run {run_id} got no answer in {attempts} attempts ({exc}); it may have "
                                      f"started: check `lambdatrain status {run_id}`, or retry the same start "
                                      f"with --run {run_id}") from exc
        sleep(rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt)))
    raise AssertionError("unreachable")  # the loop returns or raises


def s3_record(bucket: str, key: str) -> dict[str, Any]:
    """The part of an S3 ObjectCreated notification record that the starter reads."""
    return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def start_via_s3(target: Target, settings: Mapping[str, Any], *, run: str | None = None) -> dict[str, Any]:
    """Upload ``start/<run>.json``; returns the run id, the object's URL and (local) the starter's answer."""
    run = check_run_id(run) if run is not None else new_run_id()
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
