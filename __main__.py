"""The lambdatrain stack: read the configuration once, wire the four components, export outputs.

Every key below is ``lambdatrain:<key>`` in Pulumi.<stack>.yaml, with its default beside the read;
``components.config.StackSettings`` validates them and a bad value stops the program with one line.
"""

import pulumi

from components.config import FunctionSettings, StackSettings
from components.functions import TrainingFunctions, TrainingFunctionsArgs
from components.ledger import Ledger, LedgerArgs
from components.network import Network, NetworkArgs
from components.storage import Storage, StorageArgs
from lambdatrain.protocol.errors import ConfigError

config = pulumi.Config()


def _function(logical: str, memory_mb: int, timeout_s: int, ephemeral_mb: int = 512) -> FunctionSettings:
    return FunctionSettings(
        memory_mb=config.get_int(f"{logical}Memory", memory_mb),
        timeout_s=config.get_int(f"{logical}Timeout", timeout_s),
        reserved_concurrency=config.get_int(f"{logical}Concurrency"),  # unset: unreserved
        ephemeral_mb=config.get_int(f"{logical}EphemeralStorage", ephemeral_mb),
    )


try:
    settings = StackSettings(
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        workers=config.get_int("workers", 4),
        architecture=config.get("architecture", "x86_64"),
        starter=_function("starter", 2048, 900, ephemeral_mb=2048),  # setup downloads torch
        worker=_function("worker", 10240, 900),
        combiner=_function("combiner", 4096, 900),
        az_count=config.get_int("azCount", 2),
        nat_per_az=config.get_bool("natPerAz", False),
        vpc_cidr=config.get("vpcCidr", "10.0.0.0/16"),
        log_retention_days=config.get_int("logRetentionDays", 14),
        watchdog_minutes=config.get_int("watchdogMinutes", 5),
        async_retries=config.get_int("asyncRetries", 2),
        log_level=config.get("logLevel", "INFO"),
        protect=config.get_bool("protect", False),
    )
except ConfigError as exc:
    raise pulumi.RunError(str(exc)) from None  # one line, no traceback

network = Network(
    "network",
    NetworkArgs(
        cidr=settings.vpc_cidr, az_count=settings.az_count, nat_per_az=settings.nat_per_az, tags=settings.tags
    ),
)
storage = Storage(
    "storage",
    StorageArgs(
        subnet_ids=[s.id for s in network.private_subnets],
        efs_security_group_id=network.efs_sg.id,
        protect=settings.protect,
        tags=settings.tags,
    ),
)
ledger = Ledger("ledger", LedgerArgs(protect=settings.protect, tags=settings.tags))
functions = TrainingFunctions(
    "functions",
    TrainingFunctionsArgs(
        settings=settings,
        subnet_ids=[s.id for s in network.private_subnets],
        security_group_id=network.functions_sg.id,
        file_system_arn=storage.file_system.arn,
        access_point_arn=storage.access_point.arn,
        mount_targets=storage.mount_targets,
        table_name=ledger.table.name,
        table_arn=ledger.table.arn,
        stream_arn=ledger.table.stream_arn,
        bucket_name=storage.bucket.bucket,
        bucket_arn=storage.bucket.arn,
    ),
)

for logical, function in functions.functions.items():
    pulumi.export(f"{logical}FunctionName", function.name)
    pulumi.export(f"{logical}FunctionArn", function.arn)
pulumi.export("tableName", ledger.table.name)
pulumi.export("streamArn", ledger.table.stream_arn)
pulumi.export("bucketName", storage.bucket.bucket)
pulumi.export("fileSystemId", storage.file_system.id)
pulumi.export("accessPointId", storage.access_point.id)
pulumi.export("failureQueueUrl", functions.failure_queue.url)
pulumi.export(
    "setupCommand",
    functions.functions["starter"].name.apply(
        lambda name: f"aws lambda invoke --function-name {name} --cli-binary-format raw-in-base64-out "
        """--payload '{"setup": true}' setup.json"""
    ),
)
pulumi.export(
    "startCommand",
    functions.functions["starter"].name.apply(
        lambda name: f"aws lambda invoke --function-name {name} --cli-binary-format raw-in-base64-out "
        f"""--payload '{{"start": true, "workers": {settings.workers}}}' out.json"""
    ),
)
