"""Validate rendered manifests before anything is applied.

Two kinds of check:

- ``schema_problems``: every object against the Kubernetes OpenAPI schema of
  each supported version, in strict mode (unknown fields are errors), with
  ``kubernetes-validate``. An apiVersion the version does not serve (removed,
  or never existed) is an error; only custom resources of known operators may
  have no schema; those whose CRDs are vendored (``crds.py``: the External
  Secrets Operator's, CloudNativePG's Cluster) are validated strictly against them.
- ``policy_problems``: rules checkov does not know, in code: hostPath only in
  the logging DaemonSet, no literal secret-looking value, a default deny in
  every namespace, Pod Security "restricted" in the app namespace, CPU and
  memory requests and limits on every container, the stack fitting in each
  namespace's ResourceQuota and LimitRange and on the node group
  (``capacity.py``), and the wiring rule
  (``wiring.py``: names resolve, selectors select, the NetworkPolicies allow
  exactly the flows the stack needs).

Both return lists of sentences; an empty list means valid.
"""

import functools
import math
import re

from deploy.conf import SUPPORTED_KUBERNETES_VERSIONS, cpu_millis, memory_bytes
from deploy.k8s import capacity, cnpg, crds, wiring
from deploy.k8s.kinds import describe
from deploy.k8s.objects import containers as _containers
from deploy.k8s.objects import pod_spec
from deploy.k8s.objects import pods as _pods

# Custom resources whose schemas are not part of Kubernetes.
CUSTOM_RESOURCE_GROUPS = ("monitoring.coreos.com",)
_SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
_PSS_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


# --- schema ---------------------------------------------------------------


def _read_schemas_once():
    """kubernetes-validate reads and parses its schema files on every call, the 1.5 MB definitions included,
    which made validation ten times slower than checking. The files are package data that cannot change while
    the process runs: read each one once (about 30 MB for the four supported versions)."""
    from kubernetes_validate import utils

    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.cache(utils.schema_contents)


@functools.cache
def _schema_dir(desired):
    """kubernetes-validate's choice of strict schema folder for a Kubernetes version (``validate()``'s own
    steps), made once: the library lists its package's schema folder twice on every call to find it."""
    from kubernetes_validate import utils

    desired = desired.removeprefix("v")
    served = utils.all_versions()
    if utils.major_minor(desired) > served[-1]:
        raise utils.VersionNotSupportedError(version=utils.major_minor(desired))
    version = [v for v in served if utils.major_minor(v) <= utils.major_minor(desired)][-1]
    return f"v{version}-local-strict"


@functools.cache
def _schema_validator(schema_dir, kind, api_version):
    """The validator of one schema file, built once (``validate()`` builds a registry and a validator on every
    call); None if the version has no schema for the kind."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    _read_schemas_once()
    # The library's file name: the group's domain dropped, "/" made "-" (rbac.authorization.k8s.io/v1 -> rbac-v1).
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json", schema_dir)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", schema_dir)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _object_problems(manifest, versions):
    problems = []
    group = manifest.get("apiVersion", "").rpartition("/")[0]
    for version in versions:
        validator = _schema_validator(_schema_dir(version), manifest["kind"], manifest["apiVersion"])
        if validator is None:
            found = crds.problems(manifest)
            if found is not None:
                # A custom resource: its vendored CRD, the same for every Kubernetes version.
                problems.extend(f"{describe(manifest)} (CRD {manifest['apiVersion']}): {p}" for p in found)
                break
            if group in CUSTOM_RESOURCE_GROUPS:
                break
            problems.append(
                f"{describe(manifest)}: apiVersion {manifest.get('apiVersion')!r} kind {manifest.get('kind')!r} "
                f"is not served by Kubernetes {version} (removed or unknown)."
            )
            continue
        # The first error, as kubernetes-validate reports it (jsonschema's ``validate()``).
        for exc in validator.iter_errors(manifest):
            path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
            problems.append(f"{describe(manifest)} (Kubernetes {version}): {path}: {exc.message}")
            break
    return problems


# Results by (the object's repr, versions): a pure function of the object and package data, and the tests
# render the same stack hundreds of times in one process. Bounded: the oldest half goes when it is full.
_CHECKED = {}
_CHECKED_MAX = 4096


def schema_problems(manifests, versions=SUPPORTED_KUBERNETES_VERSIONS):
    import json

    versions = tuple(versions)
    problems = []
    for manifest in manifests:
        try:
            json.dumps(manifest, allow_nan=False)
        except (TypeError, ValueError):  # not JSON: as it is, uncached (it cannot be sent as it is either)
            problems += _object_problems(manifest, versions)
            continue
        # Keyed by repr, not by the JSON text: JSON makes a key 1 or None the string "1" or "null" and a tuple a
        # list, and the schema's verdict on the object as it is names them otherwise ("1 was unexpected", "is
        # not of type 'array'"). Of JSON's types, repr tells those apart, so the result depends on the key alone.
        key = (repr(manifest), versions)
        found = _CHECKED.get(key)
        if found is None:
            found = _CHECKED[key] = tuple(_object_problems(manifest, versions))
            if len(_CHECKED) > _CHECKED_MAX:
                for old in list(_CHECKED)[: _CHECKED_MAX // 2]:
                    _CHECKED.pop(old, None)
        problems += found
    return problems


# --- policy -------------------------------------------------------------------


def policy_problems(manifests, config):
    problems = []
    pods = list(_pods(manifests))
    problems += _host_paths(pods, config)
    problems += _secret_values(manifests, pods)
    problems += _default_deny(manifests, pods)
    problems += _pod_security(pods, config)
    problems += _container_resources(pods)
    problems += _resource_fit(manifests, pods, config)
    problems += _capacity(manifests, config)
    problems += wiring.wiring_problems(manifests, config)
    return problems


def _host_paths(pods, config):
    problems = []
    for manifest, _, spec in pods:
        allowed = manifest["kind"] == "DaemonSet" and manifest["metadata"].get("namespace") == config.logging_namespace
        for volume in spec.get("volumes", []):
            if "hostPath" in volume and not allowed:
                problems.append(
                    f"{describe(manifest)}: volume {volume.get('name')!r} is a hostPath; only the logging "
                    "DaemonSet may read the node's files."
                )
    return problems


def _secret_values(manifests, pods):
    problems = []
    for manifest, _, spec in pods:
        secret_mounts = _secret_mount_paths(spec)
        for container in _containers(spec):
            for item in container.get("env", []):
                name = item.get("name", "")
                if not _SECRET_LOOKING.search(name) or "secretKeyRef" in item.get("valueFrom", {}):
                    continue
                value = item.get("value", "")
                if name.endswith("_FILE") and any(value.startswith(path + "/") for path in secret_mounts):
                    continue
                problems.append(
                    f"{describe(manifest)}: container {container.get('name')!r} sets {name} without a Secret; "
                    "a secret-looking variable must come from a secretKeyRef or a file in a mounted Secret."
                )
    for manifest in manifests:
        if manifest.get("kind") != "ConfigMap":
            continue
        for key, value in (manifest.get("data") or {}).items():
            if _SECRET_LOOKING.search(key) and not (key.endswith("_FILE") and str(value).startswith("/run/secrets/")):
                problems.append(f"{describe(manifest)}: key {key} looks secret; secrets belong in a Secret.")
    return problems


def _secret_mount_paths(spec):
    secret_volumes = {v.get("name") for v in spec.get("volumes", []) if "secret" in v}
    return [
        mount["mountPath"].rstrip("/")
        for container in _containers(spec)
        for mount in container.get("volumeMounts", [])
        if mount.get("name") in secret_volumes
    ]


def _default_deny(manifests, pods):
    denied = set()
    for manifest in manifests:
        spec = manifest.get("spec", {})
        if (
            manifest.get("kind") == "NetworkPolicy"
            and spec.get("podSelector") == {}
            and {"Ingress", "Egress"} <= set(spec.get("policyTypes", []))
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            denied.add(manifest["metadata"].get("namespace"))
    return [
        f"{describe(manifest)}: namespace {manifest['metadata'].get('namespace')!r} has no default-deny NetworkPolicy."
        for manifest, _, _ in pods
        if manifest["metadata"].get("namespace") not in denied
    ]


def _pod_security(pods, config):
    """Pod Security Standards, "restricted" profile, for the app namespace."""
    problems = []
    for manifest, _, spec in pods:
        if manifest["metadata"].get("namespace") != config.namespace:
            continue
        where = describe(manifest)
        pod_ctx = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where}: {flag} is not allowed (restricted).")
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= _PSS_VOLUME_TYPES:
                problems.append(f"{where}: volume {volume.get('name')!r} of type {sorted(kinds)} is not allowed.")
        pod_seccomp = pod_ctx.get("seccompProfile", {}).get("type")
        for container in _containers(spec):
            ctx = container.get("securityContext", {})
            name = f"{where} container {container.get('name')!r}"
            if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
                problems.append(f"{name}: runAsNonRoot must be true.")
            if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
                problems.append(f"{name}: runAsUser must not be 0.")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation must be false.")
            if ctx.get("privileged"):
                problems.append(f"{name}: privileged is not allowed.")
            caps = ctx.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                problems.append(f"{name}: capabilities must drop ALL.")
            if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(f"{name}: only NET_BIND_SERVICE may be added.")
            if ctx.get("seccompProfile", {}).get("type", pod_seccomp) not in {"RuntimeDefault", "Localhost"}:
                problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost.")
            if any(port.get("hostPort") for port in container.get("ports", [])):
                problems.append(f"{name}: hostPort is not allowed.")
    return problems


# --- resources ---------------------------------------------------------------


def workload_count(manifest, manifests, node_count=1):
    """Most pods a workload can run at once, rollout surge included; a DaemonSet runs one per node."""
    kind, spec = manifest["kind"], manifest.get("spec", {})
    if kind in {"Job"}:
        return spec.get("parallelism", 1)
    if kind == "CronJob":
        job = spec.get("jobTemplate", {}).get("spec", {})
        runs = 1 if spec.get("concurrencyPolicy") in {"Forbid", "Replace"} else 2
        return runs * job.get("parallelism", 1)
    if kind == "DaemonSet":
        return node_count
    if cnpg.is_cluster(manifest):
        return cnpg.instance_count(manifest)
    replicas = spec.get("replicas", 1)
    for hpa in manifests:
        target = hpa.get("spec", {}).get("scaleTargetRef", {})
        if (
            hpa.get("kind") == "HorizontalPodAutoscaler"
            and target.get("kind") == kind
            and target.get("name") == (manifest["metadata"]["name"])
        ):
            replicas = hpa["spec"]["maxReplicas"]
    if kind == "Deployment" and spec.get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate":
        surge = spec.get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%")
        replicas += math.ceil(replicas * int(surge[:-1]) / 100) if isinstance(surge, str) else surge
    elif kind == "StatefulSet":
        replicas = spec.get("replicas", 1)
    return replicas


def stack_totals(manifests, node_count=1):
    """Worst-case sums over the stack, per namespace: the quota's resources (DaemonSets on ``node_count`` nodes)."""
    totals = {}
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace")
        sums = totals.setdefault(
            namespace,
            {"requests.cpu": 0, "limits.cpu": 0, "requests.memory": 0, "limits.memory": 0, "pods": 0, "storage": 0},
        )
        if manifest["kind"] == "PersistentVolumeClaim":
            sums["storage"] += memory_bytes(manifest["spec"]["resources"]["requests"]["storage"])
        if cnpg.is_cluster(manifest):
            sums["storage"] += cnpg.storage_bytes(manifest, memory_bytes)
        found = pod_spec(manifest)
        if not found:
            continue
        count = workload_count(manifest, manifests, node_count)
        sums["pods"] += count
        for claim in manifest.get("spec", {}).get("volumeClaimTemplates", []):
            sums["storage"] += count * memory_bytes(claim["spec"]["resources"]["requests"]["storage"])
        for container in _containers(found[1]):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                values = resources.get(part, {})
                sums[f"{part}.cpu"] += count * cpu_millis(str(values.get("cpu", "0")))
                sums[f"{part}.memory"] += count * memory_bytes(str(values.get("memory", "0")))
    return totals


def _container_resources(pods):
    """Every container, init containers included, states CPU and memory requests and limits (docs/policy.md)."""
    problems = []
    for manifest, _, spec in pods:
        for container in _containers(spec):
            resources = container.get("resources") or {}
            missing = [
                f"{part}.{resource}"
                for part in ("requests", "limits")
                for resource in ("cpu", "memory")
                if resource not in (resources.get(part) or {})
            ]
            if missing:
                problems.append(
                    f"{describe(manifest)} container {container.get('name')!r} states no {', '.join(missing)}: "
                    "every container must state CPU and memory requests and limits (docs/policy.md)."
                )
    return problems


def _capacity(manifests, config):
    nodes = capacity.configured_nodes(config)
    if nodes is None:
        return [
            f"Capacity: node_instance_type {config.node_instance_type!r} is not in the capacity table, so the "
            "stack cannot be checked against its nodes. Declare what one such node offers to pods with "
            "DEPLOY['node_allocatable_cpu'] and DEPLOY['node_allocatable_memory'] (DEPLOY_NODE_ALLOCATABLE_CPU, "
            "DEPLOY_NODE_ALLOCATABLE_MEMORY: the node's Allocatable in 'kubectl describe node'), or use one of "
            f"{', '.join(sorted(capacity.INSTANCE_TYPES))} (docs/policy.md)."
        ]
    return capacity.capacity_problems(manifests, nodes)


def _resource_fit(manifests, pods, config):
    problems = []
    # The quota is per namespace: a DaemonSet's pods on every node the group can grow to count.
    totals = stack_totals(manifests, config.node_count_max)
    for quota in (m for m in manifests if m["kind"] == "ResourceQuota"):
        namespace = quota["metadata"].get("namespace")
        hard = quota["spec"]["hard"]
        sums = totals.get(namespace, {})
        setting = {config.logging_namespace: "logging_quota", config.monitoring_namespace: "monitoring_quota"}.get(
            namespace, "quota_*"
        )
        checks = [
            ("requests.cpu", cpu_millis, lambda v: f"{v}m"),
            ("limits.cpu", cpu_millis, lambda v: f"{v}m"),
            ("requests.memory", memory_bytes, lambda v: f"{v / 2**20:.0f}Mi"),
            ("limits.memory", memory_bytes, lambda v: f"{v / 2**20:.0f}Mi"),
            ("requests.storage", memory_bytes, lambda v: f"{v / 2**30:.0f}Gi"),
            ("pods", int, str),
        ]
        for resource, parse, show in checks:
            if resource not in hard:
                continue
            used = sums.get("storage" if resource == "requests.storage" else resource, 0)
            if used > parse(str(hard[resource])):
                problems.append(
                    f"{describe(quota)}: the stack at its largest (autoscaler maximum, rollout surge, Jobs) needs "
                    f"{resource} {show(used)}, more than the quota's {hard[resource]}. Raise it in {setting} or "
                    "lower replicas_max or the pods' resources."
                )
    for limit_range in (m for m in manifests if m["kind"] == "LimitRange"):
        namespace = limit_range["metadata"].get("namespace")
        for item in limit_range["spec"]["limits"]:
            maximum = item.get("max", {})
            for manifest, _, spec in pods:
                if manifest["metadata"].get("namespace") != namespace:
                    continue
                for container in _containers(spec):
                    limits = container.get("resources", {}).get("limits", {})
                    for resource, parse in (("cpu", cpu_millis), ("memory", memory_bytes)):
                        if resource not in maximum or resource not in limits:
                            continue
                        if parse(str(limits[resource])) > parse(str(maximum[resource])):
                            problems.append(
                                f"{describe(manifest)} container {container.get('name')!r}: {resource} limit "
                                f"{limits[resource]} is above the LimitRange maximum {maximum[resource]}."
                            )
    return problems


def validate_manifests(manifests, config, versions=SUPPORTED_KUBERNETES_VERSIONS):
    """Schema problems first (each version), then policy problems."""
    return schema_problems(manifests, versions) + policy_problems(manifests, config)
