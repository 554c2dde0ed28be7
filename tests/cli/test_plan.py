"""`lambdatrain plan`: given constants skip their measurement, and the first epoch adds the cold start."""

from __future__ import annotations

import json

import pytest

FLAGS = ["plan", "--width", "0.0625", "--workers", "1,4", "--shards", "1", "--memory", "1769",
         "--seconds-per-image", "0.01", "--cold-start", "3", "--json"]


def test_plan_adds_worker_and_combiner_cold_starts_to_the_first_epoch(cli):
    result = cli(*FLAGS)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["calibration"]["seconds_per_image"] == 0.01 and plan["calibration"]["cold_start_s"] == 3
    for row in plan["rows"]:  # 1,769 MB workers and the 3,008 MB combiner: one vCPU or more each
        assert row["cold_start_s"] == pytest.approx(3 + 3)
        assert row["first_epoch_s"] == pytest.approx(row["epoch_s"] + 6)


def test_plan_with_provisioned_concurrency_has_no_cold_start(cli):
    result = cli(*FLAGS, "--provisioned")
    assert result.exit_code == 0, result.output
    assert all(r["first_epoch_s"] == r["epoch_s"] for r in json.loads(result.stdout)["rows"])
