"""Does the stack fit on its nodes? The worst case of requests against the node group's allocatable capacity.

The scheduler places a pod only where its requests fit a node's *allocatable* (capacity minus what the kubelet,
the system and the eviction threshold keep). So the check sums the stack's requests at their largest
(autoscaler maximum, rollout surge, every Job and CronJob run, each DaemonSet once per node) plus the EKS
add-ons every cluster runs, and compares them with the nodes' allocatable total. It also checks that the largest
single pod fits on one node.

At render, the nodes are ``node_count_min`` nodes of ``node_instance_type`` (the size ``aws_provision`` gives the
managed node group; the stack installs no cluster autoscaler, so the group stays there); their allocatable values
come from ``node_allocatable_cpu`` and ``node_allocatable_memory`` when set, else from the table below and the EKS
AMI's reservation formula. In the preflight they are the live Nodes'
``status.allocatable``.
"""

from dataclasses import dataclass

from deploy.conf import cpu_millis, memory_bytes
from deploy.k8s.kinds import describe
from deploy.k8s.objects import containers, pod_spec

MIB = 2**20

# vCPU, memory (GiB) and the VPC CNI's maximum pods (from the ENI limits) of common node instance types;
# the AMD (t3a, m6a, m7a) and newer (c7i, r7i) siblings have the same figures.
INSTANCE_TYPES = {
    "t3.medium": (2, 4, 17), "t3.large": (2, 8, 35), "t3.xlarge": (4, 16, 58), "t3.2xlarge": (8, 32, 58),
    "m5.large": (2, 8, 29), "m5.xlarge": (4, 16, 58), "m5.2xlarge": (8, 32, 58), "m5.4xlarge": (16, 64, 234),
    "m6i.large": (2, 8, 29), "m6i.xlarge": (4, 16, 58), "m6i.2xlarge": (8, 32, 58), "m6i.4xlarge": (16, 64, 234),
    "m7i.large": (2, 8, 29), "m7i.xlarge": (4, 16, 58), "m7i.2xlarge": (8, 32, 58), "m7i.4xlarge": (16, 64, 234),
    "c6i.large": (2, 4, 29), "c6i.xlarge": (4, 8, 58), "c6i.2xlarge": (8, 16, 58), "c6i.4xlarge": (16, 32, 234),
    "r6i.large": (2, 16, 29), "r6i.xlarge": (4, 32, 58), "r6i.2xlarge": (8, 64, 58), "r6i.4xlarge": (16, 128, 234),
}  # fmt: skip
for _intel, _siblings in (("t3", ("t3a",)), ("m6i", ("m6a", "m7a")), ("c6i", ("c7i",)), ("r6i", ("r7i",))):
    for _name, _figures in list(INSTANCE_TYPES.items()):
        if _name.split(".")[0] == _intel:
            INSTANCE_TYPES.update({f"{sibling}.{_name.split('.')[1]}": _figures for sibling in _siblings})

# What EKS itself runs: aws-node and kube-proxy on every node, CoreDNS's two replicas once (their default requests).
SYSTEM_PER_NODE = {"cpu": 25 + 100, "memory": 0}
SYSTEM_ONCE = {"cpu": 2 * 100, "memory": 2 * 70 * MIB}


@dataclass(frozen=True)
class Nodes:
    count: int
    cpu: int  # allocatable millicores of one node
    memory: int  # allocatable bytes of one node
    source: str


def eks_reserved_cpu(vcpus):
    """kube-reserved CPU of the EKS AMI: 6% of the first core, 1% of the second, 0.5% of the next two, 0.25% above."""
    steps = [(1, 60), (1, 10), (2, 5), (max(vcpus - 4, 0), 2.5)]
    reserved, left = 0.0, vcpus
    for cores, millis in steps:
        used = min(cores, left)
        reserved += used * millis
        left -= used
    return round(reserved)


def allocatable(instance_type):
    """(millicores, bytes) a node of this type offers to pods, or None when the type is not in the table."""
    if instance_type not in INSTANCE_TYPES:
        return None
    vcpus, gib, max_pods = INSTANCE_TYPES[instance_type]
    # kube-reserved memory 255 MiB + 11 MiB per pod, plus the 100 MiB hard eviction threshold.
    reserved_memory = (255 + 11 * max_pods + 100) * MIB
    return vcpus * 1000 - eks_reserved_cpu(vcpus), gib * 2**30 - reserved_memory


def configured_nodes(config):
    """The node group of the settings: declared allocatable figures first, then the table; None when neither."""
    where = f"{config.node_count_min} x {config.node_instance_type}"
    if config.node_allocatable_cpu and config.node_allocatable_memory:
        cpu, memory = cpu_millis(config.node_allocatable_cpu), memory_bytes(config.node_allocatable_memory)
        return Nodes(config.node_count_min, cpu, memory, f"{where} (node_allocatable_cpu/memory)")
    found = allocatable(config.node_instance_type)
    if found is None:
        return None
    return Nodes(config.node_count_min, *found, where)


def live_nodes(node_objects):
    """Nodes from the API's Node objects (schedulable ones); the smallest node's allocatable stands for each."""
    usable = [n for n in node_objects if not (n.get("spec") or {}).get("unschedulable")]
    if not usable:
        return Nodes(0, 0, 0, "no schedulable node")
    cpus = [cpu_millis(str(n["status"]["allocatable"]["cpu"])) for n in usable]
    memories = [memory_bytes(str(n["status"]["allocatable"]["memory"])) for n in usable]
    return Nodes(len(usable), min(cpus), min(memories), f"{len(usable)} live node(s)")


def _pod_requests(spec):
    cpu = memory = 0
    for container in containers(spec):
        requests = container.get("resources", {}).get("requests", {})
        cpu += cpu_millis(str(requests.get("cpu", "0")))
        memory += memory_bytes(str(requests.get("memory", "0")))
    return cpu, memory


def worst_case(manifests, node_count):
    """(cpu millicores, memory bytes, largest pod as (describe, cpu, memory)) of the stack at its largest."""
    from deploy.k8s.validate import workload_count

    cpu = SYSTEM_ONCE["cpu"] + node_count * SYSTEM_PER_NODE["cpu"]
    memory = SYSTEM_ONCE["memory"] + node_count * SYSTEM_PER_NODE["memory"]
    largest = ("", 0, 0)
    for manifest in manifests:
        found = pod_spec(manifest)
        if not found:
            continue
        pod_cpu, pod_memory = _pod_requests(found[1])
        count = workload_count(manifest, manifests, node_count)
        cpu += count * pod_cpu
        memory += count * pod_memory
        if (pod_cpu, pod_memory) > largest[1:]:
            largest = (describe(manifest), pod_cpu, pod_memory)
    return cpu, memory, largest


def capacity_problems(manifests, nodes):
    """Sentences saying how the stack does not fit ``nodes``; empty when it fits."""
    if nodes.count == 0:
        return [f"Capacity: {nodes.source}: the stack cannot be scheduled. Add nodes to the node group."]
    cpu, memory, (pod, pod_cpu, pod_memory) = worst_case(manifests, nodes.count)
    problems = []
    have_cpu, have_memory = nodes.count * nodes.cpu, nodes.count * nodes.memory
    fix = (
        "Raise node_count_min (and node_count_max, which must stay at least as large) or choose a larger "
        "node_instance_type (docs/policy.md), or lower replicas_max or the pods' requests."
    )
    if cpu > have_cpu:
        problems.append(
            f"Capacity: the stack at its largest requests {cpu}m CPU (EKS add-ons included), more than the "
            f"{have_cpu}m allocatable on {nodes.source}. {fix}"
        )
    if memory > have_memory:
        problems.append(
            f"Capacity: the stack at its largest requests {memory / MIB:.0f}Mi of memory, more than the "
            f"{have_memory / MIB:.0f}Mi allocatable on {nodes.source}. {fix}"
        )
    if pod and (pod_cpu > nodes.cpu or pod_memory > nodes.memory):
        problems.append(
            f"Capacity: a pod of {pod} requests {pod_cpu}m CPU and {pod_memory / MIB:.0f}Mi, more than one node "
            f"of {nodes.source} offers ({nodes.cpu}m, {nodes.memory / MIB:.0f}Mi). Choose a larger "
            "node_instance_type or lower its requests."
        )
    return problems
