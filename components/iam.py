"""IAM for the training functions: each function's role and its one least-privilege inline policy.

Who may do what lives here as data (``INVOKES``, ``LEDGER_ACTIONS``, ``LEDGER_INDEX_ACTIONS``,
``BUCKET_ACCESS`` and the few actions allowed on every resource, ``WILDCARD_RESOURCE_EXCEPTIONS``);
``function_policy`` turns it into one function's policy document, which
tests/infra/test_security.py reads back from the plan.
``function_role`` declares the role and policy as children of ``TrainingFunctions``
(components/functions.py), which owns the functions themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from lambdatrain.ledger.schema import RUNS_INDEX
from lambdatrain.roles import settings as env

# Who may invoke whom. The starter fans out round 0 and, for a duplicate start or a resume,
# re-drives the current round: its missing workers, or the combiner of a ready round. The combiner
# fans out the next round, and its watchdog re-drives workers or a combine. The worker invokes nobody.
INVOKES = {
    env.STARTER: (env.WORKER, env.COMBINER),
    env.WORKER: (),
    env.COMBINER: (env.WORKER, env.COMBINER),
}
# The DynamoDB actions each function's calls into lambdatrain/ledger*.py issue. IAM authorises each
# item of a TransactWriteItems as its single-item action (Put -> PutItem, Update -> UpdateItem,
# Delete -> DeleteItem, ConditionCheck -> ConditionCheckItem); the ledger's transactions hold no
# ConditionCheck item, so nobody gets dynamodb:ConditionCheckItem.
LEDGER_ACTIONS = {
    # get_run, get_round; create_run (a transaction of two Puts); set_state (stop, resume)
    env.STARTER: ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    # get_run, get_round; record_result (Put, then Update), mark_ready
    env.WORKER: ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    # get_run, get_round; claim; results (Query); commit (Updates and Puts); reopen_worker
    # (a transaction of Delete and Update); the watchdog's backfill of the runs index on a table
    # made before it (Scan, Update, Put), and its list_runs until that is done (Scan; after it, a
    # Query of the index: LEDGER_INDEX_ACTIONS; lambdatrain/ledger/listing.py)
    env.COMBINER: (
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
        "dynamodb:Query", "dynamodb:Scan",
    ),
}
# A query of an index is authorised on the index's ARN, not the table's: the watchdog lists the runs.
LEDGER_INDEX_ACTIONS = {env.COMBINER: {RUNS_INDEX: ("dynamodb:Query",)}}
# S3 object access per function: statement id -> (actions, key patterns). A function has one
# statement per grant, so each action reaches only the prefixes it needs; IAM wants the ids unique.
# The grants that predate STATE_PREFIX keep the id "Bucket", so their deployed text is unchanged.
BUCKET_ACCESS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    env.STARTER: {"Bucket": (("s3:GetObject",), (f"{env.START_PREFIX}*", f"{env.DATASET_PREFIX}*")),
                  # `resume` of a stopped compressed run lets its kept state expire again
                  # (lambdatrain/roles/recovery.py ``_release_state``): a retag of the objects of
                  # two rounds, found by a listing (BUCKET_LISTING), nothing read or written.
                  "BucketState": (("s3:PutObjectTagging",), (f"{env.STATE_PREFIX}*",))},
    # ternary_ef/sign_ef: each worker reads its error-feedback residual of the round before and
    # writes this round's (lambdatrain/protocol/config.py), in parts (lambdatrain/storage/state.py:
    # a multipart upload is authorised as s3:PutObject; one that fails is aborted, which is its own action),
    # tagged for the lifecycle rule, which a PUT with tags needs s3:PutObjectTagging for.
    env.WORKER: {"BucketState": (("s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"),
                                 (f"{env.STATE_PREFIX}*",))},
    env.COMBINER: {
        # Kept on purpose: at the end of a run the combiner writes the final model to exports/<run>/,
        # where `lambdatrain export` fetches it without an EFS mount (issue 13, item 8).
        "Bucket": (("s3:PutObject",), (f"{env.EXPORT_PREFIX}*",)),
        # A compressed run's combine reads and writes its momentum, residual and update there
        # (lambdatrain/storage/state.py: in parts, tagged, as the workers do). After each committed
        # round it prunes the state no one will read again, every version of each object by its id
        # (the bucket is versioned: a plain delete leaves the bytes billed), in one DeleteObjects
        # request, which IAM authorises per key named: s3:DeleteObjectVersion. The watchdog re-tags
        # a stopped or failed run's state so the lifecycle rule keeps it.
        "BucketState": (("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject",
                         "s3:DeleteObjectVersion", "s3:PutObjectTagging"), (f"{env.STATE_PREFIX}*",)),
    },
}
# Listing, a bucket-level action, per function: statement id -> (actions, key prefixes the listing
# may ask for, as the s3:prefix condition). The combiner finds the versions to prune, and the
# combiner and the starter the objects to retag, by listing state/<run>/
# (lambdatrain/storage/state.py ``StateStore.prune``, ``retag``).
BUCKET_LISTING: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    env.STARTER: {"BucketStateVersions": (("s3:ListBucketVersions",), (f"{env.STATE_PREFIX}*",))},
    env.COMBINER: {"BucketStateVersions": (("s3:ListBucketVersions",), (f"{env.STATE_PREFIX}*",))},
}
EFS_ACTIONS = ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")  # no ClientRootAccess
STREAM_ACTIONS = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator")
# The only actions granted on Resource "*", and why.
WILDCARD_RESOURCE_EXCEPTIONS = {
    "ec2:CreateNetworkInterface": "VPC Lambdas: the ENI does not exist yet, so it has no ARN to name",
    "ec2:DescribeNetworkInterfaces": "Describe* calls support no resource-level permissions",
    "ec2:DescribeSubnets": "Describe* calls support no resource-level permissions",
    "ec2:DeleteNetworkInterface": "VPC Lambdas: ENIs are created by Lambda with generated ids",
    "ec2:AssignPrivateIpAddresses": "VPC Lambdas: ENIs are created by Lambda with generated ids",
    "ec2:UnassignPrivateIpAddresses": "VPC Lambdas: ENIs are created by Lambda with generated ids",
    "dynamodb:ListStreams": "ListStreams supports no resource-level permissions (stream mapping)",
}


@dataclass(frozen=True)
class PolicyRefs:
    """The resolved ARNs one function's policy names."""

    table_arn: str
    stream_arn: str
    bucket_arn: str
    file_system_arn: str
    access_point_arn: str
    queue_arn: str
    log_group_arn: str
    function_arns: dict[str, str]


def function_role(
    base: str, logical: str, refs: pulumi.Output[PolicyRefs], tags: dict[str, str], opts: pulumi.ResourceOptions
) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
    """``<base>-role`` for Lambda to assume and its inline ``<base>-policy``: ``function_policy(logical)``."""
    role = aws.iam.Role(
        f"{base}-role",
        assume_role_policy=json.dumps(_assume_role("lambda.amazonaws.com")),
        # Still names functions.py (the roles predate components/iam.py): the text is a live input,
        # and changing it updates every deployed role.
        description=f"lambdatrain {logical}: least privilege, see components/functions.py",
        tags=tags, opts=opts,
    )
    policy = aws.iam.RolePolicy(
        f"{base}-policy", role=role.id, policy=refs.apply(lambda r: json.dumps(function_policy(logical, r))), opts=opts
    )
    return role, policy


def function_policy(logical: str, refs: PolicyRefs) -> dict:
    """The least-privilege policy of one function (see INVOKES, BUCKET_ACCESS, BUCKET_LISTING and the exceptions)."""
    statements = [
        _allow("Logs", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{refs.log_group_arn}:*"]),
        _allow("VpcNetworkInterfaces", sorted(a for a in WILDCARD_RESOURCE_EXCEPTIONS if a.startswith("ec2:")), ["*"]),
        {
            **_allow("EfsAccessPoint", list(EFS_ACTIONS), [refs.file_system_arn]),
            "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": refs.access_point_arn}},
        },
        _allow("Ledger", list(LEDGER_ACTIONS[logical]), [refs.table_arn]),
        *(_allow("LedgerIndex", list(actions), [f"{refs.table_arn}/index/{index}"])
          for index, actions in LEDGER_INDEX_ACTIONS.get(logical, {}).items()),
        _allow("FailureQueue", ["sqs:SendMessage"], [refs.queue_arn]),
    ]
    if INVOKES[logical]:
        targets = [refs.function_arns[t] for t in INVOKES[logical]]
        statements.append(_allow("Invoke", ["lambda:InvokeFunction"], targets))
    for sid, (actions, keys) in BUCKET_ACCESS.get(logical, {}).items():
        statements.append(_allow(sid, list(actions), [f"{refs.bucket_arn}/{k}" for k in keys]))
    for sid, (actions, prefixes) in BUCKET_LISTING.get(logical, {}).items():
        statements.append({**_allow(sid, list(actions), [refs.bucket_arn]),
                           "Condition": {"StringLike": {"s3:prefix": list(prefixes)}}})
    if logical == env.COMBINER:
        statements.append(_allow("LedgerStream", list(STREAM_ACTIONS), [refs.stream_arn]))
        statements.append(_allow("ListStreams", ["dynamodb:ListStreams"], ["*"]))
    return {"Version": "2012-10-17", "Statement": statements}


def _allow(sid: str, actions: list[str], resources: list[str]) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def _assume_role(service: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }
