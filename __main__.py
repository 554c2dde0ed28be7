"""The lambdatrain stack: read the configuration once, wire the four components, export outputs.

Every key is ``lambdatrain:<key>`` in Pulumi.<stack>.yaml; ``components.config`` declares each one
(type, default, check, meaning) and a bad value stops the program with one line naming the key.
"""

import pulumi

from components.config import StackSettings
from components.functions import TrainingFunctions, TrainingFunctionsArgs
from components.ledger import Ledger, LedgerArgs
from components.network import Network, NetworkArgs
from components.storage import Storage, StorageArgs
from lambdatrain.protocol.errors import ConfigError
from lambdatrain.roles.settings import FUNCTIONS

config = pulumi.Config()
region = pulumi.Config("aws").get("region")  # None: the provider's default (AWS_REGION)
try:
    settings = StackSettings.from_config(config.get, project=pulumi.get_project(), stack=pulumi.get_stack())
except ConfigError as exc:
    raise pulumi.RunError(str(exc)) from None  # one line, no traceback

network = Network(
    "network",
    NetworkArgs(
        cidr=settings.vpc_cidr, az_count=settings.zone_count, nat_per_az=settings.nat_per_az, tags=settings.tags,
        zones=settings.availability_zones,
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
        bucket_configured=storage.bucket_configured,
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
# What `lambdatrain preflight --stack-outputs` checks against the account's Lambda limits.
pulumi.export("sizing", {
    "region": region,
    "workers": settings.workers,
    "functions": {
        logical: {"memoryMb": getattr(settings, logical).memory_mb,
                  "reservedConcurrency": getattr(settings, logical).reserved_concurrency}
        for logical in FUNCTIONS
    },
})
pulumi.export(
    "setupCommand",
    # Asynchronous: setup takes minutes, longer than the AWS CLI's 60 s read timeout, after which it
    # would retry a synchronous call while the first still runs. `lambdatrain setup` follows it.
    functions.functions["starter"].name.apply(
        lambda name: f"aws lambda invoke --function-name {name} --invocation-type Event "
        """--cli-binary-format raw-in-base64-out --payload '{"setup": true}' setup.json"""
    ),
)
pulumi.export(
    "startCommand",
    # An explicit run id (RUN=..., or one from the time): the AWS CLI retries a synchronous invoke
    # after its 60 s read timeout, and the starter answers a start it knows as a duplicate, so a
    # retry is the same run; the synchronous answer (or the starter's error) is printed. A subshell,
    # so the id made here does not stay in the user's shell and name the next paste's run too.
    functions.functions["starter"].name.apply(
        lambda name: "(RUN=${RUN:-run-$(date -u +%Y%m%d-%H%M%S)}; "
        f"aws lambda invoke --function-name {name} --cli-binary-format raw-in-base64-out "
        f"""--payload '{{"start": true, "run": "'"$RUN"'", "workers": {settings.workers}}}' out.json """
        "&& cat out.json)"
    ),
)
