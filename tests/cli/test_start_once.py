"""`lambdatrain start` starts one run however often its invocation is retried.

The run id is made on the client, so a retry after a lost answer names the same run; timeouts,
throttling and 5xx are retried with backoff, anything else is one line at once.
"""

from __future__ import annotations

import json
import random
import re

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from lambdatrain.ops import control
from lambdatrain.ops.errors import StartUnanswered
from tests.cli.conftest import TINY, TINY_FLAGS, assert_one_line_error


class FlakyStarter:
    """A target whose starter fails with the given botocore errors first, then answers."""

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.events: list[dict] = []

    def invoke(self, event):
        self.events.append(event)
        if self.failures:
            raise self.failures.pop(0)
        return {"status": "started", "run": event["run"], "workers": event["workers"]}


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "Invoke")


def test_start_retries_timeouts_throttling_and_5xx_with_one_run_id():
    starter = FlakyStarter(ReadTimeoutError(endpoint_url="https://lambda"),
                           _client_error("TooManyRequestsException", 429), _client_error("ServiceException", 500))
    waits: list[float] = []
    answer = control.start(starter, TINY, sleep=waits.append, rng=random.Random(1))
    assert answer["status"] == "started" and len(starter.events) == 4
    assert all(e == starter.events[0] for e in starter.events)  # the same run id every time
    assert re.fullmatch(r"run-\d{8}-\d{6}-[0-9a-f]{6}", answer["run"])
    # Full jitter: each wait is at most the doubling cap of its attempt.
    assert len(waits) == 3 and all(0 <= w <= control.BACKOFF_BASE_S * 2 ** i for i, w in enumerate(waits))


def test_start_raises_other_errors_at_once_and_the_last_transient_one():
    refused = FlakyStarter(_client_error("ResourceNotFoundException", 404))
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        control.start(refused, TINY, sleep=lambda s: None)
    assert len(refused.events) == 1
    throttled = FlakyStarter(*[_client_error("TooManyRequestsException", 429)] * control.START_ATTEMPTS)
    with pytest.raises(StartUnanswered, match="TooManyRequestsException") as caught:
        control.start(throttled, TINY, sleep=lambda s: None)
    assert len(throttled.events) == control.START_ATTEMPTS
    # The run id the attempts carried is in the one line, so the user can look or retry as a no-op.
    run_id = throttled.events[0]["run"]
    assert f"lambdatrain status {run_id}" in str(caught.value) and f"--run {run_id}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_explicit_run_id_is_kept():
    starter = FlakyStarter()
    assert control.start(starter, TINY, run="mine-1")["run"] == "mine-1"


@pytest.mark.slow
def test_start_sent_again_with_its_run_id_is_one_run(cli, live):
    target = ["--local-state", live.state_dir]
    # 4 epochs (16 rounds): still running when the stop below arrives, three commands later.
    first = cli("start", *TINY_FLAGS, "--epochs", "4", *target)
    assert first.exit_code == 0, first.output
    run = re.search(r"run (run-\d{8}-\d{6}-[0-9a-f]{6}): started, 2 workers, 4 rounds per epoch", first.stdout).group(1)
    again = cli("start", *TINY_FLAGS, "--epochs", "4", "--run", run, *target)
    assert again.exit_code == 0, again.output
    assert re.search(rf"run {run}: (redriven|idle), 2 workers, 4 rounds per epoch", again.stdout), again.stdout
    other = cli("start", *TINY_FLAGS, "--epochs", "5", "--run", run, *target)
    assert_one_line_error(other, f"run {run} exists with other settings (epochs 5, not 4)")
    stopped = cli("stop", run, *target)  # the run itself is not this test's subject
    assert stopped.exit_code == 0, stopped.output
    listed = json.loads(cli("status", run, "--json", *target).stdout)
    assert listed["run"] == run and listed["state"] == "stopped"
