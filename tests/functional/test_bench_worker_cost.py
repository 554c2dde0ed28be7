"""bench.planner's measure of what a worker invocation costs the machine besides its compute: the
real handlers' two-worker run, the trainer's compute taken out of the CPU seconds, the stream
poller's read of each worker's writes while its round is not yet complete added to them, and what
of them falls outside the worker's timed window."""

from __future__ import annotations

import time

import pytest

from bench import planner
from lambdatrain.ledger.table import Ledger
from lambdatrain.local.poller import StreamPoller
from lambdatrain.training import trainer

BURN_S = 0.3  # CPU seconds the doctored compute adds to every round


def _burn(compute, seconds: float = BURN_S):
    def slower(*args, **kwargs):
        t0 = time.process_time()
        while time.process_time() - t0 < seconds:
            pass
        return compute(*args, **kwargs)
    return slower


def test_cpu_besides_compute_leaves_out_whatever_the_compute_costs(monkeypatch):
    plain = planner.measure_worker(0.0625, "ternary_ef", rounds=3)
    assert plain["serial_s_per_worker"] > 0 and plain["cpu_s_per_worker"] > 0
    monkeypatch.setattr(trainer, "compute_sync", _burn(trainer.compute_sync))
    slower = planner.measure_worker(0.0625, "ternary_ef", rounds=3)
    # A compute made 0.3 s of CPU dearer leaves the rest as it was (well under the 0.3 s added).
    assert abs(slower["cpu_s_per_worker"] - plain["cpu_s_per_worker"]) < BURN_S / 3
    assert trainer.compute_sync.__name__ == "slower"  # the measure put back what it wrapped


@pytest.fixture(scope="module")
def plain():
    """A float32 worker's costs, undoctored (each measure is a two-worker run of about a second)."""
    return planner.measure_worker(0.0625, "float32", rounds=3)


def test_the_stream_read_of_a_workers_writes_counts_once_per_worker(monkeypatch, plain):
    assert 0 < plain["delivery_cpu_s"] < plain["cpu_s_per_worker"]
    burn = BURN_S / 3
    monkeypatch.setattr(StreamPoller, "poll_once", _burn(StreamPoller.poll_once, burn))
    dearer = planner.measure_worker(0.0625, "float32", rounds=3)
    # Each poll made dearer by ``burn`` costs every worker that much more, once: the early read is
    # counted, and neither the completing one (the combine's) nor the invocation's own CPU moves.
    assert abs(dearer["delivery_cpu_s"] - plain["delivery_cpu_s"] - burn) < burn / 2
    assert abs((dearer["cpu_s_per_worker"] - dearer["delivery_cpu_s"])
               - (plain["cpu_s_per_worker"] - plain["delivery_cpu_s"])) < burn / 2


def test_cpu_outside_the_window_is_what_the_worker_spends_before_it_opens_or_after_its_write(monkeypatch, plain):
    assert 0 < plain["outside_cpu_s"] < plain["cpu_s_per_worker"] - plain["delivery_cpu_s"]
    inside, after = BURN_S / 3, BURN_S / 6
    # Inside the window (the round's indices, after the dataset's open and before the compute) and
    # after it (the ledger's record of the result), in one doctored run: the invocation's CPU grows
    # by both, what falls outside its window by the second alone.
    monkeypatch.setattr(trainer, "round_indices", _burn(trainer.round_indices, inside))
    monkeypatch.setattr(Ledger, "record_result", _burn(Ledger.record_result, after))
    dearer = planner.measure_worker(0.0625, "float32", rounds=3)
    assert abs(dearer["cpu_s_per_worker"] - plain["cpu_s_per_worker"] - inside - after) < after / 2
    assert abs(dearer["outside_cpu_s"] - plain["outside_cpu_s"] - after) < after / 2
