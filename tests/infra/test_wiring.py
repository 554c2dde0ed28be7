"""How the resources connect: triggers, mounts, subnets, environment, retries."""

from __future__ import annotations

import json

import pytest

from lambdatrain.ledger import schema
from lambdatrain.roles import settings as env

ESM = "aws:lambda/eventSourceMapping:EventSourceMapping"


def _ids(plan, type_, prefix):
    return {f"{r.name}-id" for r in plan.of_type(type_) if r.name.startswith(prefix)}


def test_combiner_is_the_stream_mapping_target(plan):
    (mapping,) = plan.of_type(ESM)
    assert mapping.inputs["functionName"] == plan.outputs["combinerFunctionArn"]
    assert mapping.inputs["eventSourceArn"] == plan.outputs["streamArn"]


def test_stream_filter_is_the_shared_definition(plan):
    (mapping,) = plan.of_type(ESM)
    (only,) = mapping.inputs["filterCriteria"]["filters"]
    assert only["pattern"] == json.dumps(schema.STREAM_FILTER_PATTERN)


def test_stream_mapping_retries_are_bounded_and_failures_kept(plan):
    (mapping,) = plan.of_type(ESM)
    assert mapping.inputs["batchSize"] == schema.STREAM_BATCH_SIZE
    assert mapping.inputs["maximumRetryAttempts"] == schema.STREAM_MAX_RETRIES
    assert mapping.inputs["maximumRecordAgeInSeconds"] == schema.STREAM_MAX_RECORD_AGE_S
    assert mapping.inputs["bisectBatchOnFunctionError"] is True
    assert mapping.inputs["destinationConfig"]["onFailure"]["destinationArn"].endswith(":functions-failures-1a2b3c")


def test_ledger_table_uses_the_shared_schema(plan):
    (table,) = plan.of_type("aws:dynamodb/table:Table")
    i = table.inputs
    assert (i["hashKey"], i["rangeKey"], i["billingMode"]) == (schema.HASH_KEY, schema.RANGE_KEY, schema.BILLING_MODE)
    kwargs = schema.create_table_kwargs("local")  # the local stack's table: the same keys and index
    assert [(a["name"], a["type"]) for a in i["attributes"]] == \
        [(a["AttributeName"], a["AttributeType"]) for a in kwargs["AttributeDefinitions"]]
    (index,) = i["globalSecondaryIndexes"]
    (local,) = kwargs["GlobalSecondaryIndexes"]
    assert (index["name"], index["projectionType"]) == (local["IndexName"], local["Projection"]["ProjectionType"])
    assert [(k["attributeName"], k["keyType"]) for k in index["keySchemas"]] == \
        [(k["AttributeName"], k["KeyType"]) for k in local["KeySchema"]]
    assert (i["streamEnabled"], i["streamViewType"]) == (True, schema.STREAM_VIEW_TYPE)
    assert "ttl" not in i  # no item expires: a run's items are its history
    assert i["pointInTimeRecovery"]["enabled"] is True


def test_every_function_mounts_the_access_point(plan):
    (access_point,) = plan.of_type("aws:efs/accessPoint:AccessPoint")
    for fn in plan.functions().values():
        assert fn.inputs["fileSystemConfig"] == {
            "arn": f"arn:aws:efs:us-east-1:123456789012:accesspoint/{access_point.name}-1a2b3c",
            "localMountPath": env.DEFAULT_MOUNT,
        }


def test_every_function_depends_on_all_mount_targets(plan):
    mount_targets = {r.urn for r in plan.of_type("aws:efs/mountTarget:MountTarget")}
    assert len(mount_targets) == 2
    for fn in plan.functions().values():
        assert mount_targets <= set(fn.depends_on), fn.name


def test_a_mount_target_in_every_private_subnet(plan):
    subnets = {r.inputs["subnetId"] for r in plan.of_type("aws:efs/mountTarget:MountTarget")}
    assert subnets == _ids(plan, "aws:ec2/subnet:Subnet", "network-private")


def test_functions_run_only_in_private_subnets(plan):
    private = _ids(plan, "aws:ec2/subnet:Subnet", "network-private")
    for fn in plan.functions().values():
        assert set(fn.inputs["vpcConfig"]["subnetIds"]) == private
        assert fn.inputs["vpcConfig"]["securityGroupIds"] == ["network-functions-sg-id"]


def test_private_subnets_route_through_nat_and_public_through_igw(plan):
    routes = {r.name: r.inputs for r in plan.of_type("aws:ec2/route:Route")}
    assert routes["network-public-default"]["gatewayId"] == "network-igw-id"
    private = [v for k, v in routes.items() if k.startswith("network-private-default")]
    assert private and all(r["natGatewayId"].startswith("network-nat-") for r in private)


def test_gateway_endpoints_serve_the_private_route_tables(plan):
    tables = {f"{r.name}-id" for r in plan.of_type("aws:ec2/routeTable:RouteTable") if "private" in r.name}
    endpoints = {r.inputs["serviceName"]: r.inputs for r in plan.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert set(endpoints) == {"com.amazonaws.us-east-1.s3", "com.amazonaws.us-east-1.dynamodb"}
    for endpoint in endpoints.values():
        assert endpoint["vpcEndpointType"] == "Gateway"
        assert set(endpoint["routeTableIds"]) == tables


@pytest.mark.parametrize("stack, nats", [("dev", 1), ("prod", 2)])
def test_nat_gateways_follow_config(stack, nats, request):
    plan = request.getfixturevalue(stack)
    assert len(plan.of_type("aws:ec2/natGateway:NatGateway")) == nats


def test_environment_names_table_mount_bucket_and_functions(plan):
    names = {logical: plan.outputs[f"{logical}FunctionName"] for logical in env.FUNCTIONS}
    for fn in plan.functions().values():
        variables = fn.inputs["environment"]["variables"]
        assert variables[env.ENV_TABLE] == plan.outputs["tableName"]
        assert variables[env.ENV_MOUNT] == env.DEFAULT_MOUNT
        assert variables[env.ENV_BUCKET] == plan.outputs["bucketName"]
        assert variables[env.ENV_STARTER] == names[env.STARTER]
        assert variables[env.ENV_WORKER] == names[env.WORKER]
        assert variables[env.ENV_COMBINER] == names[env.COMBINER]
        assert variables[env.ENV_PACKAGES] == env.DEFAULT_PACKAGES


def test_worker_knows_the_bucket_for_its_residuals(plan):
    # ternary_ef/sign_ef keep each worker's residual in the bucket (settings.STATE_PREFIX).
    variables = plan.functions()[env.WORKER].inputs["environment"]["variables"]
    assert variables[env.ENV_BUCKET] == plan.outputs["bucketName"]


@pytest.mark.parametrize("stack, memory", [("dev", 3008), ("prod", 10240)])
def test_worker_size_follows_config(stack, memory, request):
    worker = request.getfixturevalue(stack).functions()[env.WORKER]
    assert (worker.inputs["memorySize"], worker.inputs["timeout"]) == (memory, 900)
    assert worker.inputs["architectures"] == ["x86_64"]


def test_worker_code_is_its_handler_plus_the_package(plan):
    assets = plan.functions()[env.WORKER].inputs["code"].assets
    assert assets["handler.py"].path.endswith("functions/worker/handler.py")
    assert "lambdatrain/roles/settings.py" in assets and "lambdatrain/ledger/schema.py" in assets
    assert plan.functions()[env.WORKER].inputs["handler"] == "handler.handler"


def test_async_invocations_retry_boundedly_into_the_failure_queue(plan):
    configs = plan.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    assert {c.inputs["functionName"] for c in configs} == {plan.outputs[f"{n}FunctionName"] for n in env.FUNCTIONS}
    for config in configs:
        assert 0 <= config.inputs["maximumRetryAttempts"] <= 2
        assert config.inputs["destinationConfig"]["onFailure"]["destination"].endswith(":functions-failures-1a2b3c")


def test_start_files_in_the_bucket_trigger_the_starter(plan):
    (notification,) = plan.of_type("aws:s3/bucketNotification:BucketNotification")
    (target,) = notification.inputs["lambdaFunctions"]
    assert target["lambdaFunctionArn"] == plan.outputs["starterFunctionArn"]
    assert (target["filterPrefix"], target["filterSuffix"]) == ("start/", ".json")
    assert target["events"] == ["s3:ObjectCreated:*"]
    permission = plan.one("aws:lambda/permission:Permission", "functions-starter-s3-permission")
    assert permission.inputs["principal"] == "s3.amazonaws.com"
    assert permission.urn in notification.depends_on


def test_watchdog_schedule_invokes_the_combiner(plan):
    (rule,) = plan.of_type("aws:cloudwatch/eventRule:EventRule")
    (target,) = plan.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert rule.inputs["scheduleExpression"] == "rate(5 minutes)"
    assert target.inputs["arn"] == plan.outputs["combinerFunctionArn"]
    assert json.loads(target.inputs["input"]) == {"watchdog": True}
    permission = plan.one("aws:lambda/permission:Permission", "functions-watchdog-permission")
    assert permission.inputs["principal"] == "events.amazonaws.com"
    assert permission.inputs["function"] == plan.outputs["combinerFunctionName"]


def test_watchdog_rate_is_configurable(build_with):
    plan = build_with("dev", watchdogMinutes="1")
    (rule,) = plan.of_type("aws:cloudwatch/eventRule:EventRule")
    assert rule.inputs["scheduleExpression"] == "rate(1 minute)"
