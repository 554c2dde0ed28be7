"""`lambdatrain local train` leaves what it promises, and `evaluate` reads it back."""

from __future__ import annotations

import json
import re

import pytest

from lambdatrain.ops.views import duration
from tests.cli.conftest import assert_one_line_error

pytestmark = pytest.mark.slow
SUMMARY_KEYS = {"run_id", "workers", "rounds", "epochs_done", "samples_seen", "elapsed_s", "wall_s", "val_loss",
                "val_accuracy", "checkpoint"}


def test_local_train_leaves_checkpoint_metrics_and_summary(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["workers"] == 2 and summary["epochs_done"] == 1 and summary["rounds"] == 4
    assert summary["samples_seen"] == 4 * 32
    assert (trained / "checkpoint.pt").exists() and summary["checkpoint"].endswith("checkpoint.pt")
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [0, 1, 2, 3]
    assert metrics[-1]["val_accuracy"] == summary["val_accuracy"]
    assert 0 < summary["elapsed_s"] < summary["wall_s"]  # the run's time, within the command's


def test_console_status_metrics_and_summary_agree_on_rounds_and_elapsed_time(cli, launched, trained):
    console = (launched.root / "train.log").read_text().splitlines()
    summary = json.loads((trained / "summary.json").read_text())
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    status = json.loads(cli("status", trained, "--json").stdout)
    table = cli("status", trained).stdout
    rounds = [line for line in console if line.startswith("round ")]
    end = next(line for line in console if line.startswith(f"run {summary['run_id']} done"))
    # A round's number is the ledger's, from 0, on the console as in metrics.jsonl; progress is a count.
    assert [int(line.split()[1]) for line in rounds] == [m["round"] for m in metrics] == [0, 1, 2, 3]
    assert [re.search(r"\((\d+ of \d+) done", line).group(1) for line in rounds] == ["1 of 4", "2 of 4", "3 of 4",
                                                                                     "4 of 4"]
    assert status["round"] == status["rounds_total"] == summary["rounds"] == len(metrics)
    assert "4 of 4 (4 per epoch)" in table and end.startswith(f"run {summary['run_id']} done (max epochs) after 4 rounds")
    # One elapsed time: the run's, from its creation to its last commit.
    assert summary["elapsed_s"] == pytest.approx(status["elapsed_s"], abs=1e-3)
    shown = duration(status["elapsed_s"])
    assert f", {shown}; " in end
    assert any("elapsed" in line and f" {shown} " in line for line in table.splitlines()), table
    # The last evaluation, the same number everywhere.
    assert metrics[-1]["val_accuracy"] == summary["val_accuracy"] == status["val_accuracy"]
    assert f"val accuracy {summary['val_accuracy']:.2%}" in rounds[-1] and end.endswith(f"{summary['val_accuracy']:.2%}")
    assert not re.search(r"\b1 (epochs|rounds|workers)\b", "\n".join(console) + table)


def test_evaluate_reports_the_accuracy_the_run_measured(cli, trained, cli_data):
    result = cli("evaluate", "--checkpoint", trained / "checkpoint.pt", "--data", cli_data, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    summary = json.loads((trained / "summary.json").read_text())
    assert report["n"] == 64
    assert report["accuracy"] == pytest.approx(summary["val_accuracy"])
    assert report["loss"] == pytest.approx(summary["val_loss"], rel=1e-5)


def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(cli, cli_data, tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert_one_line_error(cli("evaluate", "--checkpoint", bogus, "--data", cli_data), "not a lambdatrain checkpoint")


def test_local_train_with_a_missing_dataset_says_how_to_pass_one(cli, tmp_path):
    result = cli("local", "train", "--data", tmp_path / "nope.tar.gz", "--out", tmp_path / "out")
    assert_one_line_error(result, "dataset not found", "DATA=PATH")
    assert not (tmp_path / "out").exists()
