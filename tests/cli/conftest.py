"""Fixtures for the operator commands: one finished `local train` folder and one live local stack.

Both run as a user runs them (`lambdatrain local train`, `lambdatrain local serve`), each in its own
process, and are session-scoped because each costs seconds; tests on the live stack start their
own tiny runs with their own run ids.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from lambdatrain.cli.app import app
from tests.datagen import make_prepared

# The smallest run that still has several rounds and an evaluation: 128 images, 2 workers,
# 32 per step -> 4 rounds per epoch.
TINY = {"workers": 2, "epochs": 1, "model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 16}
TINY_FLAGS = ["--workers", "2", "--model", "vgg19_cifar", "--width", "0.0625", "--batch-size", "32",
              "--micro-batch", "16"]


@pytest.fixture(scope="session")
def cli_data(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("cli-data") / "tiny", n_train=128, n_val=64)


def _lambdatrain(*args) -> list[str]:
    return [sys.executable, "-m", "lambdatrain", *[str(a) for a in args]]


def as_from_a_terminal() -> None:
    """preexec_fn of a CLI process a test interrupts: SIGINT and SIGTERM at their defaults and
    unblocked, as a terminal starts it, whatever this test process inherited (a child keeps its
    parent's ignored and blocked signals across exec: seen once in a full xdist run, where the
    SIGINT a test sent let `local train` finish instead of stopping it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "LAMBDATRAIN_"))}


def _end(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)  # both commands stop their stack (and its sandboxes) on this signal
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def launched(tmp_path_factory, cli_data):
    """`lambdatrain local train` and `lambdatrain local serve`, started together in their own processes.

    Each local stack's moto keeps its state per process, so two stacks must not share one. Started
    at once, the training run overlaps the tests on the live stack (test_live.py runs first).
    """
    root = tmp_path_factory.mktemp("launched")
    out, state_dir = root / "trained", root / "stack"
    flags = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", v)]
    logs = {name: open(root / f"{name}.log", "w") for name in ("train", "serve")}
    procs = {
        "train": subprocess.Popen(_lambdatrain("local", "train", "--data", cli_data, "--out", out, *flags),
                                  stdout=logs["train"], stderr=subprocess.STDOUT, env=_clean_env(),
                                  preexec_fn=as_from_a_terminal),
        "serve": subprocess.Popen(_lambdatrain("local", "serve", "--state-dir", state_dir, "--port", 0,
                                               "--data", cli_data),
                                  stdout=logs["serve"], stderr=subprocess.STDOUT, env=_clean_env(),
                                  preexec_fn=as_from_a_terminal),
    }
    try:
        yield SimpleNamespace(root=root, out=out, state_dir=state_dir, procs=procs)
    finally:
        _end(procs["train"], signal.SIGINT)
        _end(procs["serve"], signal.SIGTERM)
        for log in logs.values():
            log.close()


@pytest.fixture(scope="session")
def trained(launched) -> Path:
    """The --out folder of one finished `local train` (checkpoint.pt, ledger.json, ...)."""
    code = launched.procs["train"].wait(240)
    assert code == 0, (launched.root / "train.log").read_text()
    shutil.rmtree(launched.out / "stack", ignore_errors=True)  # the operator commands must not need it
    return launched.out


@pytest.fixture(scope="session")
def live(launched):
    """The live local stack: its endpoints.json, plus ``state_dir`` and boto3 ``client_kwargs``."""
    path, deadline = launched.state_dir / "endpoints.json", time.monotonic() + 90
    while not path.exists():
        assert launched.procs["serve"].poll() is None and time.monotonic() < deadline, \
            (launched.root / "serve.log").read_text()
        time.sleep(0.1)
    ends = json.loads(path.read_text())
    return SimpleNamespace(state_dir=launched.state_dir, moto_url=ends["dynamodb"], lambda_url=ends["lambda"],
                           endpoints=ends, client_kwargs={"endpoint_url": ends["s3"], "region_name": "us-east-1",
                                                          "aws_access_key_id": "local", "aws_secret_access_key": "local"})


@pytest.fixture
def cli():
    """Run `lambdatrain ARGS...` in process; returns click's Result (stdout and stderr apart)."""
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
