"""Target resolution and its errors: each one line on stderr, exit 1, no traceback."""

from __future__ import annotations

import json
import socket

from lambdatrain.ops.export import build_hint
from lambdatrain.ops.target import TargetOptions, resolve
from tests.cli.conftest import assert_one_line_error


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_missing_table_name_says_where_to_get_it(cli):
    assert_one_line_error(cli("status", "some-run"), "no table name: pass --table, --stack-outputs FILE "
                          "(pulumi stack output --json > FILE) or set LAMBDATRAIN_TABLE")


def test_a_stopped_endpoint_asks_whether_local_serve_runs(cli):
    url = f"http://127.0.0.1:{_closed_port()}"
    assert_one_line_error(cli("runs", "--endpoint", url),
                          f"cannot reach {url}: is `lambdatrain local serve` running?")


def test_missing_credentials_are_named(cli, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert_one_line_error(cli("status", "some-run", "--table", "t"), "no AWS credentials found")


def test_local_state_without_endpoints_json_says_how_to_start_the_stack(cli, tmp_path):
    assert_one_line_error(cli("runs", "--local-state", tmp_path), "lambdatrain local serve --state-dir")


def test_a_run_argument_that_is_neither_id_nor_folder_is_refused(cli, tmp_path):
    assert_one_line_error(cli("status", tmp_path / "missing" / "out"), "neither a run id nor")


def test_predict_with_a_missing_checkpoint_is_one_line(cli, tmp_path):
    assert_one_line_error(cli("predict", tmp_path / "a.png", "--checkpoint", tmp_path / "none.pt"),
                          "checkpoint not found")


def test_stack_outputs_name_the_aws_resources_and_flags_win(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"tableName": "ledger-1", "starterFunctionName": "starter-1",
                                   "bucketName": "bucket-1"}))
    target = resolve(TargetOptions(stack_outputs=outputs, bucket="mine"), env={"LAMBDATRAIN_TABLE": "env-table"})
    assert not target.local and target.endpoints.get("dynamodb") is None
    assert (target.name("table"), target.name("starter"), target.name("bucket")) == ("ledger-1", "starter-1", "mine")
    assert resolve(TargetOptions(), env={"LAMBDATRAIN_TABLE": "env-table"}).name("table") == "env-table"


def test_an_endpoint_alone_means_the_local_stacks_names(tmp_path):
    target = resolve(TargetOptions(), env={"LAMBDATRAIN_ENDPOINT": "http://127.0.0.1:5000"})
    assert target.local and target.name("table") == "lambdatrain-local" and target.name("starter") == "starter"
    assert target.endpoints == {"lambda": "http://127.0.0.1:5000", "dynamodb": "http://127.0.0.1:5000",
                                "s3": "http://127.0.0.1:5000"}


def test_vgg19_exports_say_to_build_with_plain_torchvision():
    assert build_hint({"model": "vgg19", "width": 1.0, "num_classes": 10}) == "torchvision.models.vgg19(num_classes=10)"
    assert "build_model" in build_hint({"model": "vgg19", "width": 0.5, "num_classes": 10})


def test_local_serve_on_a_port_in_use_is_one_line_and_leaves_nothing_running(tmp_path):
    import subprocess
    import sys
    import threading

    from lambdatrain.local.stack import LocalStack, LocalStackConfig
    from lambdatrain.protocol.errors import ConfigError

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "lambdatrain", "local", "serve", "--state-dir", tmp_path / "s",
                                 "--port", str(port)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and "is in use" in result.stderr and "--port" in result.stderr
        # In process: the parts that did start (moto) are stopped again.
        before = {t.name for t in threading.enumerate()}
        stack = LocalStack(LocalStackConfig(state_dir=tmp_path / "in-process", lambda_port=port))
        try:
            stack.start()
        except ConfigError:
            pass
        else:
            raise AssertionError("the stack started on a port in use")
        assert {t.name for t in threading.enumerate() if t.is_alive()} <= before | {"MainThread"}
