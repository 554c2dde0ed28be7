"""Fault-injection tests: each fault against the same run without it.

Most faults run in-process (tests/harness.py: handlers inline, a crash raises instead of exiting,
a fake clock lets round deadlines pass at once); the whole-stack outage and the SIGKILL chaos run
on the real local stack (test_local_stack_faults.py).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from lambdatrain.storage import efs as efs
from tests.harness import InlineSystem

MATRIX_ENV = "LAMBDATRAIN_TEST_MATRIX"

# Three rounds per epoch, two epochs: small enough to repeat many times, long enough to matter.
SETTINGS = {"workers": 2, "epochs": 2, "model": "vgg19_cifar", "width": 0.0625, "batch_size": 32,
            "micro_batch": 16, "max_train_samples": 96, "val_samples": 32, "seed": 7, "round_deadline_s": 30.0}


# The round recipes the fault suite runs each fault with: every transport family and both modes.
# `make test` runs float32 and one compressed transport, to stay within its time; `make test-matrix`
# (LAMBDATRAIN_TEST_MATRIX=1) runs them all.
VARIANTS = {
    "float32": {},
    "ternary_ef": {"transport": "ternary_ef"},
    "sign_ef": {"transport": "sign_ef"},
    "average": {"mode": "average", "local_steps": 2, "batch_size": 16, "micro_batch": 8},
    "average_ternary_ef": {"mode": "average", "local_steps": 2, "batch_size": 16, "micro_batch": 8,
                           "transport": "ternary_ef"},
}
TESTED = list(VARIANTS) if os.environ.get(MATRIX_ENV) else ["float32", "ternary_ef"]
# The local stack's whole-system faults (slow): the compressed transport in `make test`, whose
# state spans the most places (EFS, the bucket, warm environments); every recipe in the matrix.
STACK_TESTED = list(VARIANTS) if os.environ.get(MATRIX_ENV) else ["ternary_ef"]


@pytest.fixture(params=TESTED)
def settings(request) -> dict:
    """SETTINGS in one variant of the round recipe."""
    return {**SETTINGS, **VARIANTS[request.param]}


@pytest.fixture(params=STACK_TESTED)
def stack_settings(request) -> dict:
    """SETTINGS in one variant, for the local stack's fault tests."""
    return {**SETTINGS, **VARIANTS[request.param]}


@pytest.fixture
def make_system(tmp_path, tiny_dataset, moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)

    def make(**kwargs) -> InlineSystem:
        mount = tmp_path / f"efs-{uuid.uuid4().hex[:6]}"
        (mount / "datasets").mkdir(parents=True)
        (mount / "datasets" / "cifar10").symlink_to(tiny_dataset, target_is_directory=True)
        kwargs.setdefault("bucket", f"b-{uuid.uuid4().hex[:8]}")  # None: a stack without a bucket
        return InlineSystem(mount, table=f"t-{uuid.uuid4().hex[:8]}", **kwargs)

    return make


def final_weights(system: InlineSystem, run: str) -> np.ndarray:
    record = system.ledger.get_run(run)
    return efs.read_array(efs.RunLayout(system.mount, run).weights(record.round), record.weights)


@pytest.fixture(scope="session")
def reference_cache():
    return {}


@pytest.fixture
def reference(make_system, reference_cache):
    """Final weights of the fault-free run of given settings (computed once per session)."""

    def get(settings: dict) -> np.ndarray:
        key = repr(sorted(settings.items()))
        if key not in reference_cache:
            system = make_system()
            run = system.invoke("starter", {"start": True, **settings})["run"]
            system.run_to_end(run)
            reference_cache[key] = final_weights(system, run)
        return reference_cache[key]

    return get


def assert_survived(system: InlineSystem, run: str, expected: np.ndarray, *, results_from: int = 0) -> None:
    """The invariants of docs/reliability.md: finished, one step per round, nothing lost or doubled.

    ``results_from``: the first round whose RESULT items exist (a rebuilt ledger has only later ones).
    """
    record = system.ledger.get_run(run)
    assert record.state == "done", record
    metrics = system.ledger.metrics(run)
    assert sorted(m["round"] for m in metrics) == list(range(record.round))  # one optimizer step a round
    per_round = record.config.per_worker_batch * record.config.local_steps * record.workers
    assert all(m["samples"] == per_round for m in metrics)  # no result counted twice or dropped
    for r in range(results_from, record.round):
        results = system.ledger.results(run, r)
        assert [x.worker for x in results] == list(range(record.workers))
        assert system.ledger.get_round(run, r).status == "committed"
    assert np.array_equal(final_weights(system, run), expected)  # bit-identical to the fault-free run
    run_dir = efs.RunLayout(system.mount, run).root
    assert not list(run_dir.rglob("*.tmp")), "half-written files left behind"
