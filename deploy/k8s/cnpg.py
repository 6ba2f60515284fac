"""What the CloudNativePG operator makes from a rendered ``Cluster`` (postgresql.cnpg.io/v1), as plain objects.

The operator, not this render, creates the instance pods, their PVCs, the ``-rw``/``-ro``/``-r`` Services and a
PodDisruptionBudget (``spec.enablePDB``, on by default). The checks that read the stack as one system (the wiring
rule, Pod Security "restricted", requests and limits, quota and node capacity) must still see them, or they would
pass over a PostgreSQL of three pods as if it were nothing. So :func:`instance_pod` and :func:`made_services`
describe them as the operator of the vendored version (``crds/README.md``) makes them: its labels, its ports
(docs "Security", "Exposed Ports") and its security context (docs "Security": the same for every instance; the
Cluster spec chooses only the seccomp profile and may override contexts, which this render does not).
"""

API_VERSION = "postgresql.cnpg.io/v1"
KIND = "Cluster"

CLUSTER_LABEL = "cnpg.io/cluster"
INSTANCE_ROLE_LABEL = "cnpg.io/instanceRole"
POD_ROLE_LABEL = "cnpg.io/podRole"
# The operator's Deployment, as its release manifest (and Helm chart) labels its pods.
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "cloudnative-pg"}

POSTGRES_PORT = 5432  # the operand, "postgresql"
STATUS_PORT = 8000  # the instance manager's status (the operator polls it; replicas ask the primary's)
METRICS_PORT = 9187  # the instance manager's metrics
POSTGRES_UID = 26  # the postgres user of CloudNativePG's images

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": POSTGRES_UID,
    "runAsGroup": POSTGRES_UID,
    "fsGroup": POSTGRES_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


# The Barman Cloud plugin (crds/README.md): WAL archiving and base backups to S3, and recovery from them.
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
OBJECT_STORE_API_VERSION = "barmancloud.cnpg.io/v1"
SIDECAR_NAME = "plugin-barman-cloud"  # the container the plugin adds to every instance pod
# The sidecar's resources: stated in the ObjectStore (instanceSidecarConfiguration), which the plugin copies into
# each instance pod; the checks count them through instance_pod.
SIDECAR_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "256Mi"},
}


def is_cluster(manifest):
    return manifest.get("apiVersion") == API_VERSION and manifest.get("kind") == KIND


def instance_labels(cluster):
    """Labels of an instance pod: the Cluster's inherited labels plus the operator's own (one stands for all)."""
    inherited = (cluster.get("spec", {}).get("inheritedMetadata") or {}).get("labels") or {}
    return {
        **inherited,
        CLUSTER_LABEL: cluster["metadata"]["name"],
        POD_ROLE_LABEL: "instance",
        INSTANCE_ROLE_LABEL: "primary",
    }


def archives_wal(cluster):
    """Whether the Cluster's WAL goes to the Barman Cloud plugin (whose sidecar then runs in every instance)."""
    plugins = cluster.get("spec", {}).get("plugins") or []
    return any(p.get("name") == BARMAN_PLUGIN and p.get("isWALArchiver") for p in plugins)


def object_store_name(cluster_name):
    return f"{cluster_name}-backups"


def destination_path(config):
    """Where the plugin archives: the backup bucket's ARCHIVE_PREFIX (Barman adds the Cluster's name under it)."""
    from deploy.aws.backups import ARCHIVE_PREFIX

    return f"s3://{config.postgres_backup_bucket}/{ARCHIVE_PREFIX}"


def backup_schedule(cron):
    """A ScheduledBackup's schedule from a five-field cron (or @daily...): the operator's has a seconds field first."""
    return cron if cron.startswith("@") else f"0 {cron}"


def instance_count(cluster):
    """Most pods at once: ``instances``. The operator has no surge: an update restarts one instance at a time, and
    the Job that makes a replica (initdb, join: same resources) runs in place of the instance it makes."""
    return cluster.get("spec", {}).get("instances", 1)


def instance_pod(cluster):
    """(metadata, spec) of an instance pod as the operator makes it."""
    spec = cluster.get("spec", {})
    container = {
        "name": "postgres",
        "image": spec.get("imageName", ""),
        "ports": [
            {"name": "postgresql", "containerPort": POSTGRES_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "status", "containerPort": STATUS_PORT, "protocol": "TCP"},
        ],
        "resources": spec.get("resources", {}),
        "securityContext": {**CONTAINER_SECURITY_CONTEXT, "seccompProfile": spec.get("seccompProfile")
                            or CONTAINER_SECURITY_CONTEXT["seccompProfile"]},
    }  # fmt: skip
    pod = {
        "securityContext": POD_SECURITY_CONTEXT,
        "containers": [container],
        # The plugin's sidecar (a restartable init container), with the plugin's own security context.
        **(
            {
                "initContainers": [
                    {
                        "name": SIDECAR_NAME,
                        "restartPolicy": "Always",
                        "resources": SIDECAR_RESOURCES,
                        "securityContext": CONTAINER_SECURITY_CONTEXT,
                    }
                ]
            }
            if archives_wal(cluster)
            else {}
        ),
        "volumes": [{"name": "pgdata", "persistentVolumeClaim": {"claimName": f"{cluster['metadata']['name']}-1"}}],
    }
    return {"labels": instance_labels(cluster)}, pod


def made_services(cluster):
    """The Services the operator makes: ``-rw`` selects the primary, ``-ro`` the replicas, ``-r`` any instance."""
    name, namespace = cluster["metadata"]["name"], cluster["metadata"].get("namespace")
    roles = {"rw": {INSTANCE_ROLE_LABEL: "primary"}, "ro": {INSTANCE_ROLE_LABEL: "replica"}, "r": {}}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-{suffix}", "namespace": namespace},
            "spec": {
                "selector": {CLUSTER_LABEL: name, POD_ROLE_LABEL: "instance", **role},
                "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": POSTGRES_PORT, "protocol": "TCP"}],
            },
        }
        for suffix, role in roles.items()
    ]


def storage_bytes(cluster, parse):
    """The PVCs the operator makes: one data volume (and one WAL volume, if any) per instance."""
    spec = cluster.get("spec", {})
    sizes = [parse(str(spec[volume]["size"])) for volume in ("storage", "walStorage") if spec.get(volume)]
    return spec.get("instances", 1) * sum(sizes)
