"""Functional tests: the handlers end to end in one process, against a moto server on loopback."""

from __future__ import annotations

import uuid

import pytest

from tests.harness import InlineSystem


@pytest.fixture
def system(tmp_path, tiny_dataset, moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    mount = tmp_path / "efs"
    (mount / "datasets").mkdir(parents=True)
    (mount / "datasets" / "cifar10").symlink_to(tiny_dataset, target_is_directory=True)
    return InlineSystem(mount, table=f"t-{uuid.uuid4().hex[:8]}")
