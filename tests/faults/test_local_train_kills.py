"""`local train` under real SIGKILLs of the local stack's processes, the starter's included.

The starter is stopped at each of its side effects (a ``:hang`` fault point parks it there) and
SIGKILLed by the test; the random test SIGKILLs any of the stack's processes at seeded random
moments. Each run must end with the weights of the in-process fault-free run, bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from lambdatrain.local.environment import Environment, FunctionConfig
from lambdatrain.local.errors import InvocationError
from lambdatrain.local.stack import LocalStackConfig
from lambdatrain.ops.local_train import TrainRequest, train
from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.roles import settings as names
from lambdatrain.roles.faults import POINTS
from lambdatrain.storage import efs
from tests.faults.conftest import SETTINGS
from tests.faults.processes import function_of, kill, sandboxes, stack_report

pytestmark = pytest.mark.slow
FAST_RECOVERY = {**SETTINGS, "round_deadline_s": 8.0}  # as test_local_stack_faults: one shared reference


def _final_weights(out: Path, summary: dict) -> np.ndarray:
    path = efs.RunLayout(out / "stack" / "efs", summary["run_id"]).weights(summary["rounds"])
    return efs.read_array(path, efs.read_digest(path))


def _request(tmp_path: Path, data: Path, **stack) -> TrainRequest:
    config = LocalStackConfig(state_dir=tmp_path / "out" / "stack", table=f"t-{uuid.uuid4().hex[:8]}",
                              bucket=f"b-{uuid.uuid4().hex[:8]}", watchdog_interval_s=1,
                              retry_delays_s=(0.5, 1.0), **stack)
    return TrainRequest(data=data, out=tmp_path / "out", settings=dict(FAST_RECOVERY), stack=config,
                        timeout_s=240, poll_s=0.2)


def test_dead_idle_environment_is_a_runtime_exit(tmp_path):
    # Killed between invocations, after the pool's liveness check: the write to it breaks.
    handler = tmp_path / "handler.py"
    handler.write_text("def handler(event, context):\n    return event\n")
    env = Environment(FunctionConfig("echo", handler, timeout_s=30), dict(os.environ), tmp_path / "logs")
    assert env.invoke({"x": 1}, "r1") == {"x": 1}
    env.proc.kill()
    env.proc.wait()
    with pytest.raises(InvocationError, match="Runtime exited"):
        env.invoke({"x": 2}, "r2")


def _park_and_kill(request: TrainRequest, points: tuple[str, ...], killed: list[str], stop: threading.Event) -> None:
    """Arm ``points`` as hangs; a thread SIGKILLs the starter parked at each, once reached."""
    request.stack.faults = ",".join(f"starter:{p}:1:hang" for p in points)
    request.start_attempts += len(points)  # the parked deaths on top of what a real death may need
    mount = request.out / "stack" / "efs"

    def killer() -> None:
        while len(killed) < len(points) and not stop.wait(0.05):
            for point in points:
                if point not in killed and (mount / ".faults" / f"starter.{point}.1").exists():
                    if kill(sandboxes(mount, names.STARTER)):
                        killed.append(point)

    threading.Thread(target=killer, daemon=True).start()


def test_local_train_survives_the_starter_killed_after_each_side_effect(tmp_path, tiny_dataset, reference):
    # After the run exists a re-sent start is a duplicate and stops there: "workers invoked", the
    # fifth side effect, is killed in the random test below, on its own run.
    expected = reference(FAST_RECOVERY)
    request, killed, stop = _request(tmp_path, tiny_dataset), [], threading.Event()
    points = ("after_data", "after_config", "after_weights", "after_create")
    assert set(points) | {"after_fan_out"} == set(POINTS["starter"])
    _park_and_kill(request, points, killed, stop)
    try:
        summary = train(request)
    finally:
        stop.set()
    assert killed == list(points)
    assert summary["state"] == "done" and summary["rounds"] == 6
    assert np.array_equal(_final_weights(request.out, summary), expected)


def test_local_train_rides_out_workers_dead_lettered_by_their_process_dying(tmp_path, tiny_dataset, reference):
    # Both round-0 workers exit hard on each of Lambda's three attempts (the first 6 passes of
    # before_write), so both events go to the dead letters; the watchdog re-drives them once the round
    # is idle for round_deadline_s, long enough here (40 s) that the three attempts are over first
    # (13 s on 2 loaded cores); it ticks every 5 s, so its re-drives do not pile up cold starts.
    settings = {**SETTINGS, "round_deadline_s": 40.0}
    expected = reference(settings)
    faults = ",".join(f"worker:before_write:{n}" for n in range(1, 7))
    request = _request(tmp_path, tiny_dataset, faults=faults)
    request.settings, request.stack.watchdog_interval_s = dict(settings), 5
    summary = train(request)
    letters = request.stack.state_dir / "dlq" / "worker.jsonl"
    died = [json.loads(line) for line in letters.read_text().splitlines()]
    assert sorted((d["event"]["round"], d["event"]["workerno"]) for d in died) == [(0, 0), (0, 1)]
    assert {d["error"]["errorType"] for d in died} == {"Runtime.ExitError"}
    assert summary["state"] == "done" and summary["rounds"] == 6
    assert np.array_equal(_final_weights(request.out, summary), expected)


def test_local_train_survives_random_sigkills_of_its_processes(tmp_path, tiny_dataset, reference):
    """The starter SIGKILLed once it has invoked the workers, then 4 seeded random SIGKILLs of any
    of the stack's processes, 1.5-3 s apart."""
    expected = reference(FAST_RECOVERY)
    request, parked, stop = _request(tmp_path, tiny_dataset), [], threading.Event()
    _park_and_kill(request, ("after_fan_out",), parked, stop)
    mount, rng, killed = request.out / "stack" / "efs", random.Random(13), []

    def killer() -> None:
        while len(killed) < 4 and not stop.wait(rng.uniform(1.5, 3.0)):
            live = sorted(sandboxes(mount))
            if parked and live:
                pid = rng.choice(live)
                name = function_of(pid)
                if kill([pid]):
                    killed.append(name)

    threading.Thread(target=killer, daemon=True).start()
    started = time.monotonic()
    try:
        summary = train(request)
    except LambdaTrainError:
        print(f"SIGKILLed the starter after {parked}, then {killed}\n{stack_report(request.out / 'stack')}")
        raise
    finally:
        stop.set()
    print(f"SIGKILLed the starter after {parked}, then {killed} in {time.monotonic() - started:.0f} s")
    assert parked == ["after_fan_out"] and killed, "a kill did not happen: the test tested less than it says"
    assert np.array_equal(_final_weights(request.out, summary), expected)
