"""Reading rendered objects: their pod templates, containers and label selectors (names: ``kinds.describe``).

Shared by the policy checks (``validate.py``) and the wiring rule (``wiring.py``),
so that both answer "which pods does this select" the same way.
"""

from deploy.k8s import cnpg


def pod_spec(manifest):
    """The pod template's (metadata, spec) of a workload, or None."""
    kind, spec = manifest.get("kind"), manifest.get("spec", {})
    if kind == "Pod":
        return manifest.get("metadata", {}), spec
    if cnpg.is_cluster(manifest):
        return cnpg.instance_pod(manifest)  # the operator's pods, as it makes them
    if kind == "CronJob":
        template = spec.get("jobTemplate", {}).get("spec", {}).get("template")
    elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        template = spec.get("template")
    else:
        return None
    return (template or {}).get("metadata", {}), (template or {}).get("spec", {})


def containers(spec):
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def pods(manifests):
    """(workload manifest, pod labels, pod spec) of every pod template."""
    for manifest in manifests:
        found = pod_spec(manifest)
        if found:
            yield manifest, found[0].get("labels", {}), found[1]


def selects(selector, labels):
    """Whether a Service-style selector (a plain mapping) selects ``labels``; an empty one selects nothing."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector, labels):
    """Whether a LabelSelector (matchLabels, matchExpressions) matches ``labels``; ``{}`` matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
