"""Functional tests: the handlers end to end in one process, against a moto server on loopback."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.harness import InlineSystem


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def system(tmp_path, tiny_dataset, moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    mount = tmp_path / "efs"
    (mount / "datasets").mkdir(parents=True)
    (mount / "datasets" / "cifar10").symlink_to(tiny_dataset, target_is_directory=True)
    return InlineSystem(mount, table=f"t-{uuid.uuid4().hex[:8]}")
