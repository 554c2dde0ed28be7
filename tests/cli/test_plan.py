"""`lambdatrain plan`: given constants skip their measurement, the first epoch adds the cold start, every
recipe is planned unless flags narrow it, the output's shapes (JSON rows, a table ending in a sentence),
and --recommend: the fastest measured configuration within the budget, or one line and exit status 1."""

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


def test_plan_evaluates_every_recipe_for_every_configuration(cli):
    from lambdatrain.planning.recipes import EVIDENCE, RECIPES
    from lambdatrain.protocol.config import COMPRESSED

    result = cli(*FLAGS, "--shards", "1,2")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    rows = plan["rows"]
    assert len(rows) == len(RECIPES) * 2 * 2  # recipes x N in {1, 4} x S in {1, 2}
    for row in rows:
        for field in ("workers", "memory_mb", "shards", "transport", "mode", "local_steps", "batch_size",
                      "round_s", "epoch_s", "cost_per_epoch", "efs_bytes_per_round", "runnable", "state_store",
                      "state_bytes_per_worker_round", "accuracy_measured", "accuracy_shown"):
            assert field in row, field
        assert row["runnable"]
        compressed = row["transport"] in COMPRESSED
        assert row["state_store"] == ("s3" if compressed else "none")
        assert (row["state_bytes_per_worker_round"] > 0) == compressed
        own_state = row["mode"] == "average" or compressed  # per-worker state: a study speaks up to its N
        above = [e for e in EVIDENCE[(row["transport"], row["mode"], row["local_steps"])]
                 if e.batch_size >= row["batch_size"]]
        harder = [e for e in above if not own_state or row["workers"] <= e.workers]  # as hard as the row or more
        nearest = min((e.batch_size for e in above), default=None)
        # Shown where a study at least as hard shows it and no short one that is also at least as hard
        # is strictly nearer the row (at most its batch and, with per-worker state, its workers); else
        # the nearest batch's study, if it covers N, says short.
        def nearer(o, e):
            far_o, far_e = (o.batch_size, o.workers if own_state else 0), (e.batch_size, e.workers if own_state else 0)
            return far_o != far_e and far_o[0] <= far_e[0] and far_o[1] <= far_e[1]

        shown = any(e.shown and not any(not o.shown and nearer(o, e) for o in harder) for e in harder)
        assert row["accuracy_shown"] == shown
        assert row["accuracy_measured"] == (shown or any(e.batch_size == nearest for e in harder))
    assert {r["transport"] for r in rows} == {"float32", "float16", "bfloat16", "ternary_ef", "sign_ef"}


def test_narrowing_flags_and_batch_size_select_the_recipes(cli):
    result = cli(*FLAGS, "--transports", "float16,float32", "--modes", "average", "--local-steps", "4",
                 "--batch-size", "256")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {(r["transport"], r["mode"], r["local_steps"], r["batch_size"]) for r in rows} == \
        {("float32", "average", 4, 256), ("float16", "average", 4, 256)}


@pytest.mark.parametrize("flags,message", [(["--transports", "int8"], "unknown transport"),
                                           (["--transports", "sign_ef", "--modes", "average"], "no recipe"),
                                           (["--workers", "1,x"], "positive integers")])
def test_bad_narrowing_is_a_usage_error_in_one_line(cli, flags, message):
    result = cli(*FLAGS, *flags)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_table_groups_recipes_and_ends_with_a_sentence(cli):
    result = cli(*[f for f in FLAGS if f != "--json"], "--transports", "float32,sign_ef", "--modes", "sync")
    assert result.exit_code == 0, result.output
    headers = [line for line in result.stdout.splitlines() if line.startswith("sign_ef sync")]
    # Measured on 2 workers: short of float32 there, and nothing known of 4 workers' 4 residuals.
    assert headers and headers[0].startswith("sign_ef sync, batch 128 (accuracy measured short of float32's at N = 1; "
                                             "not measured at N = 4); state in s3: ")
    assert "the combiner's " in headers[0] and "(in combine s)" in headers[0]
    last = " ".join(result.stdout.split())  # the summary soft-wraps; its words are what count
    summary = last[last.rindex("Fastest:"):]
    assert summary.startswith("Fastest: ") and summary.endswith("cold start.")
    assert "{" not in summary


RECOMMEND = [f for f in FLAGS if f != "--json"] + ["--workers", "1,2,4", "--shards", "1,4", "--recommend"]


def test_recommend_prints_the_fastest_measured_configuration_and_its_measurement(cli):
    result = cli(*RECOMMEND, "--budget-per-epoch", "1000")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("Recommended: ") and lines[-1].endswith("per epoch).")
    assert "docs/results/convergence-5ep.jsonl" in result.stdout and "python -m bench.convergence" in result.stdout
    assert any(line.startswith("Not recommended, accuracy not measured: ") and "ternary_ef average K=4" in line
               for line in lines)
    (short,) = [line for line in lines if line.startswith("Not recommended, accuracy measured short of float32's: ")]
    assert "sign_ef sync, batch 128 at N = 1, 2;" in short  # measured on 2 workers
    assert "float32 sync, batch 2048;" in short and short.endswith("ternary_ef sync, batch 2048.")  # at every N
    # At N = 1, 2 the 2-worker study at batch 256 backs it; at 4 the 64-worker study at batch 128 is short.
    assert "ternary_ef sync, batch 128 at N = 4;" in short


def test_recommend_names_the_command_of_every_study_behind_its_picks(cli):
    """Two studies in one runs file (batch 256 and 512 at N = 64) each get their own line."""
    text = cli(*RECOMMEND, "--budget-per-epoch", "1000")
    picks = json.loads(cli(*RECOMMEND, "--budget-per-epoch", "1000", "--json").stdout)["recommended"]
    commands = {p["backed_by"]["command"] for p in picks}
    assert len(commands) > len({p["backed_by"]["source"] for p in picks})  # a source with two studies
    for command in commands:
        assert f"by `{command}`." in text.stdout


def test_recommend_as_json_agrees_with_the_rows(cli):
    result = cli(*RECOMMEND, "--budget-per-epoch", "1000", "--json")
    assert result.exit_code == 0, result.output
    from lambdatrain.protocol.config import COMPRESSED
    plan = json.loads(result.stdout)
    pick = plan["recommended"][0]
    fits = [r for r in plan["rows"] if r["accuracy_shown"] and r["cost_per_epoch"] <= 1000]
    assert pick["epoch_s"] == min(r["epoch_s"] for r in fits)
    assert pick["mode"] == "sync" and pick["backed_by"]["shown"]
    # The study that backs it was at least as hard: its batch at least the pick's, and its workers
    # where each worker compresses with its own residual.
    assert pick["backed_by"]["batch_size"] >= pick["batch_size"]
    assert pick["transport"] not in COMPRESSED or pick["backed_by"]["workers"] >= pick["workers"]
    assert plan["budget_per_epoch"] == 1000


def test_recommend_without_a_fitting_measured_recipe_is_one_line_and_status_1(cli):
    result = cli(*RECOMMEND, "--budget-per-epoch", "0.000001")
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]  # after the calibration's progress lines
    assert last.startswith("error: no configuration of a measured recipe costs at most $1e-06 per epoch; "
                           "the cheapest is ")
    assert result.stdout == ""


def test_a_budget_without_recommend_is_a_usage_error(cli):
    result = cli(*FLAGS, "--budget-per-epoch", "5")
    assert result.exit_code == 2 and "--recommend" in result.output


@pytest.mark.parametrize("option, value", [("--arch", "arm"), ("--storage", "EFS")])
def test_plan_refuses_an_unknown_architecture_or_storage_as_a_usage_error(option, value):
    # A typo used to plan silently with x86 prices or an unlimited local disk.
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lambdatrain", "plan", option, value, "--seconds-per-image", "0.05",
                             "--cold-start", "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert option in result.stderr and value in result.stderr


def test_combiner_memory_prices_the_combiners_gb_seconds(cli):
    for memory in (1024, 4096):
        result = cli(*FLAGS, "--transports", "float32", "--modes", "sync", "--combiner-memory", str(memory))
        for r in json.loads(result.stdout)["rows"]:
            gb_s = r["rounds_per_epoch"] * (r["workers"] * r["worker_s"] * r["memory_mb"]
                                            + r["shards"] * r["combine_s"] * memory) / 1024
            assert r["cost_breakdown"]["lambda"] == pytest.approx(gb_s * 0.0000166667, abs=1e-6)
