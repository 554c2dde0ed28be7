"""bench/planner.py's bookkeeping: the recipe list, each run's settings, the median and spread of
the runs, and the verdict against the tolerance (the local-stack runs themselves are the benchmark's)."""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench import convergence, planner
from lambdatrain.planning import planner as model
from lambdatrain.protocol.config import COMPRESSED

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "planner-local.json"


def args(**over) -> argparse.Namespace:
    return argparse.Namespace(**{"width": 0.125, "samples": 2048, "workers": [1, 2, 4], **over})


def test_recipes_cover_the_issue_s_four_with_average_as_convergence_runs_it():
    assert set(planner.RECIPES) == {"float32", *COMPRESSED, "average"}
    assert planner.RECIPES["average"] == convergence.AVERAGE
    for recipe in planner.RECIPES.values():  # each one the planner accepts
        model.Scenario(params=100, workers=1, memory_mb=1769, batch_size=planner.BATCH, **recipe)


def test_recipe_list_keeps_order_and_drops_repeats():
    assert planner.recipe_list("sign_ef, float32,sign_ef") == ("sign_ef", "float32")


@pytest.mark.parametrize("text", ["float16", "", " , "])
def test_recipe_list_refuses_unknown_or_empty(text):
    with pytest.raises(argparse.ArgumentTypeError, match="known: float32"):
        planner.recipe_list(text)


def test_default_checks_every_recipe_five_times_at_one_two_four(monkeypatch):
    seen = {}

    def stop(_args, *_rest):
        seen["args"] = _args
        raise SystemExit(0)

    monkeypatch.setattr(planner, "calibrated", stop)
    monkeypatch.setattr("lambdatrain.training.data.resolve_dataset", lambda *a: None)
    with pytest.raises(SystemExit):
        planner.main([])
    a = seen["args"]
    assert (a.recipes, a.repeats, a.workers) == (tuple(planner.RECIPES), 5, [1, 2, 4])


def test_average_trains_local_steps_times_the_samples_for_as_many_rounds():
    sync, avg = planner.settings_for("ternary_ef", 2, args()), planner.settings_for("average", 2, args())
    assert (sync["transport"], sync["mode"], sync["local_steps"], sync["max_train_samples"]) == \
        ("ternary_ef", "sync", 1, 2048)
    assert (avg["transport"], avg["mode"], avg["local_steps"], avg["max_train_samples"]) == \
        ("float32", "average", 4, 4 * 2048)
    rounds = [model.rounds_per_epoch(model.Scenario(params=100, workers=2, memory_mb=1769, batch_size=s["batch_size"],
                                                    train_samples=s["max_train_samples"], mode=s["mode"],
                                                    transport=s["transport"], local_steps=s["local_steps"]))
              for s in (sync, avg)]
    assert rounds[0] == rounds[1] == 8


def test_spread_is_the_median_and_min_max_of_the_runs():
    s = planner.spread([0.9, 0.6, 0.7])
    assert (s["median"], s["min"], s["max"], s["runs"]) == (0.7, 0.6, 0.9, [0.9, 0.6, 0.7])
    assert s["spread"] == pytest.approx(0.3 / 0.7)
    assert planner.spread([0.5])["spread"] == 0.0


def test_median_run_is_taken_key_by_key():
    runs = [{"round_s": 1.0, "wait_s": 0.3}, {"round_s": 3.0, "wait_s": 0.1}, {"round_s": 2.0, "wait_s": 0.2}]
    assert planner.median_run(runs) == {"round_s": 2.0, "wait_s": 0.2}


def test_busy_cores_slow_one_core_by_the_median_of_each_samples_own_ratio():
    # Three samples: one core's time moves between them, each busy time is timed right after it.
    # The ratio of the medians (0.66 / 0.50 = 1.32) would mix timings of different samples; each
    # sample's own ratio is 1.1, 1.1 and 1.5 (a slow spell in one of them), so the median is 1.1.
    samples = [{"seconds_per_image": spi, "compute_fixed_s": fixed, "busy": busy, "serial_s_per_worker": 0.01,
                "cpu": {"float32": 0.04}} for spi, fixed, busy in [(0.60, 0.004, 0.66), (0.50, 0.016, 0.55),
                                                                   (0.44, 0.005, 0.66)]]
    merged = planner.median_sample(samples)
    assert merged["seconds_per_image"] == 0.50 and merged["compute_fixed_s"] == 0.005
    assert merged["busy"] == pytest.approx(0.50 * 1.1)
    assert merged["cpu"] == {"float32": 0.04} and merged["serial_s_per_worker"] == 0.01


def test_samples_saved_without_a_fixed_cost_give_none_to_take_the_median_of():
    # Runs before stop 31 timed the compute's fixed cost once, in the calibration, which report()
    # then keeps: the --from test below predicts such a run again, number for number.
    old = [{"seconds_per_image": 0.6, "busy": 0.66, "serial_s_per_worker": 0.01, "cpu": {}}]
    assert planner.median_sample(old)["compute_fixed_s"] is None
    assert "outside_cpu" not in planner.median_sample(old)  # nor had they the split of the CPU (stop 32)


def test_each_recipes_cpu_outside_the_window_is_its_median_over_the_samples():
    samples = [{"seconds_per_image": 0.5, "compute_fixed_s": 0.005, "busy": 0.55, "serial_s_per_worker": 0.01,
                "cpu": {"float32": 0.04, "sign_ef": 0.05}, "delivery_cpu": {"float32": 0.01, "sign_ef": 0.01},
                "outside_cpu": {"float32": out, "sign_ef": out + 0.002}} for out in (0.013, 0.020, 0.014)]
    assert planner.median_sample(samples)["outside_cpu"] == pytest.approx({"float32": 0.014, "sign_ef": 0.016})


@pytest.mark.parametrize("error,ok", [(0.15, True), (-0.15, True), (0.1501, False), (-0.2, False), (math.nan, False)])
def test_within_tolerance_is_fifteen_percent_either_way(error, ok):
    assert planner.within(error) is ok


def fake_run(round_s: float) -> dict:
    return {"rounds": 8, "round_s": round_s, "first_round_s": 9.0, "epoch_s": 15.0, "wait_s": 0.2,
            "combine_s": 0.05, "worker_s": 0.4, "load_s": 0.02}


def test_a_row_compares_the_prediction_with_the_median_run_and_keeps_the_old_fields():
    predicted = {"round_s": 0.8, "first_round_s": 8.0, "first_epoch_s": 12.0, "epoch_s": 6.0, "worker_s": 0.5,
                 "compute_s": 0.4, "state_s": 0.05, "combine_s": 0.1, "invoke_s": 0.2, "cold_start_s": 6.0}
    row = planner.compare("sign_ef", 2, [fake_run(1.0), fake_run(0.6), fake_run(0.7)], predicted, model)
    for old in ("workers", "predicted_round_s", "measured_round_s", "round_error", "predicted_first_round_s",
                "measured_first_round_s", "first_round_error", "predicted_epoch_s", "predicted_warm_epoch_s",
                "measured_epoch_s", "epoch_error", "predicted", "measured"):
        assert old in row
    assert row["measured_round_s"] == 0.7 and row["round_error"] == pytest.approx(0.1 / 0.7)
    result = planner.result_of(row)
    assert result == {"recipe": "sign_ef", "transport": "sign_ef", "mode": "sync", "local_steps": 1, "workers": 2,
                      "predicted_round_s": 0.8, "measured_round_s_median": 0.7,
                      "measured_round_s_runs": [1.0, 0.6, 0.7], "measured_round_s_min": 0.6,
                      "measured_round_s_max": 1.0, "spread": pytest.approx(0.4 / 0.7),
                      "error": pytest.approx(0.1 / 0.7), "within_tolerance": True}


@pytest.mark.parametrize("recipe", ["float32", "ternary_ef"])
def test_fixed_costs_are_what_the_first_n_leaves_after_the_planners_own_terms(recipe):
    # Nothing counted twice: at the first N the prediction gives back the measured combine, wait and
    # load whole (a compressed combiner's bucket PUTs and a worker's update GET are the planner's own
    # terms, not fixed costs); the other N's runs are never used to predict them.
    cal = model.Calibration(seconds_per_image=1e-3, read_bps=1e9, write_bps=1e9, compute_fixed_s=0.01,
                            cold_start_s=1.0, s3_bps=200e6, s3_request_s=0.01, serial_s_per_worker=0.01)
    args = argparse.Namespace(workers=[1, 4], samples=2048)
    first = {"rounds": 8, "round_s": 0.5, "first_round_s": 4.0, "epoch_s": 8.0, "wait_s": 0.2,
             "combine_s": 0.15, "worker_s": 0.3, "load_s": 0.05}
    runs = {(recipe, 1): [first] * 3, (recipe, 4): [{**first, "combine_s": 9.0, "wait_s": 9.0, "load_s": 9.0}] * 3}
    cpu = {recipe: 0.02}
    one = planner.predicted(recipe, 1, runs, 1_000_000, 1_000, cal, 1.5e-3, cpu, args)
    assert one["combine_s"] == pytest.approx(0.15) and one["invoke_s"] == pytest.approx(0.2)
    assert one["load_s"] + one["fixed_costs"]["worker_fixed_s"] == pytest.approx(0.05)
    four = planner.predicted(recipe, 4, runs, 1_000_000, 1_000, cal, 1.5e-3, cpu, args)
    assert four["fixed_costs"] == one["fixed_costs"]
    if recipe == "ternary_ef":  # its combiner's PUTs are modelled, so less than the whole combine is fixed
        assert one["fixed_costs"]["combiner_fixed_s"] < 0.15 - one["combiner_state_s"] + 1e-9


def test_each_recipe_takes_its_own_measured_delivery_off_the_cores_bound_and_old_runs_none():
    cal = model.Calibration(seconds_per_image=1e-3, read_bps=1e9, write_bps=1e9, compute_fixed_s=0.01,
                            cold_start_s=1.0, serial_s_per_worker=0.01)
    args = argparse.Namespace(workers=[1, 4], samples=2048)
    run = {"rounds": 8, "round_s": 0.5, "first_round_s": 4.0, "epoch_s": 8.0, "wait_s": 0.2, "combine_s": 0.15,
           "worker_s": 0.3, "load_s": 0.05}
    runs = {(r, n): [run] * 3 for r in ("float32", "average") for n in (1, 4)}
    cpu = {"float32": 0.02, "average": 0.02}

    def four(recipe, delivery):
        return planner.predicted(recipe, 4, runs, 1_000_000, 1_000, cal, 1e-3, cpu, args, delivery)

    reads, cores = {"float32": 0.004, "average": 0.008}, os.cpu_count() or 1
    for recipe in ("float32", "average"):  # one worker's read less, over the cores (none before stop 30)
        less = four(recipe, None)["host_cpu_s"] - reads[recipe] / cores
        assert four(recipe, reads)["host_cpu_s"] == pytest.approx(less)
        assert four(recipe, reads)["calibration"]["delivery_cpu_s"] == reads[recipe]


def test_repeats_below_one_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        planner.main(["--repeats", "0"])
    assert exit_.value.code == 2 and "--repeats 0: at least 1" in capsys.readouterr().err


def test_predicting_a_saved_run_again_gives_back_what_it_printed(capsys):
    # docs/results/planner-local.json is a real run's output, from the model as it is now: --from
    # rebuilds its measurements and predicts them again, number for number.
    saved = json.loads(RESULTS.read_text().strip().splitlines()[-1])
    planner.main(["--from", str(RESULTS)])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["predicted_from"] == str(RESULTS) and again["repeats"] == saved["repeats"]
    configurations = [(r["recipe"], r["workers"]) for r in saved["results"]]
    assert [(r["recipe"], r["workers"]) for r in again["results"]] == configurations
    for old, new in zip(saved["results"], again["results"]):
        assert new["measured_round_s_runs"] == old["measured_round_s_runs"]
        assert new["predicted_round_s"] == pytest.approx(old["predicted_round_s"], rel=1e-12)
        assert new["within_tolerance"] == old["within_tolerance"]


@pytest.mark.parametrize("content", [None, "", "{}", '{"rows": []}'])
def test_from_something_else_is_one_usage_line(tmp_path, capsys, content):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        planner.main(["--from", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and f"--from {path}: not the output of bench.planner" in err[-1]


def test_local_workers_share_the_cores_and_the_stacks_one_request_at_a_time_s3():
    cal = model.Calibration(seconds_per_image=1e-3, read_bps=1e9, write_bps=1e9, compute_fixed_s=0.01,
                            cold_start_s=1.0, s3_bps=200e6, s3_request_s=0.01, serial_s_per_worker=0.012,
                            cpu_s_per_worker=0.04, delivery_cpu_s=0.01)
    one = planner.local_calibration(cal, 1, 1.5e-3, 2)
    assert one == replace(cal, host_cores=2, s3_clients=1)  # one worker: as measured, alone on 2 cores
    for n in (2, 4):  # both cores busy: the busy per-image time; moto's bandwidth and latency shared by N
        local = planner.local_calibration(cal, n, 1.5e-3, 2)
        assert local.seconds_per_image == pytest.approx(1.5e-3)
        # The rest of a worker's CPU, timed alone like the per-image time, is slowed as much (1.5 times).
        assert (local.serial_s_per_worker, local.cpu_s_per_worker, local.delivery_cpu_s) == \
            pytest.approx((0.018, 0.06, 0.015))
        assert (local.s3_bps, local.s3_request_s, local.s3_clients) == (200e6, 0.01, n)
        # The workers' transfers queue behind each other; the combiner's, alone after them, do not.
        scenario = model.Scenario(10_000_000, n, 1769, transport="ternary_ef")
        alone = model.predict(scenario, replace(local, s3_clients=1), model.Storage())
        shared = model.predict(scenario, local, model.Storage())
        assert shared["state_s"] == pytest.approx(n * alone["state_s"])
        assert shared["combiner_state_s"] == alone["combiner_state_s"] > 0
    # Between one and all cores busy, the per-image time in proportion.
    # A busy time below the single one is noise: the cores are taken as no slower, not faster.
    assert planner.local_calibration(cal, 4, 0.9e-3, 2) == replace(cal, host_cores=2, s3_clients=4)
    three = planner.local_calibration(cal, 3, 1.8e-3, 5)
    assert three.seconds_per_image == pytest.approx(1.4e-3)
    assert (three.serial_s_per_worker, three.cpu_s_per_worker) == pytest.approx((0.012 * 1.4, 0.04 * 1.4))
