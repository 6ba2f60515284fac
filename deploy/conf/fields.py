"""How one setting is declared, named in the environment, parsed and named in messages.

A setting's environment variable is ``DEPLOY_`` + its name in upper case, derived
here, never written by hand. The only exceptions are the settings that have no
environment variable at all (declared ``env=None``): the nested mappings and the
environment selection, listed in :data:`WITHOUT_ENVIRONMENT_VARIABLE`.
"""

import dataclasses
import json
import re
from dataclasses import field

import environ

_DERIVED = object()
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# Every number of this tool ends in a manifest or a template whose fields are 32-bit (replicas, ports, seconds).
INT32 = (-(2**31), 2**31 - 1)

# Settings read from DEPLOY only: a mapping is clearer in settings.py than as JSON in a variable, and the
# environment (--environment) is chosen on the command line.
WITHOUT_ENVIRONMENT_VARIABLE = ("logging_quota", "monitoring_quota", "staff_access", "environments", "environment")


class ConfigError(ValueError):
    """A setting with a wrong value. The message names the setting."""


def setting(default, help="", *, env=_DERIVED, choices=None, check=None, hide_values=False):
    """Declare one setting: its default and meaning; ``env=None`` when it has no environment variable.

    ``hide_values``: a message about the setting names a mapping's keys but never shows its values (a secret
    pasted there by mistake is refused without being printed).
    """
    metadata = {"env": env, "help": help, "choices": choices, "check": check, "hide_values": hide_values}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def env_name(f):
    """The environment variable of setting ``f`` (a dataclass field), or None."""
    env = f.metadata["env"]
    return f"DEPLOY_{f.name.upper()}" if env is _DERIVED else env


def default_of(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def describe(f, environment=""):
    """Where setting ``f`` is set, as messages name it: DEPLOY['name'] (environment variable DEPLOY_NAME)."""
    env = env_name(f)
    where = f"DEPLOY['environments'][{environment!r}]" if environment else "DEPLOY"
    return f"{where}['{f.name}']" + (f" (environment variable {env})" if env else "")


def parse(f, raw, source):
    """Turn a raw value (from DEPLOY, or a string from the environment) into the field's type.

    Environment strings are cast by django-environ (bool, int, comma-separated list) once they have the
    shape this tool accepts, which is stricter: 'ok' or 'y' is no boolean here, '1_000' no number.
    """
    kind, from_env = f.type, source == "env" and isinstance(raw, str)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and raw.lower() in TRUE_WORDS + FALSE_WORDS:
            return environ.Env.parse_value(raw.lower(), bool)
        raise ConfigError("must be true or false")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif from_env and re.fullmatch(r"[+-]?\d+", raw.strip(), re.ASCII):
            number = environ.Env.parse_value(raw, int)
        else:
            raise ConfigError("must be a whole number")
        if not INT32[0] <= number <= INT32[1]:
            raise ConfigError(f"must be a whole number from {INT32[0]} to {INT32[1]}")
        return number
    if kind is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"must be a string, not {type(raw).__name__}")
    if kind is list:
        if from_env:
            if raw.strip().startswith("["):
                raise ConfigError(
                    "is a list written comma-separated in the environment (such as 'a,b'), not as a JSON list"
                )
            return [item for item in environ.Env.parse_value(raw, [str.strip]) if item]
        if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            return list(raw)
        raise ConfigError("must be a list of strings")
    if kind is dict:
        # django-environ's dict cast reads 'a=1,b=2'; a JSON object is what this tool documents.
        if from_env:
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"must be a JSON object ({exc})") from None
        if isinstance(raw, dict):
            return dict(raw)
        raise ConfigError("must be a mapping")
    raise ConfigError(f"has an unsupported type {kind}")  # pragma: no cover


def control_characters(value):
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


def preview(value, f=None):
    """``value`` as a message quotes it: its keys only, for a setting declared with ``hide_values``."""
    if f is not None and f.metadata["hide_values"]:
        if not isinstance(value, dict):
            return f"a {type(value).__name__} (not shown)"
        value = dict.fromkeys(value, "…")
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
