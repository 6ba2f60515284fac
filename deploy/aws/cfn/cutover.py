"""The bucket that carries the SQLite file into the cluster (``k8s_deploy --cutover``), and the one role that
may read it: the cut-over Job's own ServiceAccount's (EKS Pod Identity), never the app's pods'.

A bucket of its own, not a prefix of the backups bucket: that one exists only with the in-cluster PostgreSQL
(a cut-over to RDS needs the bucket too) and keeps versions for weeks, while this file (every row of the old
site) should not outlive the cut-over: objects expire after 7 days. SSE-S3, not a KMS key: the operator's
upload and the Job's read need no key permission, and the object is short-lived; TLS only, nothing public.
Whoever runs the cut-over writes with their own credentials (s3:PutObject on ``cutover/*``).
"""

from deploy.aws.cfn.template import pod_identity, pod_role, private_bucket, tls_only_bucket_policy
from deploy.aws.transfer import PREFIX
from deploy.k8s import names


def add_cutover(t):
    """Add the bucket, its policy, and the cut-over Job's role and identity; return the bucket's output."""
    config, resources = t.config, t.resources
    objects = {"Fn::Sub": "${CutoverBucket.Arn}/" + PREFIX + "*"}
    resources["CutoverBucket"] = private_bucket(
        config,
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}},
        {"Id": "expire-cutover-files", "Status": "Enabled", "Prefix": PREFIX, "ExpirationInDays": 7},
    )
    resources["CutoverBucketPolicy"] = tls_only_bucket_policy("CutoverBucket")
    resources["CutoverRole"] = pod_role(
        f"The cut-over Job of {config.namespace}/{config.app_name}: reads the SQLite file only",
        "read-cutover-file",
        [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}],
    )
    resources["CutoverIdentity"] = pod_identity(
        config.namespace, names.resource_name(config.app_name, "cutover"), "CutoverRole"
    )
    return {"CutoverBucket": {"Description": "DEPLOY['cutover_bucket']", "Value": {"Ref": "CutoverBucket"}}}
