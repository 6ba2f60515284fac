"""The deploy tooling's only reader of settings.

``get_config()`` turns ``settings.DEPLOY`` (a dict) and the environment into
one frozen, validated :class:`DeployConfig`. Each field declares its default,
its environment variable and its meaning in one place; the configuration
reference in ``docs/`` is generated from these declarations.

Precedence: environment variable, then ``settings.DEPLOY``, then the default.
Secret values (``SECRET_KEY``, passwords) never live in ``DEPLOY``: they are
read from the environment at render time by :func:`get_secrets`, and hidden
from ``repr``.
"""

import dataclasses
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

from django.conf import settings

SUPPORTED_KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33", "1.34")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_IMAGE_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# An address as SMTP takes it (no display name, no quotes, no brackets): local part, '@', a dotted domain.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[\w-]+")
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_RDS_CLASS = re.compile(r"^db\.[a-z][a-z0-9-]*\d[a-z0-9-]*\.(micro|small|medium|large|\d*xlarge)$")
_EFS_ID = re.compile(r"^fs-[0-9a-f]{8,17}$")
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
# (name, lowest, highest, names) of the five fields, as the CronJob controller parses them.
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class ConfigError(ValueError):
    """A setting with a wrong value. The message names the setting."""


def setting(default, env=None, help="", choices=None, check=None, secret=False):
    """Declare one setting: its default, environment variable and meaning."""
    metadata = {"env": env, "help": help, "choices": choices, "check": check, "secret": secret}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# --- value checks: each returns None or a sentence saying what is allowed ---


def _dns_label(value):
    if not _DNS_LABEL.fullmatch(value) or len(value) > 63:
        return "lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
    return None


def _emails(addresses):
    bad = [a for a in addresses if not _EMAIL.fullmatch(a)]
    if bad:
        return f"e-mail addresses such as 'ops@example.com' ({', '.join(map(repr, bad))} is not one)"
    return None


def _cpu(value):
    return None if _CPU.fullmatch(value) else "a CPU quantity such as '250m', '1' or '1.5'"


def _memory(value):
    return None if _MEMORY.fullmatch(value) else "a memory quantity such as '512Mi' or '2Gi'"


def _image_repository(value):
    ok = _IMAGE_REPOSITORY.fullmatch(value)
    return None if ok else "an image repository such as '123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop'"


def _image_tag(value):
    if value == "latest":
        return "a fixed tag (a version or a commit), not 'latest'"
    return None if _IMAGE_TAG.fullmatch(value) else "letters, digits, '_', '.' and '-', at most 128 characters"


def _digest(value):
    return None if not value or _DIGEST.fullmatch(value) else "empty, or 'sha256:' followed by 64 hex digits"


def _s3_bucket(value):
    if not value or re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
        return None
    return "an S3 bucket name: 3 to 63 lower-case letters, digits, '.' and '-'"


def _positive(value):
    return None if value >= 1 else "a whole number of at least 1"


def _percent(value):
    return None if 1 <= value <= 100 else "a whole number from 1 to 100"


def _at_least_two(value):
    return None if value >= 2 else "at least 2, so that one pod can be replaced while another serves"


def _hosts(value):
    bad = [h for h in value if not _HOSTNAME.fullmatch(h)]
    if not value:
        return "at least one host name"
    return f"host names such as 'shop.example.com' ({', '.join(map(repr, bad))} is not one)" if bad else None


def _cidr(value):
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "a CIDR block such as '10.0.0.0/16' (host bits zero)"
    return None


def _cidr_list(value):
    for item in value:
        if _cidr(item):
            return f"a list of CIDR blocks such as ['10.0.0.0/16'] ({item!r} is not one)"
    return None


def _optional_cidr(value):
    return _cidr(value) if value else None


def _acm_arn(value):
    return (
        None
        if not value or _ACM_ARN.fullmatch(value)
        else "an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)"
    )


def _efs_id(value):
    return None if not value or _EFS_ID.fullmatch(value) else "an EFS file system id such as 'fs-0123456789abcdef0'"


def _duration(value):
    return None if re.fullmatch(r"\d+(ms|s|m|h)", value) else "a duration such as '30s' or '5m'"


def _image(value):
    repository, _, tag = value.rpartition(":")
    if not repository or "/" in tag or _image_repository(repository) or _image_tag(tag):
        return "an image with a fixed tag such as 'postgres:16.4-bookworm'"
    return None


def _cron(value):
    allowed = "a cron schedule of five fields such as '0 3 * * *', or @hourly, @daily, @weekly, @monthly, @yearly"
    if value in _CRON_MACROS:
        return None
    fields = value.split(" ")
    if len(fields) != len(_CRON_FIELDS) or not all(fields):
        return allowed
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        if not all(_cron_item(item, low, high, names) for item in text.split(",")):
            return f"{allowed} ({what} {text!r} is not one: values {low}-{high}, '*', ranges a-b, steps /n, lists)"
    return None


def _cron_item(item, low, high, names):
    def number(text):
        if text.lower() in names:
            return names.index(text.lower()) + low
        return int(text) if text.isascii() and text.isdigit() else None

    span, _, step = item.partition("/")
    if step and not (step.isascii() and step.isdigit() and int(step) >= 1):
        return False
    if span in ("*", "?"):
        return True
    first, _, last = span.partition("-")
    first, last = number(first), number(last) if last else number(first)
    return first is not None and last is not None and low <= first <= last <= high


def _port(value):
    return None if 1 <= value <= 65535 else "a port number from 1 to 65535"


def _extra_env(value):
    for name, item in value.items():
        if not _ENV_NAME.fullmatch(name):
            return f"environment variable names of letters, digits and '_' ({name!r} is not one)"
        if _SECRET_LOOKING.search(name):
            return (
                f"no secret-looking names ({name!r}): variables whose names contain PASSWORD, SECRET, TOKEN or KEY "
                "must come from the Secret, not from DEPLOY"
            )
        if not isinstance(item, str | int | float | bool):
            return f"plain values (strings, numbers, booleans); {name!r} is a {type(item).__name__}"
    return None


_FLOW = re.compile(r"\S+ -> \S+ (?:any|\d{1,5}/(?:TCP|UDP|SCTP)|any/(?:TCP|UDP|SCTP))")


def _flows(value):
    for item in value:
        if not isinstance(item, str) or not _FLOW.fullmatch(item):
            return f"flows such as 'django-app/worker -> 0.0.0.0/0 443/TCP' ({item!r} is not one)"
    return None


def _dns_name(value):
    return None if not value or _HOSTNAME.fullmatch(value) or _is_ip(value) else "a host name or an IP address"


def _is_ip(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _positive_int(value):
    # bool is an int to Python: True would pass, then render as "True", which no quota accepts.
    return None if isinstance(value, int) and not isinstance(value, bool) and value > 0 else "a positive integer"


_QUOTA_KEYS = {
    "requests.cpu": _cpu, "limits.cpu": _cpu, "requests.memory": _memory, "limits.memory": _memory,
    "requests.storage": _memory, "pods": lambda v: _positive_int(v),
}  # fmt: skip


def _staff_access(value):
    for arn, role in value.items():
        if not isinstance(arn, str) or not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+", arn):
            return f"a mapping of IAM role or user ARNs to 'read-only' or 'operator' ({arn!r} is not an ARN)"
        if role not in ("read-only", "operator"):
            return f"a mapping of IAM ARNs to 'read-only' or 'operator' ({arn!r} maps to {role!r})"
    return None


def _quota(value):
    if set(value) != set(_QUOTA_KEYS):
        return f"a mapping with exactly the keys {', '.join(sorted(_QUOTA_KEYS))}"
    for key, check in _QUOTA_KEYS.items():
        problem = check(value[key]) if key == "pods" or isinstance(value[key], str) else "a quoted quantity"
        if problem:
            return f"{key}: {problem}"
    return None


def _environments(value):
    for name, overrides in value.items():
        if not isinstance(name, str) or _dns_label(name):
            return (
                f"a mapping of environment names (lower-case letters, digits and '-') to settings ({name!r} is not one)"
            )
        if not isinstance(overrides, dict):
            return (
                f"a mapping of environment names to dicts of settings ({name!r} maps to a {type(overrides).__name__})"
            )
        known = {f.name for f in setting_fields()} - _NOT_PER_ENVIRONMENT
        unknown = sorted(set(overrides) - known)
        if unknown:
            return (
                f"settings of this tool only; environment {name!r} has unknown or not per-environment setting(s) "
                f"{', '.join(map(repr, unknown))}"
            )
    return None


def _github_repository(value):
    ok = not value or re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+", value)
    return None if ok else "empty, or a GitHub repository as 'owner/name'"


def _git_ref_name(value):
    # What GitHub allows in a branch or environment name that can also sit in an OIDC subject claim.
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}", value) and ".." not in value and "*" not in value
    return None if ok else "a branch or GitHub environment name (letters, digits, '.', '_', '-', '/'; no wildcard)"


def _bucket_name(value):
    # S3's naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html): a name they
    # refuse would otherwise pass here and fail only in CloudFormation or in the nightly backup.
    ok = not value or (
        re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value, re.ASCII)
        and not re.search(r"\.\.|\.-|-\.", value)
        and not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", value)
        and not value.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not value.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    return (
        None
        if ok
        else (
            "empty, or an S3 bucket name: 3-63 lower-case letters, digits, '.' and '-', starting and ending with a "
            "letter or digit, no '..', '.-' or '-.', not an IP address, no reserved prefix (xn--, sthree-) or suffix "
            "(-s3alias, --ol-s3); the BackupBucketName output of aws_provision is one"
        )
    )


def _secret_name(value):
    ok = not value or re.fullmatch(r"[A-Za-z0-9/_+=.@-]{1,512}", value)
    return None if ok else "empty, or an AWS Secrets Manager secret name such as 'shop/staging'"


# Each secret value: its DeploySecrets field -> its environment variable, which is also its key in the
# secrets_name secret. The one list of them: the docs and the messages are made from it.
SECRET_ENV = {
    "secret_key": "DEPLOY_SECRET_KEY",
    "postgres_password": "DEPLOY_POSTGRES_PASSWORD",
    "redis_password": "DEPLOY_REDIS_PASSWORD",
    "postgres_superuser_password": "DEPLOY_POSTGRES_SUPERUSER_PASSWORD",
    "alert_smtp_password": "DEPLOY_ALERT_SMTP_PASSWORD",
    "alert_webhook_url": "DEPLOY_ALERT_WEBHOOK_URL",
    "alert_watchdog_url": "DEPLOY_ALERT_WATCHDOG_URL",
}
SECRET_MEANINGS = {
    "secret_key": "Django's SECRET_KEY (at least 40 characters).",
    "postgres_password": "The app's PostgreSQL user's password.",
    "redis_password": "Redis's password (the in-cluster Redis, or the external one's AUTH).",
    "postgres_superuser_password": "The in-cluster PostgreSQL's superuser ('postgres'), used by its init only; "
    "must differ from the app's.",
    "alert_smtp_password": "The SMTP password of alert e-mails (with alert_smtp_username).",
    "alert_webhook_url": "The Slack or generic webhook URL of alerts (with alert_webhook).",
    "alert_watchdog_url": "The dead man's switch URL the always-firing Watchdog alert is posted to (with "
    "alert_watchdog).",
}


@dataclass(frozen=True)
class DeployConfig:
    # --- identity ---
    app_name: str = setting(
        "django-app",
        "DEPLOY_APP_NAME",
        "Name of the application: prefix of every object's name and value of app.kubernetes.io/name.",
        check=_dns_label,
    )
    namespace: str = setting(
        "django-app",
        "DEPLOY_NAMESPACE",
        "Namespace of the application and its data services (not default, kube-system, kube-public, kube-node-lease).",
        check=_dns_label,
    )
    kubernetes_version: str = setting(
        "1.33",
        "DEPLOY_KUBERNETES_VERSION",
        "Kubernetes version of the target cluster (the manifests are validated against every supported version).",
        choices=SUPPORTED_KUBERNETES_VERSIONS,
    )
    # --- image ---
    image_repository: str = setting(
        "django-app",
        "DEPLOY_IMAGE_REPOSITORY",
        "Image repository of the app, for example an ECR repository URI.",
        check=_image_repository,
    )
    image_tag: str = setting(
        "0.1.0", "DEPLOY_IMAGE_TAG", "Image tag (a version or a commit; never 'latest').", check=_image_tag
    )
    image_digest: str = setting(
        "",
        "DEPLOY_IMAGE_DIGEST",
        "Image digest (sha256:…). When set, pods pull repository@digest, so a tag moved later changes nothing.",
        check=_digest,
    )
    # --- app workload ---
    replicas_min: int = setting(2, "DEPLOY_REPLICAS_MIN", "Fewest app pods the autoscaler keeps.", check=_at_least_two)
    replicas_max: int = setting(6, "DEPLOY_REPLICAS_MAX", "Most app pods the autoscaler starts.", check=_positive)
    cpu_target_percent: int = setting(
        70,
        "DEPLOY_CPU_TARGET_PERCENT",
        "Average CPU use, in percent of the request, the autoscaler aims for.",
        check=_percent,
    )
    memory_target_percent: int = setting(
        80,
        "DEPLOY_MEMORY_TARGET_PERCENT",
        "Average memory use, in percent of the request, the autoscaler aims for.",
        check=_percent,
    )
    cpu_request: str = setting("250m", "DEPLOY_CPU_REQUEST", "CPU request of an app pod.", check=_cpu)
    cpu_limit: str = setting("1", "DEPLOY_CPU_LIMIT", "CPU limit of an app pod.", check=_cpu)
    memory_request: str = setting("384Mi", "DEPLOY_MEMORY_REQUEST", "Memory request of an app pod.", check=_memory)
    memory_limit: str = setting("512Mi", "DEPLOY_MEMORY_LIMIT", "Memory limit of an app pod.", check=_memory)
    ephemeral_storage_request: str = setting(
        "256Mi",
        "DEPLOY_EPHEMERAL_STORAGE_REQUEST",
        "Ephemeral storage request of an app pod (/tmp and metrics files).",
        check=_memory,
    )
    ephemeral_storage_limit: str = setting(
        "1Gi", "DEPLOY_EPHEMERAL_STORAGE_LIMIT", "Ephemeral storage limit of an app pod.", check=_memory
    )
    web_concurrency: int = setting(
        2, "DEPLOY_WEB_CONCURRENCY", "gunicorn worker processes per pod (WEB_CONCURRENCY).", check=_positive
    )
    gunicorn_threads: int = setting(2, "DEPLOY_GUNICORN_THREADS", "Threads per gunicorn worker.", check=_positive)
    termination_grace_seconds: int = setting(
        30,
        "DEPLOY_TERMINATION_GRACE_SECONDS",
        "Seconds a pod gets to finish its requests after SIGTERM.",
        check=_positive,
    )
    log_level: str = setting(
        "INFO", "DEPLOY_LOG_LEVEL", "LOG_LEVEL of the app.", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    extra_env: dict = setting(
        {},
        "DEPLOY_EXTRA_ENV",
        "Extra non-secret environment variables of the app (a JSON object in the environment variable). "
        "Variables the stack sets itself (DEBUG, ALLOWED_HOSTS, DATABASE_URL, SECURE_SSL_REDIRECT, …) are refused.",
        check=_extra_env,
    )
    # --- exposure ---
    hosts: list = setting(
        ["app.example.com"],
        "DEPLOY_HOSTS",
        "Host names the site answers to (ALLOWED_HOSTS, the Ingress rules).",
        check=_hosts,
    )
    exposure: str = setting(
        "nlb",
        "DEPLOY_EXPOSURE",
        "'nlb': a LoadBalancer Service (a Network Load Balancer; with certificate_arn it ends TLS on 443 and sends "
        "to the pods' port 8443, and Django redirects HTTP; without one, plain HTTP only); 'alb': an Ingress (an "
        "Application Load Balancer that ends TLS, redirects HTTP and sends X-Forwarded-Proto).",
        choices=("nlb", "alb"),
    )
    load_balancer_scheme: str = setting(
        "internet-facing",
        "DEPLOY_LOAD_BALANCER_SCHEME",
        "Whether the load balancer is reachable from the internet.",
        choices=("internet-facing", "internal"),
    )
    certificate_arn: str = setting(
        "",
        "DEPLOY_CERTIFICATE_ARN",
        "ACM certificate for HTTPS; required with 'alb'. With 'nlb' and none, the site is served over plain HTTP "
        "(no redirect, cookies not Secure), and k8s_deploy warns when that faces the internet: set one for production.",
        check=_acm_arn,
    )
    vpc_cidr: str = setting(
        "10.0.0.0/16",
        "DEPLOY_VPC_CIDR",
        "CIDR of the cluster's VPC: the load balancer reaches the pods from it.",
        check=_cidr,
    )
    # --- storage ---
    create_storage_classes: bool = setting(
        False, "DEPLOY_CREATE_STORAGE_CLASSES", "Create the 'efs-ap' and 'gp3' StorageClasses (cluster-scoped)."
    )
    efs_file_system_id: str = setting(
        "",
        "DEPLOY_EFS_FILE_SYSTEM_ID",
        "EFS file system of the static files volume; required with create_storage_classes.",
        check=_efs_id,
    )
    static_storage_class: str = setting(
        "efs-ap",
        "DEPLOY_STATIC_STORAGE_CLASS",
        "StorageClass of the ReadWriteMany static files volume.",
        check=_dns_label,
    )
    static_volume_size: str = setting(
        "1Gi", "DEPLOY_STATIC_VOLUME_SIZE", "Size requested for the static files volume.", check=_memory
    )
    # --- PostgreSQL ---
    postgres_mode: str = setting(
        "in-cluster",
        "DEPLOY_POSTGRES_MODE",
        "'in-cluster': one PostgreSQL StatefulSet pod in the namespace (the small mode: no failover); "
        "'cloudnative-pg': a CloudNativePG Cluster of postgres_instances pods spread over zones, with automatic "
        "failover (the operator must be installed: docs/high-availability.md); 'external': a server elsewhere, "
        "named by postgres_host and postgres_cidr; 'rds': the RDS Multi-AZ instance aws_provision creates, which "
        "k8s_deploy finds in the stack's outputs (docs/high-availability.md#managed-postgresql-rds).",
        choices=("in-cluster", "cloudnative-pg", "external", "rds"),
    )
    postgres_instances: int = setting(
        3,
        "DEPLOY_POSTGRES_INSTANCES",
        "PostgreSQL instances of the CloudNativePG Cluster (cloudnative-pg mode): one primary, the others "
        "streaming replicas, one per zone where the nodes allow.",
        check=_positive,
    )
    postgres_replication: str = setting(
        "synchronous",
        "DEPLOY_POSTGRES_REPLICATION",
        "Replication of the CloudNativePG Cluster (cloudnative-pg mode): 'synchronous' (a commit waits for one "
        "replica, so a failover loses no acknowledged write; needs postgres_instances of 2 or more) or "
        "'asynchronous' (faster commits; a failover may lose the last writes).",
        choices=("synchronous", "asynchronous"),
    )
    postgres_cnpg_image: str = setting(
        "ghcr.io/cloudnative-pg/postgresql:16.4",
        "DEPLOY_POSTGRES_CNPG_IMAGE",
        "PostgreSQL image of the CloudNativePG Cluster (cloudnative-pg mode): one of the operator's operand images, "
        "of the same major version as postgres_image (whose pg_dump the backup CronJob runs; another major "
        "version is refused).",
        check=_image,
    )
    postgres_operator_namespace: str = setting(
        "cnpg-system",
        "DEPLOY_POSTGRES_OPERATOR_NAMESPACE",
        "Namespace of the CloudNativePG operator (cloudnative-pg mode): its pods may reach the instances' status "
        "port. Not the app's namespace, whose policies deny the operator's traffic.",
        check=_dns_label,
    )
    postgres_host: str = setting(
        "",
        "DEPLOY_POSTGRES_HOST",
        "Host of the external PostgreSQL (external mode; in rds mode it comes from the stack).",
        check=_dns_name,
    )
    postgres_port: int = setting(
        5432,
        "DEPLOY_POSTGRES_PORT",
        "Port of the external PostgreSQL (the in-cluster one listens on 5432).",
        check=_port,
    )
    postgres_cidr: str = setting(
        "",
        "DEPLOY_POSTGRES_CIDR",
        "CIDR the external PostgreSQL is in; the egress policy allows it (external mode; in rds mode it comes "
        "from the stack).",
        check=_optional_cidr,
    )
    postgres_database: str = setting("app", "DEPLOY_POSTGRES_DATABASE", "Database name.", check=_dns_label)
    postgres_user: str = setting("app", "DEPLOY_POSTGRES_USER", "Database user.", check=_dns_label)
    postgres_image: str = setting(
        "postgres:16.4-bookworm", "DEPLOY_POSTGRES_IMAGE", "Image of the in-cluster PostgreSQL.", check=_image
    )
    postgres_storage_class: str = setting(
        "gp3",
        "DEPLOY_POSTGRES_STORAGE_CLASS",
        "StorageClass of PostgreSQL's data and backup volumes (EBS gp3).",
        check=_dns_label,
    )
    postgres_storage_size: str = setting(
        "20Gi", "DEPLOY_POSTGRES_STORAGE_SIZE", "Size of PostgreSQL's data volume.", check=_memory
    )
    postgres_backup_schedule: str = setting(
        "0 3 * * *",
        "DEPLOY_POSTGRES_BACKUP_SCHEDULE",
        "When the backup CronJob runs pg_dump (five cron fields, or @hourly, @daily, @weekly, @monthly, @yearly; UTC).",
        check=_cron,
    )
    postgres_backup_size: str = setting(
        "20Gi", "DEPLOY_POSTGRES_BACKUP_SIZE", "Size of the backup volume.", check=_memory
    )
    postgres_backup_keep_days: int = setting(
        7, "DEPLOY_POSTGRES_BACKUP_KEEP_DAYS", "Days a backup is kept on the backup volume.", check=_positive
    )
    postgres_backup_bucket: str = setting(
        "",
        "DEPLOY_POSTGRES_BACKUP_BUCKET",
        "S3 bucket the backup CronJob streams its dumps to (the infrastructure stack's BackupBucketName output), "
        "through its EKS Pod Identity; empty: dumps go to the backup volume (docs/runbooks.md#restoring-a-backup).",
        check=_bucket_name,
    )
    postgres_backup_bucket_keep_days: int = setting(
        30,
        "DEPLOY_POSTGRES_BACKUP_BUCKET_KEEP_DAYS",
        "Days a backup stays in the S3 bucket before its lifecycle rule expires it (aws_provision); a replaced or "
        "deleted version is kept 7 more days.",
        check=_positive,
    )
    # --- Redis ---
    redis_mode: str = setting(
        "in-cluster",
        "DEPLOY_REDIS_MODE",
        "'in-cluster': a Redis Deployment in the namespace; 'external': a server elsewhere, such as ElastiCache.",
        choices=("in-cluster", "external"),
    )
    redis_host: str = setting("", "DEPLOY_REDIS_HOST", "Host of the external Redis (external mode).", check=_dns_name)
    redis_port: int = setting(
        6379, "DEPLOY_REDIS_PORT", "Port of the external Redis (the in-cluster one listens on 6379).", check=_port
    )
    redis_cidr: str = setting(
        "",
        "DEPLOY_REDIS_CIDR",
        "CIDR the external Redis is in; the egress policy allows it (external mode).",
        check=_optional_cidr,
    )
    redis_tls: bool = setting(
        False,
        "DEPLOY_REDIS_TLS",
        "Connect to Redis over TLS (rediss://), as ElastiCache with in-transit encryption requires.",
    )
    redis_image: str = setting(
        "redis:7.2.5-bookworm", "DEPLOY_REDIS_IMAGE", "Image of the in-cluster Redis.", check=_image
    )
    redis_max_memory: str = setting(
        "256mb",
        "DEPLOY_REDIS_MAX_MEMORY",
        "Redis maxmemory; keys are evicted LRU beyond it (cache only).",
        check=lambda v: None if re.fullmatch(r"\d+(kb|mb|gb)", v) else "a Redis size such as '256mb'",
    )
    # --- cluster policy ---
    quota_cpu_requests: str = setting(
        "8", "DEPLOY_QUOTA_CPU_REQUESTS", "ResourceQuota: total CPU requests in the namespace.", check=_cpu
    )
    quota_cpu_limits: str = setting(
        "16", "DEPLOY_QUOTA_CPU_LIMITS", "ResourceQuota: total CPU limits in the namespace.", check=_cpu
    )
    quota_memory_requests: str = setting(
        "16Gi", "DEPLOY_QUOTA_MEMORY_REQUESTS", "ResourceQuota: total memory requests in the namespace.", check=_memory
    )
    quota_memory_limits: str = setting(
        "32Gi", "DEPLOY_QUOTA_MEMORY_LIMITS", "ResourceQuota: total memory limits in the namespace.", check=_memory
    )
    quota_storage: str = setting(
        "200Gi", "DEPLOY_QUOTA_STORAGE", "ResourceQuota: total storage requested by volume claims.", check=_memory
    )
    quota_pods: int = setting(40, "DEPLOY_QUOTA_PODS", "ResourceQuota: most pods in the namespace.", check=_positive)
    container_max_cpu: str = setting(
        "4", "DEPLOY_CONTAINER_MAX_CPU", "LimitRange: largest CPU limit of one container.", check=_cpu
    )
    container_max_memory: str = setting(
        "8Gi", "DEPLOY_CONTAINER_MAX_MEMORY", "LimitRange: largest memory limit of one container.", check=_memory
    )
    logging_quota: dict = setting(
        {"requests.cpu": "4", "limits.cpu": "12", "requests.memory": "12Gi", "limits.memory": "12Gi",
         "requests.storage": "160Gi", "pods": 20},
        None,
        "ResourceQuota of the logging namespace (keys: requests.cpu, limits.cpu, requests.memory, limits.memory, "
        "requests.storage, pods). Its LimitRange uses container_max_cpu and container_max_memory.",
        check=lambda v: _quota(v),
    )  # fmt: skip
    monitoring_quota: dict = setting(
        {"requests.cpu": "2", "limits.cpu": "6", "requests.memory": "4Gi", "limits.memory": "8Gi",
         "requests.storage": "50Gi", "pods": 20},
        None,
        "ResourceQuota of the monitoring namespace (same keys as logging_quota).",
        check=lambda v: _quota(v),
    )  # fmt: skip
    priority_class: str = setting(
        "",
        "DEPLOY_PRIORITY_CLASS",
        "When set, a PriorityClass of this name is created and given to the app pods.",
        check=lambda v: _dns_label(v) if v else None,
    )
    priority_value: int = setting(
        100000,
        "DEPLOY_PRIORITY_VALUE",
        "Value of that PriorityClass.",
        check=lambda v: None if 0 <= v <= 1_000_000_000 else "from 0 to 1000000000",
    )
    # --- observability ---
    monitoring: bool = setting(
        True, "DEPLOY_MONITORING", "Let Prometheus in the monitoring namespace scrape the app's /metrics."
    )
    monitoring_namespace: str = setting(
        "monitoring",
        "DEPLOY_MONITORING_NAMESPACE",
        "Namespace of Prometheus: another than the app's and the logging one.",
        check=_dns_label,
    )
    monitoring_mode: str = setting(
        "standalone",
        "DEPLOY_MONITORING_MODE",
        "'standalone': a Prometheus, kube-state-metrics and node-exporter in the monitoring namespace; "
        "'operator': PodMonitor and PrometheusRule objects for an existing Prometheus Operator.",
        choices=("standalone", "operator"),
    )
    prometheus_image: str = setting(
        "prom/prometheus:v2.54.1", "DEPLOY_PROMETHEUS_IMAGE", "Image of Prometheus.", check=_image
    )
    kube_state_metrics_image: str = setting(
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0",
        "DEPLOY_KUBE_STATE_METRICS_IMAGE",
        "Image of kube-state-metrics.",
        check=_image,
    )
    node_exporter_image: str = setting(
        "quay.io/prometheus/node-exporter:v1.8.2", "DEPLOY_NODE_EXPORTER_IMAGE", "Image of node-exporter.", check=_image
    )
    prometheus_retention: str = setting(
        "15d",
        "DEPLOY_PROMETHEUS_RETENTION",
        "How long Prometheus keeps samples.",
        check=lambda v: None if re.fullmatch(r"\d+[hdwy]", v) else "a duration such as '15d'",
    )
    prometheus_storage_size: str = setting(
        "20Gi", "DEPLOY_PROMETHEUS_STORAGE_SIZE", "Size of Prometheus's data volume.", check=_memory
    )
    runbook_url: str = setting(
        "https://docs.example.com/django-k8s-aws/runbooks.html",
        "DEPLOY_RUNBOOK_URL",
        "The published page of docs/runbooks.md (make docs writes it as runbooks.html); every alert links to its "
        "section there, as this URL + '#' + the section's anchor.",
        check=lambda v: None if re.fullmatch(r"https?://[^\s\x00-\x1f\x7f]+", v) else "an http(s) URL",
    )
    prometheus_scrape_interval: str = setting(
        "30s",
        "DEPLOY_PROMETHEUS_SCRAPE_INTERVAL",
        "How often Prometheus scrapes its targets.",
        check=_duration,
    )
    prometheus_evaluation_interval: str = setting(
        "30s",
        "DEPLOY_PROMETHEUS_EVALUATION_INTERVAL",
        "How often Prometheus evaluates the alert rules.",
        check=_duration,
    )
    app_down_after: str = setting(
        "5m",
        "DEPLOY_APP_DOWN_AFTER",
        "How long no pod of the app answers /metrics before DjangoAppDown fires.",
        check=_duration,
    )
    alertmanager_image: str = setting(
        "quay.io/prometheus/alertmanager:v0.27.0", "DEPLOY_ALERTMANAGER_IMAGE", "Image of Alertmanager.", check=_image
    )
    alertmanager_storage_size: str = setting(
        "1Gi",
        "DEPLOY_ALERTMANAGER_STORAGE_SIZE",
        "Size of Alertmanager's volume (silences and the notification log survive a restart).",
        check=_memory,
    )
    alert_email_to: list = setting(
        [],
        "DEPLOY_ALERT_EMAIL_TO",
        "Addresses that receive alerts by e-mail (empty: no e-mail receiver).",
        check=lambda v: _emails(v),
    )
    alert_email_from: str = setting(
        "", "DEPLOY_ALERT_EMAIL_FROM", "Sender address of alert e-mails.", check=lambda v: _emails([v] if v else [])
    )
    alert_smtp_smarthost: str = setting(
        "",
        "DEPLOY_ALERT_SMTP_SMARTHOST",
        "SMTP server of alert e-mails, as host:port (STARTTLS is required).",
        check=lambda v: (
            None
            if not v or (re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", v) and 1 <= int(v.rsplit(":", 1)[1]) <= 65535)
            else "host:port, with a port from 1 to 65535"
        ),
    )
    alert_smtp_username: str = setting(
        "",
        "DEPLOY_ALERT_SMTP_USERNAME",
        "SMTP user of alert e-mails; its password is the secret DEPLOY_ALERT_SMTP_PASSWORD.",
    )
    alert_webhook: str = setting(
        "",
        "DEPLOY_ALERT_WEBHOOK",
        "'slack' (a Slack incoming webhook) or 'webhook' (Alertmanager's generic JSON webhook); its URL is "
        "the secret DEPLOY_ALERT_WEBHOOK_URL. Empty: none.",
        choices=("", "slack", "webhook"),
    )
    alert_slack_channel: str = setting("#alerts", "DEPLOY_ALERT_SLACK_CHANNEL", "Slack channel of alerts.")
    alert_sns_topic_arn: str = setting(
        "",
        "DEPLOY_ALERT_SNS_TOPIC_ARN",
        "Amazon SNS topic that receives alerts (Alertmanager signs with the role DEPLOY_ALERT_SNS_ROLE_ARN, for "
        "the topic's region, taken from the ARN).",
        check=lambda v: None if not v or _SNS_ARN.fullmatch(v) else "an SNS topic ARN",
    )
    alert_sns_role_arn: str = setting(
        "",
        "DEPLOY_ALERT_SNS_ROLE_ARN",
        "IAM role of Alertmanager's ServiceAccount (IRSA) allowed sns:Publish on the topic.",
        check=lambda v: (
            None if not v or re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", v) else "an IAM role ARN"
        ),
    )
    alert_critical_via: list = setting(
        ["email", "webhook", "sns"],
        "DEPLOY_ALERT_CRITICAL_VIA",
        "Receivers of critical alerts, among the configured ones: email, webhook, sns.",
        check=lambda v: None if set(v) <= {"email", "webhook", "sns"} else "email, webhook or sns",
    )
    alert_warning_via: list = setting(
        ["email", "webhook"],
        "DEPLOY_ALERT_WARNING_VIA",
        "Receivers of warning alerts, among the configured ones: email, webhook, sns.",
        check=lambda v: None if set(v) <= {"email", "webhook", "sns"} else "email, webhook or sns",
    )
    alert_watchdog: bool = setting(
        False,
        "DEPLOY_ALERT_WATCHDOG",
        "Post the always-firing Watchdog alert every 5 minutes to a dead man's switch (a service that pages when "
        "the posts stop), at the secret DEPLOY_ALERT_WATCHDOG_URL. Off: the Watchdog goes to no receiver "
        "(standalone monitoring).",
    )
    alert_group_wait: str = setting(
        "30s", "DEPLOY_ALERT_GROUP_WAIT", "How long Alertmanager waits to group a new alert.", check=_duration
    )
    alert_group_interval: str = setting(
        "5m",
        "DEPLOY_ALERT_GROUP_INTERVAL",
        "How long before Alertmanager sends a group's changes (new or resolved alerts).",
        check=_duration,
    )
    alert_repeat_interval: str = setting(
        "4h", "DEPLOY_ALERT_REPEAT_INTERVAL", "How long before a still-firing alert is sent again.", check=_duration
    )
    grafana_image: str = setting(
        "grafana/grafana:11.2.2", "DEPLOY_GRAFANA_IMAGE", "Image of Grafana (standalone monitoring).", check=_image
    )
    logging: bool = setting(True, "DEPLOY_LOGGING", "Collect the app's JSON logs (EFK).")
    elasticsearch_replicas: int = setting(
        1,
        "DEPLOY_ELASTICSEARCH_REPLICAS",
        "Elasticsearch nodes: 1, or 3 for a highly available cluster.",
        choices=(1, 3),
    )
    elasticsearch_image: str = setting(
        "docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
        "DEPLOY_ELASTICSEARCH_IMAGE",
        "Image of Elasticsearch.",
        check=_image,
    )
    elasticsearch_storage_size: str = setting(
        "50Gi", "DEPLOY_ELASTICSEARCH_STORAGE_SIZE", "Size of each Elasticsearch node's volume.", check=_memory
    )
    kibana_image: str = setting(
        "docker.elastic.co/kibana/kibana:8.15.3", "DEPLOY_KIBANA_IMAGE", "Image of Kibana.", check=_image
    )
    fluentd_image: str = setting(
        "fluent/fluentd-kubernetes-daemonset:v1.17.1-debian-elasticsearch8-1.0",
        "DEPLOY_FLUENTD_IMAGE",
        "Image of Fluentd (with the Elasticsearch, Kubernetes metadata and concat plugins).",
        check=_image,
    )
    curl_image: str = setting(
        "curlimages/curl:8.10.1",
        "DEPLOY_CURL_IMAGE",
        "Image of the Job that sets up the log indexes and Kibana.",
        check=_image,
    )
    log_retention_days: int = setting(
        14,
        "DEPLOY_LOG_RETENTION_DAYS",
        "Days Elasticsearch keeps log indexes (index lifecycle policy).",
        check=_positive,
    )
    logging_namespace: str = setting(
        "logging",
        "DEPLOY_LOGGING_NAMESPACE",
        "Namespace of Elasticsearch, Fluentd and Kibana: another than the app's and the monitoring one.",
        check=_dns_label,
    )
    # --- AWS ---
    eks_cluster: str = setting(
        "",
        "DEPLOY_EKS_CLUSTER",
        "EKS cluster to deploy to (its endpoint, CA and tokens come from AWS; no AWS CLI needed).",
    )
    aws_region: str = setting(
        "", "DEPLOY_AWS_REGION", "AWS region (default: the AWS SDK's, from AWS_REGION or the profile)."
    )
    aws_profile: str = setting("", "DEPLOY_AWS_PROFILE", "AWS profile (default: the standard credential chain).")
    cutover_bucket: str = setting(
        "",
        "DEPLOY_CUTOVER_BUCKET",
        "S3 bucket that carries the SQLite file into the cluster for k8s_deploy --cutover (written by the operator, "
        "read by the cut-over Job through its own pod identity; aws_provision makes it: its CutoverBucket output); "
        "empty: --cutover refuses to start.",
        check=_s3_bucket,
    )
    cutover_smoke_path: str = setting(
        "/",
        "DEPLOY_CUTOVER_SMOKE_PATH",
        "Page the cut-over's smoke test requests through the Kubernetes API's service proxy, after the readiness "
        "path, as a visitor of the first of 'hosts' (it must answer 200: choose a page that reads the database).",
        check=lambda v: None if v.startswith("/") and " " not in v else "a path starting with '/', such as '/'",
    )
    # --- staff access (docs/security.md#staff-access-rbac) ---
    staff_read_only_group: str = setting(
        "staff:read-only",
        "DEPLOY_STAFF_READ_ONLY_GROUP",
        "Kubernetes group bound to the read-only role in every namespace of the stack (no Secrets, no exec).",
        check=lambda v: (
            None if re.fullmatch(r"[a-z0-9][a-z0-9:._-]{0,62}", v) else "a group name such as 'staff:read-only'"
        ),
    )
    staff_operator_group: str = setting(
        "staff:operators",
        "DEPLOY_STAFF_OPERATOR_GROUP",
        "Kubernetes group bound to the operator role (read-only plus restart, scale, port-forward, exec, Jobs).",
        check=lambda v: (
            None if re.fullmatch(r"[a-z0-9][a-z0-9:._-]{0,62}", v) else "a group name such as 'staff:operators'"
        ),
    )
    staff_access: dict = setting(
        {},
        None,
        "IAM roles or users given access to the cluster by aws_provision (EKS access entries), each mapped to "
        "'read-only' or 'operator': {'arn:aws:iam::123456789012:role/support': 'read-only'}.",
        check=lambda v: _staff_access(v),
    )
    app_role_arn: str = setting(
        "",
        "DEPLOY_APP_ROLE_ARN",
        "IAM role of the app's ServiceAccount (IRSA annotation), when the app calls AWS APIs.",
        check=lambda v: (
            None
            if not v or re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", v, re.ASCII)
            else "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        ),
    )
    # --- AWS infrastructure (aws_provision) ---
    aws_stack_name: str = setting(
        "", "DEPLOY_AWS_STACK_NAME", "CloudFormation stack of the infrastructure (default: APP-infra)."
    )
    aws_availability_zones: list = setting(
        [], "DEPLOY_AWS_AVAILABILITY_ZONES", "Availability zones (at least 2); empty: the region's first two."
    )
    public_subnet_cidrs: list = setting(
        ["10.0.0.0/20", "10.0.16.0/20"],
        "DEPLOY_PUBLIC_SUBNET_CIDRS",
        "Public subnets (load balancers, NAT), one per zone.",
    )
    private_subnet_cidrs: list = setting(
        ["10.0.64.0/18", "10.0.128.0/18"], "DEPLOY_PRIVATE_SUBNET_CIDRS", "Private subnets (nodes, pods), one per zone."
    )
    nat_gateways: str = setting(
        "single",
        "DEPLOY_NAT_GATEWAYS",
        "'single': one NAT gateway (cheaper); 'per-az': one per zone (survives a zone).",
        choices=("single", "per-az"),
    )
    node_instance_type: str = setting("t3.large", "DEPLOY_NODE_INSTANCE_TYPE", "EC2 instance type of the nodes.")
    node_allocatable_cpu: str = setting(
        "",
        "DEPLOY_NODE_ALLOCATABLE_CPU",
        "What one node offers to pods (its allocatable CPU, as 'kubectl describe node' shows it), for the render's "
        "capacity check: set it with node_allocatable_memory for a node_instance_type the capacity table does not "
        "know, or to use measured figures instead of the table's. Empty: from the table.",
        check=lambda v: _cpu(v) if v else None,
    )
    node_allocatable_memory: str = setting(
        "",
        "DEPLOY_NODE_ALLOCATABLE_MEMORY",
        "What one node offers to pods in memory (its allocatable memory), with node_allocatable_cpu. Empty: "
        "from the table.",
        check=lambda v: _memory(v) if v else None,
    )
    node_count_min: int = setting(
        3,
        "DEPLOY_NODE_COUNT_MIN",
        "Fewest nodes of the managed node group (its size: no cluster autoscaler is installed). Three t3.large "
        "hold the default stack at its largest; the render's capacity check says when they do not (docs/policy.md).",
        check=_positive,
    )
    node_count_max: int = setting(4, "DEPLOY_NODE_COUNT_MAX", "Most nodes of the managed node group.", check=_positive)
    node_disk_size: int = setting(50, "DEPLOY_NODE_DISK_SIZE", "Disk of each node, in GiB.", check=_positive)
    rds_engine_version: str = setting(
        "16.10",
        "DEPLOY_RDS_ENGINE_VERSION",
        "PostgreSQL version of the RDS instance (postgres_mode 'rds'), MAJOR.MINOR as RDS offers it (cfn-lint "
        "refuses a version RDS no longer creates); its parameter group family is postgresMAJOR. The default keeps "
        "the in-cluster image's major version, so a dump moves between the modes.",
        check=lambda v: None if re.fullmatch(r"\d{2}\.\d{1,2}", v) else "a PostgreSQL version such as '16.4'",
    )
    rds_instance_class: str = setting(
        "db.t4g.medium",
        "DEPLOY_RDS_INSTANCE_CLASS",
        "Instance class of the RDS instance (postgres_mode 'rds'), such as 'db.t4g.medium' or 'db.m7g.large'.",
        check=lambda v: None if _RDS_CLASS.fullmatch(v) else "an RDS instance class such as 'db.m7g.large'",
    )
    rds_storage_size: int = setting(
        20,
        "DEPLOY_RDS_STORAGE_SIZE",
        "Storage of the RDS instance in GiB (gp3, 20 to 65536; postgres_mode 'rds').",
        check=lambda v: None if 20 <= v <= 65536 else "a whole number of GiB from 20 to 65536",
    )
    rds_multi_az: bool = setting(
        True,
        "DEPLOY_RDS_MULTI_AZ",
        "A synchronous standby in a second zone that RDS fails over to (postgres_mode 'rds'); false halves the "
        "cost and loses the zone's failure to a restore.",
    )
    rds_backup_retention_days: int = setting(
        7,
        "DEPLOY_RDS_BACKUP_RETENTION_DAYS",
        "Days RDS keeps automated backups and the log for a restore to any point in time (1 to 35; "
        "postgres_mode 'rds').",
        check=lambda v: None if 1 <= v <= 35 else "a whole number of days from 1 to 35",
    )
    # --- templates ---
    template_dirs: list = setting(
        [],
        "DEPLOY_TEMPLATE_DIRS",
        "Folders searched for templates before the built-in k8s_templates/: "
        "a project overrides a template by its relative name.",
    )
    # --- environments and delivery (docs/delivery.md) ---
    environments: dict = setting(
        {},
        None,
        "Named environments (such as 'staging' and 'production'): each maps to the settings it changes, "
        "for example {'staging': {'namespace': 'shop-staging', 'hosts': ['staging.shop.example.com']}}. "
        "--environment NAME selects one; the other settings are shared. Environment variables still win.",
        check=_environments,
    )
    environment: str = setting(
        "",
        None,
        "The selected environment's name (set by --environment; empty when none is selected).",
    )
    secrets_name: str = setting(
        "",
        "DEPLOY_SECRETS_NAME",
        "AWS Secrets Manager secret holding this environment's secret values as one JSON object of strings, with "
        f"any of the keys {', '.join(SECRET_ENV.values())} (the alert receivers' only when they are configured); "
        "k8s_deploy reads it when it applies, and then not those environment variables. Empty: the environment "
        "variables.",
        check=_secret_name,
    )
    secrets_source: str = setting(
        "environment",
        "DEPLOY_SECRETS_SOURCE",
        "Where the cluster's secret values come from. 'environment': k8s_deploy writes Kubernetes Secrets from "
        "DEPLOY_SECRET_KEY, DEPLOY_POSTGRES_PASSWORD, DEPLOY_REDIS_PASSWORD and "
        "DEPLOY_POSTGRES_SUPERUSER_PASSWORD (or from DEPLOY['secrets_name']); for clusters off AWS. "
        "'aws-secrets-manager': the secrets aws_provision generated in AWS Secrets Manager reach the cluster "
        "through the External Secrets Operator (ExternalSecret objects, no value in the render), so k8s_deploy "
        "needs none of them (docs/security.md#secrets-from-aws-secrets-manager).",
        choices=("environment", "aws-secrets-manager"),
    )
    secrets_reader_role_arn: str = setting(
        "",
        "DEPLOY_SECRETS_READER_ROLE_ARN",
        "IAM role the External Secrets Operator assumes to read this app's secrets (the infrastructure stack's "
        "SecretsReaderRoleArn output); required with secrets_source 'aws-secrets-manager'.",
        check=lambda v: (
            None
            if not v or re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", v, re.ASCII)
            else "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        ),
    )
    secrets_refresh_interval: str = setting(
        "1h",
        "DEPLOY_SECRETS_REFRESH_INTERVAL",
        "How often the External Secrets Operator copies the values from Secrets Manager into the cluster's "
        "Secrets (a rotated value reaches the Secret within this time; pods read it at their next start).",
        check=lambda v: None if re.fullmatch(r"[1-9]\d*(s|m|h)", v) else "a duration such as '15m' or '1h'",
    )
    github_repository: str = setting(
        "",
        "DEPLOY_GITHUB_REPOSITORY",
        "GitHub repository ('owner/name') whose workflows may assume the delivery roles (aws_provision --delivery).",
        check=_github_repository,
    )
    github_branch: str = setting(
        "main",
        "DEPLOY_GITHUB_BRANCH",
        "Branch whose pushes build and deploy (the pipeline's trigger and the build role's trust).",
        check=_git_ref_name,
    )
    github_environment: str = setting(
        "",
        "DEPLOY_GITHUB_ENVIRONMENT",
        "GitHub environment of this environment's deploy job; only jobs in it may assume its role "
        "(default: the environment's name).",
        check=lambda v: _git_ref_name(v) if v else None,
    )
    github_oidc_provider: str = setting(
        "create",
        "DEPLOY_GITHUB_OIDC_PROVIDER",
        "'create': the delivery stack creates the account's GitHub OIDC identity provider; "
        "'existing': the account already has one (there can be only one per account).",
        choices=("create", "existing"),
    )
    aws_cloudformation_role_arn: str = setting(
        "",
        "DEPLOY_AWS_CLOUDFORMATION_ROLE_ARN",
        "Role CloudFormation assumes to change the stacks (the delivery stack's CloudFormationRoleArn output); "
        "empty: the caller's own permissions.",
        check=lambda v: (
            None
            if not v or re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", v)
            else "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        ),
    )
    ci_cluster_access: str = setting(
        "cluster",
        "DEPLOY_CI_CLUSTER_ACCESS",
        "What the environment's deploy role may do in its cluster (EKS access entry): 'cluster': cluster "
        "administrator, needed when it applies cluster-scoped objects (Namespace, ClusterRoles, StorageClasses); "
        "'namespace': administrator of this environment's namespaces only, for a cluster shared with another "
        "environment; k8s_deploy still applies the cluster-scoped objects, which this access refuses, so it "
        "suits only a render without them (not yet an option).",
        choices=("cluster", "namespace"),
    )
    extra_flows: list = setting(
        [],
        "DEPLOY_EXTRA_FLOWS",
        "Network flows a project's own templates add, each 'SOURCE -> DESTINATION PORT/PROTOCOL' as on the "
        "Network flows reference page (e.g. 'django-app/worker -> 0.0.0.0/0 443/TCP'): the render refuses any "
        "NetworkPolicy allow that is neither needed by the stack nor listed here.",
        check=_flows,
    )

    @property
    def image(self):
        """The image reference pods pull: by digest when one is known."""
        if self.image_digest:
            return f"{self.image_repository}@{self.image_digest}"
        return f"{self.image_repository}:{self.image_tag}"

    @property
    def postgres_in_cluster(self):
        return self.postgres_mode == "in-cluster"

    @property
    def postgres_operator(self):
        """PostgreSQL is a CloudNativePG Cluster in the namespace (its pods and Services made by the operator)."""
        return self.postgres_mode == "cloudnative-pg"

    @property
    def postgres_outside_cluster(self):
        """PostgreSQL is a server outside the cluster, reached by host and CIDR: 'external', or 'rds' (its host from
        the infrastructure stack's outputs). 'in-cluster' and 'cloudnative-pg' run in the namespace."""
        return self.postgres_mode in ("external", "rds")

    @property
    def redis_in_cluster(self):
        return self.redis_mode == "in-cluster"

    @property
    def alert_sns_region(self):
        """The region of the SNS topic, from its ARN (arn:PARTITION:sns:REGION:ACCOUNT:NAME); '' without one."""
        match = _SNS_ARN.fullmatch(self.alert_sns_topic_arn)
        return match.group(1) if match else ""


@dataclass(frozen=True)
class DeploySecrets:
    """Secret values, read from the environment at render time; never printed."""

    secret_key: str = field(default="", repr=False)
    postgres_password: str = field(default="", repr=False)
    redis_password: str = field(default="", repr=False)
    # The in-cluster PostgreSQL's superuser ("postgres"): only its init uses it; the app's user is not a superuser.
    postgres_superuser_password: str = field(default="", repr=False)
    alert_smtp_password: str = field(default="", repr=False)
    alert_webhook_url: str = field(default="", repr=False)
    alert_watchdog_url: str = field(default="", repr=False)

    ENV = SECRET_ENV

    def missing(self):
        return [self.ENV[name] for name in self.ENV if not getattr(self, name)]

    def values(self):
        return [getattr(self, name) for name in self.ENV if getattr(self, name)]


def _image_major(image):
    """The PostgreSQL major version an image's tag starts with ('postgres:16.4-bookworm' -> '16'), or None."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    match = re.match(r"(\d+)(?:\.|-|$)", tag)
    return match.group(1) if match else None


def setting_fields():
    return dataclasses.fields(DeployConfig)


def _parse(f, raw, source):
    """Turn a raw value (from DEPLOY or the environment) into the field's type."""
    kind = f.type if get_origin(f.type) is None else get_origin(f.type)
    from_env = source == "env"
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return raw.lower() in {"1", "true", "yes", "on"}
        raise ConfigError("must be true or false")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError("must be a whole number")
        if isinstance(raw, int):
            return raw
        if from_env and isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
            return int(raw)
        raise ConfigError("must be a whole number")
    if kind is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"must be a string, not {type(raw).__name__}")
    if kind is list:
        if from_env and isinstance(raw, str):
            if raw.strip().startswith("["):
                raise ConfigError(
                    "is a list written comma-separated in the environment (such as 'a,b'), not as a JSON list"
                )
            return [item.strip() for item in raw.split(",") if item.strip()]
        if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            return list(raw)
        raise ConfigError("must be a list of strings")
    if kind is dict:
        if from_env and isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"must be a JSON object ({exc})") from None
        if isinstance(raw, dict):
            return dict(raw)
        raise ConfigError("must be a mapping")
    raise ConfigError(f"has an unsupported type {get_args(f.type) or f.type}")  # pragma: no cover


def _describe(f, environment=""):
    env = f.metadata["env"]
    where = f"DEPLOY['environments'][{environment!r}]" if environment else "DEPLOY"
    return f"{where}['{f.name}']" + (f" (environment variable {env})" if env else "")


# Settings an environment cannot change: the list itself, and what all environments share.
_NOT_PER_ENVIRONMENT = {"environments", "environment", "github_repository"}


def environment_names(deploy):
    environments = deploy.get("environments") or {}
    return list(environments) if isinstance(environments, dict) else []


def select_environment(deploy, name):
    """``deploy`` with the settings of environment ``name`` laid over it."""
    known = environment_names(deploy)
    if not known:
        raise ConfigError(
            f"Unknown environment {name!r}: DEPLOY['environments'] declares none. Declare them in "
            "settings.DEPLOY['environments'], for example {'staging': {...}, 'production': {...}} "
            "(docs/delivery.md), or leave out --environment."
        )
    if name not in known:
        raise ConfigError(
            f"Unknown environment {name!r}: the known ones are {', '.join(sorted(known))} (DEPLOY['environments'])."
        )
    overrides = deploy["environments"][name]
    if not isinstance(overrides, dict):
        raise ConfigError(
            f"DEPLOY['environments'][{name!r}] must be a dict of settings, not {type(overrides).__name__}."
        )
    return {**deploy, **overrides, "environment": name}


def load_config(deploy=None, environ=None, environment=None):
    """Build and validate a :class:`DeployConfig`; raise :class:`ConfigError` on a bad value.

    With ``environment``, that entry of ``DEPLOY['environments']`` is laid over ``deploy`` first.
    """
    deploy = dict(deploy or {})
    overridden = set()
    if environment:
        merged = select_environment(deploy, environment)
        overridden = {k for k in deploy["environments"][environment]}
        deploy = merged
    elif "environment" in deploy:
        raise ConfigError("DEPLOY['environment'] is set by --environment, not in settings; remove it.")
    environ = os.environ if environ is None else environ
    known = {f.name: f for f in setting_fields()}
    unknown = sorted(set(deploy) - set(known))
    if unknown:
        close = {name: [k for k in known if k.startswith(name[:4])] for name in unknown}
        hints = "; ".join(
            f"{name!r}" + (f" (did you mean {close[name][0]!r}?)" if close[name] else "") for name in unknown
        )
        raise ConfigError(
            f"DEPLOY has unknown setting(s): {hints}. The settings are listed in docs/reference/configuration.md."
        )
    if environment:
        bad = sorted(overridden & _NOT_PER_ENVIRONMENT)
        if bad:
            raise ConfigError(
                f"DEPLOY['environments'][{environment!r}] sets {', '.join(map(repr, bad))}, which all environments "
                "share: set it once in DEPLOY."
            )

    def describe(f):
        return _describe(f, environment if f.name in overridden else "")

    values = {}
    for name, f in known.items():
        env_name = f.metadata["env"]
        if env_name and env_name in environ:
            raw, source = environ[env_name], "env"
        elif name in deploy:
            raw, source = deploy[name], "settings"
        else:
            continue
        try:
            values[name] = _parse(f, raw, source)
        except ConfigError as exc:
            raise ConfigError(f"{describe(f)} {exc}; got {_preview(raw)}.") from None
    config = DeployConfig(**values)
    for f in setting_fields():
        value = getattr(config, f.name)
        choices, check = f.metadata["choices"], f.metadata["check"]
        problem = _control_characters(value)
        if problem is None and choices and value not in choices:
            problem = f"must be one of {', '.join(map(repr, choices))}"
        elif problem is None and check:
            allowed = check(value)
            problem = f"must be {allowed}" if allowed else None
        if problem:
            raise ConfigError(f"{describe(f)} {problem}; got {_preview(value)}.")
    _check_together(config)
    return config


def with_discovered(config, source, **values):
    """``config`` with settings found elsewhere (``source`` says where, for the message), checked as if set."""
    for name, value in values.items():
        check = _field(name).metadata["check"]
        allowed = check(value) if check else None
        if allowed or _control_characters(value):
            raise ConfigError(f"{source} gives {name} {_preview(value)}, which must be {allowed or 'one line'}.")
    return dataclasses.replace(config, **values)


def _control_characters(value):
    """A newline or other control character in a text value: names, images, hosts, keys.

    The values of DEPLOY['extra_env'] may hold newlines: they stay one quoted YAML value.
    """
    if isinstance(value, dict):
        texts = list(map(str, value))
    elif isinstance(value, list):
        texts = value
    else:
        texts = [value] if isinstance(value, str) else []
    if any(_CONTROL.search(text) for text in texts):
        return "must be free of newlines and other control characters"
    return None


def _preview(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_together(c):
    """Rules that tie several settings together."""
    if c.replicas_max < c.replicas_min:
        raise ConfigError(
            f"DEPLOY['replicas_max'] ({c.replicas_max}) must be at least DEPLOY['replicas_min'] ({c.replicas_min})."
        )
    if c.exposure == "alb" and not c.certificate_arn:
        raise ConfigError(
            "DEPLOY['certificate_arn'] (environment variable DEPLOY_CERTIFICATE_ARN) is required when "
            "DEPLOY['exposure'] is 'alb': the Ingress terminates HTTPS with an ACM certificate."
        )
    if c.create_storage_classes and not c.efs_file_system_id:
        raise ConfigError(
            "DEPLOY['efs_file_system_id'] (environment variable DEPLOY_EFS_FILE_SYSTEM_ID) is required when "
            "DEPLOY['create_storage_classes'] is true: the 'efs-ap' StorageClass names the file system."
        )
    if bool(c.node_allocatable_cpu) != bool(c.node_allocatable_memory):
        raise ConfigError(
            "DEPLOY['node_allocatable_cpu'] and DEPLOY['node_allocatable_memory'] (DEPLOY_NODE_ALLOCATABLE_CPU, "
            "DEPLOY_NODE_ALLOCATABLE_MEMORY) go together: a node's allocatable CPU and memory. Set both, or neither "
            "to use the capacity table."
        )
    if c.alert_email_to and not (c.alert_email_from and c.alert_smtp_smarthost):
        raise ConfigError(
            "DEPLOY['alert_email_to'] is set but DEPLOY['alert_email_from'] or DEPLOY['alert_smtp_smarthost'] "
            "is empty: set both (DEPLOY_ALERT_EMAIL_FROM, DEPLOY_ALERT_SMTP_SMARTHOST) or clear alert_email_to."
        )
    if c.alert_sns_topic_arn and c.aws_region and c.alert_sns_region != c.aws_region:
        raise ConfigError(
            f"DEPLOY['alert_sns_topic_arn'] is a topic of region {c.alert_sns_region}, but DEPLOY['aws_region'] "
            f"(DEPLOY_AWS_REGION) is {c.aws_region}: Alertmanager signs its SNS requests for the topic's region. "
            "Name the topic of this region, or correct aws_region."
        )
    if c.postgres_mode == "rds":
        for part in ("host", "cidr"):
            if getattr(c, f"postgres_{part}"):
                raise ConfigError(
                    f"DEPLOY['postgres_{part}'] must be empty when DEPLOY['postgres_mode'] is 'rds': k8s_deploy reads "
                    "the instance's address from the infrastructure stack's outputs. Clear it, or use the "
                    "'external' mode to name a server yourself."
                )
    for service in ("postgres", "redis"):
        if getattr(c, f"{service}_mode") == "external":
            for part in ("host", "cidr"):
                if not getattr(c, f"{service}_{part}"):
                    raise ConfigError(
                        f"DEPLOY['{service}_{part}'] (environment variable DEPLOY_{service.upper()}_{part.upper()}) "
                        f"is required when DEPLOY['{service}_mode'] is 'external'."
                    )
            host, cidr = getattr(c, f"{service}_host"), getattr(c, f"{service}_cidr")
            if _is_ip(host) and ipaddress.ip_address(host) not in ipaddress.ip_network(cidr):
                raise ConfigError(
                    f"DEPLOY['{service}_host'] {host!r} is not inside DEPLOY['{service}_cidr'] {cidr!r}: "
                    "the egress policy would block it."
                )
    if c.postgres_operator and c.postgres_replication == "synchronous" and c.postgres_instances < 2:
        raise ConfigError(
            f"DEPLOY['postgres_replication'] is 'synchronous' but DEPLOY['postgres_instances'] is "
            f"{c.postgres_instances}: a synchronous commit waits for a replica. Set postgres_instances to 3 "
            "(DEPLOY_POSTGRES_INSTANCES), or postgres_replication to 'asynchronous'."
        )
    if c.postgres_operator and c.postgres_operator_namespace == c.namespace:
        # The app's namespace denies every flow it does not render: an operator there could reach neither the
        # Kubernetes API nor the instances, and the wiring check failed with advice to edit the templates.
        raise ConfigError(
            f"DEPLOY['postgres_operator_namespace'] must differ from DEPLOY['namespace'] (both {c.namespace!r}): "
            "the app's namespace denies all traffic the stack does not need, so an operator installed there could "
            "not work. Install CloudNativePG in its own namespace (cnpg-system, docs/high-availability.md) and name "
            "it in DEPLOY_POSTGRES_OPERATOR_NAMESPACE."
        )
    if c.postgres_operator:
        # The backup CronJob and the restore Job run postgres_image's pg_dump and pg_restore against the Cluster:
        # pg_dump refuses a server of a newer major version, so a mismatch would fail every nightly backup.
        operand, tools = _image_major(c.postgres_cnpg_image), _image_major(c.postgres_image)
        if operand and tools and operand != tools:
            raise ConfigError(
                f"DEPLOY['postgres_cnpg_image'] {c.postgres_cnpg_image!r} is PostgreSQL {operand} but "
                f"DEPLOY['postgres_image'] {c.postgres_image!r}, whose pg_dump the backup CronJob and pg_restore the "
                f"restore Job run against the Cluster, is PostgreSQL {tools}: pg_dump refuses a newer server, "
                "and a dump restores safely only into its own major version. Give both images the same major version "
                "(DEPLOY_POSTGRES_CNPG_IMAGE, DEPLOY_POSTGRES_IMAGE)."
            )
    limits = [("cpu_request", "cpu_limit", _cpu_millis), ("memory_request", "memory_limit", _bytes)]
    limits.append(("ephemeral_storage_request", "ephemeral_storage_limit", _bytes))
    for request, limit, parse in limits:
        if parse(getattr(c, request)) > parse(getattr(c, limit)):
            raise ConfigError(
                f"DEPLOY['{request}'] ({getattr(c, request)}) must not exceed DEPLOY['{limit}'] ({getattr(c, limit)})."
            )
    # Each namespace gets its own Namespace object, default-deny and DNS policies: two settings naming one
    # namespace would render them twice, and the system namespaces are the cluster's, not the stack's.
    namespaces = [("namespace", c.namespace)]
    if c.monitoring:
        namespaces.append(("monitoring_namespace", c.monitoring_namespace))
    if c.logging:
        namespaces.append(("logging_namespace", c.logging_namespace))
    for index, (name, value) in enumerate(namespaces):
        if value in _SYSTEM_NAMESPACES:
            raise ConfigError(
                f"{_describe(_field(name))} must not be {value!r}: that namespace is the cluster's own. "
                "Choose a namespace for the stack."
            )
        for other, other_value in namespaces[:index]:
            if value == other_value:
                raise ConfigError(
                    f"{_describe(_field(name))} must differ from DEPLOY['{other}'] (both {value!r}): each of the "
                    "app, monitoring and logging gets a namespace of its own."
                )
    if c.postgres_backup_bucket and c.postgres_mode != "in-cluster":
        raise ConfigError(
            f"DEPLOY['postgres_backup_bucket'] streams the in-cluster StatefulSet's dumps to S3; postgres_mode is "
            f"{c.postgres_mode!r}. Leave it empty in this mode (docs/high-availability.md says how each mode keeps "
            "its backups)."
        )
    if c.postgres_backup_bucket and not c.aws_region:
        raise ConfigError(
            f"{_describe(_field('aws_region'))} is required when DEPLOY['postgres_backup_bucket'] is set: the "
            "backup pods write to the bucket in that region."
        )
    # The reader role is checked at render: aws_provision creates it, with this setting already chosen.
    if c.secrets_source == "aws-secrets-manager" and not c.aws_region:
        raise ConfigError(
            f"{_describe(_field('aws_region'))} is required when DEPLOY['secrets_source'] is "
            "'aws-secrets-manager': the SecretStore reads the secrets in that region."
        )
    if c.postgres_user == "postgres":
        raise ConfigError("DEPLOY['postgres_user'] must not be 'postgres': the app connects as an unprivileged user.")


_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _field(name):
    return next(f for f in setting_fields() if f.name == name)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _bytes(quantity):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    number, unit = float(match.group(1)), match.group(2)
    return int(number * (_BINARY.get(unit) or _DECIMAL.get(unit) or 1))


def _cpu_millis(quantity):
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return int(float(quantity) * 1000)


cpu_millis = _cpu_millis
memory_bytes = _bytes


def get_config(environment=None):
    """The configuration of this project: ``settings.DEPLOY`` and the environment.

    ``environment`` names an entry of ``DEPLOY['environments']`` (``--environment``).
    """
    deploy = getattr(settings, "DEPLOY", {})
    if not isinstance(deploy, dict):
        raise ConfigError(f"settings.DEPLOY must be a dict, not {type(deploy).__name__}.")
    return load_config(deploy, environment=environment)


def get_environment_names():
    """The names declared in ``settings.DEPLOY['environments']``, in their order."""
    deploy = getattr(settings, "DEPLOY", {})
    return environment_names(deploy) if isinstance(deploy, dict) else []


def sqlite_source(environ=None):
    """The SQLite file ``migrate_from_sqlite`` copies from without ``--source`` ('' if none).

    ``SQLITE_SOURCE`` in the environment, then ``settings.SQLITE_SOURCE``: a project
    that adds the deploy app needs nothing else (the app makes the database alias).
    """
    environ = os.environ if environ is None else environ
    return environ.get("SQLITE_SOURCE") or str(getattr(settings, "SQLITE_SOURCE", "") or "")


def get_secrets(environ=None):
    environ = os.environ if environ is None else environ
    return DeploySecrets(**{name: environ.get(env, "") for name, env in DeploySecrets.ENV.items()})


def describe_settings() -> list[dict[str, Any]]:
    """Every setting as a row of the configuration reference."""
    rows = []
    for f in setting_fields():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(
            {
                "name": f.name,
                "type": f.type.__name__ if isinstance(f.type, type) else str(f.type),
                "default": default,
                "env": f.metadata["env"],
                "choices": f.metadata["choices"],
                "help": f.metadata["help"],
            }
        )
    return rows
