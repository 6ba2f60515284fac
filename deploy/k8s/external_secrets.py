"""The stack's Secrets as External Secrets Operator objects (DEPLOY['secrets_source'] 'aws-secrets-manager').

One ``SecretStore`` in the app's namespace points at AWS Secrets Manager in ``aws_region`` and names the role
the operator assumes (``secrets_reader_role_arn``: the only role that may read these secrets, which only the
operator's pod identity may assume; ``deploy/aws/cfn/secrets.py``). Each Secret the environment mode renders
with values becomes an ``ExternalSecret`` of the same name and keys: the operator reads the generated values
(``names.aws_secrets``) and writes the Secret from a template, so DATABASE_URL, REDIS_URL and redis.conf are
built in the cluster from the same functions that build them in the environment mode (``render.py``), with a Go
template expression in place of the password. No value passes through ``k8s_deploy``.

The values aws_provision generates are letters and digits only, so they sit in a URL and in redis.conf's
double-quoted argument unchanged; ``urlquery`` still quotes a value set by hand.

The created Secrets carry the selector labels but not the release labels (managed-by, part-of), so the
deploy's prune never deletes what the operator owns; the ExternalSecret owns its Secret and takes it with it.
"""

import re

from deploy.k8s import names

API_VERSION = "external-secrets.io/v1"
# Where the operator's Helm chart installs it by default; its pod identity is given to this ServiceAccount.
OPERATOR_NAMESPACE = "external-secrets"
OPERATOR_SERVICE_ACCOUNT = "external-secrets"
STORE = "aws-secrets-manager"


def store_name(config):
    return names.resource_name(config.app_name, STORE)


def secret_store_spec(config):
    return {
        "provider": {
            "aws": {
                "service": "SecretsManager",
                "region": config.aws_region,
                # The operator's own pod identity may only assume this role; this role may only read these secrets.
                "role": config.secrets_reader_role_arn,
            }
        }
    }


def _value(key):
    return "{{ ." + key + " }}"


def _quoted(key):
    # No spaces: the wiring check reads the URL's host from this text, as it does from a Secret's value.
    return "{{." + key + "|urlquery}}"


def secret_templates(config, component):
    """The keys of ``component``'s Secret, each a Go template over the values ``names.aws_secrets`` lists."""
    from deploy.k8s.render import app_database_url, app_redis_url, redis_conf_text

    available = names.aws_secrets(config)
    redis_password = _quoted("redis_password") if "redis_password" in available else ""
    if component == "app":
        return {
            "SECRET_KEY": _value("secret_key"),
            "DATABASE_URL": app_database_url(config, _quoted("postgres_password")),
            "REDIS_URL": app_redis_url(config, redis_password),
        }
    if component == "postgres":
        return {"password": _value("postgres_password"), "superuser-password": _value("postgres_superuser_password")}
    if component == "redis":
        conf = redis_conf_text(config, f'"{_value("redis_password")}"')
        return {"password": _value("redis_password"), "redis.conf": conf}
    raise KeyError(f"no ExternalSecret is declared for component {component!r}")


def external_secret_spec(config, component):
    templates = secret_templates(config, component)
    used = set(re.findall(r"\{\{ ?\.(\w+)", "\n".join(templates.values())))
    data = [
        {"secretKey": key, "remoteRef": {"key": name}} for key, name in names.aws_secrets(config).items() if key in used
    ]
    return {
        "refreshInterval": config.secrets_refresh_interval,
        "secretStoreRef": {"kind": "SecretStore", "name": store_name(config)},
        "target": {
            "name": names.resource_name(config.app_name, component),
            "creationPolicy": "Owner",
            "deletionPolicy": "Retain",
            "template": {
                "type": "Opaque",
                "engineVersion": "v2",
                "metadata": {"labels": names.selector_labels(config.app_name, component)},
                "data": templates,
            },
        },
        "data": data,
    }
