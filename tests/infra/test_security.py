"""Security rules, one per test: least-privilege IAM, encryption at rest, private storage, tight network."""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.iam import WILDCARD_RESOURCE_EXCEPTIONS
from components.network import NFS_PORT
from lambdatrain.ledger.schema import RUNS_INDEX
from lambdatrain.roles.settings import STATE_EXPIRY_DAYS
from lambdatrain.roles import settings as env

SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
# The only rules that reach 0.0.0.0/0, and why: HTTPS out of the functions to the AWS APIs (S3 and
# DynamoDB through the gateway endpoints, lambda:Invoke through the NAT) and to PyPI during setup.
OPEN_EGRESS = {"network-functions-https-out": 443}


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _statements(plan, role):
    return plan.policies()[f"functions-{role}-policy"]


def _granted(plan, role, action):
    """Resources ``role`` may apply ``action`` to."""
    return [
        resource
        for statement in _statements(plan, role)
        if statement["Effect"] == "Allow" and action in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    ]


def test_no_iam_statement_allows_every_action(plan):
    for name, statements in plan.policies().items():
        for statement in statements:
            assert not any("*" in action for action in _as_list(statement["Action"])), (name, statement)


def test_wildcard_resources_only_for_documented_actions(plan):
    for name, statements in plan.policies().items():
        for statement in statements:
            if "*" in _as_list(statement["Resource"]):
                assert set(_as_list(statement["Action"])) <= set(WILDCARD_RESOURCE_EXCEPTIONS), (name, statement)


def test_starter_and_combiner_invoke_only_worker_and_combiner(plan):
    # The starter re-drives a ready round (duplicate start, resume) by invoking the combiner; the
    # combiner's watchdog re-drives itself. Nobody may invoke the starter.
    targets = {plan.outputs["workerFunctionArn"], plan.outputs["combinerFunctionArn"]}
    for role in ("starter", "combiner"):
        granted = _granted(plan, role, "lambda:InvokeFunction")
        assert sorted(granted) == sorted(targets), role


def test_worker_invokes_nothing(plan):
    for statement in _statements(plan, "worker"):
        assert not any(a.startswith("lambda:") for a in _as_list(statement["Action"]))


def test_only_the_combiner_reads_the_stream(plan):
    for role in ("starter", "worker", "combiner"):
        granted = _granted(plan, role, "dynamodb:GetRecords")
        assert granted == ([plan.outputs["streamArn"]] if role == "combiner" else [])


def _ledger_actions_used() -> set[str]:
    """The DynamoDB actions the ledger issues, read from the source of lambdatrain/ledger/."""
    # Every ledger module, so a call moved between them (table.py, claims.py) stays counted.
    paths = sorted((Path(__file__).resolve().parents[2] / "lambdatrain" / "ledger").glob("*.py"))
    assert {p.name for p in paths} >= {"table.py", "claims.py"}, paths
    source = "\n".join(p.read_text() for p in paths)
    calls = {"get_item": "GetItem", "put_item": "PutItem", "update_item": "UpdateItem",
             "delete_item": "DeleteItem", "query": "Query", "scan": "Scan"}
    # A call (`.query(`) or a bound method handed to the paginating helper (`self.table.query,`).
    used = {calls[m] for m in re.findall(r"\.(get_item|put_item|update_item|delete_item|query|scan)\b[(,]", source)}
    assert ".batch_writer(" not in source and ".batch_get_item(" not in source, "batch calls need their own IAM actions"
    # Items of a TransactWriteItems are authorised as their single-item actions.
    items = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
    used |= {items[k] for k in re.findall(r'\{"(Put|Update|Delete|ConditionCheck)":', source)}
    assert "TransactWriteItems" not in used and used, used
    return {f"dynamodb:{a}" for a in used}


def test_ledger_grants_cover_exactly_what_the_ledger_calls(plan):
    granted = set()
    for role in ("starter", "worker", "combiner"):
        (statement,) = [s for s in _statements(plan, role) if s["Sid"] == "Ledger"]
        granted |= set(statement["Action"])
    assert granted == _ledger_actions_used()


def test_ledger_grants_per_function(plan):
    def ledger(role):
        (statement,) = [s for s in _statements(plan, role) if s["Sid"] == "Ledger"]
        return set(statement["Action"])

    reads_and_writes = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert ledger("worker") == ledger("starter") == reads_and_writes
    # reopen_worker deletes a corrupt result; the combine queries results; the watchdog scans runs.
    assert ledger("combiner") == reads_and_writes | {"dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:Scan"}


def test_each_function_touches_only_its_table(plan):
    table_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{plan.outputs['tableName']}"
    for role in ("starter", "worker", "combiner"):
        assert _granted(plan, role, "dynamodb:UpdateItem") == [table_arn]


def test_only_the_combiner_queries_the_runs_index_and_no_other(plan):
    # The watchdog lists the runs from the index (lambdatrain/ledger/listing.py); a query of an
    # index is authorised on the index's ARN, which the table's ARN alone does not cover.
    table_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{plan.outputs['tableName']}"
    assert sorted(_granted(plan, "combiner", "dynamodb:Query")) == [table_arn, f"{table_arn}/index/{RUNS_INDEX}"]
    for role in ("starter", "worker"):
        assert _granted(plan, role, "dynamodb:Query") == []
    # Nothing else is allowed on any index: the combiner's index statement holds the query alone.
    for role in ("starter", "worker", "combiner"):
        for statement in _statements(plan, role):
            if any("/index/" in r for r in _as_list(statement["Resource"])):
                assert (role, _as_list(statement["Action"])) == ("combiner", ["dynamodb:Query"])


def test_bucket_access_is_scoped_to_key_prefixes(plan):
    bucket_arn = f"arn:aws:s3:::{plan.outputs['bucketName']}"
    for role in ("starter", "worker", "combiner"):
        for statement in _statements(plan, role):
            if not any(a.startswith("s3:") for a in _as_list(statement["Action"])):
                continue
            if statement["Resource"] == [bucket_arn]:  # a listing: only of the prefixes its condition names
                assert _as_list(statement["Action"]) == ["s3:ListBucketVersions"]
                prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
                assert prefixes and all(p.endswith("/*") and p != "*" for p in prefixes)
            else:
                assert all(r.startswith(f"{bucket_arn}/") and r != f"{bucket_arn}/*" for r in statement["Resource"])


def _bucket_grants(plan, role):
    """{(action, resource)} of every s3: action ``role`` is allowed, one pair per action and key pattern."""
    return {
        (action, resource)
        for statement in _statements(plan, role)
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]) if action.startswith("s3:")
        for resource in _as_list(statement["Resource"])
    }


def _keys(plan, prefix):
    return f"arn:aws:s3:::{plan.outputs['bucketName']}/{prefix}*"


def test_worker_reads_and_writes_only_its_residuals(plan):
    state = _keys(plan, env.STATE_PREFIX)
    assert _bucket_grants(plan, "worker") == {("s3:GetObject", state), ("s3:PutObject", state),
                                              ("s3:PutObjectTagging", state), ("s3:AbortMultipartUpload", state)}


def test_combiner_keeps_and_prunes_state_and_writes_exports(plan):
    # Its own state (momentum, residual, update), as a worker its residual; after each committed
    # round one listing of the run's state versions, then one DeleteObjects request of those
    # versions, which IAM checks per key (s3:DeleteObjectVersion). The export grant is kept on
    # purpose: a finished run's model goes to exports/<run>/ (issue 13, item 8).
    state = _keys(plan, env.STATE_PREFIX)
    assert _bucket_grants(plan, "combiner") == {
        ("s3:GetObject", state), ("s3:PutObject", state), ("s3:AbortMultipartUpload", state),
        ("s3:DeleteObject", state), ("s3:DeleteObjectVersion", state), ("s3:PutObjectTagging", state),
        ("s3:ListBucketVersions", f"arn:aws:s3:::{plan.outputs['bucketName']}"),
        ("s3:PutObject", _keys(plan, env.EXPORT_PREFIX))}
    (listing,) = [s for s in _statements(plan, "combiner") if s["Sid"] == "BucketStateVersions"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{env.STATE_PREFIX}*"]}}


def test_starter_only_reads_start_files_and_datasets_and_retags_state(plan):
    assert _bucket_grants(plan, "starter") == {
        ("s3:GetObject", _keys(plan, env.START_PREFIX)), ("s3:GetObject", _keys(plan, env.DATASET_PREFIX)),
        ("s3:PutObjectTagging", _keys(plan, env.STATE_PREFIX)),
        ("s3:ListBucketVersions", f"arn:aws:s3:::{plan.outputs['bucketName']}")}
    (listing,) = [s for s in _statements(plan, "starter") if s["Sid"] == "BucketStateVersions"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{env.STATE_PREFIX}*"]}}


def test_statement_ids_are_unique_in_each_policy(plan):
    for name, statements in plan.policies().items():
        sids = [s["Sid"] for s in statements]
        assert len(sids) == len(set(sids)), (name, sids)


def test_orphaned_residuals_expire_and_kept_ones_do_not(plan):
    # The backstop for residuals a crashed combiner did not delete: those a worker tagged, not those
    # the watchdog re-tagged for a stopped run; the bucket is versioned, so the hidden (noncurrent)
    # versions must expire too or their bytes stay forever.
    (lifecycle,) = plan.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert lifecycle.inputs["bucket"] == "storage-bucket-id"
    expire, tidy = lifecycle.inputs["rules"]
    assert expire["status"] == tidy["status"] == "Enabled"
    assert expire["filter"] == {"and": {"prefix": env.STATE_PREFIX, "tags": {env.STATE_TAG: env.STATE_EXPIRING}}}
    assert env.STATE_KEPT != env.STATE_EXPIRING
    assert expire["expiration"] == {"days": STATE_EXPIRY_DAYS} and STATE_EXPIRY_DAYS == 14
    assert set(expire) == {"id", "status", "filter", "expiration"}
    assert tidy["filter"] == {"prefix": env.STATE_PREFIX}
    assert tidy["noncurrentVersionExpiration"]["noncurrentDays"] >= 1
    # A worker killed mid-upload leaves parts that are billed until aborted (S3 takes no tag filter here).
    assert tidy["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}


def test_efs_access_only_through_the_access_point(plan):
    for role in ("starter", "worker", "combiner"):
        (statement,) = [s for s in _statements(plan, role) if s["Sid"] == "EfsAccessPoint"]
        assert "elasticfilesystem:AccessPointArn" in statement["Condition"]["StringEquals"]


def test_efs_policy_admits_only_tls_iam_clients_through_the_access_point(plan):
    (policy,) = plan.of_type("aws:efs/fileSystemPolicy:FileSystemPolicy")
    (access_point,) = plan.of_type("aws:efs/accessPoint:AccessPoint")
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    tls, beside, allow = (statements["DenyInsecureTransport"], statements["DenyMountsBesideTheAccessPoint"],
                          statements["AllowIamAuthorizedClientsViaMountTargets"])
    assert (tls["Effect"], tls["Action"], tls["Condition"]) == ("Deny", "*", {"Bool": {"aws:SecureTransport": "false"}})
    assert beside["Effect"] == "Deny" and "elasticfilesystem:ClientWrite" in beside["Action"]
    assert beside["Condition"]["StringNotEquals"]["elasticfilesystem:AccessPointArn"].startswith(
        "arn:aws:efs:") and access_point.name in beside["Condition"]["StringNotEquals"]["elasticfilesystem:AccessPointArn"]
    # The account (not "*") as principal: only identities whose own policy grants the action get in.
    assert allow["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert sorted(allow["Action"]) == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    assert allow["Condition"] == {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}


def test_efs_is_encrypted_with_elastic_throughput(plan):
    (fs,) = plan.of_type("aws:efs/fileSystem:FileSystem")
    assert fs.inputs["encrypted"] is True
    assert fs.inputs["throughputMode"] == "elastic"


def test_access_point_pins_a_posix_user_and_creates_its_root(plan):
    (ap,) = plan.of_type("aws:efs/accessPoint:AccessPoint")
    assert ap.inputs["posixUser"] == {"uid": 1000, "gid": 1000}
    assert ap.inputs["rootDirectory"]["creationInfo"] == {"ownerUid": 1000, "ownerGid": 1000, "permissions": "750"}


def test_bucket_is_encrypted_and_versioned(plan):
    (sse,) = plan.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in {"AES256", "aws:kms"}
    (versioning,) = plan.of_type("aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"


def test_table_is_encrypted(plan):
    (table,) = plan.of_type("aws:dynamodb/table:Table")
    assert table.inputs["serverSideEncryption"]["enabled"] is True


def test_failure_queue_is_encrypted(plan):
    (queue,) = plan.of_type("aws:sqs/queue:Queue")
    assert queue.inputs["sqsManagedSseEnabled"] is True


def test_bucket_public_access_fully_blocked(plan):
    (block,) = plan.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert all(block.inputs[f] is True for f in flags)


def test_bucket_refuses_plain_http(plan):
    (policy,) = plan.of_type("aws:s3/bucketPolicy:BucketPolicy")
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Deny", "s3:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert len(statement["Resource"]) == 2  # the bucket and every object in it


def test_no_ingress_from_anywhere(plan):
    for sg in plan.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert not sg.inputs.get("ingress"), sg.name
    for rule in plan.of_type(SG_INGRESS):
        assert "cidrIpv4" not in rule.inputs and "cidrIpv6" not in rule.inputs, rule.name


def test_egress_to_anywhere_only_where_documented(plan):
    for sg in plan.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert not sg.inputs.get("egress"), sg.name  # no inline rules: all are separate resources
    open_rules = {r.name: r.inputs for r in plan.of_type(SG_EGRESS) if r.inputs.get("cidrIpv4") == "0.0.0.0/0"}
    assert {name: rule["fromPort"] for name, rule in open_rules.items()} == OPEN_EGRESS
    assert all(rule["toPort"] == rule["fromPort"] for rule in open_rules.values())


def test_efs_reachable_only_on_nfs_from_the_functions(plan):
    (rule,) = [r for r in plan.of_type(SG_INGRESS) if r.inputs["securityGroupId"] == "network-efs-sg-id"]
    assert rule.inputs["referencedSecurityGroupId"] == "network-functions-sg-id"
    assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", NFS_PORT, NFS_PORT)
    mount_groups = {tuple(r.inputs["securityGroups"]) for r in plan.of_type("aws:efs/mountTarget:MountTarget")}
    assert mount_groups == {("network-efs-sg-id",)}


def test_log_groups_have_retention(plan):
    groups = {r.inputs["name"]: r.inputs for r in plan.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert set(groups) == {f"/aws/lambda/{plan.outputs[f'{n}FunctionName']}" for n in ("starter", "worker", "combiner")}
    assert all(g["retentionInDays"] > 0 for g in groups.values())


def test_prod_worker_reserves_concurrency_for_all_workers(prod):
    # Only prod sets workerConcurrency; dev reserves nothing (tests/infra/test_new_account.py).
    assert prod.functions()["worker"].inputs["reservedConcurrentExecutions"] >= 17


def test_public_subnets_do_not_assign_public_ips(plan):
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in plan.of_type("aws:ec2/subnet:Subnet"))
