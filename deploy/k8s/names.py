"""Names and labels of every object, built in one place.

Names are cut to 63 characters (the limit of a DNS label, and of a label
value). Selectors use a smaller set of labels than metadata: a Deployment's
selector is immutable, so it must not contain anything that changes between
releases (such as the version).
"""

import hashlib

MAX_NAME = 63
MANAGED_BY = "django-k8s-deploy"
PART_OF = "app.kubernetes.io/part-of"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"


def truncate(name, limit=MAX_NAME):
    """Cut ``name`` to ``limit`` characters; a cut name ends in a short hash so two stay distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-.')}-{digest}"


def resource_name(app_name, component=None):
    return truncate(app_name if not component or component == "app" else f"{app_name}-{component}")


def selector_labels(app_name, component):
    """The labels selectors use: stable across every release."""
    return {
        "app.kubernetes.io/name": truncate(app_name),
        INSTANCE: truncate(app_name),
        COMPONENT: truncate(component),
    }


def labels(app_name, component, version):
    """Metadata labels: the selector labels plus what identifies the release."""
    return {
        **selector_labels(app_name, component),
        "app.kubernetes.io/version": truncate(version),
        PART_OF: truncate(app_name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def release_selector(app_name):
    """The label selector of every object this tool created for ``app_name``."""
    return f"{PART_OF}={truncate(app_name)},app.kubernetes.io/managed-by={MANAGED_BY}"
