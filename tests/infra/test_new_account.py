"""The stacks deploy on a new AWS account: its limits, its zones, S3's one-call-at-a-time, replacements.

New accounts may cap function memory at 3008 MB and concurrency at 10, and Lambda keeps 100
executions unreserved, so any reservation is refused there (docs/deploy.md, step 1).
"""

from __future__ import annotations

import pulumi
import pytest

from components.config import StackSettings
from lambdatrain.protocol.limits import NEW_ACCOUNT_MEMORY_MB
from lambdatrain.roles import settings as env

ZONES = "aws:index/getAvailabilityZones:getAvailabilityZones"
ESM = "aws:lambda/eventSourceMapping:EventSourceMapping"
BUCKET_CONFIGURATION = [  # in the order the program creates them, each after the one before
    ("aws:s3/bucket:Bucket", "storage-bucket"),
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "storage-bucket-public-access"),
    ("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "storage-bucket-ownership"),
    ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "storage-bucket-sse"),
    ("aws:s3/bucketVersioning:BucketVersioning", "storage-bucket-versioning"),
    ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "storage-bucket-lifecycle"),
    ("aws:s3/bucketPolicy:BucketPolicy", "storage-bucket-policy"),
    ("aws:s3/bucketNotification:BucketNotification", "functions-start-notification"),
]


def test_defaults_fit_a_new_account():
    s = StackSettings(project="lambdatrain", stack="test")
    sizes = [s.starter, s.worker, s.combiner]
    assert max(f.memory_mb for f in sizes) <= NEW_ACCOUNT_MEMORY_MB
    assert [f.reserved_concurrency for f in sizes] == [None, None, None]


def test_dev_reserves_no_concurrency(dev):
    assert [n for n, f in dev.functions().items() if f.inputs.get("reservedConcurrentExecutions")] == []


def test_dev_asks_for_at_most_3008_mb_per_function(dev):
    assert {n: f.inputs["memorySize"] <= NEW_ACCOUNT_MEMORY_MB for n, f in dev.functions().items()} == {
        "starter": True, "worker": True, "combiner": True}


def test_prod_keeps_its_larger_settings(prod):
    functions = prod.functions()
    assert (functions["worker"].inputs["memorySize"], functions["combiner"].inputs["memorySize"]) == (10240, 10240)
    assert functions["worker"].inputs["reservedConcurrentExecutions"] == 17
    assert functions["combiner"].inputs["reservedConcurrentExecutions"] == 2
    assert "reservedConcurrentExecutions" not in functions["starter"].inputs


def test_reservation_only_where_the_stack_sets_it(build_with):
    plan = build_with("dev", combinerConcurrency="3")
    reserved = {n: f.inputs.get("reservedConcurrentExecutions") for n, f in plan.functions().items()}
    assert reserved == {"starter": None, "worker": None, "combiner": 3}


def test_availability_zones_are_filtered_to_those_needing_no_opt_in(plan):
    (lookup,) = [args for token, args in plan.calls if token == ZONES]
    assert {"name": "opt-in-status", "values": ["opt-in-not-required"]} in lookup["filters"]
    # The fake Region lists an opted-in Local Zone first: the subnets must not land there.
    zones = {s.inputs["availabilityZone"] for s in plan.of_type("aws:ec2/subnet:Subnet")}
    assert zones == {"us-east-1a", "us-east-1b"}


def test_availability_zones_key_chooses_the_zones(build_with):
    plan = build_with("dev", availabilityZones="us-east-1c, us-east-1d,us-east-1f")
    subnets = {s.name: s.inputs["availabilityZone"] for s in plan.of_type("aws:ec2/subnet:Subnet")}
    assert sorted(subnets.values()) == sorted(2 * ["us-east-1c", "us-east-1d", "us-east-1f"])
    assert (subnets["network-private-0"], subnets["network-public-2"]) == ("us-east-1c", "us-east-1f")
    assert len(plan.of_type("aws:efs/mountTarget:MountTarget")) == 3
    assert [token for token, _ in plan.calls if token == ZONES] == []


def test_availability_zones_key_takes_a_yaml_list(build_with):
    plan = build_with("dev", availabilityZones='["us-east-1b", "us-east-1e"]')
    assert {s.inputs["availabilityZone"] for s in plan.of_type("aws:ec2/subnet:Subnet")} == {"us-east-1b", "us-east-1e"}


@pytest.mark.parametrize("value, problem", [
    ("us-east-1a,us-east-1a", "lambdatrain:availabilityZones must be 1..6 distinct zone names"),
    ("a,b,c,d,e,f,g", "lambdatrain:availabilityZones must be 1..6 distinct zone names"),
    ("us-east-1a,", "lambdatrain:availabilityZones must be 1..6 distinct zone names"),
    ('["us-east-1a", 3]', "lambdatrain:availabilityZones must be a list of names"),
])
def test_bad_availability_zones_stop_the_program_with_one_line(build_with, value, problem):
    with pytest.raises(pulumi.RunError) as caught:
        build_with("dev", availabilityZones=value)
    assert str(caught.value).startswith(problem) and "\n" not in str(caught.value)


def test_bucket_is_configured_one_call_at_a_time(plan):
    chain = [plan.one(type_, name) for type_, name in BUCKET_CONFIGURATION]
    for before, after in zip(chain, chain[1:]):
        assert before.urn in after.depends_on, f"{after.name} does not wait for {before.name}"
    configuring = {r.urn for r in plan.resources if "bucket" in r.inputs and r.type.startswith("aws:s3/")}
    assert configuring == {r.urn for r in chain[1:]}  # nothing else configures the bucket beside the chain


def test_fixed_name_resources_are_replaced_delete_first(plan):
    fixed = {r.name: r.delete_before_replace for r in plan.resources if r.custom and "name" in r.inputs}
    assert set(fixed) == {f"functions-{n}{suffix}" for n in env.FUNCTIONS for suffix in ("", "-logs")}
    assert all(fixed.values()), fixed


def test_generated_name_resources_keep_create_before_replace(plan):
    generated = [r for r in plan.resources if r.custom and "name" not in r.inputs]
    assert generated and not [r.name for r in generated if r.delete_before_replace]


def test_stream_mapping_starts_at_trim_horizon(plan):
    (mapping,) = plan.of_type(ESM)
    assert mapping.inputs["startingPosition"] == "TRIM_HORIZON"


@pytest.mark.parametrize("stack, expected", [("dev", None), ("prod", "2")])
def test_starter_knows_the_combiners_reservation_where_set(stack, expected, request):
    functions = request.getfixturevalue(stack).functions()
    assert functions["starter"].inputs["environment"]["variables"].get(env.ENV_COMBINER_CONCURRENCY) == expected
    for other in (env.WORKER, env.COMBINER):
        assert env.ENV_COMBINER_CONCURRENCY not in functions[other].inputs["environment"]["variables"]


@pytest.mark.parametrize("stack, reserved", [("dev", None), ("prod", 17)])
def test_sizing_output_is_what_preflight_reads(stack, reserved, request):
    sizing = request.getfixturevalue(stack).outputs["sizing"]
    assert (sizing["region"], sizing["workers"]) == ("us-east-1", {"dev": 4, "prod": 17}[stack])
    assert set(sizing["functions"]) == set(env.FUNCTIONS)
    assert sizing["functions"]["worker"] == {"memoryMb": {"dev": 3008, "prod": 10240}[stack],
                                             "reservedConcurrency": reserved}

