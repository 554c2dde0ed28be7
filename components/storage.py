"""Storage: the EFS file system the functions share, and the S3 bucket (paper, section 5.C).

EFS holds the packages (torch & co, see lambdatrain/roles/packages.py), the prepared dataset, the model and
every round's gradients; the functions reach it through one access point that pins the POSIX user,
so files written by any function belong to the same uid. The bucket receives the dataset archive,
the start files that trigger the starter, exports, and a compressed run's state (the workers' and
the combiner's error-feedback residuals, its momentum and update) under ``STATE_PREFIX`` (which a
lifecycle rule expires, see ``STATE_EXPIRY_DAYS``); it is private,
encrypted, versioned and refuses plain-HTTP requests. Its configuration resources are created one
after another (see ``_create_bucket``); ``bucket_configured`` is the last of them, for anything else
that configures it.

The file system policy makes IAM the gate to EFS: without one, any NFS client the security group
lets in could mount and write. With it, a client must use TLS, come through a mount target and
our access point, and hold ``ClientMount``/``ClientWrite`` in its own IAM policy (the grant names
the account, which delegates to identity policies: only the functions' roles have them). That is
also why the files' checksums need not be cryptographic (lambdatrain/storage/digest.py): whoever can write
a file can write the ledger item that records its checksum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from lambdatrain.roles.settings import STATE_EXPIRING, STATE_EXPIRY_DAYS, STATE_NONCURRENT_DAYS, STATE_PREFIX, STATE_TAG

POSIX_UID = 1000
POSIX_GID = 1000
ROOT_PATH = "/lambdatrain"  # the access point's root inside the file system


@dataclass
class StorageArgs:
    subnet_ids: list[pulumi.Input[str]]  # private subnets: one mount target in each
    efs_security_group_id: pulumi.Input[str]
    protect: bool
    tags: dict[str, str]


class Storage(pulumi.ComponentResource):
    file_system: aws.efs.FileSystem
    mount_targets: list[aws.efs.MountTarget]
    access_point: aws.efs.AccessPoint
    file_system_policy: aws.efs.FileSystemPolicy
    bucket: aws.s3.Bucket
    bucket_configured: pulumi.Resource  # the last of the bucket's configuration resources

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("lambdatrain:storage:Storage", name, None, opts)
        self._name = name
        self._args = args
        self._create_file_system()
        self._create_bucket()
        self.register_outputs(
            {
                "file_system_id": self.file_system.id,
                "access_point_id": self.access_point.id,
                "bucket": self.bucket.bucket,
            }
        )

    def _stateful(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, protect=self._args.protect)

    def _create_file_system(self) -> None:
        name, args = self._name, self._args
        self.file_system = aws.efs.FileSystem(
            f"{name}-efs",
            encrypted=True,
            performance_mode="generalPurpose",
            # Elastic: pay per GB moved, no burst credits to run out mid-training.
            throughput_mode="elastic",
            tags={**args.tags, "Name": f"{name}-efs"},
            opts=self._stateful(),
        )
        self.mount_targets = [
            aws.efs.MountTarget(
                f"{name}-efs-mount-{i}",
                file_system_id=self.file_system.id,
                subnet_id=subnet_id,
                security_groups=[args.efs_security_group_id],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for i, subnet_id in enumerate(args.subnet_ids)
        ]
        self.access_point = aws.efs.AccessPoint(
            f"{name}-efs-ap",
            file_system_id=self.file_system.id,
            posix_user={"uid": POSIX_UID, "gid": POSIX_GID},
            root_directory={
                "path": ROOT_PATH,
                "creation_info": {"owner_uid": POSIX_UID, "owner_gid": POSIX_GID, "permissions": "750"},
            },
            tags={**args.tags, "Name": f"{name}-efs-ap"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = aws.get_caller_identity_output(opts=invoke).account_id
        partition = aws.get_partition_output(opts=invoke).partition
        self.file_system_policy = aws.efs.FileSystemPolicy(
            f"{name}-efs-policy",
            file_system_id=self.file_system.id,
            policy=pulumi.Output.all(self.file_system.arn, self.access_point.arn, account, partition).apply(
                lambda a: efs_policy(*a)),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_bucket(self) -> None:
        name, args = self._name, self._args
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            force_destroy=not args.protect,  # dev: `pulumi destroy` empties it; prod: never
            tags=args.tags,
            opts=self._stateful(),
        )
        # S3 answers two concurrent configuration calls on one bucket with 409 OperationAborted ("A
        # conflicting conditional operation is currently in progress against this resource",
        # docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): each resource below waits
        # for the one before, and the start notification (components/functions.py) for the last.
        previous: pulumi.Resource = self.bucket

        def after() -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=[previous])

        previous = aws.s3.BucketPublicAccessBlock(
            f"{name}-bucket-public-access",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=after(),
        )
        previous = aws.s3.BucketOwnershipControls(
            f"{name}-bucket-ownership",
            bucket=self.bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},  # ACLs off
            opts=after(),
        )
        previous = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-bucket-sse",
            bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                    "bucket_key_enabled": True}],
            opts=after(),
        )
        previous = aws.s3.BucketVersioning(
            f"{name}-bucket-versioning",
            bucket=self.bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=after(),
        )
        previous = aws.s3.BucketLifecycleConfiguration(
            f"{name}-bucket-lifecycle",
            bucket=self.bucket.id,
            rules=[
                {
                    # A backstop for residuals a crashed combiner did not delete (STATE_EXPIRY_DAYS):
                    # those tagged as a round's, not those kept for a stopped run to resume from.
                    "id": "expire-orphaned-state",
                    "status": "Enabled",
                    "filter": {"and_": {"prefix": STATE_PREFIX, "tags": {STATE_TAG: STATE_EXPIRING}}},
                    "expiration": {"days": STATE_EXPIRY_DAYS},
                },
                {
                    # Every hidden version goes (a delete without its id, a PUT over a key), and the
                    # parts of an upload a killed worker never completed (or aborted), billed until
                    # aborted: S3 removes them a day on. This rule cannot filter on tags (S3 refuses
                    # AbortIncompleteMultipartUpload with a tag filter) and needs none.
                    "id": "tidy-state",
                    "status": "Enabled",
                    "filter": {"prefix": STATE_PREFIX},
                    "noncurrent_version_expiration": {"noncurrent_days": STATE_NONCURRENT_DAYS},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                },
            ],
            opts=after(),
        )
        self.bucket_configured = aws.s3.BucketPolicy(
            f"{name}-bucket-policy",
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(deny_insecure_transport),
            opts=after(),
        )


def efs_policy(file_system_arn: str, access_point_arn: str, account_id: str, partition: str = "aws") -> str:
    """The file system policy: TLS only, through the access point only, IAM-authorized clients only."""
    client = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite", "elasticfilesystem:ClientRootAccess"]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": {"AWS": "*"},
                    "Action": "*",
                    "Resource": file_system_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                {
                    # An absent key fails StringEquals, so a mount without any access point is denied too.
                    "Sid": "DenyMountsBesideTheAccessPoint",
                    "Effect": "Deny",
                    "Principal": {"AWS": "*"},
                    "Action": client,
                    "Resource": file_system_arn,
                    "Condition": {"StringNotEquals": {"elasticfilesystem:AccessPointArn": access_point_arn}},
                },
                {
                    # The account as principal delegates to identity policies (components/iam.py):
                    # anonymous NFS clients get nothing, and roles only what their policy grants.
                    "Sid": "AllowIamAuthorizedClientsViaMountTargets",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                    "Action": client[:2],
                    "Resource": file_system_arn,
                    "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
                },
            ],
        }
    )


def deny_insecure_transport(bucket_arn: str) -> str:
    """A bucket policy refusing every request that does not use TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )
