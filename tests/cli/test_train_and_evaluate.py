"""`lambdatrain local train` leaves what it promises, and `evaluate` reads it back."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import assert_one_line_error

pytestmark = pytest.mark.slow
SUMMARY_KEYS = {"run_id", "workers", "rounds", "epochs_done", "samples_seen", "wall_s", "val_loss", "val_accuracy",
                "checkpoint"}


def test_local_train_leaves_checkpoint_metrics_and_summary(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["workers"] == 2 and summary["epochs_done"] == 1 and summary["rounds"] == 4
    assert summary["samples_seen"] == 4 * 32
    assert (trained / "checkpoint.pt").exists() and summary["checkpoint"].endswith("checkpoint.pt")
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [0, 1, 2, 3]
    assert metrics[-1]["val_accuracy"] == summary["val_accuracy"]


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
