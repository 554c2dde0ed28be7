"""The real AWS CLI (awscli, pinned in requirements-dev.txt) against the local Lambda service.

It prints what it prints against Lambda: the invoke's StatusCode, ExecutedVersion and FunctionError,
the payload in the out file, Lambda's error codes; and it retries as it does against Lambda, so a
synchronous start whose answer outlives ``--cli-read-timeout`` reaches the starter more than once,
and the run id in the payload keeps that one run. The pinned CLI is version 1, which sends
``--payload`` as it is (version 2 needs ``--cli-binary-format raw-in-base64-out`` for the same).
The CLI only ever talks to 127.0.0.1, with dummy credentials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from lambdatrain.ledger.table import Ledger
from lambdatrain.local.environment import FunctionConfig
from lambdatrain.local.service import LambdaService
from tests.cli.conftest import TINY

REPO_ROOT = Path(__file__).resolve().parents[2]
AWS = Path(sys.executable).parent / "aws"
HANDLER = """\
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"got": event}
"""


@pytest.fixture
def aws(tmp_path):
    """Run ``aws --endpoint-url URL ARGS...``: dummy credentials, no config files, nothing but loopback."""
    assert AWS.exists(), f"the AWS CLI is missing: pip install -r requirements-dev.txt ({AWS})"
    home = tmp_path / "aws-home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_ACCESS_KEY_ID": "local",
           "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
           "AWS_EC2_METADATA_DISABLED": "true"}

    def run(url: str, *args, **extra_env: str) -> subprocess.CompletedProcess:
        assert url.startswith("http://127.0.0.1:"), url
        return subprocess.run([sys.executable, str(AWS), "--endpoint-url", url, *map(str, args)],
                              env={**env, **extra_env}, capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture
def service(tmp_path):
    fn_dir = tmp_path / "fn"
    fn_dir.mkdir()
    (fn_dir / "handler.py").write_text(HANDLER)
    svc = LambdaService([FunctionConfig("f", fn_dir / "handler.py", concurrency=1)],
                        {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}, tmp_path / "state")
    svc.url = svc.serve(0)
    yield svc
    svc.stop()


def _invoke(aws, url: str, out: Path, payload: dict, *options: str, **env: str) -> subprocess.CompletedProcess:
    return aws(url, "lambda", "invoke", "--function-name", "f", *options, "--payload", json.dumps(payload), out, **env)


def test_aws_cli_prints_what_lambda_answers(aws, service, tmp_path):
    ok = _invoke(aws, service.url, tmp_path / "ok.json", {"a": 1})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
    assert json.loads((tmp_path / "ok.json").read_text()) == {"got": {"a": 1}}

    failed = _invoke(aws, service.url, tmp_path / "failed.json", {"fail": True})
    assert failed.returncode == 0, failed.stderr  # a function error is the function's answer, not the API's
    assert json.loads(failed.stdout) == {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}
    assert json.loads((tmp_path / "failed.json").read_text())["errorMessage"] == "asked to fail"

    queued = _invoke(aws, service.url, tmp_path / "queued.json", {"a": 2}, "--invocation-type", "Event")
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout) == {"StatusCode": 202}

    missing = aws(service.url, "lambda", "invoke", "--function-name", "nope", tmp_path / "missing.json")
    assert missing.returncode == 255
    assert "An error occurred (ResourceNotFoundException) when calling the Invoke operation: Function not found: " \
           "arn:aws:lambda:us-east-1:000000000000:function:nope" in missing.stderr


def test_aws_cli_is_throttled_beyond_reserved_concurrency(aws, service, tmp_path):
    busy = threading.Thread(target=_invoke, args=(aws, service.url, tmp_path / "busy.json", {"sleep": 3}))
    busy.start()
    while service.function("f").invocations < 1:
        time.sleep(0.01)
    throttled = _invoke(aws, service.url, tmp_path / "throttled.json", {}, AWS_MAX_ATTEMPTS="1")
    busy.join()
    assert throttled.returncode == 255
    assert "An error occurred (TooManyRequestsException) when calling the Invoke operation " \
           "(reached max retries: 0): Rate Exceeded." in throttled.stderr


def _serve(state_dir: Path, data: Path, log: Path) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBDATRAIN_"))}
    proc = subprocess.Popen([sys.executable, "-m", "lambdatrain", "local", "serve", "--state-dir", str(state_dir),
                             "--port", "0", "--data", str(data)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    endpoints, deadline = state_dir / "endpoints.json", time.monotonic() + 120
    while not endpoints.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc, json.loads(endpoints.read_text())


def _api_calls(state_dir: Path, kind: str) -> list[dict]:
    lines = (state_dir / "logs" / "api.jsonl").read_text().splitlines()
    return [c for c in map(json.loads, lines) if c.get("function") == "starter" and c.get("type") == kind]


def _until_done(ledger: Ledger, n: int, timeout_s: float = 300) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = ledger.list_runs()
        if len(runs) >= n and all(r.state != "running" for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"runs did not finish: {[(r.run, r.state, r.round) for r in ledger.list_runs()]}")


@pytest.mark.slow
def test_aws_cli_starts_one_run_per_invoke_even_when_its_read_timeout_retries(aws, tmp_path, cli_data):
    state = tmp_path / "stack"
    proc, ends = _serve(state, cli_data, tmp_path / "serve.log")
    try:
        url = ends["lambda"]
        # Synchronous first, on a cold starter: its init (torch) outlasts the 1 s read timeout, so
        # the CLI gives up on each attempt and sends the same start again.
        sync = aws(url, "--cli-read-timeout", "1", "lambda", "invoke", "--function-name", "starter",
                   "--payload", json.dumps({"start": True, "run": "cli-sync", **TINY}), tmp_path / "sync.json")
        retried = _api_calls(state, "RequestResponse")
        assert len(retried) >= 2, (sync.stdout, sync.stderr)
        assert sync.returncode == 0 or "Read timeout" in sync.stderr or "TooManyRequests" in sync.stderr, sync.stderr

        queued = aws(url, "lambda", "invoke", "--function-name", "starter", "--invocation-type", "Event",
                     "--payload", json.dumps({"start": True, **TINY}), tmp_path / "event.json")
        assert queued.returncode == 0, queued.stderr
        assert json.loads(queued.stdout) == {"StatusCode": 202}
        assert len(_api_calls(state, "Event")) == 1

        resource = boto3.resource("dynamodb", endpoint_url=ends["dynamodb"], region_name="us-east-1",
                                  aws_access_key_id="local", aws_secret_access_key="local")
        runs = _until_done(Ledger(ends["table"], resource=resource), 2)
        started = [json.loads(line) for line in (state / "logs" / "starter.log").read_text().splitlines()
                   if '"run started"' in line]
    finally:
        proc.send_signal(signal.SIGTERM)  # local serve stops its stack and every sandbox on it
        proc.wait(60)
    assert len(runs) == 2 and "cli-sync" in {r.run for r in runs}, [r.run for r in runs]
    assert all(r.state == "done" for r in runs), [(r.run, r.state) for r in runs]
    assert sorted(s["run"] for s in started) == sorted(r.run for r in runs)  # one start each, retries or not
