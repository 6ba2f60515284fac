"""An in-process fake Kubernetes API server, for testing k8s_deploy without a cluster.

It answers over real HTTP on 127.0.0.1, like kube-apiserver, where the deploy
tool depends on it:

- discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/{group}/{version}``
  (resources with ``namespaced``, ``verbs`` and subresources);
- server-side apply (``PATCH`` with ``application/apply-patch+yaml``): field
  ownership per ``fieldManager`` kept in ``metadata.managedFields``
  (``FieldsV1``), 409 ``Conflict`` with one cause per conflicting field unless
  ``force=true``, removal of fields a manager stops applying when no other
  manager owns them, ``dryRun=All``; ``resourceVersion`` and ``generation``
  move only when something changes;
- ``GET`` one object, ``LIST`` with equality label selectors and the
  ``involvedObject.name`` field selector, ``POST``, ``PUT`` with optimistic
  concurrency on ``resourceVersion``, ``DELETE``; errors shaped as ``Status``;
- pod logs (``/log?tailLines=``) and events;
- the service proxy (``GET .../services/NAME:PORT/proxy/PATH``): the Service must exist, name the port and
  select a ready pod; the request is then forwarded, with the client's headers (``Host`` included, as the
  real proxy keeps it), to the local HTTP server a test registered in ``service_backends[(namespace, name)]``,
  and its answer, status included, comes back as it is;
- a controller thread that advances status: Deployments roll out (or crash
  loop, or stay slow), StatefulSets and CloudNativePG Clusters become ready,
  Jobs complete (or fail),
  each with the pods, logs and events that a person would look at;
- injectable faults: a status code, a dropped connection or latency on a
  method and path, and bearer-token authentication (401) and forbidden
  verbs (403).

Simplifications, each one on purpose: lists are owned as a whole (the real
server merges associative lists by key), and there is no admission, no
defaulting beyond ``spec.replicas``, no watch.
"""

import copy
import itertools
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import yaml

# group, version, kind, plural, namespaced, subresources
RESOURCES = [
    ("", "v1", "Namespace", "namespaces", False, ["status"]),
    ("", "v1", "Node", "nodes", False, ["status"]),
    ("", "v1", "ServiceAccount", "serviceaccounts", True, []),
    ("", "v1", "ConfigMap", "configmaps", True, []),
    ("", "v1", "Secret", "secrets", True, []),
    ("", "v1", "Service", "services", True, ["status"]),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ["status"]),
    ("", "v1", "ResourceQuota", "resourcequotas", True, ["status"]),
    ("", "v1", "LimitRange", "limitranges", True, []),
    ("", "v1", "Pod", "pods", True, ["status", "log"]),
    ("", "v1", "Event", "events", True, []),
    ("apps", "v1", "Deployment", "deployments", True, ["status", "scale"]),
    ("apps", "v1", "StatefulSet", "statefulsets", True, ["status", "scale"]),
    ("apps", "v1", "DaemonSet", "daemonsets", True, ["status"]),
    ("batch", "v1", "Job", "jobs", True, ["status"]),
    ("batch", "v1", "CronJob", "cronjobs", True, ["status"]),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, []),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True, ["status"]),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ["status"]),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ["status"]),
    ("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ["status"]),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, []),
    ("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False, []),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, []),
    ("coordination.k8s.io", "v1", "Lease", "leases", True, []),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True, []),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, []),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, []),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, []),
    # The External Secrets Operator's CRDs, as a cluster where it is installed serves them.
    ("external-secrets.io", "v1", "SecretStore", "secretstores", True, ["status"]),
    ("external-secrets.io", "v1", "ExternalSecret", "externalsecrets", True, ["status"]),
    # CloudNativePG's CRD, as a cluster where its operator is installed serves it (``missing_groups`` hides it).
    ("postgresql.cnpg.io", "v1", "Cluster", "clusters", True, ["status", "scale"]),
    ("postgresql.cnpg.io", "v1", "ScheduledBackup", "scheduledbackups", True, ["status"]),
    # The Barman Cloud plugin's CRD (the cloudnative-pg mode's WAL archive).
    ("barmancloud.cnpg.io", "v1", "ObjectStore", "objectstores", True, ["status"]),
]
# kubectl's abbreviations (kubectl get deploy,sts,svc …), as the real server lists them in discovery.
SHORT_NAMES = {
    "namespaces": ["ns"], "serviceaccounts": ["sa"], "configmaps": ["cm"], "services": ["svc"],
    "persistentvolumeclaims": ["pvc"], "limitranges": ["limits"], "resourcequotas": ["quota"], "pods": ["po"],
    "events": ["ev"], "deployments": ["deploy"], "statefulsets": ["sts"], "daemonsets": ["ds"], "cronjobs": ["cj"],
    "networkpolicies": ["netpol"], "ingresses": ["ing"], "poddisruptionbudgets": ["pdb"],
    "horizontalpodautoscalers": ["hpa"], "storageclasses": ["sc"], "priorityclasses": ["pc"],
}  # fmt: skip
BY_PLURAL = {(g, p): (g, v, k, p, n, s) for g, v, k, p, n, s in RESOURCES}
PREFERRED = {"autoscaling": "v2"}


def now():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code, reason, message, causes=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.causes = code, reason, message, causes or []

    def status(self):
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.causes:
            body["details"] = {"causes": self.causes}
        return body


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the path
    status: int | None = None  # answer with this code
    drop: bool = False  # close the connection without an answer
    latency: float = 0.0
    times: int = 1
    body: str | None = None  # answer 200 (or ``status``) with this text instead: a proxy's page, say


# --- field ownership -----------------------------------------------------------


def leaf_paths(obj, prefix=()):
    """Paths of the leaves of an applied object; lists and empty maps count as leaves."""
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            yield from leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def get_path(obj, path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return KeyError
        obj = obj[key]
    return obj


def set_path(obj, path, value):
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
        if not isinstance(obj, dict):
            raise ApiError(422, "Invalid", f"field {'.'.join(path)} crosses a value")
    obj[path[-1]] = copy.deepcopy(value)


def del_path(obj, path):
    parents = []
    for key in path[:-1]:
        if not isinstance(obj, dict) or key not in obj:
            return
        parents.append((obj, key))
        obj = obj[key]
    if isinstance(obj, dict):
        obj.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop maps left empty
        if parent[key] == {}:
            del parent[key]
        else:
            break


def fields_v1(paths):
    tree = {}
    for path in paths:
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def paths_of_fields_v1(tree, prefix=()):
    if not tree:
        yield prefix
    for key, sub in tree.items():
        if key.startswith("f:"):
            yield from paths_of_fields_v1(sub, (*prefix, key[2:]))


IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def owned_paths(obj):
    owners = {}
    for entry in obj.get("metadata", {}).get("managedFields", []) or []:
        owners[entry["manager"]] = set(paths_of_fields_v1(entry.get("fieldsV1", {})))
    return owners


def _overlaps(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


# --- the server -----------------------------------------------------------------


class FakeApiServer:
    """Start with ``with FakeApiServer() as server:``; ``server.url`` is its address."""

    def __init__(self, token=None, tick=0.02, token_check=None, rollout_ticks=3, slow_rollout_ticks=10, job_ticks=3,
                 port=0):  # fmt: skip
        self.port = port
        self.token = token
        self.token_check = token_check  # a function of the Authorization header, instead of one fixed token
        # The controller's pace: it runs every ``tick`` seconds; a Deployment is ready after ``rollout_ticks``
        # runs (``slow_rollout_ticks`` in the "slow" scenario), a Job done after ``job_ticks``. Tests keep them
        # short; the training sandbox makes them human-sized.
        self.tick = tick
        self.rollout_ticks, self.slow_rollout_ticks, self.job_ticks = rollout_ticks, slow_rollout_ticks, job_ticks
        self.objects = {}  # (group, plural, namespace, name) -> object
        self.lock = threading.RLock()
        self.versions = itertools.count(1000)
        self.faults = []
        self.forbidden = set()  # (verb, plural)
        self.requests = []  # (method, path, query, headers)
        # "deployment/NAME", "image/IMAGE" or "job/COMPONENT" -> "ok" | "crashloop" | "deadline" | "slow" | "fail";
        # a Job in "hang" stays active until the scenario changes.
        self.scenarios = {}
        # API groups this cluster does not serve (a CRD not installed): absent from discovery, 404 on their paths.
        self.missing_groups = set()
        self.pod_logs = {}  # pod name -> text
        self.service_backends = {}  # (namespace, Service name) -> "http://127.0.0.1:PORT" the proxy forwards to
        self.job_logs = {}  # "operation/OPERATION" (app.kubernetes.io/operation) -> the log its Job's pod writes
        self._stop = threading.Event()
        for namespace in ("default", "kube-system", "kube-public"):  # as every cluster has them
            self.objects[("", "namespaces", None, namespace)] = {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            }  # fmt: skip

    # lifecycle
    def __enter__(self):
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._controller, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path, token=None):
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token or self.token or "unused"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # helpers for tests
    def get(self, kind_plural, name, namespace=None, group=None):
        group = group if group is not None else next(g for g, _, _, p, _, _ in RESOURCES if p == kind_plural)
        with self.lock:
            return copy.deepcopy(self.objects.get((group, kind_plural, namespace, name)))

    def list(self, plural, namespace=None):
        with self.lock:
            return [copy.deepcopy(o) for (g, p, ns, _), o in self.objects.items() if p == plural and ns == namespace]

    def applied_order(self):
        return [path for method, path, query, _ in self.requests if method == "PATCH" and "dryRun" not in query]

    # storage
    def _key(self, group, plural, namespace, name):
        return (group, plural, namespace, name)

    def _touch(self, obj, spec_changed):
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        if spec_changed:
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 0) + 1

    def _new_meta(self, obj):
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self.versions))

    def _namespace_must_exist(self, namespace):
        if namespace and ("", "namespaces", None, namespace) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')

    def server_side_apply(self, group, version, kind, plural, namespace, name, body, manager, force, dry_run):
        self._namespace_must_exist(namespace)
        if body.get("kind") != kind or body.get("metadata", {}).get("name") != name:
            raise ApiError(400, "BadRequest", "the name and kind of the body do not match the URL")
        if not manager:
            raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
        applied = copy.deepcopy(body)
        applied.pop("status", None)
        for key in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"):
            applied.get("metadata", {}).pop(key, None)
        key = self._key(group, plural, namespace, name)
        with self.lock:
            live = self.objects.get(key)
            created = live is None
            obj = (
                copy.deepcopy(live)
                if live
                else {"apiVersion": f"{group}/{version}".lstrip("/"), "kind": kind, "metadata": {"name": name}}
            )
            if namespace:
                obj["metadata"]["namespace"] = namespace
            owners = owned_paths(obj)
            new_paths = {p for p in leaf_paths(applied) if p and p not in IDENTITY}
            conflicts = []
            for other, paths in owners.items():
                if other == manager:
                    continue
                for path in paths:
                    for mine in new_paths:
                        if _overlaps(path, mine) and get_path(obj, mine) != get_path(applied, mine):
                            conflicts.append((other, mine))
            if conflicts and not force:
                causes = [
                    {
                        "type": "FieldManagerConflict",
                        "message": f'conflict with "{o}": .{".".join(p)}',
                        "field": "." + ".".join(p),
                    }
                    for o, p in conflicts
                ]
                raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s)", causes)
            before = copy.deepcopy(obj)
            for other, mine in conflicts:  # forced: the fields change hands
                owners[other] = {p for p in owners[other] if not _overlaps(p, mine)}
            previously = owners.get(manager, set())
            others = set().union(*[p for m, p in owners.items() if m != manager]) if owners else set()
            for path in previously - new_paths:
                if not any(_overlaps(path, o) for o in others):
                    del_path(obj, path)
            for path in new_paths:
                set_path(obj, path, get_path(applied, path))
            owners[manager] = new_paths
            obj["metadata"]["managedFields"] = [
                {
                    "manager": m,
                    "operation": "Apply",
                    "apiVersion": f"{group}/{version}".lstrip("/"),
                    "time": now(),
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(paths),
                }
                for m, paths in owners.items()
                if paths
            ]
            if kind == "Deployment" and created and "replicas" not in obj.get("spec", {}):
                obj["spec"]["replicas"] = 1
            changed = _content(obj) != _content(before)
            if created:
                self._new_meta(obj)
            elif changed:
                self._touch(obj, _spec(obj) != _spec(before))
            elif obj["metadata"]["managedFields"] != before["metadata"].get("managedFields"):
                obj["metadata"]["managedFields"] = before["metadata"].get("managedFields")
            if not dry_run:
                self.objects[key] = obj
            return copy.deepcopy(obj), 201 if created else 200

    def create(self, group, version, kind, plural, namespace, body, dry_run):
        self._namespace_must_exist(namespace)
        name = body.get("metadata", {}).get("name")
        key = self._key(group, plural, namespace, name)
        with self.lock:
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
            obj = copy.deepcopy(body)
            if namespace:
                obj["metadata"]["namespace"] = namespace
            self._new_meta(obj)
            if not dry_run:
                self.objects[key] = obj
            return copy.deepcopy(obj), 201

    def replace(self, group, plural, namespace, name, body):
        key = self._key(group, plural, namespace, name)
        with self.lock:
            live = self.objects.get(key)
            if live is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            wanted = body.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != live["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            obj = copy.deepcopy(body)
            for k in ("uid", "creationTimestamp", "generation", "managedFields"):
                if k in live["metadata"]:
                    obj["metadata"][k] = live["metadata"][k]
            self._touch(obj, _spec(obj) != _spec(live))
            self.objects[key] = obj
            return copy.deepcopy(obj), 200

    def delete(self, group, plural, namespace, name, dry_run):
        key = self._key(group, plural, namespace, name)
        with self.lock:
            obj = self.objects.get(key)
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            if not dry_run:
                del self.objects[key]
                uid = obj["metadata"].get("uid")
                for k, child in list(self.objects.items()):  # garbage collection of owned objects
                    if any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences", [])):
                        del self.objects[k]
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}, 200

    # the controller
    def _controller(self):
        while not self._stop.wait(self.tick):
            with self.lock:
                for (group, plural, namespace, name), obj in list(self.objects.items()):
                    if plural == "deployments":
                        self._deployment(obj, namespace, name)
                    elif plural == "statefulsets":
                        self._statefulset(obj)
                    elif plural == "clusters":
                        self._cnpg_cluster(obj)
                    elif plural == "jobs":
                        self._job(obj, namespace, name)

    def _scenario(self, key, default="ok"):
        return self.scenarios.get(key, default)

    def _deployment(self, obj, namespace, name):
        status = obj.setdefault("status", {})
        meta, spec = obj["metadata"], obj.get("spec", {})
        replicas = spec.get("replicas", 1)
        generation = meta.get("generation", 1)
        if status.get("observedGeneration") == generation and status.get("_settled"):
            return
        if status.get("observedGeneration") != generation:
            status.update(_settled=False, _ticks=0)
        ticks = status.setdefault("_ticks", 0) + 1
        status["_ticks"] = ticks
        status["observedGeneration"] = generation
        template = spec.get("template", {})
        pod_hash = _hash(template)
        scenario = self._scenario(f"deployment/{name}")
        for container in template.get("spec", {}).get("containers", []):
            scenario = self.scenarios.get(f"image/{container.get('image')}", scenario)
        status["replicas"] = replicas
        status["updatedReplicas"] = replicas
        if scenario == "crashloop":
            status.update(readyReplicas=0, availableReplicas=0, unavailableReplicas=replicas)
            self._pods(namespace, name, template, pod_hash, replicas, crash=True, owner=obj)
            status["conditions"] = [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            ]
            return
        if scenario == "deadline":
            status.update(readyReplicas=0, availableReplicas=0)
            status["conditions"] = [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{name}-{pod_hash}" has timed out progressing.',
                }
            ]
            self._pods(namespace, name, template, pod_hash, replicas, crash=False, ready=False, owner=obj)
            return
        needed = self.slow_rollout_ticks if scenario == "slow" else self.rollout_ticks
        if ticks < needed:
            status.update(readyReplicas=0, availableReplicas=0)
            return
        status.update(
            readyReplicas=replicas, availableReplicas=replicas, unavailableReplicas=0, _settled=True, _ticks=0
        )
        status["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ]
        self._pods(namespace, name, template, pod_hash, replicas, crash=False, owner=obj)

    def _pods(self, namespace, owner_name, template, pod_hash, count, crash, owner, ready=True):
        for (g, p, ns, n), pod in list(self.objects.items()):  # old pods go away
            if (
                p == "pods"
                and ns == namespace
                and pod["metadata"].get("_owner") == owner_name
                and (pod["metadata"]["labels"].get("pod-template-hash") != pod_hash)
            ):
                del self.objects[(g, p, ns, n)]
        for i in range(count):
            pod_name = f"{owner_name}-{pod_hash}-{i}"
            key = ("", "pods", namespace, pod_name)
            containers = template.get("spec", {}).get("containers", [])
            waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
            statuses = [
                {
                    "name": c["name"],
                    "image": c.get("image"),
                    "ready": ready and not crash,
                    "restartCount": 4 if crash else 0,
                    "state": waiting if crash else {"running": {"startedAt": now()}},
                }
                for c in containers
            ]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "_owner": owner_name,
                    "uid": str(uuid.uuid4()),
                    "labels": {**template.get("metadata", {}).get("labels", {}), "pod-template-hash": pod_hash},
                    "ownerReferences": [{"kind": owner["kind"], "name": owner_name, "uid": owner["metadata"]["uid"]}],
                    "resourceVersion": str(next(self.versions)),
                },
                "spec": template.get("spec", {}),
                "status": {"phase": "Running", "containerStatuses": statuses},
            }
            self.objects[key] = pod
            if crash:
                self.pod_logs[pod_name] = (
                    '{"level": "INFO", "message": "Booting worker"}\n'
                    '{"level": "ERROR", "message": "Traceback (most recent call last): ... '
                    'django.core.exceptions.ImproperlyConfigured: Set the SECRET_KEY environment variable"}\n'
                )
                self._event(namespace, "Pod", pod_name, "BackOff", "Back-off restarting failed container web")

    def _event(self, namespace, kind, name, reason, message):
        event_name = f"{name}.{reason.lower()}"
        key = ("", "events", namespace, event_name)
        if key not in self.objects:
            self.objects[key] = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": event_name, "namespace": namespace, "resourceVersion": str(next(self.versions))},
                "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
                "reason": reason,
                "message": message,
                "type": "Warning",
                "lastTimestamp": now(),
            }

    def _statefulset(self, obj):
        status = obj.setdefault("status", {})
        replicas = obj.get("spec", {}).get("replicas", 1)
        status.update(
            observedGeneration=obj["metadata"].get("generation", 1),
            replicas=replicas,
            readyReplicas=replicas,
            currentReplicas=replicas,
            updatedReplicas=replicas,
            availableReplicas=replicas,
            currentRevision="r1",
            updateRevision="r1",
        )

    def _cnpg_cluster(self, obj):
        """The CloudNativePG operator's status: every instance ready after ``rollout_ticks`` (no pods are made)."""
        status = obj.setdefault("status", {})
        instances, name = obj.get("spec", {}).get("instances", 1), obj["metadata"]["name"]
        ticks = status.get("_ticks", 0) + 1
        status["_ticks"] = ticks
        ready = ticks >= self.rollout_ticks and self._scenario(f"cluster/{name}") == "ok"
        status.update(
            instances=instances,
            readyInstances=instances if ready else 0,
            phase="Cluster in healthy state" if ready else "Setting up primary",
            currentPrimary=f"{name}-1",
            conditions=[{"type": "Ready", "status": "True" if ready else "False"}],
        )

    def _job(self, obj, namespace, name):
        status = obj.setdefault("status", {})
        if status.get("conditions"):
            return
        status["active"] = 1
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        if self._scenario(f"job/{component}") == "hang":
            return
        ticks = status.setdefault("_ticks", 0) + 1
        status["_ticks"] = ticks
        if ticks < self.job_ticks:
            return
        operation = obj["metadata"].get("labels", {}).get("app.kubernetes.io/operation")
        template = obj.get("spec", {}).get("template", {})
        pod_name = f"{name}-x{ticks}"
        labels = {**template.get("metadata", {}).get("labels", {}), "job-name": name}
        self.objects[("", "pods", namespace, pod_name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "ownerReferences": [{"kind": "Job", "name": name, "uid": obj["metadata"]["uid"]}],
                "resourceVersion": str(next(self.versions)),
            },
            "status": {"phase": "Succeeded"},
        }
        if f"operation/{operation}" in self.job_logs:
            self.pod_logs[pod_name] = self.job_logs[f"operation/{operation}"]
        status.pop("active")
        if self._scenario(f"job/{component}") == "fail":
            status.update(failed=1)
            status["conditions"] = [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
            self.objects[("", "pods", namespace, pod_name)]["status"]["phase"] = "Failed"
            self.pod_logs[pod_name] = (
                "Operations to perform:\n  Apply all migrations: catalog\nRunning migrations:\n"
                'django.db.utils.ProgrammingError: column "price" cannot be cast automatically to type numeric\n'
            )
            self._event(namespace, "Job", name, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        else:
            status.update(succeeded=1, completionTime=now())
            status["conditions"] = [{"type": "Complete", "status": "True"}]


def _content(obj):
    return {k: v for k, v in obj.items() if k != "status"} | {
        "metadata": {k: v for k, v in obj["metadata"].items() if k not in ("managedFields", "resourceVersion")}
    }


def _spec(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _hash(template):
    import hashlib

    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:8]


def _public(obj):
    """Hide the controller's bookkeeping (keys starting with _)."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_public(v) for v in obj]
    return obj


def _selects(selector, labels):
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


SERVICE_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<namespace>[^/]+)/services/(?:https?:)?(?P<name>[^/:]+)(?::(?P<port>[^/]+))?"
    r"/proxy(?P<path>/.*)?$"
)


@dataclass
class _Raw:
    """An answer passed through as it came (the service proxy's)."""

    data: bytes
    content_type: str


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, delayed ACKs add 40 ms to every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, code, body, content_type="application/json"):
        if isinstance(body, bytes):
            data = body
        else:
            data = body.encode() if isinstance(body, str) else json.dumps(_public(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:  # clients send apply patches as JSON, which is YAML; parse it as such first (much faster)
            return json.loads(raw)
        except ValueError:
            return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method):
        api = self.api
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api.requests.append((method, url.path, query, dict(self.headers)))
        body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
        for fault in list(api.faults):
            if fault.method in (method, "*") and re.search(fault.path, url.path) and fault.times > 0:
                fault.times -= 1
                if fault.latency:
                    time.sleep(fault.latency)
                if fault.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if fault.body is not None:
                    return self._send(fault.status or 200, fault.body, content_type="text/html")
                if fault.status:
                    reason = {422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(
                        fault.status, "Error"
                    )
                    return self._send(fault.status, ApiError(fault.status, reason, "injected fault").status())
        authorization = self.headers.get("Authorization") or ""
        if api.token_check is not None and not api.token_check(authorization):
            return self._send(401, ApiError(401, "Unauthorized", "Unauthorized").status())
        if api.token and authorization != f"Bearer {api.token}":
            return self._send(401, ApiError(401, "Unauthorized", "Unauthorized").status())
        try:
            code, payload = self._route(method, url.path, query, body)
        except ApiError as exc:
            return self._send(exc.code, exc.status())
        if isinstance(payload, _Raw):
            return self._send(code, payload.data, payload.content_type)
        if isinstance(payload, str):
            return self._send(code, payload, "text/plain")
        return self._send(code, payload)

    def _service_proxy(self, method, match, query):
        """Forward to the Service's registered backend, as the API server forwards to one ready endpoint."""
        api = self.api
        namespace, name, port, rest = match["namespace"], match["name"], match["port"], match["path"] or "/"
        if ("get", "services/proxy") in api.forbidden:
            raise ApiError(
                403,
                "Forbidden",
                f'services "{name}" is forbidden: User "system:serviceaccount:ci:deployer" cannot get resource '
                f'"services/proxy" in API group "" in the namespace "{namespace}"',
            )
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"this fake proxies GET only, not {method}")
        service = api.get("services", name, namespace)
        if service is None:
            raise ApiError(404, "NotFound", f'services "{name}" not found')
        ports = service["spec"].get("ports", [])
        if port and not any(port in (p.get("name"), str(p.get("port"))) for p in ports):
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}:{port}"')
        selector = service["spec"].get("selector") or {}
        ready = [
            pod
            for pod in api.list("pods", namespace)
            if selector
            and all(pod["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            and all(c.get("ready") for c in pod.get("status", {}).get("containerStatuses", [{}]))
        ]
        backend = api.service_backends.get((namespace, name))
        if not ready or backend is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        target = backend.rstrip("/") + rest + (f"?{urlencode(query)}" if query else "")
        skip = {"authorization", "connection", "content-length", "accept-encoding"}  # the proxy's own
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        try:
            with urllib.request.urlopen(urllib.request.Request(target, headers=headers), timeout=10) as response:
                return response.status, _Raw(response.read(), response.headers.get("Content-Type", "text/plain"))
        except urllib.error.HTTPError as error:
            return error.code, _Raw(error.read(), error.headers.get("Content-Type", "text/plain"))
        except OSError as error:
            raise ApiError(502, "BadGateway", f"error trying to reach service: {error}") from None

    def _route(self, method, path, query, body):
        api = self.api
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = {}
            for g, v, *_ in RESOURCES:
                if g and g not in api.missing_groups:
                    groups.setdefault(g, [])
                    if v not in groups[g]:
                        groups[g].append(v)
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {
                            "groupVersion": f"{g}/{PREFERRED.get(g, vs[0])}",
                            "version": PREFERRED.get(g, vs[0]),
                        },
                    }
                    for g, vs in groups.items()
                ],
            }
        listing = re.match(r"^/(?:api/(v1)|apis/([^/]+)/([^/]+))$", path)
        if listing:
            group, version = (listing.group(2) or ""), (listing.group(1) or listing.group(3))
            resources = []
            for g, v, kind, plural, namespaced, subs in RESOURCES:
                if g == group and v == version and g not in api.missing_groups:
                    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
                    resources.append(
                        {
                            "name": plural,
                            "singularName": kind.lower(),
                            "namespaced": namespaced,
                            "kind": kind,
                            "verbs": verbs,
                            "shortNames": SHORT_NAMES.get(plural, []),
                        }
                    )
                    for sub in subs:
                        resources.append(
                            {
                                "name": f"{plural}/{sub}",
                                "singularName": "",
                                "namespaced": namespaced,
                                "kind": kind,
                                "verbs": ["get", "patch", "update"],
                            }
                        )
            if not resources:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}".lstrip("/"),
                "resources": resources,
            }
        proxy = SERVICE_PROXY.match(path)
        if proxy:
            return self._service_proxy(method, proxy, query)
        match = PATH.match(path)
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group = match["group"] or ""
        version = match["core"] or match["version"]
        plural, namespace, name, sub = match["plural"], match["namespace"], match["name"], match["sub"]
        resource = BY_PLURAL.get((group, plural))
        if resource is None or group in api.missing_groups:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        _, _, kind, _, namespaced, _ = resource
        verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[method]
        if (verb, plural) in api.forbidden:
            who = "system:serviceaccount:ci:deployer"
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            api_group = f'in API group "{group}"' if group else 'in API group ""'
            raise ApiError(
                403,
                "Forbidden",
                f'{plural} is forbidden: User "{who}" cannot {verb} resource "{plural}" {api_group}{where}',
            )
        dry_run = query.get("dryRun") == "All"
        if sub == "log":
            text = api.pod_logs.get(name, "")
            tail = int(query.get("tailLines", 0) or 0)
            lines = text.splitlines(keepends=True)
            return 200, "".join(lines[-tail:] if tail else lines)
        if method == "GET" and name:
            obj = api.get(plural, name, namespace, group)
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural}{"." + group if group else ""} "{name}" not found')
            return 200, obj
        if method == "GET":
            items = [
                o
                for o in api.list(plural, namespace if namespaced else None)
                if _selects(query.get("labelSelector"), o["metadata"].get("labels", {}))
                and (
                    not query.get("fieldSelector")
                    or o.get("involvedObject", {}).get("name") == query["fieldSelector"].split("=", 1)[1]
                )
            ]
            return 200, {
                "kind": f"{kind}List",
                "apiVersion": f"{group}/{version}".lstrip("/"),
                "metadata": {"resourceVersion": str(next(api.versions))},
                "items": items,
            }
        if method == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            if "apply-patch" not in content_type:
                raise ApiError(415, "UnsupportedMediaType", f"this fake accepts only apply patches, not {content_type}")
            obj, code = api.server_side_apply(
                group,
                version,
                kind,
                plural,
                namespace,
                name,
                body,
                query.get("fieldManager"),
                query.get("force") in ("true", "True"),
                dry_run,
            )
            return code, obj
        if method == "POST":
            obj, code = api.create(group, version, kind, plural, namespace, body, dry_run)
        elif method == "PUT":
            obj, code = api.replace(group, plural, namespace, name, body)
        elif method == "DELETE":
            obj, code = api.delete(group, plural, namespace, name, dry_run)
        else:
            raise ApiError(405, "MethodNotAllowed", method)
        return code, obj


# --- the training sandbox: python -m tests.fake_apiserver ------------------------

SANDBOX_DIR = "build/sandbox"
# What the course's exercises provoke, by image: a release whose pods crash at start.
SANDBOX_SCENARIOS = {"image/django-app:broken": "crashloop"}
# What the on-demand Jobs of docs/runbooks.md print in the sandbox (it runs no container): two nightly backups
# for k8s_deploy --backups, and a verified restore for --restore. Without them --backups failed with "(no log)".
SANDBOX_JOB_LOGS = {
    "operation/list-backups": (
        "backup: app-20240701T030000Z.dump 183204\nbackup: app-20240702T030000Z.dump 184977\nbackups: listed\n"
    ),
    "operation/restore": (
        "restore: public.catalog_category dump=12 database=12\n"
        "restore: public.catalog_product dump=1200 database=1200\n"
        "restore: verified 2 table(s)\n"
    ),
}


def sandbox(port=0, tick=0.5, **pace):
    """A fake API server paced for people, with the course's scenarios.

    Returns the (not yet started) server; ``with`` it, then ``write_sandbox_files(server, directory)``.
    """
    # No token: kubectl sends none over plain HTTP, and the sandbox listens on 127.0.0.1 only.
    server = FakeApiServer(tick=tick, port=port, **pace)
    server.scenarios.update(SANDBOX_SCENARIOS)
    server.job_logs.update(SANDBOX_JOB_LOGS)
    return server


def write_sandbox_files(server, directory):
    """``kubeconfig`` and ``env.sh`` (KUBECONFIG, DEBUG and throwaway DEPLOY_* secrets), readable by the owner only."""
    import os
    import secrets
    from pathlib import Path

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = server.kubeconfig(directory / "kubeconfig")
    kubeconfig.chmod(0o600)
    env = directory / "env.sh"
    env.touch(mode=0o600)
    env.write_text(
        "# The training sandbox's settings: . build/sandbox/env.sh (throwaway values, for the sandbox only).\n"
        f"export KUBECONFIG={kubeconfig}\n"
        "export DEBUG=true\n"
        f"export DEPLOY_SECRET_KEY={secrets.token_urlsafe(40)}\n"
        f"export DEPLOY_POSTGRES_PASSWORD={secrets.token_urlsafe(16)}\n"
        f"export DEPLOY_REDIS_PASSWORD={secrets.token_urlsafe(16)}\n"
        f"export DEPLOY_POSTGRES_SUPERUSER_PASSWORD={secrets.token_urlsafe(16)}\n"
    )
    os.chmod(env, 0o600)
    return kubeconfig, env


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_apiserver",
        description=(
            "The training sandbox: a fake Kubernetes API server on 127.0.0.1, with the kubeconfig and environment "
            "the course's exercises use. It keeps everything in memory and stops with Ctrl-C. "
            "In another terminal: '. .venv/bin/activate; . build/sandbox/env.sh', then follow docs/training/."
        ),
    )
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (default: a free one).")
    parser.add_argument(
        "--dir", default=SANDBOX_DIR, help=f"Where to write kubeconfig and env.sh (default {SANDBOX_DIR})."
    )
    parser.add_argument("--tick", type=float, default=0.5, help="Seconds between two controller steps (default 0.5).")
    parser.add_argument(
        "--rollout-ticks", type=int, default=3, help="Controller steps until a Deployment is ready (default 3)."
    )
    parser.add_argument("--job-ticks", type=int, default=3, help="Controller steps until a Job ends (default 3).")
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="KEY=OUTCOME",
        help="Make a workload misbehave: KEY is image/IMAGE, deployment/NAME or job/COMPONENT; OUTCOME is "
        "crashloop, deadline, slow or fail (Jobs). Repeatable. Always on: image/django-app:broken=crashloop.",
    )
    args = parser.parse_args(argv)
    server = sandbox(port=args.port, tick=args.tick, rollout_ticks=args.rollout_ticks, job_ticks=args.job_ticks)
    for item in args.scenario:
        key, _, outcome = item.partition("=")
        if not outcome:
            parser.error(f"--scenario {item!r}: write KEY=OUTCOME, such as image/django-app:2.0=crashloop")
        server.scenarios[key] = outcome
    with server:
        kubeconfig, env = write_sandbox_files(server, args.dir)
        print(f"Training sandbox: a fake Kubernetes API server on {server.url}", flush=True)
        print(f"Its kubeconfig: {kubeconfig}")
        print(f"In another terminal, from the clone:  . .venv/bin/activate; . {env}")
        print("Then follow docs/training/. Ctrl-C stops the sandbox (and forgets everything).", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Sandbox stopped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
