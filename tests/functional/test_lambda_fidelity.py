"""The local Lambda service fails the way Lambda fails, seen through boto3.

Reserved concurrency throttles (429 to a synchronous Invoke, a queued retry with backoff to an
asynchronous event), a slow init is run again inside the first invocation, and every answer of
the Invoke API parses into what boto3 returns against AWS. A tiny handler with no torch keeps
each test to a second or two.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lambdatrain.local.environment import Environment, FunctionConfig
from lambdatrain.local.errors import InvocationError
from lambdatrain.local.service import LambdaService
from lambdatrain.protocol.limits import ASYNC_PAYLOAD_MAX_BYTES

REPO_ROOT = Path(__file__).resolve().parents[2]

# Sleeps event["sleep"] s, appends event["mark"] to calls.txt, fails on event["fail"]; its import
# sleeps INIT_SLEEP s (0 unless the file says otherwise) and appends "init" to inits.txt.
HANDLER = """\
import json, os, time
HERE = os.path.dirname(os.path.abspath(__file__))
time.sleep({init_sleep})
open(os.path.join(HERE, "inits.txt"), "a").write("init\\n")

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if "mark" in event:
        open(os.path.join(HERE, "calls.txt"), "a").write(json.dumps(event["mark"]) + "\\n")
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("none"):
        return None
    return {{"request_id": context.aws_request_id, "event": event}}
"""


def _function(tmp_path: Path, init_sleep: float = 0.0, **config) -> FunctionConfig:
    folder = tmp_path / "fn"
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(HANDLER.format(init_sleep=init_sleep))
    return FunctionConfig("f", folder / "handler.py", **config)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def serve(tmp_path):
    """A service of one function ``f`` on 127.0.0.1 and a boto3 Lambda client for it."""
    services = []

    def start(fn: FunctionConfig, retries: int = 3):
        service = LambdaService([fn], {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}, tmp_path / "state")
        services.append(service)
        client = boto3.client("lambda", endpoint_url=service.serve(0), region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local",
                              config=Config(retries={"total_max_attempts": retries, "mode": "standard"},
                                            read_timeout=60))
        return service, client

    yield start
    for service in services:
        service.stop()


def _invoke(client, **kwargs) -> dict:
    kwargs.setdefault("FunctionName", "f")
    if "Payload" in kwargs and not isinstance(kwargs["Payload"], (bytes, str)):
        kwargs["Payload"] = json.dumps(kwargs["Payload"])
    return client.invoke(**kwargs)


def test_sync_invoke_beyond_reserved_concurrency_is_throttled_with_429(tmp_path, serve):
    service, client = serve(_function(tmp_path, concurrency=1), retries=1)
    busy = threading.Thread(target=_invoke, args=(client,), kwargs={"Payload": {"sleep": 2}})
    busy.start()
    while service.function("f").invocations < 1:
        time.sleep(0.01)
    with pytest.raises(ClientError) as caught:
        _invoke(client, Payload={})
    busy.join()
    error = caught.value.response
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert service.function("f").invocations == 1  # refused before it ran, as Lambda refuses it


def test_throttled_sync_invoke_is_retried_by_boto3_and_then_runs(tmp_path, serve):
    service, client = serve(_function(tmp_path, concurrency=1), retries=5)
    _invoke(client, Payload={})  # warm: the second call's wait is the first call's sleep only
    busy = threading.Thread(target=_invoke, args=(client,), kwargs={"Payload": {"sleep": 0.5}})
    busy.start()
    while service.function("f").invocations < 2:
        time.sleep(0.01)
    answer = _invoke(client, Payload={"mark": "after"})
    busy.join()
    assert answer["StatusCode"] == 200
    assert answer["ResponseMetadata"]["RetryAttempts"] >= 1  # botocore saw the 429 and retried
    assert service.api_calls["f"] >= 4  # warm-up, busy, the throttled try and the retry that ran


def test_async_events_beyond_concurrency_are_retried_with_backoff_never_dropped(tmp_path, serve):
    service, client = serve(_function(tmp_path, concurrency=1))
    for i in range(4):
        assert _invoke(client, InvocationType="Event", Payload={"sleep": 0.3, "mark": i})["StatusCode"] == 202
    calls = tmp_path / "fn" / "calls.txt"
    deadline = time.monotonic() + 60
    while len(_lines(calls)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(json.loads(line) for line in _lines(calls)) == [0, 1, 2, 3]
    assert service.function("f").throttles >= 3  # each waiting event found the slot busy at least once
    assert service.dead_letters("f") == []


def test_a_throttled_async_event_past_its_max_age_goes_to_the_dead_letter_file(tmp_path, serve):
    service, client = serve(_function(tmp_path, concurrency=1, max_event_age_s=0.5))
    _invoke(client, InvocationType="Event", Payload={"sleep": 3, "mark": "long"})
    _invoke(client, InvocationType="Event", Payload={"mark": "starved"})
    deadline = time.monotonic() + 30
    while not service.dead_letters("f") and time.monotonic() < deadline:
        time.sleep(0.05)
    [letter] = service.dead_letters("f")
    assert letter["event"] == {"mark": "starved"}
    assert letter["error"]["errorType"] == "EventAgeExceeded"


def test_an_init_over_its_limit_runs_again_inside_the_first_invocation(tmp_path):
    fn = _function(tmp_path, init_sleep=1.0, init_timeout_s=0.3, timeout_s=30)
    env = Environment(fn, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}, tmp_path / "logs")
    try:
        assert env.inits == 2 and not env.ready  # the first init was cut off and started again
        assert env.invoke({}, "r1")["request_id"] == "r1"
        assert env.ready and _lines(tmp_path / "fn" / "inits.txt") == ["init"]  # only the second finished
    finally:
        env.kill()


def test_an_init_that_outlasts_the_function_timeout_times_the_invocation_out(tmp_path):
    fn = _function(tmp_path, init_sleep=5.0, init_timeout_s=0.3, timeout_s=1.0)
    env = Environment(fn, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}, tmp_path / "logs")
    with pytest.raises(InvocationError) as caught:
        env.invoke({}, "r1")
    assert caught.value.document == {"errorMessage": "Task timed out after 1.00 seconds", "errorType": "TimeoutError"}
    assert not env.alive


def test_a_prewarmed_environment_has_provisioned_concurrencys_longer_init(tmp_path, serve):
    service, client = serve(_function(tmp_path, init_sleep=1.0, init_timeout_s=0.3, concurrency=1))
    service.function("f").prewarm(1)
    assert _invoke(client, Payload={})["StatusCode"] == 200
    [env] = service.function("f").all
    assert env.inits == 1


def test_an_environment_killed_while_idle_leaves_the_pool(tmp_path, serve):
    # A pool that kept counting it would prewarm one environment too few.
    service, client = serve(_function(tmp_path))
    fn = service.function("f")
    assert _invoke(client, Payload={})["StatusCode"] == 200
    [dead] = fn.all
    dead.proc.kill()
    dead.proc.wait()
    assert _invoke(client, Payload={})["StatusCode"] == 200
    [live] = fn.all
    assert live is not dead and live.alive


def test_the_invoke_api_answers_as_lambda_does(tmp_path, serve):
    service, client = serve(_function(tmp_path), retries=1)
    ok = _invoke(client, Payload={"x": 1})
    body = json.loads(ok["Payload"].read())
    assert (ok["StatusCode"], ok["ExecutedVersion"], "FunctionError" in ok) == (200, "$LATEST", False)
    assert body == {"request_id": ok["ResponseMetadata"]["RequestId"], "event": {"x": 1}}  # one id, both sides

    failed = _invoke(client, Payload={"fail": True})
    assert (failed["StatusCode"], failed["FunctionError"]) == (200, "Unhandled")
    assert json.loads(failed["Payload"].read())["errorType"] == "ValueError"

    assert _invoke(client, Payload={"none": True})["Payload"].read() == b"null"
    event = _invoke(client, InvocationType="Event", Payload={"mark": "queued"})
    assert (event["StatusCode"], event["Payload"].read()) == (202, b"")
    assert _invoke(client, InvocationType="DryRun")["StatusCode"] == 204
    assert _invoke(client, FunctionName="arn:aws:lambda:us-east-1:000000000000:function:f", Qualifier="$LATEST",
                   Payload={})["StatusCode"] == 200

    for kwargs, code in [({"FunctionName": "nope"}, "ResourceNotFoundException"),
                         ({"Qualifier": "7"}, "ResourceNotFoundException"),
                         ({"Payload": b"{not json"}, "InvalidRequestContentException"),
                         ({"InvocationType": "Event", "Payload": b"[" + b"0," * ASYNC_PAYLOAD_MAX_BYTES + b"0]"},
                          "RequestTooLargeException")]:
        with pytest.raises(ClientError) as caught:
            _invoke(client, **kwargs)
        assert caught.value.response["Error"]["Code"] == code, kwargs
    logged = [json.loads(line) for line in _lines(tmp_path / "state" / "logs" / "api.jsonl")]
    assert {line["status"] for line in logged if "status" in line} == {200, 202, 204, 400, 404, 413}
