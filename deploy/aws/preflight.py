"""Cluster preflight: can this cluster run the stack? One check, one row, one fix.

AWS-side checks use boto3; cluster-side checks read the Kubernetes API, so
they hold whether an add-on was installed as an EKS add-on or a Helm chart.
"""

import json
from dataclasses import asdict, dataclass

from deploy.aws.session import AwsError, call
from deploy.conf import SUPPORTED_KUBERNETES_VERSIONS
from deploy.k8s.client import ClusterError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self):
        return asdict(self)


def _check(checks, name, ok, detail, fix):
    checks.append(Check(name, bool(ok), detail, "" if ok else fix))


def aws_checks(session, config, cluster_name):
    checks = []
    eks = session.client("eks")
    try:
        cluster = call(f"Describing EKS cluster {cluster_name!r}", eks.describe_cluster, name=cluster_name)["cluster"]
    except AwsError as exc:
        _check(checks, "cluster", False, str(exc), "Check the cluster name and region (aws eks list-clusters).")
        return checks, None
    version, status = cluster.get("version", ""), cluster.get("status", "")
    _check(
        checks, "cluster status", status == "ACTIVE", f"{cluster_name} is {status}", "Wait until the cluster is ACTIVE."
    )
    _check(
        checks, "kubernetes version", version in SUPPORTED_KUBERNETES_VERSIONS,
        f"{version} (supported: {', '.join(SUPPORTED_KUBERNETES_VERSIONS)})",
        "Upgrade the cluster to a supported version.",
    )  # fmt: skip
    groups = call("Listing node groups", eks.list_nodegroups, clusterName=cluster_name).get("nodegroups", [])
    states = {
        g: call(f"Describing node group {g}", eks.describe_nodegroup, clusterName=cluster_name, nodegroupName=g)[
            "nodegroup"
        ]["status"]
        for g in groups
    }
    active = [g for g, s in states.items() if s == "ACTIVE"]
    _check(
        checks, "node groups", active,
        ", ".join(f"{g}: {s}" for g, s in states.items()) or "none",
        "Create a managed node group (two nodes in two zones at least), or wait until it is ACTIVE.",
    )  # fmt: skip
    subnets = set(cluster.get("resourcesVpcConfig", {}).get("subnetIds", []))
    if config.efs_file_system_id:
        efs = session.client("efs")
        try:
            call("Describing the EFS file system", efs.describe_file_systems, FileSystemId=config.efs_file_system_id)
            targets = call("Listing EFS mount targets", efs.describe_mount_targets,
                           FileSystemId=config.efs_file_system_id)["MountTargets"]  # fmt: skip
            covered = {t["SubnetId"] for t in targets}
            missing = sorted(subnets - covered)
            _check(
                checks, "EFS mount targets", not missing,
                f"{config.efs_file_system_id}: mount targets in {len(covered & subnets)} of {len(subnets)} subnets"
                + (f"; missing: {', '.join(missing)}" if missing else ""),
                "Create a mount target in each missing subnet (aws efs create-mount-target).",
            )  # fmt: skip
        except AwsError as exc:
            _check(checks, "EFS file system", False, str(exc), "Create it, or correct DEPLOY['efs_file_system_id'].")
    if config.app_role_arn:
        iam = session.client("iam")
        role = config.app_role_arn.rsplit("/", 1)[-1]
        try:
            call("Reading the app's IAM role", iam.get_role, RoleName=role)
            _check(checks, "app IAM role", True, config.app_role_arn, "")
        except AwsError as exc:
            _check(checks, "app IAM role", False, str(exc), "Create the role, trusted by EKS Pod Identity or IRSA.")
    if config.postgres_outside_cluster:
        checks.append(_endpoint_check(session, "rds", config.postgres_host))
    if not config.redis_in_cluster:
        checks.append(_endpoint_check(session, "elasticache", config.redis_host))
    return checks, cluster


def _endpoint_check(session, service, host):
    name = {"rds": "RDS endpoint", "elasticache": "ElastiCache endpoint"}[service]
    if not host.endswith(".amazonaws.com"):
        return Check(name, True, f"{host} is not an AWS endpoint: not checked", "")
    client = session.client(service)
    if service == "rds":
        items = call("Listing RDS instances", client.describe_db_instances)["DBInstances"]
        hosts = {i.get("Endpoint", {}).get("Address") for i in items}
    else:
        items = call("Listing ElastiCache clusters", client.describe_cache_clusters, ShowCacheNodeInfo=True)
        hosts = {n.get("Endpoint", {}).get("Address") for c in items["CacheClusters"] for n in c.get("CacheNodes", [])}
        groups = call("Listing ElastiCache replication groups", client.describe_replication_groups)
        for group in groups["ReplicationGroups"]:
            for node_group in group.get("NodeGroups", []):
                hosts.add(node_group.get("PrimaryEndpoint", {}).get("Address"))
    return Check(name, host in hosts, host, f"No {name} has the address {host}: correct the host setting.")


def cluster_checks(cluster, config, manifests=None):
    """Checks through the Kubernetes API (a deploy.k8s.client.Cluster); ``manifests`` default to the render's."""
    checks = []

    # ``cluster.get`` answers None only when the object does not exist (404). Any other error (a time-out, an
    # unreachable server, 403, 5xx) stops the preflight: reported as "missing", it would send the operator to
    # install add-ons the cluster may have, after one full time-out per check.
    def deployment(name, namespace="kube-system"):
        return cluster.get("apps/v1", "Deployment", name, namespace)

    lbc = deployment("aws-load-balancer-controller")
    lbc = "found" if lbc else "missing"
    _check(
        checks, "AWS Load Balancer Controller", lbc == "found", f"kube-system/aws-load-balancer-controller {lbc}",
        "Install it (Helm chart eks/aws-load-balancer-controller): without it the Service or Ingress gets "
        "no load balancer.",
    )  # fmt: skip
    metrics = "found" if deployment("metrics-server") else "missing"
    _check(
        checks, "metrics-server", metrics == "found", f"kube-system/metrics-server {metrics}",
        "Install the metrics-server add-on: without it the autoscaler shows <unknown> and never scales.",
    )  # fmt: skip
    for driver, purpose in (("ebs.csi.aws.com", "PostgreSQL's gp3 volumes"), ("efs.csi.aws.com", "static files")):
        found = cluster.get("storage.k8s.io/v1", "CSIDriver", driver)
        product = "Amazon EBS" if "ebs" in driver else "Amazon EFS"
        _check(
            checks, f"CSI driver {driver}", found, driver + (" installed" if found else " missing"),
            f"Install the {product} CSI driver add-on ({purpose}).",
        )  # fmt: skip
    _check(checks, *_network_policy(cluster))
    _check(checks, *_capacity(cluster, config, manifests, autoscaler=deployment("cluster-autoscaler")))
    return checks


def _capacity(cluster, config, manifests, autoscaler):
    """The stack's worst-case requests against the live nodes' allocatable (docs/policy.md)."""
    from dataclasses import replace

    from deploy.k8s import capacity
    from deploy.k8s.render import render_manifests

    name = "node capacity"
    nodes = capacity.live_nodes(cluster.list("v1", "Node"))
    if autoscaler and nodes.count and config.node_count_max > nodes.count:
        # The autoscaler adds nodes like the smallest one, up to the group's maximum.
        nodes = replace(nodes, count=config.node_count_max, source=f"{nodes.source}, autoscaled to "
                        f"{config.node_count_max} by kube-system/cluster-autoscaler")  # fmt: skip
    problems = capacity.capacity_problems(render_manifests(config) if manifests is None else manifests, nodes)
    detail = "; ".join(problems) or f"the stack at its largest fits on {nodes.source}"
    fix = "Add nodes or larger ones to the node group (node_count_min, node_instance_type), or lower replicas_max."
    return name, not problems, detail, fix


def _network_policy(cluster):
    name = "network policy enforcement"
    fix = ('Turn it on in the VPC CNI add-on: configuration {"enableNetworkPolicy": "true"}. Without it '
           "NetworkPolicies are accepted but not enforced.")  # fmt: skip
    try:
        configmap = cluster.get("v1", "ConfigMap", "amazon-vpc-cni", "kube-system")
        node = cluster.get("apps/v1", "DaemonSet", "aws-node", "kube-system")
    except ClusterError as exc:
        return name, False, str(exc), fix
    if configmap and (configmap.get("data") or {}).get("enable-network-policy-controller") == "true":
        return name, True, "amazon-vpc-cni: enable-network-policy-controller=true", fix
    for container in ((node or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or []:
        if "--enable-network-policy=true" in (container.get("args") or []):
            return name, True, f"aws-node container {container['name']}: --enable-network-policy=true", fix
    return name, False, "the VPC CNI does not enforce NetworkPolicies", fix


def report(checks, as_json=False):
    if as_json:
        return json.dumps({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]}, indent=2)
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  detail"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {'ok' if c.ok else 'FAIL':<6}  {c.detail}")
        if not c.ok:
            lines.append(f"{'':<{width}}          fix: {c.fix}")
    return "\n".join(lines)
