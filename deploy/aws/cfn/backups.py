"""The S3 bucket of the in-cluster PostgreSQL's backups, and the role only the backup pods get.

Versioned, encrypted with a key of its own, public access blocked, TLS only, and a lifecycle that expires
dumps after DEPLOY['postgres_backup_bucket_keep_days'] (and replaced versions 7 days later). In the
cloudnative-pg mode the Cluster's instances (their Barman Cloud sidecar, as the ServiceAccount the operator names
after the Cluster) get the role too, for the WAL archive and base backups under ARCHIVE_PREFIX: no expiry there
(the plugin's recovery window deletes what it no longer needs; a base backup older than the window may still be
the one a restore starts from), only deleted versions go 7 days later.
"""

from deploy.aws.backups import ARCHIVE_PREFIX, PREFIX
from deploy.aws.cfn.template import kms_key, pod_identity, pod_role, private_bucket, tls_only_bucket_policy
from deploy.k8s import names


def add_backups(t):
    """Add the bucket, its key and policy, and the backup pods' role and identity; return the bucket's output."""
    config, resources = t.config, t.resources
    resources["BackupKey"] = kms_key(f"Encryption of {names.scoped(config)}'s PostgreSQL backups in S3")
    resources["BackupBucket"] = private_bucket(
        config,
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                           "KMSMasterKeyID": {"Fn::GetAtt": ["BackupKey", "Arn"]}},
         "BucketKeyEnabled": True},
        {"Id": "expire-backups", "Status": "Enabled", "Prefix": PREFIX,
         "ExpirationInDays": config.postgres_backup_bucket_keep_days,
         "NoncurrentVersionExpiration": {"NoncurrentDays": 7}},
        versioned=True,
    )  # fmt: skip
    rules = resources["BackupBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    rules.append({"Id": "expire-deleted-archive-versions", "Status": "Enabled", "Prefix": ARCHIVE_PREFIX,
                  "NoncurrentVersionExpiration": {"NoncurrentDays": 7}})  # fmt: skip
    bucket = {"Fn::GetAtt": ["BackupBucket", "Arn"]}
    objects = {"Fn::Sub": "${BackupBucket.Arn}/" + PREFIX + "*"}
    archive = {"Fn::Sub": "${BackupBucket.Arn}/" + ARCHIVE_PREFIX + "*"}
    resources["BackupBucketPolicy"] = tls_only_bucket_policy("BackupBucket")
    resources["BackupRole"] = pod_role(
        f"The PostgreSQL backup and restore pods of {names.scoped(config)}: its backup bucket only",
        "postgres-backups",
        [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload",
                                           "s3:GetObject", "s3:GetObjectTagging"], "Resource": objects},
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject",
                                           "s3:AbortMultipartUpload"], "Resource": archive},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
             "Condition": {"StringLike": {"s3:prefix": [PREFIX + "*", ARCHIVE_PREFIX + "*"]}}},
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
             "Resource": {"Fn::GetAtt": ["BackupKey", "Arn"]}},
        ],
    )  # fmt: skip
    resources["BackupIdentity"] = pod_identity(
        config.namespace, names.resource_name(config.app_name, "postgres-backup"), "BackupRole"
    )
    if config.postgres_operator:
        resources["CnpgBackupIdentity"] = pod_identity(
            config.namespace, names.cnpg_cluster_name(config.app_name), "BackupRole"
        )
        # The Cluster a restore to a point in time recovers into reads the same archive (deploy/k8s/pitr.py).
        resources["CnpgRecoveryIdentity"] = pod_identity(
            config.namespace, names.cnpg_recovery_name(config.app_name), "BackupRole"
        )
    return {"BackupBucketName": {"Description": "DEPLOY['postgres_backup_bucket']", "Value": {"Ref": "BackupBucket"}}}
