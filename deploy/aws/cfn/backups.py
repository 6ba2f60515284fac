"""The S3 bucket of the in-cluster PostgreSQL's backups, and the role only the backup CronJob's pods get.

Versioned, encrypted with a key of its own, public access blocked, TLS only, and a lifecycle that expires
backups after DEPLOY['postgres_backup_bucket_keep_days'] (and replaced versions 7 days later).
"""

from deploy.aws.backups import PREFIX
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
    bucket = {"Fn::GetAtt": ["BackupBucket", "Arn"]}
    objects = {"Fn::Sub": "${BackupBucket.Arn}/" + PREFIX + "*"}
    resources["BackupBucketPolicy"] = tls_only_bucket_policy("BackupBucket")
    resources["BackupRole"] = pod_role(
        f"The PostgreSQL backup and restore pods of {names.scoped(config)}: its backup bucket only",
        "postgres-backups",
        [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload",
                                           "s3:GetObject", "s3:GetObjectTagging"], "Resource": objects},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
             "Condition": {"StringLike": {"s3:prefix": PREFIX + "*"}}},
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
             "Resource": {"Fn::GetAtt": ["BackupKey", "Arn"]}},
        ],
    )  # fmt: skip
    resources["BackupIdentity"] = pod_identity(
        config.namespace, names.resource_name(config.app_name, "postgres-backup"), "BackupRole"
    )
    return {"BackupBucketName": {"Description": "DEPLOY['postgres_backup_bucket']", "Value": {"Ref": "BackupBucket"}}}
