"""Custom resources validated against the vendored upstream CustomResourceDefinitions (``crds/``).

The API server validates a custom resource against its CRD's ``openAPIV3Schema``; this module does the same
before anything is applied, strictly: a field the schema does not declare is an error (the server would
drop it silently, or refuse it with ``kubectl --validate=strict``). The files and their version are listed in
``crds/README.md``.
"""

import copy
import functools
from pathlib import Path

import yaml

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CRD_DIR = Path(__file__).resolve().parent / "crds"


@functools.cache
def _definitions():
    """(group, version, kind) -> the served version's schema, made strict."""
    found = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader, libyaml's if there)
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                found[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return found


def _strict(schema):
    """Unknown fields become errors where the CRD declares the fields and does not keep unknown ones."""
    if isinstance(schema, dict):
        for value in schema.values():
            _strict(value)
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


def groups():
    return {group for group, _, _ in _definitions()}


@functools.cache
def _validator(key):
    import jsonschema

    schema = _definitions().get(key)
    return None if schema is None else jsonschema.Draft7Validator(schema)


def problems(manifest):
    """Sentences saying where ``manifest`` breaks its CRD's schema; None if no vendored CRD declares its kind."""
    group, _, version = manifest.get("apiVersion", "").rpartition("/")
    validator = _validator((group, version, manifest.get("kind")))
    if validator is None:
        return None
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    ]
