"""Waiting for workloads, by the rules of ``kubectl rollout status``.

A Deployment is rolled out when the controller has observed its generation,
every replica is updated, no old replica is left, and every updated replica
is available. It has failed when its Progressing condition says
``ProgressDeadlineExceeded``, when its new pods crash-loop or cannot pull
their image, or when the wait times out.
"""

import time
from dataclasses import dataclass, field

BAD_WAITING_REASONS = {
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName",
    "CreateContainerError", "RunContainerError",
}  # fmt: skip
CRASH_RESTARTS = 3
POLL_SECONDS = 1.0


@dataclass
class WaitFailure(Exception):
    """A workload did not become ready; ``report`` lists pods, reasons and their last log lines."""

    what: str
    reason: str
    report: list = field(default_factory=list)

    def __str__(self):
        lines = [f"{self.what}: {self.reason}"]
        lines += [f"  {line}" for line in self.report]
        return "\n".join(lines)


def deployment_status(deployment):
    """(done, message) like kubectl rollout status; raises WaitFailure on a passed deadline."""
    meta, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status") or {}
    name = meta["name"]
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False, f"deployment {name}: waiting for the rollout to be observed"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            raise WaitFailure(f"deployment {name}", f"progress deadline exceeded ({condition.get('message', '')})")
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < replicas:
        return False, f"deployment {name}: {updated} of {replicas} new replicas updated"
    if total > updated:
        return False, f"deployment {name}: {total - updated} old replicas pending termination"
    if available < updated:
        return False, f"deployment {name}: {available} of {updated} updated replicas available"
    return True, f"deployment {name} successfully rolled out"


def statefulset_status(statefulset):
    meta, spec, status = statefulset["metadata"], statefulset.get("spec", {}), statefulset.get("status") or {}
    name = meta["name"]
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False, f"statefulset {name}: waiting for the update to be observed"
    replicas = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    if ready < replicas:
        return False, f"statefulset {name}: {ready} of {replicas} pods ready"
    if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
        return False, f"statefulset {name}: waiting for pods to move to revision {status['updateRevision']}"
    return True, f"statefulset {name}: {ready} pods ready"


def job_status(job):
    name = job["metadata"]["name"]
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return True, f"job {name} complete"
        if condition.get("type") == "Failed":
            raise WaitFailure(f"job {name}", f"failed: {condition.get('reason')}: {condition.get('message', '')}")
    return False, f"job {name}: running"


def cnpg_cluster_status(cluster):
    """A CloudNativePG Cluster is ready when the operator says so (condition Ready) with every instance ready."""
    meta, spec, status = cluster["metadata"], cluster.get("spec", {}), cluster.get("status") or {}
    name, instances = meta["name"], spec.get("instances", 1)
    ready = status.get("readyInstances", 0)
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if condition.get("status") == "True" and ready >= instances:
        return True, f"cluster {name}: {ready} instances ready, primary {status.get('currentPrimary', '?')}"
    return False, f"cluster {name}: {ready} of {instances} instances ready ({status.get('phase') or 'no status yet'})"


STATUS = {
    "Deployment": deployment_status,
    "StatefulSet": statefulset_status,
    "Job": job_status,
    "Cluster": cnpg_cluster_status,
}


def _selector(manifest):
    if manifest["kind"] == "Job":
        return f"job-name={manifest['metadata']['name']}"
    if manifest["kind"] == "Cluster":
        return f"cnpg.io/cluster={manifest['metadata']['name']}"
    labels = manifest.get("spec", {}).get("selector", {}).get("matchLabels", {})
    return ",".join(f"{k}={v}" for k, v in labels.items())


def pod_report(cluster, manifest, only_bad=True, log_lines=10):
    """Pods of a workload, why they are not ready, and their last log lines."""
    namespace = manifest["metadata"].get("namespace")
    pods = cluster.list("v1", "Pod", namespace, label_selector=_selector(manifest))
    lines = []
    for pod in pods[:5]:
        name = pod["metadata"]["name"]
        problems = []
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                problems.append(
                    f"container {container['name']}: {waiting['reason']} ({waiting.get('message', '')}), "
                    f"{container.get('restartCount', 0)} restarts"
                )
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Failed":
            problems.append("pod failed")
        if only_bad and not problems:
            continue
        lines.append(f"pod {name}: {'; '.join(problems) or phase}")
        log = cluster.pod_log(namespace, name, tail=log_lines).rstrip()
        lines += [f"    | {line}" for line in log.splitlines()[-log_lines:]]
        lines += [f"    event {e}" for e in cluster.events(namespace, name)[-3:]]
    return lines


def crash_looping(cluster, manifest):
    namespace = manifest["metadata"].get("namespace")
    for pod in cluster.list("v1", "Pod", namespace, label_selector=_selector(manifest)):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            reason = ((container.get("state") or {}).get("waiting") or {}).get("reason")
            if reason in BAD_WAITING_REASONS and (
                container.get("restartCount", 0) >= CRASH_RESTARTS or reason != "CrashLoopBackOff"
            ):
                return f"pod {pod['metadata']['name']} container {container['name']}: {reason}"
    return None


def wait_for(cluster, manifest, timeout, progress=None, interval=None):
    """Wait until ``manifest``'s workload is ready; raise :class:`WaitFailure` otherwise."""
    progress = progress or (lambda message: None)
    kind, meta = manifest["kind"], manifest["metadata"]
    check = STATUS[kind]
    what = f"{kind.lower()} {meta.get('namespace')}/{meta['name']}"
    deadline = time.monotonic() + timeout
    last = None
    polls = 0
    while True:
        live = cluster.get_manifest(manifest)
        if live is None:
            raise WaitFailure(what, "disappeared while waiting")
        try:
            done, message = check(live)
        except WaitFailure as failure:
            failure.report = pod_report(cluster, manifest, only_bad=kind != "Job")
            raise
        if message != last:
            progress(message)
            last = message
        if done:
            return message
        polls += 1
        if kind in ("Deployment", "StatefulSet") and polls % 3 == 0:
            crash = crash_looping(cluster, manifest)
            if crash:
                report = pod_report(cluster, manifest)
                raise WaitFailure(what, f"pods are failing ({crash})", report)
        if time.monotonic() > deadline:
            report = pod_report(cluster, manifest, only_bad=False)
            raise WaitFailure(what, f"not ready after {timeout:.0f} s (last state: {message})", report)
        time.sleep(POLL_SECONDS if interval is None else interval)
