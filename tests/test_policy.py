"""The company's resource policy (docs/policy.md): one test per rule that breaks it, and the default stack passing.

Each rule is checked by ``policy_problems`` (the render's validation) on a setting that breaks it; the capacity rule
also through the preflight against Nodes served by the fake API server.
"""

import copy

import pytest

from deploy.aws import preflight
from deploy.conf import ConfigError, load_config
from deploy.k8s import capacity
from deploy.k8s.client import Cluster
from deploy.k8s.connect import Endpoint, api_client
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import policy_problems, stack_totals
from tests.fake_apiserver import FakeApiServer
from tests.k8s_helpers import by_kind


def _problems(settings):
    config = load_config(settings, environ={})
    return policy_problems(render_manifests(config), config)


def test_the_default_stack_passes_every_rule_on_the_default_node_group():
    config = load_config({}, environ={})
    manifests = render_manifests(config)
    assert policy_problems(manifests, config) == []
    quotas = {m["metadata"]["namespace"] for m in by_kind(manifests, "ResourceQuota")}
    limits = {m["metadata"]["namespace"] for m in by_kind(manifests, "LimitRange")}
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
    workloads = {m["metadata"]["namespace"] for m in manifests if m["kind"] in kinds}
    assert workloads == {"django-app", "logging", "monitoring"}
    assert quotas == limits == workloads
    nodes = capacity.configured_nodes(config)
    cpu, memory, _ = capacity.worst_case(manifests, nodes.count)
    assert (nodes.count, config.node_instance_type) == (3, "t3.large")
    assert cpu <= nodes.count * nodes.cpu and memory <= nodes.count * nodes.memory


def test_eks_allocatable_follows_the_ami_reservation_formula():
    # t3.large: 2 vCPU -> 60m + 10m reserved; 8 GiB - (255 + 11 x 35 + 100) MiB.
    assert capacity.allocatable("t3.large") == (1930, 8 * 2**30 - 740 * 2**20)
    # m5.4xlarge: 16 vCPU -> 60 + 10 + 2 x 5 + 12 x 2.5 = 110m.
    assert capacity.allocatable("m5.4xlarge")[0] == 16000 - 110
    assert capacity.allocatable("x9.nothing") is None


@pytest.mark.parametrize("namespace", ["logging", "monitoring"])
def test_a_quota_the_namespace_does_not_fit_in_fails(namespace):
    quota = dict(load_config({}, environ={}).__getattribute__(f"{namespace}_quota"), **{"requests.memory": "1Gi"})
    problems = _problems({f"{namespace}_quota": quota})
    assert len(problems) == 1, problems
    assert f"ResourceQuota {namespace}/django-app-quota" in problems[0] and "requests.memory" in problems[0]
    assert f"Raise it in {namespace}_quota" in problems[0]


def test_the_quota_counts_a_daemonset_on_every_node_the_group_can_grow_to():
    config = load_config({}, environ={})
    manifests = render_manifests(config)
    one, four = stack_totals(manifests, 1)["logging"], stack_totals(manifests, 4)["logging"]
    assert four["requests.cpu"] - one["requests.cpu"] == 3 * 100  # fluentd requests 100m per node
    pods = str(four["pods"] - 1)
    problems = _problems({"logging_quota": dict(config.logging_quota, pods=int(pods))})
    assert any("logging/django-app-quota" in p and "pods" in p for p in problems), problems


def test_a_limitrange_maximum_below_a_container_fails_in_every_namespace():
    problems = _problems({"container_max_cpu": "1500m", "logging_quota": load_config({}, environ={}).logging_quota})
    assert any("StatefulSet logging/django-app-elasticsearch" in p and "LimitRange maximum 1500m" in p
               for p in problems), problems  # fmt: skip


def test_quota_settings_are_checked_when_read():
    with pytest.raises(ConfigError, match="monitoring_quota"):
        load_config({"monitoring_quota": {"requests.cpu": "2"}}, environ={})
    with pytest.raises(ConfigError, match="logging_quota"):
        good = load_config({}, environ={}).logging_quota
        load_config({"logging_quota": dict(good, **{"limits.cpu": "lots"})}, environ={})


@pytest.mark.parametrize("pods", [True, 0, "20", 2.5])
def test_a_quota_pod_count_that_is_not_a_positive_integer_is_refused_by_name(pods):
    """pods=True passed as an int (bool is one to Python) and crashed the render with a bare ValueError."""
    good = load_config({}, environ={}).monitoring_quota
    with pytest.raises(ConfigError, match=r"monitoring_quota.*pods: a positive integer"):
        load_config({"monitoring_quota": dict(good, pods=pods)}, environ={})


@pytest.mark.parametrize("where", ["containers", "initContainers"])
def test_a_container_without_requests_or_limits_fails(where):
    config = load_config({}, environ={})
    manifests = copy.deepcopy(render_manifests(config))
    spec = by_kind(manifests, "StatefulSet", "django-app-elasticsearch")[0]["spec"]["template"]["spec"]
    if where == "initContainers":  # none is rendered today: a project's template override could add one
        spec["initContainers"] = [dict(copy.deepcopy(spec["containers"][0]), name="sysctl")]
    container = spec[where][0]
    del container["resources"]["limits"]["memory"]
    del container["resources"]["requests"]["cpu"]
    problems = policy_problems(manifests, config)
    assert problems == [
        f"StatefulSet logging/django-app-elasticsearch container {container['name']!r} states no requests.cpu, "
        "limits.memory: every container must state CPU and memory requests and limits (docs/policy.md)."
    ]


def test_the_stack_that_outgrows_the_node_group_fails():
    problems = _problems({"node_count_min": 2})
    assert len(problems) == 1, problems
    assert "requests 4960m CPU" in problems[0] and "3860m allocatable on 2 x t3.large" in problems[0]
    assert "Raise node_count_min (and node_count_max, which must stay at least as large)" in problems[0]
    assert _problems({"node_count_min": 2, "node_instance_type": "t3.xlarge"}) == []
    # Raising node_count_min alone past node_count_max (4) is refused by every load since the AWS values are
    # checked there: the advice names both, and following it gives a stack that fits.
    assert _problems({"node_count_min": 5, "node_count_max": 5}) == []


def test_a_pod_larger_than_one_node_fails():
    problems = _problems({"node_instance_type": "c6i.large", "node_count_min": 10, "node_count_max": 10,
                          "cpu_request": "2", "cpu_limit": "2"})  # fmt: skip
    assert any(p.startswith("Capacity: a pod of ") and "requests 2000m CPU" in p and "one node" in p
               for p in problems), problems  # fmt: skip


def test_an_instance_type_outside_the_table_is_named():
    problems = _problems({"node_instance_type": "z1d.metal"})
    assert len(problems) == 1 and "'z1d.metal' is not in the capacity table" in problems[0]
    assert "t3.large" in problems[0] and "node_allocatable_cpu" in problems[0]


def test_a_node_outside_the_table_is_checked_with_its_declared_allocatable_figures():
    declared = {"node_instance_type": "z1d.2xlarge", "node_allocatable_cpu": "7910m",
                "node_allocatable_memory": "61Gi"}  # fmt: skip
    assert _problems(declared) == []
    small = _problems({**declared, "node_allocatable_cpu": "1500m", "node_allocatable_memory": "4Gi"})
    assert any("allocatable on 3 x z1d.2xlarge (node_allocatable_cpu/memory)" in p for p in small), small
    # The declared figures win over the table's for a type it knows.
    assert any("4500m allocatable on 3 x t3.large" in p for p in _problems(
        {"node_allocatable_cpu": "1500m", "node_allocatable_memory": "8Gi"}))  # fmt: skip
    with pytest.raises(ConfigError, match="go together"):
        load_config({"node_instance_type": "z1d.2xlarge", "node_allocatable_cpu": "8"}, environ={})
    with pytest.raises(ConfigError, match="node_allocatable_memory"):
        load_config({"node_allocatable_cpu": "8", "node_allocatable_memory": "lots"}, environ={})


# --- the preflight, from the live nodes ----------------------------------------------------------------------


def _node(server, name, cpu, memory, unschedulable=False):
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory}}}  # fmt: skip
    server.create("", "v1", "Node", "nodes", None, body, False)


def _capacity_check(server, config):
    cluster = Cluster(api_client(None, endpoint=Endpoint(host=server.url)))
    return next(c for c in preflight.cluster_checks(cluster, config) if c.name == "node capacity")


def test_the_preflight_checks_the_live_nodes():
    config = load_config({}, environ={})
    with FakeApiServer() as server:
        for i in range(2):
            _node(server, f"ip-10-0-64-{i}", "1930m", "7452Mi")
        _node(server, "cordoned", "8", "32Gi", unschedulable=True)
        check = _capacity_check(server, config)
        assert not check.ok and "2 live node(s)" in check.detail and "node_count_min" in check.fix
        _node(server, "ip-10-0-64-9", "1930m", "7452Mi")
        check = _capacity_check(server, config)
    assert check.ok and check.detail == "the stack at its largest fits on 3 live node(s)"


def test_the_preflight_counts_the_cluster_autoscaler_maximum():
    config = load_config({"node_count_min": 2}, environ={})
    with FakeApiServer() as server:
        for i in range(2):
            _node(server, f"n{i}", "1930m", "7452Mi")
        assert not _capacity_check(server, config).ok
        server.create("apps", "v1", "Deployment", "deployments", "kube-system",
                      {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cluster-autoscaler"}},
                      False)  # fmt: skip
        check = _capacity_check(server, config)
    assert check.ok and "autoscaled to 4" in check.detail
