"""Release history and the deploy lock, both kept in the cluster.

Each deploy records revision N as a Secret (``{app}-release-v{N}``) holding
the gzip-compressed manifest set and its metadata, so ``--history`` and
``--rollback`` work from any machine. Secret objects are left out of the
record on purpose: a rollback re-applies workloads and configuration, never
old credentials (which may have been rotated since).

The lock is a ``coordination.k8s.io/v1`` Lease: two deploys of the same app
never run at once; a lease older than its duration can be taken over.
"""

import base64
import contextlib
import getpass
import gzip
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from deploy.k8s import names
from deploy.k8s.client import ClusterError

RELEASE_LABEL = "deploy.django-k8s/release-of"
RELEASE_TYPE = "django-k8s-deploy/release.v1"
LEASE_SECONDS = 900


class LockHeld(Exception):
    """Another deploy holds the lock."""


@dataclass
class Release:
    revision: int
    image: str
    commit: str
    time: str
    user: str
    outcome: str
    note: str = ""
    manifests: list | None = None


def _now():
    return datetime.now(UTC)


def _stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def git_commit():
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _secret_name(app, revision):
    return names.truncate(f"{app}-release-v{revision}")


def encode_manifests(manifests):
    kept = [m for m in manifests if m["kind"] != "Secret"]
    return base64.b64encode(gzip.compress(json.dumps(kept, sort_keys=True).encode())).decode()


def decode_manifests(data):
    return json.loads(gzip.decompress(base64.b64decode(data)))


def history(cluster, app, namespace, with_manifests=False):
    secrets = cluster.list("v1", "Secret", namespace, label_selector=f"{RELEASE_LABEL}={names.truncate(app)}")
    releases = []
    for secret in secrets:
        meta = json.loads(base64.b64decode(secret["data"]["release.json"]))
        manifests = decode_manifests(secret["data"]["manifests"]) if with_manifests else None
        releases.append(Release(manifests=manifests, **meta))
    return sorted(releases, key=lambda r: r.revision)


def record(cluster, app, namespace, release, manifests):
    """Write (or update) the Secret of ``release``."""
    meta = {k: v for k, v in release.__dict__.items() if k != "manifests"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": RELEASE_TYPE,
        "metadata": {
            "name": _secret_name(app, release.revision),
            "namespace": namespace,
            "labels": {
                RELEASE_LABEL: names.truncate(app),
                "deploy.django-k8s/revision": str(release.revision),
                "app.kubernetes.io/managed-by": names.MANAGED_BY,
            },
        },
        "data": {
            "release.json": base64.b64encode(json.dumps(meta).encode()).decode(),
            "manifests": encode_manifests(manifests),
        },
    }
    cluster.apply(secret, force=True)


def set_outcome(cluster, app, namespace, revision, outcome, note=""):
    secret = cluster.get("v1", "Secret", _secret_name(app, revision), namespace)
    if secret is None:
        return
    meta = json.loads(base64.b64decode(secret["data"]["release.json"]))
    meta.update(outcome=outcome, note=note or meta.get("note", ""))
    release = Release(**meta)
    record(cluster, app, namespace, release, decode_manifests(secret["data"]["manifests"]))


def new_release(revision, image, outcome="pending", note=""):
    return Release(
        revision=revision,
        image=image,
        commit=git_commit(),
        time=_stamp(_now()),
        user=f"{getpass.getuser()}@{socket.gethostname()}",
        outcome=outcome,
        note=note,
    )


# --- the lock -------------------------------------------------------------


def _parse(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class DeployLock:
    """``with DeployLock(cluster, app, namespace) as lock:`` — ``lock.took_over`` says if a stale lock was taken."""

    def __init__(self, cluster, app, namespace, seconds=LEASE_SECONDS):
        self.cluster, self.namespace, self.seconds = cluster, namespace, seconds
        self.name = names.truncate(f"{app}-deploy-lock")
        self.holder = f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}"
        self.took_over = None

    def _body(self, resource_version=None):
        moment = _stamp(_now())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": names.MANAGED_BY}},
            "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": self.seconds, "acquireTime": moment,
                     "renewTime": moment},
        }  # fmt: skip
        if resource_version:
            body["metadata"]["resourceVersion"] = resource_version
        return body

    def acquire(self):
        live = self.cluster.get("coordination.k8s.io/v1", "Lease", self.name, self.namespace)
        if live is None:
            try:
                self.cluster.create(self._body())
            except ClusterError as exc:
                if exc.status == 409:
                    raise LockHeld(f"Another deploy took the lock {self.namespace}/{self.name} just now.") from None
                raise
            return self
        spec = live.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = spec.get("renewTime")
        duration = spec.get("leaseDurationSeconds") or self.seconds
        if holder and renewed:
            expires = _parse(renewed) + timedelta(seconds=duration)
            if expires > _now():
                raise LockHeld(
                    f"Another deploy holds the lock {self.namespace}/{self.name}: {holder}, since "
                    f"{spec.get('acquireTime', renewed)}; it expires at {_stamp(expires)} unless renewed. "
                    "Wait for it to finish; if it died, the lock can be taken once it has expired."
                )
            self.took_over = f"{holder} (expired at {_stamp(expires)})"
        try:
            self.cluster.replace(self._body(live["metadata"]["resourceVersion"]))
        except ClusterError as exc:
            if exc.status == 409:
                raise LockHeld(f"Another deploy took the lock {self.namespace}/{self.name} just now.") from None
            raise
        return self

    def release(self):
        live = self.cluster.get("coordination.k8s.io/v1", "Lease", self.name, self.namespace)
        if live and (live.get("spec") or {}).get("holderIdentity") == self.holder:
            self.cluster.delete("coordination.k8s.io/v1", "Lease", self.name, self.namespace)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        with contextlib.suppress(ClusterError):  # the lease expires by itself
            self.release()
