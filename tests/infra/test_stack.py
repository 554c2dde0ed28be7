"""The whole program builds for both example stacks, declares what the issue lists, and exports."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pulumi
import pytest

import components.plan
from components.plan import build, is_taggable, render

# type -> how many the dev stack (2 AZs, one NAT) declares.
DEV_RESOURCES = {
    "lambdatrain:network:Network": 1,
    "lambdatrain:storage:Storage": 1,
    "lambdatrain:ledger:Ledger": 1,
    "lambdatrain:functions:TrainingFunctions": 1,
    "aws:ec2/vpc:Vpc": 1,
    "aws:ec2/subnet:Subnet": 4,
    "aws:ec2/internetGateway:InternetGateway": 1,
    "aws:ec2/eip:Eip": 1,
    "aws:ec2/natGateway:NatGateway": 1,
    "aws:ec2/routeTable:RouteTable": 3,
    "aws:ec2/route:Route": 3,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": 4,
    "aws:ec2/vpcEndpoint:VpcEndpoint": 2,
    "aws:ec2/securityGroup:SecurityGroup": 2,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": 1,
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": 2,
    "aws:efs/fileSystem:FileSystem": 1,
    "aws:efs/mountTarget:MountTarget": 2,
    "aws:efs/accessPoint:AccessPoint": 1,
    "aws:efs/fileSystemPolicy:FileSystemPolicy": 1,
    "aws:s3/bucket:Bucket": 1,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": 1,
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": 1,
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 1,
    "aws:s3/bucketVersioning:BucketVersioning": 1,
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": 1,
    "aws:s3/bucketPolicy:BucketPolicy": 1,
    "aws:s3/bucketNotification:BucketNotification": 1,
    "aws:dynamodb/table:Table": 1,
    "aws:sqs/queue:Queue": 1,
    "aws:cloudwatch/logGroup:LogGroup": 3,
    "aws:iam/role:Role": 3,
    "aws:iam/rolePolicy:RolePolicy": 3,
    "aws:lambda/function:Function": 3,
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": 3,
    "aws:lambda/eventSourceMapping:EventSourceMapping": 1,
    "aws:lambda/permission:Permission": 2,
    "aws:cloudwatch/eventRule:EventRule": 1,
    "aws:cloudwatch/eventTarget:EventTarget": 1,
}
STATEFUL = {"aws:dynamodb/table:Table", "aws:efs/fileSystem:FileSystem", "aws:s3/bucket:Bucket"}


def test_dev_declares_every_resource_with_its_type(dev):
    assert Counter(r.type for r in dev.resources) == DEV_RESOURCES


def test_prod_adds_a_nat_gateway_per_az(prod):
    counts = Counter(r.type for r in prod.resources)
    assert counts["aws:ec2/natGateway:NatGateway"] == counts["aws:ec2/eip:Eip"] == 2
    assert counts - Counter({"aws:ec2/natGateway:NatGateway": 1, "aws:ec2/eip:Eip": 1}) == Counter(DEV_RESOURCES)


def test_resource_names_are_unique(plan):
    names = [(r.type, r.name) for r in plan.resources]
    assert len(names) == len(set(names))


def test_every_resource_belongs_to_a_component(plan):
    components = {r.urn for r in plan.resources if not r.custom}
    assert all(r.parent in components for r in plan.resources if r.custom)


def test_stateful_resources_are_protected_in_prod(prod):
    assert {r.type for r in prod.resources if r.protect} == STATEFUL


def test_nothing_is_protected_in_dev(dev):
    assert [r.name for r in dev.resources if r.protect] == []


def test_everything_taggable_carries_project_and_stack(plan):
    untagged = [
        r.name
        for r in plan.resources
        if r.custom and is_taggable(r.type)
        and {k: (r.inputs.get("tags") or {}).get(k) for k in ("project", "stack")}
        != {"project": "lambdatrain", "stack": plan.stack}
    ]
    assert untagged == []


@pytest.mark.parametrize(
    "key",
    [
        "starterFunctionName", "starterFunctionArn", "workerFunctionName", "workerFunctionArn",
        "combinerFunctionName", "combinerFunctionArn", "tableName", "streamArn", "bucketName",
        "fileSystemId", "accessPointId", "startCommand", "setupCommand",
    ],
)
def test_stack_exports(plan, key):
    assert plan.outputs[key]


@pytest.mark.parametrize("stack, workers", [("dev", 4), ("prod", 17)])
def test_start_command_is_ready_to_paste(stack, workers, request, tmp_path):
    plan = request.getfixturevalue(stack)
    assert plan.outputs["startCommand"].endswith(
        f"aws lambda invoke --function-name lambdatrain-{stack}-starter --cli-binary-format "
        f"""raw-in-base64-out --payload '{{"start": true, "run": "'"$RUN"'", "workers": {workers}}}' out.json """
        "&& cat out.json)"
    )
    # Run by a shell with a stand-in `aws` that prints its --payload: a run id, given or made.
    (tmp_path / "aws").write_text('#!/bin/sh\nwhile [ "$1" != --payload ]; do shift; done; echo "$2" > out.json\n')
    (tmp_path / "aws").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    for given, expected in (("RUN=mine; ", "mine"), ("", None)):
        script = given + plan.outputs["startCommand"] + '; echo "left in the shell: ${RUN:-nothing}"'
        out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout.splitlines()
        payload = json.loads(out[0])
        assert payload["start"] is True and payload["workers"] == workers
        assert payload["run"] == expected if expected else re.fullmatch(r"run-\d{8}-\d{6}", payload["run"])
        # A made id stays in the subshell: pasting the command again names a new run.
        assert out[1] == f"left in the shell: {expected or 'nothing'}"


def test_program_builds_again_in_the_same_process(dev):
    again = build("dev")
    # Registration order is up to asyncio; the set of resources is not.
    assert sorted((r.type, r.name) for r in again.resources) == sorted((r.type, r.name) for r in dev.resources)
    assert again.outputs == dev.outputs


def test_plan_lists_every_resource_type_and_name(dev):
    text = render(dev)
    assert all(f"{r.type}  {r.name}" in text for r in dev.resources)
    assert text.splitlines()[0] == f"stack lambdatrain/dev: {len(dev.resources)} resources"


def test_plan_uses_only_public_pulumi_apis():
    """components/plan.py imports nothing from pulumi's submodules and uses only exported names."""
    tree = ast.parse(Path(components.plan.__file__).read_text())
    imported = [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
    imported += [(a.name, None) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [i for i in imported if i[0].startswith("pulumi.") or (i[0] == "pulumi" and i[1])]
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "pulumi"}
    runtime = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
               and n.value.attr == "runtime"}
    assert not [name for name in used | runtime if name.startswith("_")]
    assert runtime <= set(pulumi.runtime.__all__)  # what the SDK exports as its runtime API
    assert used <= set(pulumi.__all__) | {"runtime"}


def test_protect_parent_and_depends_on_are_recorded(prod):
    (table,) = prod.of_type("aws:dynamodb/table:Table")
    ledger = prod.one("lambdatrain:ledger:Ledger", "ledger")
    assert (table.protect, table.parent, ledger.protect) == (True, ledger.urn, False)
    assert ledger.parent.endswith("pulumi:pulumi:Stack::lambdatrain-prod")
    assert all(r.custom for r in prod.of_type("aws:lambda/function:Function")) and not ledger.custom
