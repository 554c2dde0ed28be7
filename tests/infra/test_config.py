"""Stack settings: defaults, and one clear line for each bad value (with and without Pulumi)."""

from __future__ import annotations

import dataclasses

import pulumi
import pytest

from components.config import FunctionSettings, StackSettings, subnet_cidrs
from lambdatrain.protocol.errors import ConfigError


def settings(**changes) -> StackSettings:
    return StackSettings(project="lambdatrain", stack="test", **changes)


def test_defaults_are_valid_and_match_the_issue():
    s = settings()
    assert (s.worker.memory_mb, s.worker.timeout_s) == (10240, 900)
    assert (s.az_count, s.nat_per_az, s.watchdog_minutes, s.architecture) == (2, False, 5, "x86_64")
    assert s.worker_concurrency == s.workers
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
    ],
)
def test_program_stops_on_bad_config_with_one_line(build_with, key, value, problem):
    with pytest.raises(pulumi.RunError) as caught:
        build_with("dev", **{key: value})
    assert str(caught.value).startswith(problem)


def test_arm64_reaches_every_function(build_with):
    plan = build_with("dev", architecture="arm64", workers="2")
    assert {tuple(f.inputs["architectures"]) for f in plan.functions().values()} == {("arm64",)}
    assert plan.functions()["worker"].inputs["reservedConcurrentExecutions"] == 2
