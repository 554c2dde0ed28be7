"""roles/warm.py: a combiner environment keeps one round's starting state, and gives it only to the
combine of that run and round whose committed weights it is."""

from __future__ import annotations

import numpy as np
import pytest

from lambdatrain.roles import warm
from lambdatrain.storage.efs import Digest

DIGEST = Digest(12, "xxh3-128:00")


@pytest.fixture(autouse=True)
def _cold():
    warm.forget()
    yield
    warm.forget()


def _keep(**over):
    kw = {"mount": "/mnt/efs", "run": "r1", "round_no": 5, "digest": DIGEST, "weights": np.ones(3, np.float32),
          "momentum": np.zeros(2, np.float32), "residual": None, **over}
    warm.keep(kw["mount"], kw["run"], kw["round_no"], kw["digest"], kw["weights"], kw["momentum"], kw["residual"])
    return kw


def test_the_kept_state_goes_to_the_combine_of_its_run_round_and_committed_weights_once():
    kept = _keep()
    got = warm.take("/mnt/efs", "r1", 5, Digest(12, "xxh3-128:00"))
    assert got is not None and got.weights is kept["weights"] and got.momentum is kept["momentum"]
    # Handed over, not kept as well: a retry of the round in this environment reads the files.
    assert warm.take("/mnt/efs", "r1", 5, DIGEST) is None


@pytest.mark.parametrize("other", [{"mount": "/mnt/other"}, {"run": "r2"}, {"round_no": 4}, {"round_no": 6},
                                   {"committed": Digest(12, "xxh3-128:01")}])
def test_any_other_combine_reads_the_files(other):
    _keep()
    ask = {"mount": "/mnt/efs", "run": "r1", "round_no": 5, "committed": DIGEST, **other}
    assert warm.take(ask["mount"], ask["run"], ask["round_no"], ask["committed"]) is None
    assert warm.take("/mnt/efs", "r1", 5, DIGEST) is None  # and the stale state is not held on to


def test_the_kept_arrays_are_read_only_so_no_step_changes_what_a_retry_takes():
    kept = _keep()
    with pytest.raises(ValueError, match="read-only"):
        kept["weights"][0] = 2.0
    with pytest.raises(ValueError, match="read-only"):
        kept["momentum"] += 1


def test_an_environment_keeps_one_run_at_most():
    _keep(run="r1")
    _keep(run="r2")
    assert warm.take("/mnt/efs", "r2", 5, DIGEST) is not None
    _keep(run="r1")
    _keep(run="r2")
    assert warm.take("/mnt/efs", "r1", 5, DIGEST) is None
