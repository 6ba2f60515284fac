"""Every check of a setting's value, and every rule that ties settings together.

A value check takes one value and returns None, or a sentence saying what is
allowed ("must be " + it makes the message). A rule (:func:`check_together`,
:func:`check_aws_stack`, :func:`check_delivery`) takes whole configurations and
raises :class:`ConfigError` naming the settings. ``load_config`` runs the value
checks and :func:`check_together`; ``aws_provision`` adds the stack's network
rules and the delivery rules, which only its stacks need.
"""

import dataclasses
import ipaddress
import math
import re

from deploy.conf.fields import ConfigError, describe

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$", re.ASCII)
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", re.ASCII)
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
SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[\w-]+", re.ASCII)
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$", re.ASCII)
_RDS_CLASS = re.compile(r"^db\.[a-z][a-z0-9-]*\d[a-z0-9-]*\.(micro|small|medium|large|\d*xlarge)$", re.ASCII)
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

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\d[a-z0-9-]*\.(nano|micro|small|medium|large|metal|\d*xlarge)$", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", re.ASCII)
_STAFF_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+", re.ASCII)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Settings an environment cannot change: the list itself, and what all environments share.
NOT_PER_ENVIRONMENT = {"environments", "environment", "github_repository"}


def dns_label(value):
    if not _DNS_LABEL.fullmatch(value) or len(value) > 63:
        return "lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
    return None


def emails(addresses):
    bad = [a for a in addresses if not _EMAIL.fullmatch(a)]
    if bad:
        return f"e-mail addresses such as 'ops@example.com' ({', '.join(map(repr, bad))} is not one)"
    return None


def cpu(value):
    return None if _CPU.fullmatch(value) else "a CPU quantity such as '250m', '1' or '1.5'"


def memory(value):
    return None if _MEMORY.fullmatch(value) else "a memory quantity such as '512Mi' or '2Gi'"


def image_repository(value):
    ok = _IMAGE_REPOSITORY.fullmatch(value)
    return None if ok else "an image repository such as '123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop'"


def image_tag(value):
    if value == "latest":
        return "a fixed tag (a version or a commit), not 'latest'"
    return None if _IMAGE_TAG.fullmatch(value) else "letters, digits, '_', '.' and '-', at most 128 characters"


def digest(value):
    return None if not value or _DIGEST.fullmatch(value) else "empty, or 'sha256:' followed by 64 hex digits"


def positive(value):
    return None if value >= 1 else "a whole number of at least 1"


def percent(value):
    return None if 1 <= value <= 100 else "a whole number from 1 to 100"


def at_least_two(value):
    return None if value >= 2 else "at least 2, so that one pod can be replaced while another serves"


def hosts(value):
    bad = [h for h in value if not _HOSTNAME.fullmatch(h)]
    if not value:
        return "at least one host name"
    return f"host names such as 'shop.example.com' ({', '.join(map(repr, bad))} is not one)" if bad else None


def cidr(value):
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "a CIDR block such as '10.0.0.0/16' (host bits zero)"
    return None


def optional_cidr(value):
    return cidr(value) if value else None


def acm_arn(value):
    return (
        None
        if not value or _ACM_ARN.fullmatch(value)
        else "an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)"
    )


def efs_id(value):
    return None if not value or _EFS_ID.fullmatch(value) else "an EFS file system id such as 'fs-0123456789abcdef0'"


def duration(value):
    return None if re.fullmatch(r"\d+(ms|s|m|h)", value, re.ASCII) else "a duration such as '30s' or '5m'"


def image(value):
    repository, _, tag = value.rpartition(":")
    if not repository or "/" in tag or image_repository(repository) or image_tag(tag):
        return "an image with a fixed tag such as 'postgres:16.4-bookworm'"
    return None


def cron(value):
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


def port(value):
    return None if 1 <= value <= 65535 else "a port number from 1 to 65535"


def extra_env(value):
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
        # A process's environment cannot hold a NUL (the container would not start), nor is NaN a number to set.
        if (isinstance(item, float) and not math.isfinite(item)) or (isinstance(item, str) and "\x00" in item):
            return f"plain values (strings, finite numbers, booleans); {name!r} holds a NUL or is not finite"
    return None


_FLOW = re.compile(r"\S+ -> \S+ (?:any|\d{1,5}/(?:TCP|UDP|SCTP)|any/(?:TCP|UDP|SCTP))", re.ASCII)


def flows(value):
    for item in value:
        if not isinstance(item, str) or not _FLOW.fullmatch(item):
            return f"flows such as 'django-app/worker -> 0.0.0.0/0 443/TCP' ({item!r} is not one)"
    return None


def dns_name(value):
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
    "requests.cpu": cpu, "limits.cpu": cpu, "requests.memory": memory, "limits.memory": memory,
    "requests.storage": memory, "pods": _positive_int,
}  # fmt: skip


def staff_access(value):
    for arn, role in value.items():
        if not isinstance(arn, str) or not re.fullmatch(_STAFF_ARN, arn):
            return f"a mapping of IAM role or user ARNs to 'read-only' or 'operator' ({arn!r} is not an ARN)"
        if role not in ("read-only", "operator"):
            return f"a mapping of IAM ARNs to 'read-only' or 'operator' ({arn!r} maps to {role!r})"
    return None


def quota(value):
    if set(value) != set(_QUOTA_KEYS):
        return f"a mapping with exactly the keys {', '.join(sorted(_QUOTA_KEYS))}"
    for key, check in _QUOTA_KEYS.items():
        problem = check(value[key]) if key == "pods" or isinstance(value[key], str) else "a quoted quantity"
        if problem:
            return f"{key}: {problem}"
    return None


def environments(value):
    for name, overrides in value.items():
        if not isinstance(name, str) or dns_label(name):
            return (
                f"a mapping of environment names (lower-case letters, digits and '-') to settings ({name!r} is not one)"
            )
        if not isinstance(overrides, dict):
            return (
                f"a mapping of environment names to dicts of settings ({name!r} maps to a {type(overrides).__name__})"
            )
        from deploy.conf.groups import DeployConfig  # the settings are declared with these checks

        known = {f.name for f in dataclasses.fields(DeployConfig)} - NOT_PER_ENVIRONMENT
        unknown = sorted(set(overrides) - known)
        if unknown:
            return (
                f"settings of this tool only; environment {name!r} has unknown or not per-environment setting(s) "
                f"{', '.join(map(repr, unknown))}"
            )
    return None


def github_repository(value):
    ok = not value or re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+", value)
    return None if ok else "empty, or a GitHub repository as 'owner/name'"


def git_ref_name(value):
    # What GitHub allows in a branch or environment name that can also sit in an OIDC subject claim.
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}", value) and ".." not in value and "*" not in value
    return None if ok else "a branch or GitHub environment name (letters, digits, '.', '_', '-', '/'; no wildcard)"


def bucket_name(value):
    # S3's naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html): a name they
    # refuse would otherwise pass here and fail only in CloudFormation, the nightly backup or the cut-over.
    ok = not value or (
        re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value, re.ASCII)
        and not re.search(r"\.\.|\.-|-\.", value)
        and not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", value, re.ASCII)
        and not value.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not value.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    return (
        None
        if ok
        else (
            "empty, or an S3 bucket name: 3-63 lower-case letters, digits, '.' and '-', starting and ending with a "
            "letter or digit, no '..', '.-' or '-.', not an IP address, no reserved prefix (xn--, sthree-) or suffix "
            "(-s3alias, --ol-s3); aws_provision's BackupBucketName and CutoverBucket outputs are such names"
        )
    )


def secret_name(value):
    ok = not value or re.fullmatch(r"[A-Za-z0-9/_+=.@-]{1,512}", value)
    return None if ok else "empty, or an AWS Secrets Manager secret name such as 'shop/staging'"


def optional_dns_label(value):
    return dns_label(value) if value else None


def optional_email(value):
    return emails([value] if value else [])


def optional_cpu(value):
    return cpu(value) if value else None


def optional_memory(value):
    return memory(value) if value else None


def optional_git_ref_name(value):
    return git_ref_name(value) if value else None


def redis_size(value):
    return None if re.fullmatch(r"\d+(kb|mb|gb)", value, re.ASCII) else "a Redis size such as '256mb'"


def priority(value):
    return None if 0 <= value <= 1_000_000_000 else "from 0 to 1000000000"


def retention(value):
    return None if re.fullmatch(r"\d+[hdwy]", value, re.ASCII) else "a duration such as '15d'"


def refresh_interval(value):
    return None if re.fullmatch(r"[1-9]\d*(s|m|h)", value, re.ASCII) else "a duration such as '15m' or '1h'"


def http_url(value):
    return None if re.fullmatch(r"https?://[^\s\x00-\x1f\x7f]+", value) else "an http(s) URL"


def url_path(value):
    return None if value.startswith("/") and " " not in value else "a path starting with '/', such as '/'"


def smarthost(value):
    ok = not value or (
        re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", value, re.ASCII) and 1 <= int(value.rsplit(":", 1)[1]) <= 65535
    )
    return None if ok else "host:port, with a port from 1 to 65535"


def sns_topic_arn(value):
    return None if not value or SNS_ARN.fullmatch(value) else "an SNS topic ARN"


def role_arn(value):
    return None if not value or _ROLE_ARN.fullmatch(value) else "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"


def receivers(value):
    return None if set(value) <= {"email", "webhook", "sns"} else "email, webhook or sns"


def kubernetes_group(example):
    """The check of a Kubernetes group name, whose message shows ``example``."""

    def check(value):
        return None if re.fullmatch(r"[a-z0-9][a-z0-9:._-]{0,62}", value) else f"a group name such as {example!r}"

    return check


def postgres_version(value):
    return None if re.fullmatch(r"\d{2}\.\d{1,2}", value, re.ASCII) else "a PostgreSQL version such as '16.4'"


def rds_instance_class(value):
    return None if _RDS_CLASS.fullmatch(value) else "an RDS instance class such as 'db.m7g.large'"


def rds_storage(value):
    return None if 20 <= value <= 65536 else "a whole number of GiB from 20 to 65536"


def rds_retention(value):
    return None if 1 <= value <= 35 else "a whole number of days from 1 to 35"


def image_major(image):
    """The PostgreSQL major version an image's tag starts with ('postgres:16.4-bookworm' -> '16'), or None."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    match = re.match(r"(\d+)(?:\.|-|$)", tag, re.ASCII)
    return match.group(1) if match else None


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(quantity):
    """A Kubernetes quantity of bytes ('512Mi', '1G', '100') as a number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity, re.ASCII)
    number, unit = float(match.group(1)), match.group(2)
    return int(number * (_BINARY.get(unit) or _DECIMAL.get(unit) or 1))


def cpu_millis(quantity):
    """A Kubernetes CPU quantity ('250m', '1.5') in millicores."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return int(float(quantity) * 1000)


def check_together(c):
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
            host, block = getattr(c, f"{service}_host"), getattr(c, f"{service}_cidr")
            if _is_ip(host) and ipaddress.ip_address(host) not in ipaddress.ip_network(block):
                raise ConfigError(
                    f"DEPLOY['{service}_host'] {host!r} is not inside DEPLOY['{service}_cidr'] {block!r}: "
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
        operand, tools = image_major(c.postgres_cnpg_image), image_major(c.postgres_image)
        if operand and tools and operand != tools:
            raise ConfigError(
                f"DEPLOY['postgres_cnpg_image'] {c.postgres_cnpg_image!r} is PostgreSQL {operand} but "
                f"DEPLOY['postgres_image'] {c.postgres_image!r}, whose pg_dump the backup CronJob and pg_restore the "
                f"restore Job run against the Cluster, is PostgreSQL {tools}: pg_dump refuses a newer server, "
                "and a dump restores safely only into its own major version. Give both images the same major version "
                "(DEPLOY_POSTGRES_CNPG_IMAGE, DEPLOY_POSTGRES_IMAGE)."
            )
    limits = [("cpu_request", "cpu_limit", cpu_millis), ("memory_request", "memory_limit", memory_bytes)]
    limits.append(("ephemeral_storage_request", "ephemeral_storage_limit", memory_bytes))
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
        if value in SYSTEM_NAMESPACES:
            raise ConfigError(
                f"{describe(_field(c, name))} must not be {value!r}: that namespace is the cluster's own. "
                "Choose a namespace for the stack."
            )
        for other, other_value in namespaces[:index]:
            if value == other_value:
                raise ConfigError(
                    f"{describe(_field(c, name))} must differ from DEPLOY['{other}'] (both {value!r}): each of the "
                    "app, monitoring and logging gets a namespace of its own."
                )
    if c.postgres_backup_bucket and c.postgres_mode not in {"in-cluster", "cloudnative-pg"}:
        raise ConfigError(
            f"DEPLOY['postgres_backup_bucket'] streams the in-cluster PostgreSQL's dumps (and the CloudNativePG "
            f"Cluster's WAL archive) to S3; postgres_mode is {c.postgres_mode!r}. Leave it empty in this mode "
            "(docs/high-availability.md says how each mode keeps its backups)."
        )
    if c.postgres_backup_bucket and not c.aws_region:
        raise ConfigError(
            f"{describe(_field(c, 'aws_region'))} is required when DEPLOY['postgres_backup_bucket'] is set: the "
            "backup pods write to the bucket in that region."
        )
    # The reader role is checked at render: aws_provision creates it, with this setting already chosen.
    if c.secrets_source == "aws-secrets-manager" and not c.aws_region:
        raise ConfigError(
            f"{describe(_field(c, 'aws_region'))} is required when DEPLOY['secrets_source'] is "
            "'aws-secrets-manager': the SecretStore reads the secrets in that region."
        )
    if c.postgres_user == "postgres":
        raise ConfigError("DEPLOY['postgres_user'] must not be 'postgres': the app connects as an unprivileged user.")
    check_aws_values(c)


def _field(config, name):
    return next(f for f in dataclasses.fields(config) if f.name == name)


# --- AWS: what would make the infrastructure stack fail, found before any AWS call ---


def check_aws_values(config):
    """The AWS settings that stand alone; run by every load (k8s_deploy's capacity check reads them too)."""
    zones = config.aws_availability_zones
    if zones and len(set(zones)) < 2:
        raise ConfigError(
            f"DEPLOY['aws_availability_zones'] must name at least 2 different zones (got {zones!r}): EKS and the "
            "load balancers need two."
        )
    if not _INSTANCE_TYPE.match(config.node_instance_type):
        raise ConfigError(
            f"DEPLOY['node_instance_type'] {config.node_instance_type!r} is not an EC2 instance type such as "
            "'t3.large' or 'm6i.xlarge'."
        )
    if not 1 <= config.node_count_min <= config.node_count_max:
        raise ConfigError(
            f"DEPLOY['node_count_min'] ({config.node_count_min}) must be at least 1 and at most "
            f"DEPLOY['node_count_max'] ({config.node_count_max})."
        )


def check_aws_stack(config):
    """Everything that would make the infrastructure stack fail; returns its number of zones.

    The subnets are checked against vpc_cidr here only, not by every load: a cluster made elsewhere
    names its own VPC in vpc_cidr (for the load balancer's flow) and never uses the subnet settings.
    """
    check_aws_values(config)
    zones = config.aws_availability_zones
    count = len(zones) if zones else 2
    vpc = ipaddress.ip_network(config.vpc_cidr)
    blocks = []
    for setting in ("public_subnet_cidrs", "private_subnet_cidrs"):
        cidrs = getattr(config, setting)
        if len(cidrs) != count:
            raise ConfigError(
                f"DEPLOY['{setting}'] must have one CIDR per availability zone ({count}), not {len(cidrs)}."
            )
        for block in cidrs:
            try:
                network = ipaddress.ip_network(block)
            except ValueError:
                raise ConfigError(f"DEPLOY['{setting}'] has {block!r}, which is not a CIDR block.") from None
            if not network.subnet_of(vpc):
                raise ConfigError(f"DEPLOY['{setting}'] has {block}, which is outside the VPC {vpc}.")
            for other_setting, other in blocks:
                if network.overlaps(other):
                    raise ConfigError(
                        f"DEPLOY['{setting}'] has {block}, which overlaps {other} of DEPLOY['{other_setting}']."
                    )
            blocks.append((setting, network))
    return count


def check_delivery(base, environments):
    """What must hold before the delivery stack is rendered: raise :class:`ConfigError` naming the setting."""
    if not base.github_repository:
        raise ConfigError(
            "DEPLOY['github_repository'] (environment variable DEPLOY_GITHUB_REPOSITORY) is required for the "
            "delivery stack: the roles trust only that repository's workflows. Set it to 'owner/name'."
        )
    if not environments:
        raise ConfigError(
            "The delivery stack needs environments: declare them in DEPLOY['environments'], for example "
            "{'staging': {...}, 'production': {...}} (docs/delivery.md)."
        )
    repositories = {c.image_repository for c in environments.values()}
    if len(repositories) > 1:
        raise ConfigError(
            f"The environments use different image repositories ({', '.join(sorted(repositories))}): the pipeline "
            "builds one image and promotes it by digest, so set DEPLOY['image_repository'] once, outside "
            "DEPLOY['environments']."
        )
    regions = {c.aws_region for c in environments.values()} | {base.aws_region}
    if len(regions - {""}) > 1:
        raise ConfigError(
            f"The environments are in different regions ({', '.join(sorted(regions - {''}))}): one delivery stack "
            "covers one region. Run aws_provision --delivery --environment NAME in each."
        )
    for name, config in environments.items():
        if not config.secrets_name:
            raise ConfigError(
                f"DEPLOY['environments'][{name!r}]['secrets_name'] is required for the delivery stack: the pipeline "
                "holds no secret, its deploy job reads the environment's values from that AWS Secrets Manager "
                "secret. Store them there (docs/delivery.md) and name the secret."
            )
    subjects = {}
    for name, config in environments.items():
        other = subjects.setdefault(config.github_deploy_environment, name)
        if other != name:
            raise ConfigError(
                f"Environments {other!r} and {name!r} use the same GitHub environment "
                f"{config.github_deploy_environment!r}: each deploy role must trust its own. Set "
                f"DEPLOY['environments'][{name!r}]['github_environment']."
            )
