"""The operator commands against a live local stack: start, status, watch, stop, resume, export.

Every command goes through the stack's real Lambda API and moto, as it would go to AWS.
"""

from __future__ import annotations

import json

import boto3
import pytest

from tests.cli.conftest import TINY_FLAGS, assert_one_line_error

pytestmark = pytest.mark.slow


def _target(live) -> list[str]:
    return ["--local-state", live.state_dir]


def test_start_status_watch_and_export_a_run(cli, live, tmp_path):
    started = cli("start", *TINY_FLAGS, "--epochs", "1", "--run", "live-a", *_target(live))
    assert started.exit_code == 0, started.output
    assert "run live-a: started, 2 workers, 4 rounds per epoch" in started.stdout
    assert f"lambdatrain watch live-a --local-state {live.state_dir}" in started.stdout

    s = json.loads(cli("status", "live-a", "--json", *_target(live)).stdout)
    assert s["run"] == "live-a" and s["rounds_total"] == 4
    if s["state"] == "running":  # which workers reported depends on timing, the bookkeeping does not
        assert sorted(s["reported"] + s["missing"]) == [0, 1]

    watched = cli("watch", "live-a", "--interval", "0.2", "--timeout", "180", *_target(live))
    assert watched.exit_code == 0, watched.output
    assert "round 3 (4 of 4 done, epoch 1.00): train loss" in watched.stdout  # the ledger's round 3, the 4th
    assert watched.stdout.strip().splitlines()[-1].startswith("run live-a done (max epochs) after 4 rounds")

    exported = cli("export", "live-a", "--out", tmp_path / "export", "--s3", *_target(live))
    assert exported.exit_code == 0, exported.output
    assert "uploaded to s3://lambdatrain-local/exports/live-a/" in exported.stdout
    keys = {o["Key"] for o in boto3.client("s3", **live.client_kwargs)
            .list_objects_v2(Bucket="lambdatrain-local", Prefix="exports/live-a/")["Contents"]}
    assert keys == {"exports/live-a/model.pt", "exports/live-a/model.json"}

    runs = cli("runs", *_target(live))
    assert any("live-a" in line and "done" in line for line in runs.stdout.splitlines())


def test_stop_and_resume_go_through_the_starter(cli, live):
    # 4 epochs (16 rounds): the run must still be running when the stop arrives (a finished run
    # cannot be stopped), also where a loaded machine leaves seconds between the two commands.
    started = cli("start", *TINY_FLAGS, "--epochs", "4", "--run", "live-b", "--via-s3", *_target(live))
    assert started.exit_code == 0, started.output
    assert "uploaded s3://lambdatrain-local/start/live-b.json: run live-b" in started.stdout

    stopped = cli("stop", "live-b", *_target(live))
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout.split("starter: ", 1)[1]) == {"status": "stopped", "run": "live-b"}
    status = cli("status", "live-b", *_target(live))
    assert "stopped (stopped by user)" in status.stdout

    resumed = cli("resume", "live-b", *_target(live))
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout.splitlines()[0].split("starter: ", 1)[1])["status"] == "redriven"
    watched = cli("watch", "live-b", "--interval", "0.2", "--timeout", "180", *_target(live))
    assert "run live-b done (max epochs) after 16 rounds" in watched.stdout


def test_one_endpoint_url_reaches_the_tables_of_the_local_stack(cli, live):
    # --endpoint sends every call to one URL (moto serves DynamoDB and S3 there); the Lambda API
    # of our local stack listens elsewhere, so commands that invoke also need --lambda-endpoint.
    result = cli("runs", "--endpoint", live.moto_url)
    assert result.exit_code == 0, result.output
    assert "runs" in result.stdout
    stop = cli("stop", "no-such-run", "--endpoint", live.moto_url, "--lambda-endpoint", live.lambda_url)
    assert_one_line_error(stop, "the starter failed", "unknown run 'no-such-run'")


def test_status_of_an_unknown_run_is_one_line(cli, live):
    assert_one_line_error(cli("status", "no-such-run", *_target(live)), "unknown run 'no-such-run'")


def test_export_without_the_mount_says_where_to_run_it(cli, live, tmp_path):
    # Enough epochs that the run cannot finish before the stop: a finished run's model is in the
    # bucket, and export would then (rightly) succeed without the mount.
    assert cli("start", *TINY_FLAGS, "--epochs", "50", "--run", "live-c", *_target(live)).exit_code == 0
    assert cli("stop", "live-c", *_target(live)).exit_code == 0
    assert "stopped (stopped by user)" in cli("status", "live-c", *_target(live)).stdout
    result = cli("export", "live-c", "--out", tmp_path, "--endpoint", live.moto_url)
    assert_one_line_error(result, "are on EFS", "--mount PATH")
