"""lambdatrain.ops.setup: following setup in the ledger, against moto's in-process DynamoDB and a fake clock."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from lambdatrain.ledger.schema import create_table_kwargs
from lambdatrain.ledger.setup import DONE, SetupLedger
from lambdatrain.ops.setup import START_WAIT_S, SetupFailed, SetupTimeout, run_setup, setup_event, step_line
from lambdatrain.protocol.errors import InvalidEvent


class FakeTarget:
    """A stack whose starter runs ``script`` (one callable per poll) instead of a real setup."""

    def __init__(self, table, script=()):
        self.table, self.script, self.sent = table, list(script), []

    def ledger(self):
        return type("L", (), {"table": self.table})()

    def enqueue(self, payload):
        self.sent.append(payload)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        resource = boto3.resource("dynamodb")
        resource.create_table(**create_table_kwargs("t"))
        yield resource.Table("t")


def _follow(target: FakeTarget, **kwargs):
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds
        if target.script:
            target.script.pop(0)()

    return run_setup(target, setup_event(), interval=1.0, clock=clock, sleep=sleep, **kwargs)


def test_follows_the_attempt_its_event_started_to_the_end(table):
    book = SetupLedger(table, lambda: 1.0)
    book.acquire("old", 60)
    book.finish("old")  # an earlier setup, done: its record is not the answer
    target = FakeTarget(table, [lambda: book.acquire("new", 60), lambda: None, lambda: book.finish("new")])
    record = _follow(target)
    assert (record.owner, record.attempt, record.state) == ("new", 2, DONE)
    assert target.sent == [{"setup": True}]


def test_a_setup_already_running_is_followed_instead(table):
    book = SetupLedger(table, lambda: 1.0)
    book.acquire("running", 60)  # our event will be a no-op: that setup's end is ours
    record = _follow(FakeTarget(table, [lambda: None, lambda: book.finish("running")]))
    assert (record.owner, record.attempt, record.state) == ("running", 1, DONE)


def test_a_failed_setup_is_one_line(table):
    book = SetupLedger(table, lambda: 1.0)
    target = FakeTarget(table, [lambda: book.acquire("a", 60), lambda: book.finish("a", error="pip cannot run")])
    with pytest.raises(SetupFailed, match="^setup failed: pip cannot run$"):
        _follow(target)


def test_no_setup_starting_ends_the_wait_with_where_to_look(table):
    with pytest.raises(SetupTimeout, match=f"no setup started within {START_WAIT_S:.0f} s.*starter's log"):
        _follow(FakeTarget(table))


def test_a_setup_that_does_not_end_in_time_is_a_timeout(table):
    book = SetupLedger(table, lambda: 1.0)
    with pytest.raises(SetupTimeout, match="did not end within 30 s"):
        _follow(FakeTarget(table, [lambda: book.acquire("slow", 900)]), timeout=30.0)


def test_bad_fields_are_refused_before_the_event_is_sent():
    with pytest.raises(InvalidEvent) as info:
        setup_event(val_fraction=1.5)
    assert info.value.field == "val_fraction"


def test_step_lines_say_what_each_step_did():
    assert step_line("sweep", {"removed": [".python.staging-1"]}) == "swept what a stopped setup left: .python.staging-1"
    assert step_line("packages", {"installed": False, "versions": ["a==1", "b==2"]}) == "2 pinned packages already installed"
    assert step_line("dataset", {"prepared": True, "train": 4, "val": 2}) == "dataset prepared: 4 train, 2 validation images"


def test_the_setup_bar_starts_with_its_first_update_so_an_early_error_leaves_no_live_display():
    import io

    from rich.console import Console

    from lambdatrain.ops.setup import SetupDisplay

    display = SetupDisplay(Console(file=io.StringIO(), force_terminal=True))
    assert not display.progress.live.is_started  # e.g. no table name: the error prints, the cursor stays
    display.update(None)
    assert display.progress.live.is_started
    display.stop()
    assert not display.progress.live.is_started
