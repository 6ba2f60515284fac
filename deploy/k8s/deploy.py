"""One deploy, in the order that keeps the running app safe.

1. The Namespace, then the lock (a Lease).
2. Configuration and data services (everything up to the workloads), then
   wait until PostgreSQL and Redis are ready.
3. The migration Job with the new image; wait for it. If it fails, its log
   tail and events are reported and the running Deployment is not touched.
4. The app workloads and autoscaling; wait for the rollout. If it fails, the
   last successful revision is applied again (automatic rollback).
5. Prune: objects of this release that the render no longer contains.
6. Record the revision in the cluster.

Every apply is a server-side apply with one field manager, so running the
same deploy twice changes nothing.
"""

import difflib
from dataclasses import dataclass, field

from deploy.k8s import kinds, names
from deploy.k8s.client import ClusterError, NotServed
from deploy.k8s.releases import DeployLock, history, new_release, record, set_outcome
from deploy.k8s.render import dump_yaml
from deploy.k8s.rollout import WaitFailure, wait_for

DATA_COMPONENTS = {"postgres", "redis"}
# Custom resources the render may hold, and how a person installs what serves them (docs/high-availability.md).
OPERATOR_INSTALL = {
    "postgresql.cnpg.io": (
        "the CloudNativePG operator 1.30.0: kubectl apply --server-side -f https://raw.githubusercontent.com/"
        "cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml (docs/high-availability.md)"
    ),
    "barmancloud.cnpg.io": (
        "the Barman Cloud plugin 0.14.0 in the operator's namespace (it needs cert-manager): kubectl apply -f "
        "https://github.com/cloudnative-pg/plugin-barman-cloud/releases/download/v0.14.0/manifest.yaml "
        "(docs/high-availability.md)"
    ),
}


def unserved_kinds(cluster, manifests):
    """Sentences naming each kind of ``manifests`` the cluster does not serve (a CRD not installed), and the fix."""
    problems = []
    for api_version, kind in dict.fromkeys((m["apiVersion"], m["kind"]) for m in manifests):
        try:
            cluster.resource(api_version, kind)
        except NotServed:
            group = api_version.rpartition("/")[0]
            install = OPERATOR_INSTALL.get(group)
            problems.append(
                f"the cluster does not serve {kind} ({api_version}): "
                + (f"install {install}." if install else "is the API enabled, or the CRD installed?")
            )
    return problems


class DeployFailed(Exception):
    """The deploy stopped; ``report`` says what was applied and what went wrong."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclass
class DeployReport:
    revision: int | None = None
    objects: list = field(default_factory=list)  # {"object": ..., "result": created|configured|unchanged}
    pruned: list = field(default_factory=list)
    waits: list = field(default_factory=list)
    outcome: str = "pending"
    rolled_back_to: int | None = None
    lock_taken_over: str | None = None
    diffs: list = field(default_factory=list)

    @property
    def changed(self):
        return [o for o in self.objects if o["result"] != "unchanged"]

    def as_dict(self):
        return {
            "revision": self.revision,
            "outcome": self.outcome,
            "objects": self.objects,
            "changed": len(self.changed),
            "pruned": self.pruned,
            "waits": self.waits,
            "rolled_back_to": self.rolled_back_to,
            "lock_taken_over": self.lock_taken_over,
        }


def phases(manifests):
    """(configuration and data services, migration jobs, app workloads) in rank order."""
    jobs = [m for m in manifests if m["kind"] == "Job" and names.component(m) == "migrate"]
    late_kinds = {"CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "DaemonSet", "Job"}
    late = [
        m
        for m in manifests
        if m not in jobs
        and (
            m["kind"] in late_kinds
            or (m["kind"] in {"Deployment", "StatefulSet"} and names.component(m) not in DATA_COMPONENTS)
        )
    ]
    early = [m for m in manifests if m not in jobs and m not in late]
    return early, jobs, late


def _clean(obj):
    """An object as a person compares it: no server bookkeeping."""
    obj = {k: v for k, v in obj.items() if k != "status"}
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in {"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink"}
    }
    return {**obj, "metadata": meta}


def _unchanged(before, after):
    return before is not None and before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion")


class Deployer:
    def __init__(self, cluster, config, *, timeout=600, wait=True, prune_volumes=False, force_conflicts=False,
                 progress=None, poll_interval=None):  # fmt: skip
        self.cluster, self.config = cluster, config
        self.poll_interval = poll_interval  # seconds between two looks at a workload (rollout.POLL_SECONDS if None)
        self.timeout, self.wait, self.prune_volumes = timeout, wait, prune_volumes
        self.force_conflicts = force_conflicts
        self.progress = progress or (lambda message: None)
        self.report = DeployReport()
        self.previous = {}  # what the last recorded revision applied, by (kind, namespace, name)
        self.earlier_kinds = set()  # (apiVersion, kind) of what every recorded revision applied: listed to prune

    # --- apply --------------------------------------------------------------

    def apply_one(self, manifest, dry_run=False):
        before = self.cluster.get_manifest(manifest)
        try:
            after = self.cluster.apply(manifest, dry_run=dry_run, force=self.force_conflicts)
        except ClusterError as exc:
            if exc.status != 409:
                raise
            foreign = self._foreign_conflicts(before, exc.causes, self.previous.get(kinds.key(manifest)))
            if foreign:
                raise ClusterError(
                    f"{exc} Fields this tool never managed are owned by another manager: {'; '.join(foreign)}. "
                    "Remove that manager's edit, or rerun with --force-conflicts to take them over.",
                    409,
                    exc.causes,
                ) from None
            # Every conflicting field was ours before someone changed it: take it back.
            after = self.cluster.apply(manifest, dry_run=dry_run, force=True)
        if before is None:
            result = "created"
        elif dry_run:
            result = "unchanged" if _clean(before) == _clean(after) else "configured"
        else:
            result = "unchanged" if _unchanged(before, after) else "configured"
        self.report.objects.append({"object": kinds.describe(manifest), "result": result})
        if result != "unchanged":
            self.progress(f"{kinds.describe(manifest)} {result}{' (dry run)' if dry_run else ''}")
        return after

    def _foreign_conflicts(self, live, causes, previous=None):
        """The conflict causes on fields this tool did not apply before.

        "Ours" is what the last revision applied (another manager's update takes a
        field's ownership away, so managedFields alone would forget it) and what our
        field manager still owns.
        """
        ours = {p for p in _leaf_paths(previous) if p} if previous else set()
        for entry in (live or {}).get("metadata", {}).get("managedFields") or []:
            if entry.get("manager") == self.cluster.field_manager:
                ours |= set(_field_paths(entry.get("fieldsV1") or {}))
        foreign = []
        for cause in causes or [{"field": "(unknown)", "message": "conflict"}]:
            path = _cause_path(cause.get("field", ""))
            if not any(path[: len(mine)] == mine or mine[: len(path)] == path for mine in ours if mine):
                foreign.append(cause.get("message") or cause.get("field", ""))
        return foreign

    def apply_all(self, manifests, dry_run=False):
        for manifest in sorted(manifests, key=kinds.sort_key):
            self.apply_one(manifest, dry_run=dry_run)

    def wait_all(self, manifests):
        if not self.wait:
            return
        for manifest in manifests:
            # Only the migration Job gates a deploy; other Jobs (the EFK setup) retry on their own. A CloudNativePG
            # Cluster is waited for like the StatefulSet it replaces: the migration Job needs its primary.
            if manifest["kind"] in {"Deployment", "StatefulSet", "Cluster"} or (
                manifest["kind"] == "Job" and names.component(manifest) == "migrate"
            ):
                message = wait_for(self.cluster, manifest, self.timeout, self.progress, interval=self.poll_interval)
                self.report.waits.append(message)

    # --- the whole deploy -----------------------------------------------------

    def deploy(self, manifests, rollback_of=None):
        config = self.config
        namespace_manifest = [
            m for m in manifests if m["kind"] == "Namespace" and m["metadata"]["name"] == config.namespace
        ]
        try:
            # A kind the cluster does not serve would stop the deploy half-way: refused before anything is applied.
            missing = unserved_kinds(self.cluster, manifests)
            if missing:
                raise DeployFailed(f"Nothing was applied: {'; '.join(missing)}", self.report)
            self.apply_all(namespace_manifest)
            with DeployLock(self.cluster, config.app_name, config.namespace) as lock:
                self.report.lock_taken_over = lock.took_over
                if lock.took_over:
                    self.progress(f"took over a stale deploy lock from {lock.took_over}")
                return self._deploy_locked(manifests, rollback_of)
        except ClusterError as exc:
            applied = [o["object"] for o in self.report.objects]
            raise DeployFailed(
                f"{exc} Applied before the failure: {len(applied)} of {len(manifests)} objects"
                f"{' (last: ' + applied[-1] + ')' if applied else ''}. Rerun k8s_deploy: applying is idempotent "
                "and converges.",
                self.report,
            ) from None

    def _deploy_locked(self, manifests, rollback_of):
        config = self.config
        releases = history(self.cluster, config.app_name, config.namespace, with_manifests=True)
        revision = max((r.revision for r in releases), default=0) + 1
        if releases:
            self.previous = {kinds.key(m): m for m in releases[-1].manifests or []}
        self.earlier_kinds = _kinds_of(releases)
        self.report.revision = revision
        note = f"rollback to revision {rollback_of}" if rollback_of else ""
        # A rollback applies the target revision's manifests, so its record names the target's image, not the
        # one today's settings would render (else --history says one image while the cluster runs another).
        image = next((r.image for r in releases if r.revision == rollback_of), config.image)
        record(self.cluster, config.app_name, config.namespace, new_release(revision, image, note=note), manifests)
        try:
            return self._run_phases(manifests, rollback_of, releases, revision, note)
        except KeyboardInterrupt:
            # Ctrl-C: the revision says so (not "pending" forever), the lock is released on the way out, and the
            # operator is told what stays applied and how to converge, not shown a traceback.
            set_outcome(self.cluster, config.app_name, config.namespace, revision, "interrupted", "Ctrl-C")
            self.report.outcome = "interrupted"
            applied = [o["object"] for o in self.report.objects]
            raise DeployFailed(
                f"Interrupted (Ctrl-C): revision {revision} is recorded as interrupted. What was applied stays "
                f"applied ({len(applied)} of {len(manifests)} objects"
                f"{', last: ' + applied[-1] if applied else ''}); the running app is as the last phase left it. "
                "Rerun k8s_deploy to converge, or k8s_deploy --rollback.",
                self.report,
            ) from None

    def _run_phases(self, manifests, rollback_of, releases, revision, note):
        config = self.config
        early, jobs, late = phases([m for m in manifests if m["kind"] != "Namespace"])
        early = [m for m in manifests if m["kind"] == "Namespace" and m["metadata"]["name"] != config.namespace] + early
        if rollback_of:
            jobs = []  # an old release's migrations are not run again
        self.apply_all(early)
        self._wait_or_stop(
            [m for m in early if names.component(m) in DATA_COMPONENTS],
            revision,
            "PostgreSQL or Redis did not become ready; the app was not touched.",
        )
        if jobs:
            self.apply_all(jobs)
            self._wait_or_stop(jobs, revision, "The migration Job failed; the running Deployment was not touched.")
        self.apply_all(late)
        try:
            self.wait_all(late)
        except WaitFailure as failure:
            return self._roll_back(revision, releases, failure)
        self.prune(manifests)
        outcome = "deployed" if self.wait else "applied"
        set_outcome(self.cluster, config.app_name, config.namespace, revision, outcome, note)
        for previous in releases:
            if previous.outcome == "deployed":
                set_outcome(self.cluster, config.app_name, config.namespace, previous.revision, "superseded")
        self.report.outcome = outcome
        return self.report

    def _wait_or_stop(self, manifests, revision, sentence):
        """Wait for ``manifests``; on failure record the revision as failed and stop, before the app is touched."""
        try:
            self.wait_all(manifests)
        except WaitFailure as failure:
            set_outcome(self.cluster, self.config.app_name, self.config.namespace, revision, "failed", sentence)
            self.report.outcome = "failed"
            raise DeployFailed(f"{sentence}\n{failure}", self.report) from None

    def _roll_back(self, revision, releases, failure):
        config = self.config
        set_outcome(self.cluster, config.app_name, config.namespace, revision, "failed", str(failure).splitlines()[0])
        self.report.outcome = "failed"
        good = [r for r in releases if r.outcome == "deployed"]
        if not good:
            raise DeployFailed(
                f"The rollout failed and there is no earlier successful revision to roll back to.\n{failure}",
                self.report,
            )
        target = good[-1].revision
        manifests = good[-1].manifests  # the releases were read with their manifests
        self.progress(f"rollout failed: rolling back to revision {target}")
        _, _, late = phases(manifests)
        self.apply_all(late)
        try:
            self.wait_all(late)
        except WaitFailure as second:
            raise DeployFailed(
                f"The rollout failed, and so did the rollback to revision {target}.\n{failure}\n{second}", self.report
            ) from None
        set_outcome(self.cluster, config.app_name, config.namespace, revision, "rolled-back", f"to revision {target}")
        self.report.outcome = "rolled-back"
        self.report.rolled_back_to = target
        raise DeployFailed(
            f"The rollout of revision {revision} failed and was rolled back to revision {target}.\n{failure}",
            self.report,
        )

    # --- prune ------------------------------------------------------------------

    def live_release_objects(self, api_kinds):
        config = self.config
        selector = names.release_selector(config.app_name)
        namespaces = [config.namespace, config.monitoring_namespace, config.logging_namespace]
        found = []
        for api_version, kind in sorted(api_kinds, key=lambda k: kinds.rank(k[1])):
            try:
                self.cluster.resource(api_version, kind)
            except ClusterError:
                continue  # a custom resource this cluster does not serve: nothing of it to prune
            for namespace in [None] if kinds.cluster_scoped(kind) else namespaces:
                for item in self.cluster.list(api_version, kind, namespace, label_selector=selector):
                    found.append({"apiVersion": api_version, "kind": kind, "metadata": item["metadata"]})
        return found

    def prune(self, manifests, dry_run=False):
        api_kinds = {(m["apiVersion"], m["kind"]) for m in manifests} | set(kinds.PRUNABLE) | self.earlier_kinds
        rendered = {kinds.key(m) for m in manifests}
        stateful = {m["metadata"]["name"] for m in manifests if m["kind"] == "StatefulSet"}
        for obj in sorted(self.live_release_objects(api_kinds), key=kinds.sort_key, reverse=True):
            meta = obj["metadata"]
            if (
                kinds.key(obj) in rendered
                or obj["kind"] in kinds.NEVER_PRUNED
                or names.OPERATION in (meta.get("labels") or {})
            ):
                continue
            if obj["kind"] == "StorageClass":
                # Cluster-wide; a volume bound to it needs it to grow, and the render's claims may still name it.
                self.progress(f"kept {kinds.describe(obj)} (a StorageClass is never pruned: delete it by hand)")
                continue
            if obj["kind"] == "Cluster" and not self.prune_volumes:
                # Deleting a CloudNativePG Cluster deletes its data volumes (the operator owns them).
                self.progress(f"kept {kinds.describe(obj)} (its data volumes go with it: only with --prune-volumes)")
                continue
            if obj["kind"] == "PersistentVolumeClaim":
                owned_by_live_statefulset = any(meta["name"].startswith(f"data-{s}-") for s in stateful)
                if not self.prune_volumes or owned_by_live_statefulset:
                    self.progress(f"kept {kinds.describe(obj)} (volumes are pruned only with --prune-volumes)")
                    continue
            if not dry_run:
                self.cluster.delete(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
            self.report.pruned.append(kinds.describe(obj))
            self.progress(f"{kinds.describe(obj)} pruned{' (dry run)' if dry_run else ''}")

    # --- dry run and diff -----------------------------------------------------------

    def _new_namespaces(self, manifests):
        """Rendered namespaces that do not exist yet: the server cannot dry-run objects into them."""
        rendered = {m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"}
        return {ns for ns in rendered if self.cluster.get("v1", "Namespace", ns) is None}

    def dry_run(self, manifests):
        new = self._new_namespaces(manifests)
        for manifest in sorted(manifests, key=kinds.sort_key):
            if manifest["metadata"].get("namespace") in new:
                self.report.objects.append({"object": kinds.describe(manifest), "result": "created"})
                continue
            self.apply_one(manifest, dry_run=True)
        if self.config.namespace not in new:
            releases = history(self.cluster, self.config.app_name, self.config.namespace, with_manifests=True)
            self.earlier_kinds = _kinds_of(releases)
            self.prune(manifests, dry_run=True)
        self.report.outcome = "dry-run"
        return self.report

    def diff(self, manifests):
        new = self._new_namespaces(manifests)
        for manifest in sorted(manifests, key=kinds.sort_key):
            live = self.cluster.get_manifest(manifest)
            name = kinds.describe(manifest)
            if live is None:
                after = manifest
                before_text = ""
            else:
                if manifest["metadata"].get("namespace") in new:
                    after = manifest
                else:
                    after = self.cluster.apply(manifest, dry_run=True, force=True)
                before_text = dump_yaml(_clean(live), sort_keys=True)
            after_text = dump_yaml(_clean(after), sort_keys=True)
            if before_text != after_text:
                diff = "".join(
                    difflib.unified_diff(
                        before_text.splitlines(keepends=True),
                        after_text.splitlines(keepends=True),
                        fromfile=f"live/{name}",
                        tofile=f"rendered/{name}",
                    )
                )
                self.report.diffs.append(_redact_secret_diff(manifest, diff))
        self.report.outcome = "diff"
        return self.report


def _kinds_of(releases):
    return {(m["apiVersion"], m["kind"]) for release in releases for m in release.manifests or []}


def _leaf_paths(obj, prefix=()):
    """Paths of an applied object's leaves; a list is one leaf."""
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def _field_paths(fields, prefix=()):
    """Paths of a FieldsV1 tree, by field names only (list item keys dropped)."""
    if not fields:
        yield prefix
    for key, sub in fields.items():
        if key.startswith("f:"):
            yield from _field_paths(sub, (*prefix, key[2:]))
        elif key.startswith(("k:", "v:", "i:")):
            yield from _field_paths(sub, prefix)
        elif key == ".":
            yield prefix


def _cause_path(field):
    """'.spec.template.spec.containers[name="web"].image' -> ('spec', ..., 'containers', 'image')."""
    import re

    return tuple(part for part in re.sub(r"\[[^\]]*\]", "", field).split(".") if part)


def _redact_secret_diff(manifest, diff):
    """A Secret's diff says which keys changed, never their values."""
    if manifest["kind"] != "Secret":
        return diff
    changed = sorted(
        {
            line[1:].strip().split(":", 1)[0]
            for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].startswith("  ") and ":" in line
        }
    )
    name = kinds.describe(manifest)
    return f"--- live/{name}\n+++ rendered/{name}\n(values hidden) changed: {', '.join(changed)}\n"
