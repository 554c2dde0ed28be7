"""The planner's arithmetic (no calibration: constants are given) and its plot file."""

from __future__ import annotations

import math

import pytest

from lambdatrain import planner
from lambdatrain.protocol import RunConfig
from lambdatrain.trainer import rounds_per_epoch

CAL = planner.Calibration(seconds_per_image=0.01, read_bps=1e9, write_bps=1e9, update_s_per_param=0.0,
                          worker_fixed_s=0.0, combiner_fixed_s=0.0, invoke_latency_s=0.0,
                          per_invoke_s=0.0)
FAST = planner.Storage(client_read=1e9, client_write=1e9, fs_read=1e12, fs_write=1e12)


def _predict(**kw):
    s = planner.Scenario(**{"params": 1_000_000, "workers": 1, "memory_mb": 1769, **kw})
    return planner.predict(s, CAL, FAST)


def test_vcpus_follow_lambda_memory_scaling():
    assert planner.vcpus(1769) == 1
    assert planner.vcpus(3538) == 2
    assert planner.vcpus(10240) == 6


@pytest.mark.parametrize("workers,batch,n", [(1, 256, 45_000), (4, 256, 45_000), (17, 256, 45_000), (3, 64, 1000)])
def test_rounds_per_epoch_matches_the_trainer(workers, batch, n):
    config = RunConfig(workers=workers, batch_size=batch)
    assert planner.rounds_per_epoch(planner.Scenario(1, workers, 1769, batch_size=batch, train_samples=n)) == \
        rounds_per_epoch(config, n)


def test_compute_splits_over_workers_and_vcpus():
    one = _predict(workers=1, batch_size=256)
    assert one["compute_s"] == pytest.approx(256 * 0.01)
    assert _predict(workers=4, batch_size=256)["compute_s"] == pytest.approx(64 * 0.01)
    assert _predict(workers=1, memory_mb=3538, batch_size=256)["compute_s"] == pytest.approx(128 * 0.01)


def test_combine_grows_with_workers_and_shrinks_with_shards():
    assert _predict(workers=8)["combine_s"] == pytest.approx(8 * 4e6 / 1e9 + 4e6 / 1e9)
    assert _predict(workers=8, shards=4)["combine_s"] == pytest.approx(8 * 4e6 / 4e9 + 1e6 / 1e9)


def test_shared_file_system_limit_slows_the_workers_load():
    limited = planner.Storage(client_read=1e9, client_write=1e9, fs_read=4e9, fs_write=1e12)
    row = planner.predict(planner.Scenario(1_000_000, 16, 1769), CAL, limited)
    assert row["load_s"] == pytest.approx(4e6 / (4e9 / 16))


def test_epoch_is_rounds_times_round():
    row = _predict(workers=2)
    assert row["epoch_s"] == pytest.approx(row["rounds_per_epoch"] * row["round_s"])
    assert row["round_s"] == pytest.approx(row["worker_s"] + row["combine_s"] + row["invoke_s"])


def test_cost_adds_lambda_requests_efs_and_dynamodb():
    row = _predict(workers=2, memory_mb=1024, combiner_memory_mb=1024)
    r, p = row["rounds_per_epoch"], planner.Prices()
    gb_s = r * (2 * row["worker_s"] + row["combine_s"])
    efs = r * (2 * 4e6 + 2 * 4e6) / 1e9 * 0.03 + r * (2 * 4e6 + 2 * 4e6) / 1e9 * 0.06
    expected = gb_s * p.gb_second + r * 3 * p.request + efs + r * 9 * p.dynamodb_wru
    assert row["cost_usd"] == pytest.approx(expected)


def test_arm_is_cheaper_per_gb_second():
    assert planner.Prices.for_arch("arm64").gb_second < planner.Prices.for_arch("x86_64").gb_second


def test_best_finds_the_fastest_worker_count():
    rows = planner.plan(20_000_000, CAL, planner.Storage(), workers=[1, 2, 4, 8, 16, 32, 64], memories=[10240],
                        shards=[1])
    fastest = planner.best(rows, 1, 10240)
    assert fastest["epoch_s"] == min(r["epoch_s"] for r in rows)
    assert 1 < fastest["workers"] < 64  # the combine makes the curve turn up


def test_plot_writes_a_small_png(tmp_path):
    rows = planner.plan(1_000_000, CAL, FAST, workers=[1, 2, 4], memories=[1769], shards=[1, 4])
    path = planner.plot(rows, tmp_path / "plan.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 200_000


def test_relative_error():
    assert planner.relative_error(11.0, 10.0) == pytest.approx(0.1)
    assert math.isnan(planner.relative_error(1.0, 0.0))
