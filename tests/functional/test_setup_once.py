"""Setup exactly once on the local stack: concurrent deliveries, and a setup killed in mid-install.

The starter runs in its own processes (the local Lambda service), pip installs a tiny wheel from
an index on loopback (tests/functional/wheel_index.py) and the dataset comes from the stack's S3.
The index holds the wheel's download back on request, so a test catches setup inside ``pip
install`` deterministically: holding the lock, with its staging folder and pip's temporary files
in place.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from lambdatrain.cli.app import app
from lambdatrain.ledger.setup import DONE, SetupLedger
from lambdatrain.local.stack import LocalStack, LocalStackConfig
from lambdatrain.roles.settings import ENV_PACKAGES_INDEX, ENV_PACKAGES_LOCK, STARTER
from lambdatrain.roles.setup import DEFAULT_DATASET
from lambdatrain.roles.setup_steps import SCRATCH
from tests.datagen import make_cifar_python_tarball
from tests.functional.wheel_index import WheelIndex, build_wheel

pytestmark = pytest.mark.slow


@pytest.fixture
def index(tmp_path):
    served = WheelIndex(build_wheel(tmp_path))
    yield served
    served.close()


@pytest.fixture
def stack(tmp_path, index):
    lambda_tmp = tmp_path / "lambda-tmp"  # the starter's /tmp, where pip's temporary files go
    lambda_tmp.mkdir()
    env = {ENV_PACKAGES_INDEX: index.url, ENV_PACKAGES_LOCK: str(index.lock_file(tmp_path / "lock.txt")),
           "TMPDIR": str(lambda_tmp)}
    name = f"setup-{uuid.uuid4().hex[:8]}"  # moto keeps one set of tables and buckets per process
    config = LocalStackConfig(state_dir=tmp_path / "stack", extra_env=env, watchdog_interval_s=3600, table=name,
                              bucket=name)
    with LocalStack(config) as s:
        archive = make_cifar_python_tarball(tmp_path / "upload" / "cifar-10-python.tar.gz", n_train=40, n_test=10)
        boto3.client("s3", **s.client_kwargs).upload_file(str(archive), s.config.bucket, DEFAULT_DATASET)
        s.lambda_tmp = lambda_tmp
        yield s


def _book(stack: LocalStack) -> SetupLedger:
    return SetupLedger(stack.ledger().table, time.time)


def _leftovers(stack: LocalStack) -> list[str]:
    """Staging that a setup leaves only when it is killed: on the mount and in the starter's /tmp."""
    mount = stack.mount
    found = [p.name for p in (mount.glob(".python.*"))] + [p.name for p in (mount / "datasets").glob(".*")]
    found += [p.name for p in (mount / "tmp").glob("*")] if (mount / "tmp").exists() else []
    return found + [p.name for p in stack.lambda_tmp.glob(SCRATCH)]


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_starters(stack: LocalStack) -> int:
    """SIGKILL every live starter process with its children (pip): as Lambda ends a timed-out sandbox."""
    function = stack.service.function(STARTER)
    with function.lock:
        live = [env for env in function.all if env.alive]
    for env in live:
        os.killpg(env.proc.pid, signal.SIGKILL)  # each environment is its own session's leader
    return len(live)


def _ready_or_none(stack: LocalStack) -> dict | None:
    """A synchronous setup's answer if it is "ready"; None (after a second) while another holds the lock."""
    answer = stack.invoke(STARTER, {"setup": True})
    if answer["status"] == "ready":
        return answer
    assert answer["status"] == "noop" and "is running" in answer["reason"]
    time.sleep(1)
    return None


def _installed(stack: LocalStack) -> bool:
    return (stack.mount / "python" / "lt_probe" / "__init__.py").is_file()


def test_two_setups_at_once_one_installs_the_other_is_a_noop(stack, index):
    index.hold()  # the first pip download waits: whoever holds the lock holds it until released
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(stack.invoke(STARTER, {"setup": True})))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    _wait(lambda: len(answers) == 1, 120, "the second setup's answer")
    (noop,) = answers
    assert noop["status"] == "noop" and "is running" in noop["reason"]
    _wait(index.requested.is_set, 120, "the winner's pip to start downloading")
    assert index.downloads == 1 and not _installed(stack)  # the winner is inside pip
    index.released.set()
    for thread in threads:
        thread.join(180)
    ready = answers[1]
    assert ready["status"] == "ready" and ready["installed"] is True and ready["prepared"] is True
    assert (ready["train"], ready["val"]) == (40, 10)
    assert index.downloads == 1 and _installed(stack)
    record = _book(stack).read()
    assert (record.state, record.attempt, record.error) == (DONE, 1, None)
    assert record.steps["packages"]["versions"] == ["lt-probe==1.0"]
    assert _leftovers(stack) == []
    again = stack.invoke(STARTER, {"setup": True})  # done: a later setup does nothing twice
    assert (again["status"], again["installed"], again["prepared"]) == ("ready", False, False)
    assert index.downloads == 1


def test_setup_killed_mid_install_is_finished_by_the_next_with_nothing_stale(stack, index):
    index.hold()
    stack.service.function(STARTER).enqueue({"setup": True, "lease_s": 3})  # asynchronous, as setupCommand
    _wait(index.requested.is_set, 120, "pip to start downloading")
    stale = _leftovers(stack)
    assert any(name.startswith(".python.staging-") for name in stale) and SCRATCH in stale
    assert _kill_starters(stack) == 1
    index.released.set()
    # Lambda's retry (here after 1 s) finds the lease live and is a no-op, or finds it expired and
    # takes over; either way a later setup ends with everything done once.
    answer = _wait(lambda: _ready_or_none(stack), 120, "a setup to take the expired lock over")
    assert _installed(stack) and answer["train"] == 40
    record = _book(stack).read()
    assert record.state == DONE and record.attempt >= 2  # the killed attempt was taken over
    assert _leftovers(stack) == []
    assert record.steps["dataset"]["train"] == 40


def _setup_cli(stack: LocalStack, *args: str):
    """`lambdatrain setup` against this stack, in process (its output is not a terminal: a line per step)."""
    target = ["--endpoint", stack.moto_url, "--lambda-endpoint", stack.lambda_url,
              "--table", stack.config.table, "--bucket", stack.config.bucket, "--interval", "0.2"]
    return CliRunner().invoke(app, ["setup", *target, *args])


def test_lambdatrain_setup_follows_setup_to_the_end_and_exits_0(stack, index):
    result = _setup_cli(stack)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "packages: 1 pinned package installed" in lines
    assert "dataset: dataset prepared: 40 train, 10 validation images" in lines
    assert lines[-1] == "setup done (attempt 1): 1 package, dataset ready"
    again = _setup_cli(stack)  # everything done: the next attempt skips both steps
    assert again.exit_code == 0 and "packages: 1 pinned package already installed" in again.stdout
    assert index.downloads == 1


def test_lambdatrain_setup_that_fails_is_one_line_and_exit_1(stack, index):
    result = _setup_cli(stack, "--dataset", "datasets/missing.tar.gz")
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: setup failed: dataset archive s3://") and "missing.tar.gz not found" in line
    assert "Traceback" not in result.output
