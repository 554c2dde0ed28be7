"""TrainingFunctions: the starter, worker and combiner Lambdas and everything that wires them.

Each function gets its own role whose one inline policy grants exactly what that function does
(``components/iam.py``; the tests read it back), its log group with retention, an asynchronous
invoke config (bounded retries, failures to an SQS queue), the EFS access point at
``DEFAULT_MOUNT`` and a place in the private subnets. Triggers: S3 start files -> starter, the
ledger stream (filtered to rounds turning ready) -> combiner, an EventBridge schedule -> combiner's
watchdog. Function names are fixed (``<project>-<stack>-<logical>``) so that every function's
environment can name the others without a dependency cycle, and their log groups are named after
them; both are therefore replaced delete-first. Concurrency is reserved only where the stack sets
it. What each function's zip holds is ``components/archive.py``'s to decide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.archive import code_archive
from components.config import StackSettings
from components.iam import PolicyRefs, function_role
from lambdatrain.roles import settings as env
from lambdatrain.ledger.schema import (
    STREAM_BATCH_SIZE,
    STREAM_FILTER_PATTERN,
    STREAM_MAX_RECORD_AGE_S,
    STREAM_MAX_RETRIES,
)

RUNTIME = "python3.12"  # lambdatrain.roles.packages.LAMBDA_PYTHON installs wheels for this one
HANDLER = "handler.handler"
ASYNC_MAX_EVENT_AGE_S = 3600
FAILURE_RETENTION_S = 14 * 24 * 3600


@dataclass
class TrainingFunctionsArgs:
    settings: StackSettings
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    file_system_arn: pulumi.Input[str]
    access_point_arn: pulumi.Input[str]
    mount_targets: list[pulumi.Resource]  # every function waits for all of them
    table_name: pulumi.Input[str]
    table_arn: pulumi.Input[str]
    stream_arn: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    bucket_configured: pulumi.Resource | None = None  # the notification waits for it (see Storage)


class TrainingFunctions(pulumi.ComponentResource):
    functions: dict[str, aws.lambda_.Function]
    failure_queue: aws.sqs.Queue

    def __init__(self, name: str, args: TrainingFunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("lambdatrain:functions:TrainingFunctions", name, None, opts)
        self._name, self._args, s = name, args, args.settings
        self._tags = s.tags
        self.names = {logical: f"{s.prefix}-{logical}" for logical in env.FUNCTIONS}
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        self._account = caller.account_id
        self._function_arns = pulumi.Output.all(
            aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition,
            aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region,
            self._account,
        ).apply(lambda p: {n: f"arn:{p[0]}:lambda:{p[1]}:{p[2]}:function:{fn}" for n, fn in self.names.items()})
        self.failure_queue = aws.sqs.Queue(
            f"{name}-failures",
            sqs_managed_sse_enabled=True,
            message_retention_seconds=FAILURE_RETENTION_S,
            tags=self._tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.role_policies: dict[str, aws.iam.RolePolicy] = {}
        self.functions = {logical: self._create_function(logical) for logical in env.FUNCTIONS}
        self._create_stream_mapping()
        self._create_start_trigger()
        self._create_watchdog()
        self.register_outputs(
            {f"{n}_arn": f.arn for n, f in self.functions.items()} | {"failure_queue": self.failure_queue.url}
        )

    def environment(self) -> dict[str, pulumi.Input[str]]:
        """The variables every function gets; names from lambdatrain.roles.settings."""
        a = self._args
        return {
            env.ENV_TABLE: a.table_name,
            env.ENV_MOUNT: env.DEFAULT_MOUNT,
            env.ENV_BUCKET: a.bucket_name,
            env.ENV_STARTER: self.names[env.STARTER],
            env.ENV_WORKER: self.names[env.WORKER],
            env.ENV_COMBINER: self.names[env.COMBINER],
            env.ENV_DATA: env.DEFAULT_DATA,
            env.ENV_PACKAGES: env.DEFAULT_PACKAGES,
            env.ENV_LOG_LEVEL: a.settings.log_level,
        }

    def _variables(self, logical: str) -> dict[str, pulumi.Input[str]]:
        """``environment()``, plus the combiner's reservation for the starter, which checks runs against it."""
        reserved = self._args.settings.combiner.reserved_concurrency
        extra = {env.ENV_COMBINER_CONCURRENCY: str(reserved)} if logical == env.STARTER and reserved else {}
        return self.environment() | extra

    def _create_function(self, logical: str) -> aws.lambda_.Function:
        s, a, base = self._args.settings, self._args, f"{self._name}-{logical}"
        child = pulumi.ResourceOptions(parent=self)
        sizing = getattr(s, logical)
        # A fixed name cannot be created while the old resource still holds it ("already exists"), so a
        # replacement deletes first. Generated names are not an option: the functions' environments
        # name one another, and Lambda logs only to /aws/lambda/<function name>.
        fixed_name = pulumi.ResourceOptions(parent=self, delete_before_replace=True)
        log_group = aws.cloudwatch.LogGroup(
            f"{base}-logs", name=f"/aws/lambda/{self.names[logical]}",
            retention_in_days=s.log_retention_days, tags=self._tags, opts=fixed_name,
        )
        role, policy = function_role(base, logical, self._policy_refs(log_group), self._tags, child)
        self.role_policies[logical] = policy
        function = aws.lambda_.Function(
            base,
            name=self.names[logical],
            role=role.arn,
            runtime=RUNTIME,
            handler=HANDLER,
            code=code_archive(logical),
            architectures=[s.architecture],
            memory_size=sizing.memory_mb,
            timeout=sizing.timeout_s,
            ephemeral_storage={"size": sizing.ephemeral_mb},
            reserved_concurrent_executions=sizing.reserved_concurrency,  # None: nothing reserved
            vpc_config={"subnet_ids": a.subnet_ids, "security_group_ids": [a.security_group_id]},
            file_system_config={"arn": a.access_point_arn, "local_mount_path": env.DEFAULT_MOUNT},
            environment={"variables": self._variables(logical)},
            tags=self._tags,
            # The mount only works once a mount target answers in every subnet the function uses;
            # Lambda checks the role's ENI and EFS permissions when it creates the function.
            opts=pulumi.ResourceOptions.merge(
                fixed_name, pulumi.ResourceOptions(depends_on=[*a.mount_targets, log_group, policy])),
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{base}-async",
            function_name=function.name,
            maximum_retry_attempts=s.async_retries,
            maximum_event_age_in_seconds=ASYNC_MAX_EVENT_AGE_S,
            destination_config={"on_failure": {"destination": self.failure_queue.arn}},
            opts=child,
        )
        return function

    def _policy_refs(self, log_group: aws.cloudwatch.LogGroup) -> pulumi.Output[PolicyRefs]:
        a = self._args
        return pulumi.Output.all(
            a.table_arn, a.stream_arn, a.bucket_arn, a.file_system_arn, a.access_point_arn,
            self.failure_queue.arn, log_group.arn, self._function_arns,
        ).apply(lambda refs: PolicyRefs(*refs))

    def _create_stream_mapping(self) -> None:
        a = self._args
        self.stream_mapping = aws.lambda_.EventSourceMapping(
            f"{self._name}-combiner-stream",
            event_source_arn=a.stream_arn,
            function_name=self.functions[env.COMBINER].arn,
            # From the oldest record kept (24 hours): a replaced mapping would lose, with LATEST, the
            # rounds that turned ready in between; re-reading is safe as claims are idempotent.
            starting_position="TRIM_HORIZON",
            batch_size=STREAM_BATCH_SIZE,
            maximum_retry_attempts=STREAM_MAX_RETRIES,
            maximum_record_age_in_seconds=STREAM_MAX_RECORD_AGE_S,
            bisect_batch_on_function_error=True,
            filter_criteria={"filters": [{"pattern": json.dumps(STREAM_FILTER_PATTERN)}]},
            destination_config={"on_failure": {"destination_arn": self.failure_queue.arn}},
            tags=self._tags,
            # Lambda checks the stream permissions when it creates the mapping.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_policies[env.COMBINER]]),
        )

    def _create_start_trigger(self) -> None:
        a, starter = self._args, self.functions[env.STARTER]
        permission = aws.lambda_.Permission(
            f"{self._name}-starter-s3-permission",
            action="lambda:InvokeFunction",
            function=starter.name,
            principal="s3.amazonaws.com",
            source_arn=a.bucket_arn,
            source_account=self._account,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.s3.BucketNotification(
            f"{self._name}-start-notification",
            bucket=a.bucket_name,
            lambda_functions=[
                {
                    "lambda_function_arn": starter.arn,
                    "events": ["s3:ObjectCreated:*"],
                    "filter_prefix": env.START_PREFIX,
                    "filter_suffix": env.START_SUFFIX,
                }
            ],
            # S3 tests the destination when the notification is saved; and one configuration call at
            # a time on a bucket (see Storage), so after its last.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[permission, *([a.bucket_configured] if a.bucket_configured else [])]),
        )

    def _create_watchdog(self) -> None:
        s, combiner = self._args.settings, self.functions[env.COMBINER]
        child = pulumi.ResourceOptions(parent=self)
        unit = "minute" if s.watchdog_minutes == 1 else "minutes"
        rule = aws.cloudwatch.EventRule(
            f"{self._name}-watchdog",
            description="lambdatrain: wake the combiner to re-drive stuck rounds",
            schedule_expression=f"rate({s.watchdog_minutes} {unit})",
            tags=self._tags, opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{self._name}-watchdog-target", rule=rule.name, arn=combiner.arn,
            input=json.dumps({"watchdog": True}), opts=child,
        )
        aws.lambda_.Permission(
            f"{self._name}-watchdog-permission", action="lambda:InvokeFunction", function=combiner.name,
            principal="events.amazonaws.com", source_arn=rule.arn, opts=child,
        )

