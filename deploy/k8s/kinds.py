"""What the tooling knows about each Kubernetes kind: the one home of these facts.

- the apply rank (server-side apply goes rank by rank; prune and delete go backwards), and the sort key of a
  manifest (also the rank prefix of the files ``render.write_manifests`` writes);
- which kinds are cluster-scoped;
- which kinds a deploy lists to prune (besides the kinds of the render) and which it never prunes;
- how an object is named in messages (:func:`describe`) and identified (:func:`key`).
"""

# Apply order, rank by rank.
RANKS = (
    ("Namespace",),
    ("ResourceQuota", "LimitRange", "PriorityClass"),
    ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"),
    ("ConfigMap", "Secret", "SecretStore", "ExternalSecret", "ObjectStore"),
    ("StorageClass", "PersistentVolumeClaim"),
    ("NetworkPolicy",),
    ("Service",),
    ("StatefulSet", "Cluster"),
    ("Job",),
    ("Deployment", "DaemonSet", "CronJob", "ScheduledBackup"),
    ("Ingress", "PodDisruptionBudget", "HorizontalPodAutoscaler"),
)
RANK = {kind: rank for rank, kinds in enumerate(RANKS) for kind in kinds}
LAST_RANK = len(RANKS)  # a kind not listed goes after every listed one

CLUSTER_SCOPED = frozenset({"Namespace", "StorageClass", "PriorityClass", "ClusterRole", "ClusterRoleBinding"})

# The kinds a deploy lists by release label to prune, whether or not today's render has any (an earlier render may
# have: a PriorityClass no longer set, a mode that no longer renders a Cluster): every kind the templates can make
# but the Namespace, which is never pruned (tests/test_k8s_kinds.py renders every mode to prove it). A deploy also
# lists the kinds its earlier revisions applied, for a project's own templates. Of what it finds, deploy.py keeps a
# StorageClass (cluster-wide, and a volume bound to it needs it to grow), and a PersistentVolumeClaim or a
# CloudNativePG Cluster but with --prune-volumes (their data goes with them).
PRUNABLE = (
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"), ("v1", "ResourceQuota"), ("v1", "LimitRange"),
    ("scheduling.k8s.io/v1", "PriorityClass"), ("storage.k8s.io/v1", "StorageClass"),
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job"),
    ("batch/v1", "CronJob"), ("networking.k8s.io/v1", "NetworkPolicy"), ("networking.k8s.io/v1", "Ingress"),
    ("policy/v1", "PodDisruptionBudget"), ("autoscaling/v2", "HorizontalPodAutoscaler"), ("apps/v1", "DaemonSet"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"),
    ("external-secrets.io/v1", "SecretStore"), ("external-secrets.io/v1", "ExternalSecret"),
    ("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
)  # fmt: skip
NEVER_PRUNED = frozenset({"Namespace"})


def rank(kind):
    return RANK.get(kind, LAST_RANK)


def sort_key(manifest):
    """Apply order: rank, then namespace, kind and name, so that a render is always in the same order."""
    meta = manifest["metadata"]
    return (rank(manifest["kind"]), meta.get("namespace", ""), manifest["kind"], meta["name"])


def cluster_scoped(kind):
    return kind in CLUSTER_SCOPED


def describe(manifest):
    """``Kind namespace/name`` (``Kind name`` when cluster-scoped), as messages name an object."""
    meta = manifest.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{manifest.get('kind')} {where}{meta.get('name')}"


def key(manifest):
    """``(kind, namespace, name)``: what identifies an object among a render's and a cluster's."""
    meta = manifest["metadata"]
    return (manifest["kind"], meta.get("namespace"), meta["name"])
