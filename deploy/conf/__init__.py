"""The deploy tooling's only reader of settings.

``get_config()`` turns ``settings.DEPLOY`` (a dict) and the environment into
one frozen, validated :class:`DeployConfig`. Each field declares its default,
its meaning and its check in one place (its environment variable is
``DEPLOY_`` + its name); the configuration reference in ``docs/`` is generated
from these declarations.

Precedence: environment variable, then ``settings.DEPLOY``, then the default.
Secret values (``SECRET_KEY``, passwords) never live in ``DEPLOY``: they are
read from the environment at render time by :func:`get_secrets`, and hidden
from ``repr``.

Where each fact lives: ``fields`` (declaring, naming, parsing one setting),
``checks`` (every value check and every rule across settings, the AWS ones
included), ``groups`` (the settings, grouped, composed into ``DeployConfig``),
``secrets`` (``DeploySecrets``), ``load`` (reading ``DEPLOY``, environments
and the process environment).
"""

from deploy.conf.checks import check_aws_stack, check_delivery, cpu_millis, memory_bytes
from deploy.conf.fields import FALSE_WORDS, INT32, TRUE_WORDS, ConfigError
from deploy.conf.groups import SUPPORTED_KUBERNETES_VERSIONS, DeployConfig
from deploy.conf.load import (
    describe_settings,
    get_config,
    get_environment_names,
    load_config,
    setting_fields,
    sqlite_source,
    with_discovered,
)
from deploy.conf.secrets import SECRET_ENV, SECRET_MEANINGS, DeploySecrets, get_secrets

__all__ = [
    "FALSE_WORDS",
    "INT32",
    "SECRET_ENV",
    "SECRET_MEANINGS",
    "SUPPORTED_KUBERNETES_VERSIONS",
    "TRUE_WORDS",
    "ConfigError",
    "DeployConfig",
    "DeploySecrets",
    "check_aws_stack",
    "check_delivery",
    "cpu_millis",
    "describe_settings",
    "get_config",
    "get_environment_names",
    "get_secrets",
    "load_config",
    "memory_bytes",
    "setting_fields",
    "sqlite_source",
    "with_discovered",
]
