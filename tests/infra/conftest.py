"""Fixtures for the infrastructure tests: the program built offline under Pulumi's mocks.

Each stack is built once per session (a build takes about two seconds) with
``components.plan.build``, the same harness ``python -m components.plan`` prints from.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: components/, __main__.py

from components.config import stack_config  # noqa: E402
from components.plan import Plan, build  # noqa: E402


def quiet_build(stack: str, config: dict[str, str] | None = None) -> Plan:
    # pulumi_aws warns about its own deprecated aliases as it lazily imports its modules.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return build(stack, config)


@pytest.fixture(scope="session")
def dev() -> Plan:
    return quiet_build("dev")


@pytest.fixture(scope="session")
def prod() -> Plan:
    return quiet_build("prod")


@pytest.fixture
def build_with():
    """Build a stack with its example config changed: ``build_with("dev", workers="0")``."""
    def _build(stack: str, **changes: str) -> Plan:
        config = stack_config(stack) | {f"lambdatrain:{k}": v for k, v in changes.items()}
        return quiet_build(stack, config)

    return _build


@pytest.fixture(params=["dev", "prod"])
def plan(request) -> Plan:
    """A test that takes ``plan`` runs against both example stacks."""
    return request.getfixturevalue(request.param)
