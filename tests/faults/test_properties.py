"""Property tests: a malformed event or setting is refused whole, before anything is written.

Every handler (starter, worker, combiner) and ``lambdatrain local train`` get events broken in one
field at a time, and wholly random JSON. The promise under test (protocol.py, starter.py): bad
input raises a domain error (``InvalidEvent`` naming the field) with a one-line message, and the
mount and the table are exactly as before; a well-formed event that names a missing run or a
round that is not current is a domain error or a no-op answer, never a write.

The product bugs this file found (malformed batch shapes, unbounded seeds, newlines in keys,
unchecked keys of control events) are fixed; their cases stay at the bottom as regressions.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lambdatrain.protocol.errors import InvalidEvent, LambdaTrainError, UnknownRun
from lambdatrain.protocol.config import CHECKSUMS, LR_SCHEDULES, MAX_WORKERS, MODES, TRANSPORTS, RunConfig, parse_config
from lambdatrain.protocol.events import RUN_ID_PATTERN
from tests.datagen import make_prepared
from tests.faults.conftest import SETTINGS
from tests.harness import InlineSystem

# One InlineSystem per test function (a moto table is cheap, a started run is not), shared by all
# of that test's examples; each example checks its own before/after snapshot.
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Keys that pick a handler path (protocol.event_kind): an "unknown" key must not be one of them,
# or the event changes kind instead of gaining a stray field.
ROUTING = {"Records", "start", "combine", "watchdog", "setup", "stop", "resume", "workerno"}
NOOP = {"noop", "skipped", "stale"}

WORK = {"workerno": 0, "workers": 2, "epochsdone": 0, "run": "good", "round": 1}  # round 1: not current
COMBINE = {"combine": True, "workers": 2, "epochsdone": 0, "run": "good", "round": 0, "shard": 0}
START = {"start": True, **SETTINGS, "run": "fresh"}
READY = {"kind": {"S": "round"}, "status": {"S": "ready"}, "run": {"S": "good"}, "round": {"N": "0"}}


# --- strategies -------------------------------------------------------------------------------

# Printable text: a control character in a key is its own finding (test_unknown_key_with_newline...).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)
HUGE = st.integers(min_value=2**63) | st.just(10**400)
SCALARS = st.none() | st.booleans() | st.integers() | HUGE | st.floats() | TEXT | st.just("../../x")
KEYS = st.sampled_from(sorted(ROUTING | set(WORK) | set(COMBINE) | set(START) - {"Records"})) | TEXT
JSON = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=4),
                    max_leaves=10)
CONTAINERS = st.lists(SCALARS, max_size=2) | st.dictionaries(TEXT, SCALARS, max_size=2)
NOT_INT = st.none() | st.booleans() | st.floats() | TEXT | st.just("../x") | CONTAINERS
NOT_NUMBER = st.none() | st.booleans() | st.sampled_from([math.nan, math.inf, -math.inf]) | TEXT | CONTAINERS
NOT_STR = st.none() | st.booleans() | st.integers() | HUGE | st.floats() | CONTAINERS
NOT_BOOL = st.none() | st.integers() | st.floats() | TEXT | CONTAINERS
BAD_RUN_ID = (NOT_STR | st.sampled_from(["", "../../x", "../good", "good/..", "/abs", "-lead", "a" * 65, "a b"])
              | TEXT.map(lambda s: "../" + s) | TEXT.filter(lambda s: not RUN_ID_PATTERN.match(s)))
BAD_PATH = st.sampled_from(["", "/etc", "..", "../x", "a/../../b", "a//b", "./a", "a b", "datasets/"]) | \
    TEXT.map(lambda s: "../" + s)
UNKNOWN_KEY = TEXT.filter(lambda k: k and k not in ROUTING)


def below(minimum: int) -> st.SearchStrategy:
    return NOT_INT | st.integers(max_value=minimum - 1)


def except_none(strategy: st.SearchStrategy) -> st.SearchStrategy:
    # None means "use the default" for optional settings: valid, and it would start a real run.
    return strategy.filter(lambda v: v is not None)


# Every RunConfig field, with values that protocol.parse_config must refuse naming that field
# (given the rest of SETTINGS: workers 2, mode sync).
BAD_SETTING: dict[str, st.SearchStrategy] = {
    "workers": NOT_INT | st.integers(max_value=0) | st.integers(min_value=MAX_WORKERS + 1) | HUGE,
    "model": NOT_STR | TEXT.filter(lambda s: s not in ("vgg19", "vgg19_cifar", "vgg11_cifar")),
    "width": NOT_NUMBER | st.floats(max_value=0) | st.floats(min_value=4, exclude_min=True)
    | st.integers(max_value=0) | st.integers(min_value=5) | HUGE,
    "epochs": below(1),
    "batch_size": below(2),  # fewer samples than the two workers
    "micro_batch": below(1),
    "lr": NOT_NUMBER | st.floats(max_value=0) | st.integers(max_value=0),
    "momentum": NOT_NUMBER | st.floats(max_value=0, exclude_max=True) | st.floats(min_value=1)
    | st.integers(max_value=-1) | st.integers(min_value=1),
    "weight_decay": NOT_NUMBER | st.floats(max_value=0, exclude_max=True) | st.integers(max_value=-1),
    "seed": below(0),
    "target_accuracy": except_none(NOT_NUMBER) | st.floats(max_value=0) | st.floats(min_value=1, exclude_min=True)
    | st.integers(max_value=0) | st.integers(min_value=2),
    "patience": except_none(below(1)),
    "data": except_none(NOT_STR) | BAD_PATH,
    "max_train_samples": except_none(below(1)),
    "val_samples": except_none(below(1)),
    "augment": NOT_BOOL,
    "nesterov": NOT_BOOL,  # true with momentum 0 is refused too (tests/unit/test_protocol.py)
    "mode": NOT_STR | TEXT.filter(lambda s: s not in MODES),
    "local_steps": below(1) | st.integers(min_value=2),  # more than one only applies to mode average
    "transport": NOT_STR | TEXT.filter(lambda s: s not in TRANSPORTS),
    "combine_shards": below(1) | st.integers(min_value=65) | HUGE,
    "checksum": NOT_STR | TEXT.filter(lambda s: s not in CHECKSUMS),
    "round_deadline_s": NOT_NUMBER | st.floats(max_value=0) | st.integers(max_value=0),
    "eval_every": below(0),
    "lr_schedule": NOT_STR | TEXT.filter(lambda s: s not in LR_SCHEDULES),
    "warmup_epochs": NOT_NUMBER | st.floats(max_value=0, exclude_max=True) | st.integers(max_value=-1)
    | st.integers(min_value=10_001),  # more than any valid number of epochs
    "keep_rounds": below(0) | st.integers(min_value=10**6 + 1),
}

BAD_WORK = {"workerno": below(0) | st.integers(min_value=2) | HUGE,  # at or above workers
            "workers": NOT_INT | st.integers().filter(lambda n: n != 2) | HUGE,  # the run has 2
            "epochsdone": below(0), "run": BAD_RUN_ID, "round": below(0)}
BAD_COMBINE = {"combine": JSON.filter(lambda v: v is not True), "workers": below(1), "epochsdone": below(0),
               "run": BAD_RUN_ID, "round": below(0), "shard": below(0),
               "claim": JSON.filter(lambda v: v is not None and not (isinstance(v, str) and re.fullmatch(
                   r"[0-9a-f]{32}", v)))}  # None or a claim token is a well-formed (unsharded or share) combine
BAD_START = {**BAD_SETTING, "start": JSON.filter(lambda v: v is not True), "run": BAD_RUN_ID}


def one_field_broken(base: dict, bad: dict[str, st.SearchStrategy], removed: dict[str, str]) -> st.SearchStrategy:
    """(event, field the error must name): one value replaced, one required key dropped, or one key added.

    ``removed`` maps each required key to the field named when it is missing ("event" for the key
    that routes the event: without it the event is of no kind at all).
    """
    replaced = st.sampled_from(sorted(bad)).flatmap(lambda k: bad[k].map(lambda v: ({**base, k: v}, k)))
    dropped = st.sampled_from(sorted(removed)).map(lambda k: ({x: v for x, v in base.items() if x != k}, removed[k]))
    added = UNKNOWN_KEY.filter(lambda k: k not in base and k not in bad).flatmap(lambda k: JSON.map(lambda v: ({**base, k: v}, k)))
    return st.one_of(replaced, dropped, added)


# --- state ------------------------------------------------------------------------------------

def snapshot(system: InlineSystem) -> tuple:
    """Every file below the mount's parent (so an escape from runs/ shows), the table, the invocations."""
    root = system.mount.parent
    files = {}
    for folder, dirs, names in os.walk(root):  # does not follow the datasets symlink
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            files[str(path.relative_to(root))] = path.lstat().st_size
        files.update({str(Path(folder, d).relative_to(root)): "dir" for d in dirs})
    items, kwargs = [], {"ConsistentRead": True}
    while True:
        page = system.ledger.table.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items.sort(key=lambda i: (i["pk"], i["sk"]))
    return files, items, len(system.invoker.sent), len(system.invoker.queue)


def refused(system: InlineSystem, name: str, event: Any) -> LambdaTrainError:
    """Invoke; the event must be refused with a one-line domain error and leave no trace."""
    before = snapshot(system)
    with pytest.raises(LambdaTrainError) as info:
        system.invoke(name, event)
    assert "\n" not in str(info.value), repr(str(info.value))
    assert snapshot(system) == before
    return info.value


def refused_naming(system: InlineSystem, name: str, event: Any, field: str) -> None:
    exc = refused(system, name, event)
    assert isinstance(exc, InvalidEvent), f"{type(exc).__name__}: {exc}"
    assert exc.field == field, str(exc)


def answered_noop(system: InlineSystem, name: str, event: Any) -> None:
    before = snapshot(system)
    answer = system.invoke(name, event)
    assert answer["status"] in NOOP or answer["status"] == "batch" and all(
        r["status"] in NOOP for r in answer["rounds"]), answer
    assert snapshot(system) == before


@pytest.fixture
def system(make_system) -> InlineSystem:
    return make_system()


@pytest.fixture
def started(make_system) -> InlineSystem:
    """Run "good" started and nothing drained: round 0 open, both workers queued, not run."""
    system = make_system()
    system.invoke("starter", {"start": True, **SETTINGS, "run": "good"})
    return system


# --- starter ----------------------------------------------------------------------------------

@FUZZ
@given(case=one_field_broken(START, BAD_START, {"start": "event", "workers": "workers"}))
def test_starter_refuses_start_event_broken_in_one_field_and_writes_nothing(system, case):
    event, field = case
    refused_naming(system, "starter", event, field)


# --- worker -----------------------------------------------------------------------------------

@FUZZ
@given(case=one_field_broken(WORK, BAD_WORK, {"workerno": "event", "workers": "workers", "epochsdone": "epochsdone",
                                               "run": "run", "round": "round"}))
def test_worker_refuses_work_event_broken_in_one_field_and_writes_nothing(started, case):
    event, field = case
    refused_naming(started, "worker", event, field)


@settings(FUZZ, max_examples=20)
@given(round_no=st.integers(min_value=1) | HUGE, workerno=st.sampled_from([0, 1]),
       epochsdone=st.integers(min_value=0) | HUGE)
def test_worker_answers_well_formed_event_for_other_round_as_noop(started, round_no, workerno, epochsdone):
    answered_noop(started, "worker", {**WORK, "round": round_no, "workerno": workerno, "epochsdone": epochsdone})


@settings(FUZZ, max_examples=10)
@given(run=st.from_regex(RUN_ID_PATTERN, fullmatch=True).filter(lambda r: r != "good"))
def test_worker_refuses_well_formed_event_for_missing_run(started, run):
    assert isinstance(refused(started, "worker", {**WORK, "run": run, "round": 0}), UnknownRun)


# --- combiner ---------------------------------------------------------------------------------

@FUZZ
@given(case=one_field_broken(COMBINE, BAD_COMBINE, {"combine": "event", "workers": "workers",
                                                     "epochsdone": "epochsdone", "run": "run", "round": "round"}))
def test_combiner_refuses_combine_event_broken_in_one_field_and_writes_nothing(started, case):
    event, field = case
    refused_naming(started, "combiner", event, field)


@settings(FUZZ, max_examples=20)
@given(round_no=st.integers(min_value=0) | HUGE, workers=st.integers(min_value=1) | HUGE,
       shard=st.none() | st.integers(min_value=0), epochsdone=st.integers(min_value=0))
def test_combiner_answers_well_formed_event_for_unready_round_as_noop(started, round_no, workers, shard, epochsdone):
    # Round 0 is open (not ready), every other round is not current: nothing to claim either way.
    # The combine event's workers and shard are not checked against the run; the claim decides.
    event = {**COMBINE, "round": round_no, "workers": workers, "epochsdone": epochsdone, "shard": shard}
    answered_noop(started, "combiner", {k: v for k, v in event.items() if v is not None})


def stream_batch(images: list[dict]) -> dict:
    return {"Records": [{"eventName": "MODIFY", "eventSource": "aws:dynamodb", "dynamodb": {"NewImage": i}}
                        for i in images]}


BAD_IMAGE = st.one_of(
    BAD_RUN_ID.filter(lambda v: isinstance(v, str)).map(lambda r: ({**READY, "run": {"S": r}}, "run")),
    st.just(({k: v for k, v in READY.items() if k != "run"}, "run")),
    st.just(({**READY, "run": {"N": "1"}}, "run")),
    # Digits other than 0-9 ('²') are covered by a regression case at the bottom.
    TEXT.filter(lambda s: not s.isdigit())
    .map(lambda n: ({**READY, "round": {"N": n}}, "round")),
    st.sampled_from(["-1", "1.5", "1e3", " 1", ""]).map(lambda n: ({**READY, "round": {"N": n}}, "round")),
    st.just(({k: v for k, v in READY.items() if k != "round"}, "round")),
    st.just(({**READY, "round": {"S": "0"}}, "round")),
)


@FUZZ
@given(bad=BAD_IMAGE, good=st.lists(st.integers(min_value=0, max_value=3), max_size=3), at=st.integers(0, 3))
def test_combiner_refuses_stream_batch_with_one_broken_ready_record_before_claiming_any(started, bad, good, at):
    image, field = bad
    images = [{**READY, "round": {"N": str(r)}} for r in good]
    images.insert(min(at, len(images)), image)
    refused_naming(started, "combiner", stream_batch(images), f"Records.dynamodb.NewImage.{field}")


@settings(FUZZ, max_examples=20)
@given(rounds=st.lists(st.integers(min_value=0, max_value=10**12 - 1), max_size=4),
       other=st.lists(st.sampled_from([{"S": "open"}, {"S": "committed"}, None]), max_size=3))
def test_combiner_answers_stream_batch_of_unclaimable_rounds_as_noop(started, rounds, other):
    # Records that are not ready rounds are skipped whatever else they hold. (AWS never delivers
    # an empty batch, and round numbers past 10**12 are refused as malformed.)
    assume(rounds or other)
    images = [{**READY, "round": {"N": str(r)}} for r in rounds]
    images += [{**READY, "status": s, "run": {"S": "../../x"}} if s else {} for s in other]
    answered_noop(started, "combiner", stream_batch(images))


# --- any handler, random JSON -----------------------------------------------------------------

def _would_run(name: str, event: Any) -> bool:
    """Events that are valid requests after all, or that take a path tested on its own."""
    if not isinstance(event, dict):
        return False
    if "Records" in event:  # a batch of records that are not ready rounds is a valid no-op
        return True
    if name == "starter" and event.get("setup") is True:  # installs packages; test_setup covers it
        return True
    if name == "starter" and event.get("start") is True:
        try:
            parse_config({k: v for k, v in event.items() if k != "run"})
        except InvalidEvent:
            return False
        return True
    return False


@pytest.mark.parametrize("name", ["starter", "worker", "combiner"])
@settings(FUZZ, max_examples=30)
@given(event=JSON | st.dictionaries(KEYS, JSON, min_size=1, max_size=5))
def test_handler_refuses_random_json_with_a_domain_error_and_writes_nothing(system, name, event):
    assume(not _would_run(name, event))
    before = snapshot(system)
    try:
        answer = system.invoke(name, event)
    except LambdaTrainError as exc:
        assert "\n" not in str(exc), repr(str(exc))
    else:
        # Only a well-formed control event gets here: stop of a missing run, a watchdog with
        # nothing to re-drive; whatever it is, it must not have done anything.
        assert answer["status"] in NOOP | {"checked"}, answer
    assert snapshot(system) == before


# --- run ids that try to leave runs/ ----------------------------------------------------------

ESCAPE = "../../x"


@pytest.mark.parametrize("name, event, field", [
    ("starter", {**START, "run": ESCAPE}, "run"),
    ("starter", {"stop": ESCAPE}, "stop"),
    ("starter", {"resume": ESCAPE}, "resume"),
    ("worker", {**WORK, "run": ESCAPE, "round": 0}, "run"),
    ("combiner", {**COMBINE, "run": ESCAPE}, "run"),
    ("combiner", stream_batch([{**READY, "run": {"S": ESCAPE}}]), "Records.dynamodb.NewImage.run"),
], ids=["start", "stop", "resume", "work", "combine", "stream"])
def test_run_id_with_dot_dot_is_refused_and_nothing_is_created_outside_runs(system, name, event, field):
    refused_naming(system, name, event, field)
    assert not (system.mount.parent / "x").exists() and not (system.mount / "x").exists()


# --- settings: parse_config and the CLI -------------------------------------------------------

def test_every_setting_has_bad_values_under_test():
    assert set(RunConfig.__dataclass_fields__) <= set(BAD_SETTING)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(sorted(BAD_SETTING)).flatmap(lambda k: BAD_SETTING[k].map(lambda v: (k, v))))
def test_parse_config_refuses_a_bad_value_of_any_setting_naming_it(case):
    field, value = case
    with pytest.raises(InvalidEvent) as info:
        parse_config({**SETTINGS, field: value})
    assert info.value.field == field, str(info.value)
    assert "\n" not in str(info.value)


CLI_CASES = {"workers": ["--workers", "0"], "width": ["--width", "-1"], "mode": ["--mode", "x"],
             "transport": ["--transport", "int8"], "epochs": ["--epochs", "0"],
             "batch_size": ["--batch-size", "1", "--workers", "2"], "lr_schedule": ["--lr-schedule", "step"],
             "warmup_epochs": ["--warmup-epochs", "2", "--epochs", "1"]}


def assert_one_error_line(code: int, stdout: str, stderr: str, field: str) -> None:
    assert code == 1, (stdout, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"'{field}'" in lines[0], stderr


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("cli") / "data", n_train=20, n_val=10)


def train_args(data: Path, out: Path, field: str) -> list[str]:
    return ["local", "train", "--data", str(data), "--out", str(out / "out"), "--cache-dir", str(out / "cache"),
            *CLI_CASES[field]]


@pytest.mark.parametrize("field", list(CLI_CASES))
def test_local_train_refuses_bad_setting_with_one_error_line_and_creates_nothing(cli_data, tmp_path, field,
                                                                                  monkeypatch, capsys):
    # In-process through cli.main, the console script's entry point: torch is already imported here.
    from lambdatrain.cli.app import main

    monkeypatch.setattr(sys, "argv", ["lambdatrain", *train_args(cli_data, tmp_path, field)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert_one_error_line(exit_info.value.code, captured.out, captured.err, field)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def console_script_runs(cli_data, tmp_path_factory) -> dict[str, tuple]:
    """The installed ``lambdatrain`` script, for two cases at once (each process pays seconds of imports)."""
    exe = Path(sys.executable).with_name("lambdatrain")
    procs = {}
    for field in ("workers", "transport"):
        out = tmp_path_factory.mktemp(f"script-{field}")
        procs[field] = (out, subprocess.Popen([str(exe), *train_args(cli_data, out, field)], text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    runs = {}
    for field, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        runs[field] = (proc.returncode, stdout, stderr, any(out.iterdir()))
    return runs


@pytest.mark.parametrize("field", ["workers", "transport"])  # a short message and one wider than 80
def test_console_script_refuses_bad_setting_with_one_error_line(console_script_runs, field):
    code, stdout, stderr, created = console_script_runs[field]
    assert_one_error_line(code, stdout, stderr, field)
    assert not created, "the --out or --cache-dir folder was created"


# --- product bugs this file found, fixed: kept as regressions -------------------------------

@pytest.mark.parametrize("name, event", [
    pytest.param("starter", {"Records": 0}),
    pytest.param("starter", {"Records": [1]}),
    pytest.param("starter", {"Records": [{"eventSource": "aws:s3"}]}),
    pytest.param("starter", {"Records": []}),
    pytest.param("combiner", {"Records": [1]}),
    pytest.param("combiner", {"Records": [{"dynamodb": 5}]}),
    pytest.param("combiner", stream_batch([{**READY, "kind": "round"}])),
    pytest.param("combiner", stream_batch([{**READY, "round": {"N": "\u00b2"}}])),
])
def test_malformed_batch_is_refused_with_a_domain_error(system, name, event):
    refused(system, name, event)


def test_start_with_seed_beyond_64_bits_is_refused_naming_seed(system):
    refused_naming(system, "starter", {**START, "seed": 2**64}, "seed")


def test_unknown_key_with_newline_still_gives_a_one_line_message(system):
    refused_naming(system, "starter", {**START, "a\nb": 1}, "a\nb")


@pytest.mark.parametrize("name, event", [
    pytest.param("starter", {"stop": "nope", "extra": 1}, id="stop"),
    pytest.param("starter", {"resume": "nope", "extra": 1}, id="resume"),
    pytest.param("combiner", {"watchdog": True, "extra": 1}, id="watchdog"),
])
def test_control_event_with_unknown_key_is_refused_naming_it(system, name, event):
    refused_naming(system, name, event, "extra")
