"""Every fault of issue 4, injected in-process; each run must end bit-identical to the clean run.

Each test runs for every variant of conftest.VARIANTS that this session tests (``settings``).
"""

from __future__ import annotations

import numpy as np
import pytest

from lambdatrain.storage import efs as efs
from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.roles.faults import POINTS
from lambdatrain.roles.settings import COMBINER, STARTER, WORKER
from tests.faults.conftest import SETTINGS, assert_survived
from tests.harness import FakeContext, StreamPoller


def _start(system, settings, **extra):
    return system.invoke(STARTER, {"start": True, **settings, **extra})["run"]


def test_clean_run_meets_the_invariants(make_system, reference, settings):
    system = make_system()
    run = _start(system, settings)
    system.run_to_end(run)
    assert_survived(system, run, reference(settings))


def test_every_async_event_delivered_twice(make_system, reference, settings):
    system = make_system(duplicate=True)
    run = _start(system, settings)
    system.run_to_end(run)
    assert_survived(system, run, reference(settings))


def test_duplicate_start_delivery_is_one_run(make_system, reference, settings):
    system = make_system()
    first = system.invoke(STARTER, {"start": True, **settings}, FakeContext("same-request"))
    second = system.invoke(STARTER, {"start": True, **settings}, FakeContext("same-request"))
    assert first["run"] == second["run"]
    assert second["status"] == "redriven"
    system.run_to_end(first["run"])
    assert len(system.ledger.list_runs()) == 1
    assert_survived(system, first["run"], reference(settings))


def test_stream_batches_delivered_twice(make_system, reference, settings):
    system = make_system(stream_duplicate_rate=1.0)
    run = _start(system, settings)
    system.run_to_end(run)
    assert_survived(system, run, reference(settings))


def test_replayed_old_stream_records_change_nothing(make_system, reference, settings):
    system = make_system()
    run = _start(system, settings)
    system.run_to_end(run)
    before = system.ledger.items(run)
    # A second mapping reading the stream from its start: every old "ready" record, out of order.
    replay = StreamPoller(system.poller.streams, system.stream_arn, system._deliver_batch, lambda *a: None)
    replay.poll_once()
    assert system.ledger.items(run) == before
    assert_survived(system, run, reference(settings))


@pytest.mark.parametrize("point", POINTS["worker"])
@pytest.mark.parametrize("occurrence", [1, 4])
def test_worker_dies(make_system, reference, settings, point, occurrence):
    if point == "after_state" and settings.get("transport") not in COMPRESSED:
        pytest.skip("only a compressed transport stores a residual")
    system = make_system(faults=f"worker:{point}:{occurrence}")
    run = _start(system, settings)
    system.run_to_end(run)
    assert system.crashes == [(WORKER, point)]
    assert_survived(system, run, reference(settings))


def test_worker_lost_for_good_is_redriven_by_the_watchdog(make_system, reference, settings):
    # Three deaths in a row exhaust Lambda's two retries: only the watchdog can save the round.
    system = make_system(faults="worker:before_write:2,worker:before_write:3,worker:before_write:4")
    run = _start(system, settings)
    system.run_to_end(run)
    assert len(system.dead_letters) == 1
    assert_survived(system, run, reference(settings))


def test_a_round_that_stays_stalled_is_redriven_once_per_deadline_not_on_every_tick(make_system, reference):
    # Worker 1 of round 0 dies for good (three deaths: Lambda's two retries spent), and so does its
    # first re-drive. A tick half a deadline after that re-drive leaves the round alone (what was
    # re-driven may still be running: a worker runs up to 15 minutes); the tick a deadline after it
    # re-drives it again, and the run ends in the fault-free weights.
    system = make_system(faults=",".join(f"worker:before_write:{n}" for n in range(2, 8)))
    run = _start(system, SETTINGS)
    system.drain()
    deadline = system.ledger.get_run(run).config.round_deadline_s
    ticks = []
    for wait in (deadline + 1, deadline / 2, deadline / 2 + 1):
        system.clock.advance(wait)
        ticks.append(system.invoke(COMBINER, {"watchdog": True})["redriven"])
        system.drain()
    assert ticks == [[run], [], [run]]
    assert len(system.dead_letters) == 2  # the first attempt's three deaths, then the first re-drive's
    system.run_to_end(run)
    assert_survived(system, run, reference(SETTINGS))


def test_round_left_open_with_every_result_is_made_ready_by_the_watchdog(make_system, reference, settings):
    # The worker whose result completes round 0 dies before the round's ready transition, and so
    # do both of Lambda's retries (each finds its result recorded and tries that transition too):
    # no worker is missing, so only the watchdog, marking the round ready, can save it.
    system = make_system(faults="worker:before_ready:1,worker:before_ready:2,worker:before_ready:3")
    run = _start(system, settings)
    system.run_to_end(run)
    assert system.crashes == [(WORKER, "before_ready")] * 3
    assert len(system.dead_letters) == 1
    assert_survived(system, run, reference(settings))


@pytest.mark.parametrize("point", POINTS["combiner"])
def test_combiner_dies(make_system, reference, settings, point):
    system = make_system(faults=f"combiner:{point}:2")
    run = _start(system, settings)
    system.run_to_end(run)
    assert system.crashes == [(COMBINER, point)]
    assert_survived(system, run, reference(settings))


def test_starter_dies_after_creating_the_run(make_system, reference, settings):
    system = make_system(faults="starter:after_create:1")
    with pytest.raises(BaseException, match="after_create"):
        system.invoke(STARTER, {"start": True, **settings}, FakeContext("r1"))
    # Lambda's retry of the same asynchronous start keeps its request id.
    run = system.invoke(STARTER, {"start": True, **settings}, FakeContext("r1"))["run"]
    system.run_to_end(run)
    assert_survived(system, run, reference(settings))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_worker_result_is_detected_and_recomputed(make_system, reference, settings, damage):
    system = make_system()
    run = _start(system, settings)
    system.step()  # worker 0 of round 0
    system.step()  # worker 1: the round is ready
    path = efs.RunLayout(system.mount, run).result(0, 1)
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) // 2]) if damage == "truncate" else bytes(raw[:-1] + bytes([raw[-1] ^ 1])))
    system.run_to_end(run)
    assert any(a.get("rounds", [{}])[0].get("status") == "reopened" for name, a in system.answers if name == COMBINER)
    assert_survived(system, run, reference(settings))


def test_corrupt_slice_found_by_one_share_reruns_that_worker(make_system, reference, settings):
    """A share verifies only its slice of each result; the error names the file, so the worker is re-run."""
    system = make_system()
    run = _start(system, {**settings, "combine_shards": 2})
    system.step()  # worker 0 of round 0
    system.step()  # worker 1: the round is ready
    path = efs.RunLayout(system.mount, run).result(0, 1)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # the last element: only the last share's slice is damaged
    path.write_bytes(bytes(raw))
    system.run_to_end(run)
    reopened = [a for name, a in system.answers if name == COMBINER and a.get("status") == "reopened"]
    assert [a["worker"] for a in reopened] == [1]
    assert_survived(system, run, reference(settings))


def test_lost_ledger_is_rebuilt_from_efs_by_resume(make_system, reference, settings):
    system = make_system()
    run = _start(system, settings)
    while system.ledger.get_run(run).round < 2:  # a few rounds in, mid-round
        system.step()
    system.step()
    rebuilt_at = system.ledger.get_run(run).round
    for item in system.ledger.items(run):  # the whole-table loss of an outage
        system.ledger.table.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
    system.invoker.queue.clear()
    answer = system.invoke(STARTER, {"resume": run})
    assert answer["status"] == "redriven"
    system.run_to_end(run)
    assert_survived(system, run, reference(settings), results_from=rebuilt_at)


def test_lost_ledger_with_damaged_newest_weights_resumes_from_the_round_before(make_system, reference, settings):
    system = make_system()
    run = _start(system, settings)
    while system.ledger.get_run(run).round < 4:  # into the second epoch: older rounds already pruned
        system.step()
    newest = system.ledger.get_run(run).round
    paths = efs.RunLayout(system.mount, run)
    assert paths.committed_rounds() == [0, newest - 2, newest - 1, newest]  # keep_rounds 3 (and r0, an epoch boundary)
    raw = bytearray(paths.weights(newest).read_bytes())
    raw[-1] ^= 1
    paths.weights(newest).write_bytes(bytes(raw))
    for item in system.ledger.items(run):
        system.ledger.table.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
    system.invoker.queue.clear()
    assert system.invoke(STARTER, {"resume": run})["status"] == "redriven"
    assert system.ledger.get_run(run).round == newest - 1  # the damaged round is recomputed
    system.run_to_end(run)
    assert_survived(system, run, reference(settings), results_from=newest - 1)


def test_two_runs_at_once_do_not_see_each_other(make_system, reference, settings):
    system = make_system()
    other = {**settings, "seed": 8}
    a, b = _start(system, settings, run="run-a"), _start(system, other, run="run-b")
    assert a != b
    system.run_to_end(a)
    system.run_to_end(b)
    assert_survived(system, a, reference(settings))
    assert_survived(system, b, reference(other))
    assert not np.array_equal(reference(settings), reference(other))


def test_stop_keeps_weights_and_resume_finishes_the_same(make_system, reference, settings):
    system = make_system()
    run = _start(system, settings)
    for _ in range(6):
        system.step()
    system.invoke(STARTER, {"stop": run})
    system.drain()
    stopped = system.ledger.get_run(run)
    assert stopped.state == "stopped" and stopped.round < 6
    system.invoke(STARTER, {"resume": run})
    system.run_to_end(run)
    assert_survived(system, run, reference(settings))


@pytest.mark.parametrize("faults", ["combiner:mid_sum:2", "combiner:mid_sum:2,combiner:mid_sum:3,combiner:mid_sum:4",
                                    "combiner:after_write:1"])
def test_sharded_combine_survives_shares_dying(make_system, reference, settings, faults):
    """Dead shares are retried, or re-driven under a new claim; the result equals one combiner's."""
    system = make_system(faults=faults)
    run = _start(system, {**settings, "combine_shards": 3})
    system.run_to_end(run)
    assert system.crashes
    assert_survived(system, run, reference(settings))
