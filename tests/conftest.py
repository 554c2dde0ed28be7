"""Fixtures shared by every test area: AWS credentials that can never reach AWS, small datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.datagen import make_prepared

# Tiny models run fastest on one thread, and a second thread only fights the other tests' processes.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline_aws(monkeypatch):
    # Fake credentials and a region for boto3; no test may talk to a real account.
    for key in list(os.environ):
        if key.startswith(("AWS_ENDPOINT_URL", "LAMBDATRAIN_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def moto_url():
    """One moto server on loopback for the session; tests keep apart by unique table names."""
    from lambdatrain.local.moto_server import MotoServer

    server = MotoServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A learnable 10-class, 32x32 dataset: 320 training and 80 validation images."""
    return make_prepared(tmp_path_factory.mktemp("data") / "tiny", n_train=320, n_val=80, seed=0)
