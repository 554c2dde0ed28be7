"""Event validation: every malformed event is refused with an error that names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambdatrain.protocol.errors import InvalidEvent
from lambdatrain.protocol.config import (CHECKSUMS, MODELS, SETTINGS, RunConfig, parse_config, start_event_schema,
                                         value_type)
from lambdatrain.protocol.events import (check_relative_path, check_run_id, event_kind, parse_combine,
                                         parse_stream_records, parse_work)


def test_paper_start_event_parses_with_defaults():
    config = parse_config({"start": True, "workers": 6})
    assert config.workers == 6 and config.model == "vgg19_cifar" and config.mode == "sync"


@pytest.mark.parametrize("event,field", [
    ({"start": True}, "workers"),
    ({"workers": 0}, "workers"),
    ({"workers": "6"}, "workers"),
    ({"workers": True}, "workers"),
    ({"workers": 2, "epochs": -1}, "epochs"),
    ({"workers": 2, "model": "resnet"}, "model"),
    ({"workers": 2, "lr": float("nan")}, "lr"),
    ({"workers": 2, "lr": 0}, "lr"),
    ({"workers": 4, "batch_size": 2}, "batch_size"),
    ({"workers": 2, "target_accuracy": 1.5}, "target_accuracy"),
    ({"workers": 2, "data": "../etc"}, "data"),
    ({"workers": 2, "data": "/abs/path"}, "data"),
    ({"workers": 2, "mode": "async"}, "mode"),
    ({"workers": 2, "transport": "int8"}, "transport"),
    ({"workers": 2, "checksum": "md5"}, "checksum"),
    ({"workers": 2, "lr_schedule": "linear"}, "lr_schedule"),
    ({"workers": 2, "epochs": 2, "warmup_epochs": 3}, "warmup_epochs"),
    ({"workers": 2, "warmup_epochs": -0.5}, "warmup_epochs"),
    ({"workers": 2, "local_steps": 3}, "local_steps"),
    ({"workers": 2, "wrokers": 3}, "wrokers"),
])
def test_bad_start_settings_name_the_field(event, field):
    with pytest.raises(InvalidEvent) as info:
        parse_config(event)
    assert info.value.field == field
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("event,field", [
    ({"workers": 2, "epochsdone": 0, "run": "r", "round": 0}, "workerno"),
    ({"workerno": 2, "workers": 2, "epochsdone": 0, "run": "r", "round": 0}, "workerno"),
    ({"workerno": 0, "workers": 2, "epochsdone": -1, "run": "r", "round": 0}, "epochsdone"),
    ({"workerno": 0, "workers": 2, "epochsdone": 0, "run": "../../x", "round": 0}, "run"),
    ({"workerno": 0, "workers": 2, "epochsdone": 0, "run": "r", "round": "1"}, "round"),
    ({"workerno": 0, "workers": 2, "epochsdone": 0, "run": "r", "round": 0, "invoke": "x"}, "invoke"),
])
def test_bad_work_events_name_the_field(event, field):
    with pytest.raises(InvalidEvent) as info:
        parse_work(event)
    assert info.value.field == field


def test_combine_event_requires_combine_true():
    with pytest.raises(InvalidEvent, match="combine"):
        parse_combine({"combine": "yes", "workers": 2, "epochsdone": 0, "run": "r", "round": 0})


@pytest.mark.parametrize("run_id", ["../../x", "a/b", "", ".hidden", "x" * 65, "a b"])
def test_run_ids_that_could_escape_the_runs_folder_are_refused(run_id):
    with pytest.raises(InvalidEvent):
        check_run_id(run_id)


def test_relative_paths_stay_below_the_mount():
    assert check_relative_path("datasets/cifar10", "data") == "datasets/cifar10"
    for bad in ("..", "a/../b", "a//b", "./a", "a/b\n"):
        with pytest.raises(InvalidEvent):
            check_relative_path(bad, "data")


def _record(status="ready", kind="round", run="r1", round_no="3"):
    return {"eventName": "MODIFY", "dynamodb": {"NewImage": {
        "kind": {"S": kind}, "status": {"S": status}, "run": {"S": run}, "round": {"N": round_no}}}}


def test_stream_batch_yields_each_ready_round_once():
    batch = {"Records": [_record(), _record(), _record(status="open"), _record(kind="result"),
                         _record(run="r0", round_no="1")]}
    assert [(t.run, t.round) for t in parse_stream_records(batch)] == [("r0", 1), ("r1", 3)]


def test_event_kind_refuses_unknown_events():
    with pytest.raises(InvalidEvent, match="event"):
        event_kind({"hello": 1})
    with pytest.raises(InvalidEvent, match="start"):
        event_kind({"start": "yes"})
    assert event_kind({"workerno": 0}) == "work"


def test_a_stored_config_rebuilds_the_same_run():
    config = parse_config({"workers": 2, "keep_rounds": 0, "target_accuracy": 0.5})
    assert RunConfig(**json.loads(json.dumps(config.to_dict()))) == config


def test_the_protocol_accepts_exactly_the_models_and_checksums_that_exist():
    from lambdatrain.storage.digest import new_hasher
    from lambdatrain.training.model import MODELS as BUILT

    assert set(BUILT) == set(MODELS)
    for algorithm in CHECKSUMS:
        new_hasher(algorithm).update(b"x")


def test_the_committed_start_event_schema_is_the_declarations():
    # Regenerate with: python -m lambdatrain.cli.settings --schema > docs/start-event.schema.json
    committed = json.loads((Path(__file__).resolve().parents[2] / "docs" / "start-event.schema.json").read_text())
    assert committed == start_event_schema()


def _probes(name: str) -> list:
    spec, (kind, optional) = SETTINGS[name], value_type(name)
    wrong = [True, "x", [1]] if kind is not bool else [1, "true", None if not optional else "yes"]
    if kind is str:
        return [*spec.choices, "not-a-choice", 3, True, *([None] if optional else [])] if spec.choices else [3, True]
    if kind is bool:
        return [True, False, *wrong]
    values = [spec.low, spec.high, (spec.low + spec.high) / 2, spec.low - 1, spec.high + 1, *wrong]
    if kind is int:
        values = [int(v) for v in values[:5]] + [2.5, *wrong]
    return values + ([None] if optional else [])


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_schema_and_the_validator_accept_the_same_values(name):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(start_event_schema())
    # The other settings at values that leave the cross-setting rules (Rule) out of the comparison.
    base = {"start": True, "workers": 1, "batch_size": 1_000_000, "epochs": 10_000,
            **({"mode": "average"} if name == "local_steps" else {})}
    for value in _probes(name):
        event = {**base, name: value}
        try:
            parse_config(event)
            accepted = True
        except InvalidEvent:
            accepted = False
        assert validator.is_valid(event) == accepted, (name, value)


def test_nesterov_needs_momentum():
    assert parse_config({"workers": 1, "nesterov": True}).nesterov is True
    with pytest.raises(InvalidEvent) as info:
        parse_config({"workers": 1, "nesterov": True, "momentum": 0})
    assert info.value.field == "nesterov" and "momentum" in str(info.value)
