"""The fan-out is concurrent, complete and loud: every worker invoked exactly once, many at a time,
and a failed invocation raised after the others were made, then re-driven without duplicates."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from lambdatrain.roles.runtime import invoke_all
from lambdatrain.roles.settings import STARTER, WORKER
from lambdatrain.storage import efs
from tests.harness import FakeContext

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 16, "max_train_samples": 64,
         "val_samples": 16, "epochs": 1, "augment": False, "seed": 3}
THROTTLED = ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}, "Invoke")


class SleepingInvoker:
    """An invocation that takes ``latency`` seconds, as an accepted asynchronous Invoke does; records overlap."""

    def __init__(self, latency: float, fail: set[int] = frozenset()):
        self.latency, self.fail = latency, fail
        self.lock = threading.Lock()
        self.calls: list[int] = []
        self.in_flight = self.max_in_flight = 0

    def invoke(self, logical: str, payload: dict) -> None:
        with self.lock:
            self.calls.append(payload["workerno"])
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.latency)
        with self.lock:
            self.in_flight -= 1
        if payload["workerno"] in self.fail:
            raise THROTTLED


def _payloads(n: int) -> list[dict]:
    return [{"workerno": w} for w in range(n)]


def test_every_worker_is_invoked_exactly_once_many_at_a_time():
    invoker = SleepingInvoker(latency=0.02)
    t0 = time.perf_counter()
    invoke_all(invoker, WORKER, _payloads(64), pool=16)
    elapsed = time.perf_counter() - t0
    assert sorted(invoker.calls) == list(range(64))
    assert 1 < invoker.max_in_flight <= 16
    assert elapsed < 64 * 0.02 / 2, f"{elapsed:.2f} s: the invocations did not overlap"


def test_a_failed_invocation_is_raised_after_every_other_was_made():
    invoker = SleepingInvoker(latency=0.005, fail={3, 40})
    with pytest.raises(ClientError, match="TooManyRequests"):
        invoke_all(invoker, WORKER, _payloads(48), pool=8)
    assert sorted(invoker.calls) == list(range(48))


class FailOnce:
    """The system's invoker, except that worker ``workerno``'s first invocation is throttled for good."""

    def __init__(self, inner, workerno: int):
        self.inner, self.workerno, self.failed = inner, workerno, False

    def invoke(self, logical: str, payload: dict) -> None:
        if payload.get("workerno") == self.workerno and not self.failed:
            self.failed = True
            raise THROTTLED
        self.inner.invoke(logical, payload)


def _final(system, run: str) -> np.ndarray:
    record = system.ledger.get_run(run)
    return efs.read_array(efs.RunLayout(system.mount, run).weights(record.round), record.weights)


def test_a_failed_start_fan_out_is_retried_without_duplicates_and_trains_the_same(system):
    clean = system.invoke(STARTER, {"start": True, "workers": 4, "run": "clean", **SMALL})["run"]
    system.run_to_end(clean)

    system.runtimes[STARTER].invoker = FailOnce(system.invoker, workerno=2)
    start = {"start": True, "workers": 4, "run": "throttled", **SMALL}
    with pytest.raises(ClientError):  # the start fails: Lambda retries it, with the same event
        system.invoke(STARTER, start, FakeContext("start-1"))
    assert sorted(e["workerno"] for name, e in system.invoker.sent if e.get("run") == "throttled") == [0, 1, 3]
    system.drain()  # the three invoked workers record; the round waits for worker 2
    before = len(system.invoker.sent)
    retried = system.invoke(STARTER, start, FakeContext("start-1"))
    assert retried["status"] == "redriven"
    assert [e["workerno"] for name, e in system.invoker.sent[before:]] == [2]  # only the one not recorded

    system.run_to_end("throttled")
    results = system.ledger.results("throttled", 0)
    assert [r.worker for r in results] == [0, 1, 2, 3]
    assert np.array_equal(_final(system, "throttled"), _final(system, clean))
