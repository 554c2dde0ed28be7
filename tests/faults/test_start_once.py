"""A start is idempotent per run id: re-sent after the starter died at any of its side effects, or
retried by a client whose answer was lost, it is one run; the same id with other settings is refused.

In-process (tests/harness.py); the same starter under real SIGKILLs is test_local_train_kills.py.
"""

from __future__ import annotations

import pytest

from lambdatrain.roles.faults import POINTS
from lambdatrain.roles.settings import STARTER
from tests.faults.conftest import SETTINGS, assert_survived


@pytest.mark.parametrize("point", POINTS["starter"])
def test_start_resent_with_its_run_id_after_the_starter_died_is_one_run(make_system, reference, point):
    system = make_system(faults=f"starter:{point}:1")
    event = {"start": True, "run": "run-resent", **SETTINGS}
    with pytest.raises(BaseException, match=point):
        system.invoke(STARTER, event)
    answer = system.invoke(STARTER, event)
    assert answer["run"] == "run-resent"
    assert (answer["workers"], answer["rounds_per_epoch"]) == (SETTINGS["workers"], 3)
    system.run_to_end("run-resent")
    assert [r.run for r in system.ledger.list_runs()] == ["run-resent"]
    assert_survived(system, "run-resent", reference(SETTINGS))


def test_duplicate_start_answers_like_the_first(make_system):
    system = make_system()
    event = {"start": True, "run": "run-twice", **SETTINGS}
    first = system.invoke(STARTER, event)
    second = system.invoke(STARTER, event)
    assert first["status"] == "started" and second["status"] in ("redriven", "idle")
    assert {k: second[k] for k in ("run", "workers", "rounds_per_epoch")} == \
        {k: first[k] for k in ("run", "workers", "rounds_per_epoch")}


def test_duplicate_start_with_other_settings_is_refused_in_one_line(make_system):
    system = make_system()
    system.invoke(STARTER, {"start": True, "run": "run-taken", **SETTINGS})
    before = system.ledger.get_run("run-taken")
    with pytest.raises(Exception) as caught:
        system.invoke(STARTER, {"start": True, "run": "run-taken", **{**SETTINGS, "workers": 3}})
    message = str(caught.value)
    assert "run-taken exists with other settings" in message and "workers 3, not 2" in message
    assert "\n" not in message
    assert system.ledger.get_run("run-taken") == before  # nothing changed


def test_start_with_other_settings_after_a_start_died_before_its_run_leaves_the_files_alone(make_system):
    # The first start died after writing config.json and round 0's weights but before the run
    # existed; a start reusing the id with other settings must not overwrite them.
    system = make_system(faults="starter:after_weights:1")
    with pytest.raises(BaseException, match="after_weights"):
        system.invoke(STARTER, {"start": True, "run": "run-half", **SETTINGS})
    run_dir = system.mount / "runs" / "run-half"
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    with pytest.raises(Exception) as caught:
        system.invoke(STARTER, {"start": True, "run": "run-half", **{**SETTINGS, "workers": 3}})
    assert "run-half exists with other settings" in str(caught.value)
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
    assert system.ledger.find_run("run-half") is None
