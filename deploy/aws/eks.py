"""EKS access without the AWS CLI: describe the cluster, make bearer tokens, write a kubeconfig.

A token is what ``aws eks get-token`` prints: ``k8s-aws-v1.`` and the
URL-safe base64 (no padding) of a presigned STS ``GetCallerIdentity`` URL,
signed with the ``x-k8s-aws-id`` header naming the cluster and valid for 60
seconds of signing time; the API server accepts it for about 15 minutes.
:class:`TokenProvider` makes a new one before the old expires, so long waits
keep working.
"""

import base64
import re
import time
from dataclasses import dataclass

import boto3
import yaml
from botocore.model import ServiceId
from botocore.signers import RequestSigner

from deploy.aws.session import AwsError, call, session
from deploy.k8s.connect import Endpoint

TOKEN_PREFIX = "k8s-aws-v1."
TOKEN_LIFETIME = 14 * 60  # the API server accepts about 15 minutes
REFRESH_AFTER = 10 * 60


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    endpoint: str
    ca_data: bytes
    version: str
    status: str
    subnets: tuple
    security_groups: tuple
    vpc: str


def describe_cluster(session, name):
    eks = session.client("eks")
    cluster = call(f"Describing EKS cluster {name!r}", eks.describe_cluster, name=name)["cluster"]
    vpc = cluster.get("resourcesVpcConfig", {})
    return ClusterInfo(
        name=name,
        endpoint=cluster["endpoint"],
        ca_data=base64.b64decode(cluster.get("certificateAuthority", {}).get("data", "")),
        version=cluster.get("version", ""),
        status=cluster.get("status", ""),
        subnets=tuple(vpc.get("subnetIds", [])),
        security_groups=tuple(vpc.get("securityGroupIds", [])),
        vpc=vpc.get("vpcId", ""),
    )


ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)")


def role_name(role_arn):
    """The role's name, from its ARN; AwsError for what is not an IAM role ARN."""
    match = ROLE_ARN.fullmatch(role_arn or "")
    if not match:
        raise AwsError(
            f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME): pass the ARN of a staff role "
            "of DEPLOY['staff_access'] (docs/security.md#staff-access-rbac)."
        )
    return match.group(1)


def assume_role(session, role_arn, session_name="eks-kubeconfig"):
    """A boto3 session with the temporary credentials of ``role_arn``, assumed from ``session``'s identity."""
    role_name(role_arn)
    answer = call(
        f"Assuming role {role_arn}",
        session.client("sts").assume_role,
        RoleArn=role_arn,
        RoleSessionName=session_name,
    )
    credentials = answer["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=session.region_name,
    )


def make_token(session, cluster_name):
    credentials = session.get_credentials()
    if credentials is None:
        raise AwsError("Making an EKS token: no AWS credentials found (AWS_PROFILE, environment, or a role).")
    region = session.region_name
    sts = session.client("sts")
    signer = RequestSigner(ServiceId("sts"), region, "sts", "v4", credentials, session.events)
    params = {
        "method": "GET",
        "url": f"{sts.meta.endpoint_url}/?Action=GetCallerIdentity&Version=2011-06-15",
        "body": {},
        "headers": {"x-k8s-aws-id": cluster_name},
        "context": {},
    }
    url = signer.generate_presigned_url(params, region_name=region, expires_in=60, operation_name="")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class TokenProvider:
    """A fresh token when the current one is about to expire."""

    def __init__(self, session, cluster_name, clock=time.monotonic):
        self.session, self.cluster_name, self.clock = session, cluster_name, clock
        self._token, self._made = None, None
        self.made = 0

    def __call__(self):
        if self._token is None or self.clock() - self._made > REFRESH_AFTER:
            self._token = make_token(self.session, self.cluster_name)
            self._made = self.clock()
            self.made += 1
        return self._token


def endpoint(session, cluster_name):
    info = describe_cluster(session, cluster_name)
    return Endpoint(host=info.endpoint, ca_data=info.ca_data, token=TokenProvider(session, cluster_name)), info


def kubeconfig(info, region, profile=None, role_arn=None):
    """A kubeconfig for staff: the AWS CLI's exec plugin makes the tokens (as ``role_arn`` when given, which
    ``aws eks get-token --role-arn`` assumes first); each role gets its own context name."""
    args = ["--region", region, "eks", "get-token", "--cluster-name", info.name, "--output", "json"]
    if role_arn:
        args += ["--role-arn", role_arn]
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws", "args": args,
                     "interactiveMode": "Never"}}  # fmt: skip
    if profile:
        user["exec"]["env"] = [{"name": "AWS_PROFILE", "value": profile}]
    name = f"eks-{region}-{info.name}" + (f"-{role_name(role_arn)}" if role_arn else "")
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": info.endpoint,
                          "certificate-authority-data": base64.b64encode(info.ca_data).decode()}}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        },
        sort_keys=False,
    )  # fmt: skip


@dataclass(frozen=True)
class StaffAccess:
    text: str  # a kubeconfig, or a bearer token
    context: str | None = None  # the kubeconfig's current context; None for a token


def staff_access(cluster_name, region=None, profile=None, role_arn=None, token=False):
    """What ``eks_kubeconfig`` prints: a kubeconfig for ``cluster_name`` (or, with ``token``, a bearer token), as
    ``role_arn`` when given. A role ARN that names no role is refused before any AWS call."""
    if role_arn:
        role_name(role_arn)
    aws = session(region, profile)
    if token:
        return StaffAccess(make_token(assume_role(aws, role_arn) if role_arn else aws, cluster_name))
    text = kubeconfig(describe_cluster(aws, cluster_name), aws.region_name, profile, role_arn)
    return StaffAccess(text, yaml.safe_load(text)["current-context"])
