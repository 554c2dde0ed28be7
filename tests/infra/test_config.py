"""Stack settings: defaults, reading, one clear line for each bad value (with and without Pulumi), the docs."""

from __future__ import annotations

import dataclasses

import pulumi
import pytest

from components.config import (
    ROOT,
    FunctionSettings,
    StackSettings,
    settings_table,
    stack_config,
    stack_names,
)
from components.network import subnet_cidrs
from lambdatrain.protocol.errors import ConfigError


def settings(**changes) -> StackSettings:
    return StackSettings(project="lambdatrain", stack="test", **changes)


def test_defaults_are_valid_and_match_the_issue():
    s = settings()
    assert (s.worker.memory_mb, s.worker.timeout_s) == (3008, 900)
    assert (s.az_count, s.nat_per_az, s.watchdog_minutes, s.architecture) == (2, False, 5, "x86_64")
    assert s.worker.reserved_concurrency is None
    assert s.tags == {"project": "lambdatrain", "stack": "test"}


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"workers": 0}, "lambdatrain:workers"),
        ({"architecture": "i386"}, "lambdatrain:architecture"),
        ({"worker": FunctionSettings(127, 900)}, "lambdatrain:workerMemory"),
        ({"worker": FunctionSettings(10241, 900)}, "lambdatrain:workerMemory"),
        ({"starter": FunctionSettings(1024, 901)}, "lambdatrain:starterTimeout"),
        ({"combiner": FunctionSettings(1024, 0)}, "lambdatrain:combinerTimeout"),
        ({"combiner": FunctionSettings(1024, 60, ephemeral_mb=100)}, "lambdatrain:combinerEphemeralStorage"),
        ({"combiner": FunctionSettings(1024, 60, reserved_concurrency=0)}, "lambdatrain:combinerConcurrency"),
        ({"workers": 5, "worker": FunctionSettings(1024, 60, reserved_concurrency=4)}, "lambdatrain:workerConcurrency"),
        ({"az_count": 0}, "lambdatrain:azCount"),
        ({"az_count": 7}, "lambdatrain:azCount"),
        ({"vpc_cidr": "10.0.0.0/24"}, "lambdatrain:vpcCidr"),
        ({"vpc_cidr": "not-a-cidr"}, "lambdatrain:vpcCidr"),
        ({"log_retention_days": 10}, "lambdatrain:logRetentionDays"),
        ({"watchdog_minutes": 0}, "lambdatrain:watchdogMinutes"),
        ({"async_retries": 3}, "lambdatrain:asyncRetries"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(changes, key):
    with pytest.raises(ConfigError) as caught:
        settings(**changes)
    message = str(caught.value)
    assert message.startswith(f"{key} ") and "\n" not in message


def test_boundaries_are_accepted():
    for memory, timeout in ((128, 1), (10240, 900)):
        settings(worker=FunctionSettings(memory, timeout), architecture="arm64", workers=1)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings().workers = 3  # type: ignore[misc]


def test_subnets_do_not_overlap():
    private, public = subnet_cidrs("10.0.0.0/16", 3)
    assert private == ["10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20"]
    assert public == ["10.0.128.0/20", "10.0.144.0/20", "10.0.160.0/20"]


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("workers", "0", "lambdatrain:workers must be at least 1"),
        ("workerMemory", "20000", "lambdatrain:workerMemory must be 128..10240 MB"),
        ("workerTimeout", "1200", "lambdatrain:workerTimeout must be 1..900 s"),
        ("architecture", "sparc", "lambdatrain:architecture must be one of x86_64|arm64"),
        ("workers", "four", "lambdatrain:workers must be an integer, got 'four'"),
        ("natPerAz", "yes", "lambdatrain:natPerAz must be true or false, got 'yes'"),
    ],
)
def test_program_stops_on_bad_config_with_one_line(build_with, key, value, problem):
    with pytest.raises(pulumi.RunError) as caught:
        build_with("dev", **{key: value})
    assert str(caught.value).startswith(problem)


def test_arm64_reaches_every_function(build_with):
    plan = build_with("dev", architecture="arm64", workers="2")
    assert {tuple(f.inputs["architectures"]) for f in plan.functions().values()} == {("arm64",)}
    assert "reservedConcurrentExecutions" not in plan.functions()["worker"].inputs


# A valid value other than the default for every key, as the stack file would hold it.
EVERY_KEY_CHANGED = {
    "workers": "3", "architecture": "arm64", "azCount": "3", "natPerAz": "true", "vpcCidr": "10.1.0.0/16",
    "availabilityZones": "us-east-1a,us-east-1c",
    "logRetentionDays": "30", "watchdogMinutes": "10", "asyncRetries": "0", "logLevel": "DEBUG", "protect": "True",
    **{f"{fn}{key}": value for fn in ("starter", "worker", "combiner")
       for key, value in (("Memory", "1024"), ("Timeout", "60"), ("Concurrency", "5"), ("EphemeralStorage", "1024"))},
}


def _declared_keys() -> set[str]:
    return {line.split("`")[1] for line in settings_table({}).splitlines()[2:]}


def test_from_config_reads_every_declared_key():
    assert set(EVERY_KEY_CHANGED) == _declared_keys()
    s = StackSettings.from_config(EVERY_KEY_CHANGED.get, project="lambdatrain", stack="test")
    assert (s.workers, s.architecture, s.az_count, s.nat_per_az, s.vpc_cidr) == (3, "arm64", 3, True, "10.1.0.0/16")
    assert (s.log_retention_days, s.watchdog_minutes, s.async_retries) == (30, 10, 0)
    assert (s.log_level, s.protect) == ("DEBUG", True)
    assert (s.availability_zones, s.zone_count) == (("us-east-1a", "us-east-1c"), 2)
    for sizing in (s.starter, s.worker, s.combiner):
        assert sizing == FunctionSettings(memory_mb=1024, timeout_s=60, reserved_concurrency=5, ephemeral_mb=1024)


def test_from_config_with_nothing_set_is_the_defaults():
    assert StackSettings.from_config({}.get, project="lambdatrain", stack="test") == settings()


@pytest.mark.parametrize("stack", stack_names())
def test_stack_files_set_only_declared_keys(stack):
    keys = {k.removeprefix("lambdatrain:") for k in stack_config(stack) if k.startswith("lambdatrain:")}
    assert keys <= _declared_keys()


def test_deploy_doc_table_is_the_declaration():
    expected = settings_table({name: stack_config(name) for name in stack_names()})
    doc = (ROOT / "docs" / "deploy.md").read_text()
    start = doc.index("| key (`lambdatrain:`)")
    table = doc[start:].split("\n\n", 1)[0]  # the table ends at the first blank line
    assert table == expected, f"docs/deploy.md's table differs; `python -m components.config` prints:\n{expected}"
