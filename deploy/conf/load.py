"""Reading the settings: ``settings.DEPLOY``, the selected environment and the process environment.

Precedence: environment variable, then ``settings.DEPLOY`` (with the selected
environment's entry laid over it), then the default.
"""

import dataclasses
import os
from typing import Any

from django.conf import settings

from deploy.conf.checks import NOT_PER_ENVIRONMENT, check_together
from deploy.conf.fields import ConfigError, control_characters, default_of, describe, env_name, parse, preview
from deploy.conf.groups import DeployConfig


def setting_fields():
    return dataclasses.fields(DeployConfig)


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
        bad = sorted(overridden & NOT_PER_ENVIRONMENT)
        if bad:
            raise ConfigError(
                f"DEPLOY['environments'][{environment!r}] sets {', '.join(map(repr, bad))}, which all environments "
                "share: set it once in DEPLOY."
            )

    def where(f):
        return describe(f, environment if f.name in overridden else "")

    values = {}
    for name, f in known.items():
        env = env_name(f)
        if env and env in environ:
            raw, source = environ[env], "env"
        elif name in deploy:
            raw, source = deploy[name], "settings"
        else:
            continue
        try:
            values[name] = parse(f, raw, source)
        except ConfigError as exc:
            raise ConfigError(f"{where(f)} {exc}; got {preview(raw, f)}.") from None
    config = DeployConfig(**values)
    for f in setting_fields():
        value = getattr(config, f.name)
        choices, check = f.metadata["choices"], f.metadata["check"]
        problem = control_characters(value)
        if problem is None and choices and value not in choices:
            problem = f"must be one of {', '.join(map(repr, choices))}"
        elif problem is None and check:
            allowed = check(value)
            problem = f"must be {allowed}" if allowed else None
        if problem:
            raise ConfigError(f"{where(f)} {problem}; got {preview(value, f)}.")
    check_together(config)
    return config


def with_discovered(config, source, **values):
    """``config`` with settings found elsewhere (``source`` says where, for the message), checked as if set."""
    for name, value in values.items():
        check = next(f for f in setting_fields() if f.name == name).metadata["check"]
        allowed = check(value) if check else None
        if allowed or control_characters(value):
            raise ConfigError(f"{source} gives {name} {preview(value)}, which must be {allowed or 'one line'}.")
    return dataclasses.replace(config, **values)


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


def describe_settings() -> list[dict[str, Any]]:
    """Every setting as a row of the configuration reference."""
    rows = []
    for f in setting_fields():
        rows.append(
            {
                "name": f.name,
                "type": f.type.__name__ if isinstance(f.type, type) else str(f.type),
                "default": default_of(f),
                "env": env_name(f),
                "choices": f.metadata["choices"],
                "help": f.metadata["help"],
            }
        )
    return rows
