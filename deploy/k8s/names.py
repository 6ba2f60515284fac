"""Names and labels of every object, built in one place.

Names are cut to 63 characters (the limit of a DNS label, and of a label
value). Selectors use a smaller set of labels than metadata: a Deployment's
selector is immutable, so it must not contain anything that changes between
releases (such as the version).
"""

import hashlib
from dataclasses import dataclass

MAX_NAME = 63
MANAGED_BY = "django-k8s-deploy"
PART_OF = "app.kubernetes.io/part-of"
# On objects made on demand (the restore and backup-listing Jobs), never rendered with the stack: a deploy does not
# prune them, so a restore runs to its end whatever is deployed meanwhile.
OPERATION = "app.kubernetes.io/operation"
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


def component(manifest):
    """The component label of a rendered object (``app``, ``postgres``, ``migrate``...), None without one."""
    return (manifest["metadata"].get("labels") or {}).get(COMPONENT)


def release_selector(app_name):
    """The label selector of every object this tool created for ``app_name``."""
    return f"{PART_OF}={truncate(app_name)},app.kubernetes.io/managed-by={MANAGED_BY}"


# --- Services: the one home of every in-cluster name, host and port ----------

# component -> (namespace setting, pod component it selects, port name, Service port, container port, headless).
# The port name is also the name of the container port the Service targets.
SERVICES = {
    "app": ("namespace", "app", "http", 80, 8000, False),
    "postgres": ("namespace", "postgres", "postgres", 5432, 5432, False),
    "postgres-headless": ("namespace", "postgres", "postgres", 5432, 5432, True),
    # Made by the CloudNativePG operator, not rendered: the read-write Service, on the primary only.
    "postgres-rw": ("namespace", "postgres", "postgres", 5432, 5432, False),
    "redis": ("namespace", "redis", "redis", 6379, 6379, False),
    "prometheus": ("monitoring_namespace", "prometheus", "web", 9090, 9090, False),
    "alertmanager": ("monitoring_namespace", "alertmanager", "web", 9093, 9093, False),
    "grafana": ("monitoring_namespace", "grafana", "http", 3000, 3000, False),
    "kube-state-metrics": ("monitoring_namespace", "kube-state-metrics", "metrics", 8080, 8080, False),
    "node-exporter": ("monitoring_namespace", "node-exporter", "metrics", 9100, 9100, True),
    "elasticsearch": ("logging_namespace", "elasticsearch", "http", 9200, 9200, False),
    "elasticsearch-nodes": ("logging_namespace", "elasticsearch", "transport", 9300, 9300, True),
    "kibana": ("logging_namespace", "kibana", "http", 5601, 5601, False),
}


@dataclass(frozen=True)
class Service:
    """A Service of the stack: what its manifest declares and what its clients dial."""

    component: str
    name: str
    namespace: str
    selects: str
    port_name: str
    port: int
    target_port: int
    headless: bool = False
    in_cluster: bool = True

    @property
    def host(self):
        """The in-cluster DNS name clients use, whatever namespace they run in."""
        return f"{self.name}.{self.namespace}.svc" if self.in_cluster else self.name

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def url(self, scheme="http", path=""):
        return f"{scheme}://{self.address}{path}"


# CloudNativePG names its pods NAME-N, its Services NAME-rw, NAME-ro and NAME-r, its Jobs NAME-N-initdb or
# NAME-N-join (and their pods a further suffix): the Cluster's own name is kept short enough for them.
CNPG_CLUSTER_MAX = 50


def cnpg_cluster_name(app_name):
    """The CloudNativePG Cluster's name (cloudnative-pg mode)."""
    return truncate(f"{app_name}-postgres", CNPG_CLUSTER_MAX)


def cnpg_recovery_name(app_name):
    """The Cluster a restore to a point in time recovers into (deploy/k8s/pitr.py), beside the live one."""
    return truncate(f"{app_name}-postgres-pitr", CNPG_CLUSTER_MAX)


def operator_service_name(config, component):
    """Names of the Services an operator makes: CloudNativePG's read-write Service is the Cluster's name + -rw."""
    if component == "postgres-rw":
        return f"{cnpg_cluster_name(config.app_name)}-rw"
    return None


def service(config, component):
    """The Service of ``component``: its name, namespace, host and ports, for templates and generated configs."""
    try:
        namespace_setting, selects, port_name, port, target_port, headless = SERVICES[component]
    except KeyError:
        raise KeyError(f"no Service is declared for component {component!r} in deploy/k8s/names.SERVICES") from None
    return Service(
        component=component,
        name=operator_service_name(config, component) or resource_name(config.app_name, component),
        namespace=getattr(config, namespace_setting),
        selects=selects,
        port_name=port_name,
        port=port,
        target_port=target_port,
        headless=headless,
    )


def endpoint(config, component):
    """Where the app reaches ``postgres`` or ``redis``: the in-cluster Service, or the configured external server."""
    if component == "postgres" and config.postgres_operator:
        return service(config, "postgres-rw")
    if getattr(config, f"{component}_in_cluster"):
        return service(config, component)
    port = getattr(config, f"{component}_port")
    return Service(
        component=component,
        name=getattr(config, f"{component}_host"),
        namespace="",
        selects="",
        port_name=component,
        port=port,
        target_port=port,
        in_cluster=False,
    )


def external_endpoints(config):
    """Host names the stack may dial outside its rendered Services: the servers configured as external."""
    return {endpoint(config, c).host for c in ("postgres", "redis") if not endpoint(config, c).in_cluster}


# --- AWS names of the stack's secrets and backups --------------------------------


def scoped(config):
    """The app's name, and the environment's after it when one is selected (each environment its own stack)."""
    return f"{config.app_name}-{config.environment}" if config.environment else config.app_name


def aws_secrets(config):
    """The values aws_provision generates in AWS Secrets Manager: their variable in ``Go template`` terms
    (the key the ExternalSecret reads them as) -> the secret's name, ``APP[-ENVIRONMENT]/NAME``.

    The superuser's password exists only for the in-cluster PostgreSQL, Redis's only for the in-cluster Redis.
    """
    wanted = ["secret_key", "postgres_password"]
    if config.postgres_in_cluster:
        wanted.append("postgres_superuser_password")
    if config.redis_in_cluster:
        wanted.append("redis_password")
    return {key: f"{scoped(config)}/{key.replace('_', '-')}" for key in wanted}
