"""Event validation: every malformed event is refused with an error that names the field."""

from __future__ import annotations

import json

import pytest

from lambdatrain.protocol.errors import InvalidEvent
from lambdatrain.protocol.config import CHECKSUMS, MODELS, RunConfig, parse_config
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
