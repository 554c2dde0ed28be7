"""The operator commands on the --out folder of a finished `local train` (no stack needed)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lambdatrain.training import checkpoint
from lambdatrain.training.batches import to_tensor_batch
from lambdatrain.training.data import open_prepared

pytestmark = pytest.mark.slow  # the session's `local train` takes half a minute

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operate.md"


def test_status_of_a_finished_folder_shows_state_rounds_and_accuracy(cli, trained):
    result = cli("status", trained)
    assert result.exit_code == 0, result.output
    summary = json.loads((trained / "summary.json").read_text())
    assert f"run {summary['run_id']}" in result.stdout
    assert "done (max epochs)" in result.stdout
    assert "4 of 4 (4 per epoch)" in result.stdout
    assert f"{summary['val_accuracy']:.2%}" in result.stdout


def test_status_json_has_round_times_and_no_remaining_rounds(cli, trained):
    result = cli("status", trained / "ledger.json", "--json")
    s = json.loads(result.stdout)
    assert s["state"] == "done" and s["round"] == s["rounds_total"] == 4
    assert s["remaining_rounds"] == 0 and s["eta_s"] == 0.0
    assert s["mean_round_s"] > 0 and s["phases_s"]["worker_s"] > 0
    assert s["settings"]["workers"] == 2 and s["reported"] is None


def test_runs_lists_the_folder_run(cli, trained):
    result = cli("runs", trained)
    assert result.exit_code == 0, result.output
    run = json.loads((trained / "summary.json").read_text())["run_id"]
    row = next(line for line in result.stdout.splitlines() if run in line)
    assert "done" in row and "1 of 1" in row


def test_plot_writes_a_png_and_the_raw_metrics_as_csv(cli, trained, tmp_path):
    result = cli("plot", trained, "--out", tmp_path / "run.png", "--csv", tmp_path / "metrics.csv")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "run.png") as image:
        assert image.size == (1200, 1200)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1, 2, 3]
    assert {"train_loss", "worker_s", "combine_s", "wait_s", "val_accuracy"} <= set(rows[0])
    assert rows[-1]["val_accuracy"] and not rows[0]["val_accuracy"]


def test_export_loads_into_a_fresh_model_with_the_checkpoints_predictions(cli, trained, cli_data, tmp_path):
    result = cli("export", trained, "--out", tmp_path / "export")
    assert result.exit_code == 0, result.output
    record = checkpoint.load(trained / "checkpoint.pt")
    # The three lines docs/operate.md shows, run as they are written there.
    snippet = re.search(r"```python\n(# load an export.*?)```", DOCS.read_text(), re.S).group(1)
    scope = {"EXPORT": str(tmp_path / "export")}
    exec(snippet, scope)  # noqa: S102 - our own documentation
    batch = to_tensor_batch(open_prepared(cli_data).val_x[:16], record["mean"], record["std"])
    with torch.no_grad():
        expected = checkpoint.model_from(record)(batch)
        got = scope["model"](batch)
    assert torch.equal(got, expected)
    meta = json.loads((tmp_path / "export" / "model.json").read_text())
    assert meta["spec"] == {"name": "vgg19_cifar", "width": 0.0625, "num_classes": 10}
    assert meta["input_size"] == 32 and meta["mean"] == record["mean"] and meta["classes"][0] == "airplane"
    assert meta["settings"]["workers"] == 2


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.fromarray(np.full((48, 40, 3), colour, dtype=np.uint8)).save(path)
    return path


def test_predict_prints_the_top_three_classes_of_each_image(cli, trained, tmp_path):
    images = [_png(tmp_path / "red.png", (200, 30, 30)), _png(tmp_path / "blue.jpg", (30, 30, 200))]
    result = cli("predict", *images, "--checkpoint", trained / "checkpoint.pt")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(p) for p in images]
    assert all(len(re.findall(r"\d+\.\d%", line)) == 3 for line in lines)


def test_predict_from_an_export_folder_matches_the_checkpoint(cli, trained, tmp_path):
    image = _png(tmp_path / "green.png", (30, 200, 30))
    assert cli("export", trained, "--out", tmp_path / "export").exit_code == 0
    from_ckpt = json.loads(cli("predict", image, "--checkpoint", trained / "checkpoint.pt", "--json").stdout)
    from_export = json.loads(cli("predict", image, "--checkpoint", tmp_path / "export", "--json").stdout)
    assert [t["class"] for t in from_export[0]["top"]] == [t["class"] for t in from_ckpt[0]["top"]]
    assert from_export[0]["top"][0]["probability"] == pytest.approx(from_ckpt[0]["top"][0]["probability"])
