"""Staff access: rendered RBAC roles bound to the settings' groups, and EKS access entries that map IAM to them."""

import pytest

from deploy.aws import cfn
from deploy.conf import ConfigError, load_config
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import schema_problems
from tests.k8s_helpers import by_kind

STAFF = {
    "arn:aws:iam::123456789012:role/support": "read-only",
    "arn:aws:iam::123456789012:user/ops/alice": "operator",
}


def _rules(role):
    """(apiGroup, resource) -> verbs."""
    found = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def test_the_roles_are_bound_to_the_settings_groups_in_every_namespace_of_the_stack():
    config = load_config({"staff_operator_group": "shop:oncall"}, environ={})
    manifests = render_manifests(config)
    bindings = by_kind(manifests, "RoleBinding")
    staff = {(b["metadata"]["namespace"], b["roleRef"]["name"], b["subjects"][0]["name"]) for b in bindings
             if b["roleRef"]["name"].startswith("django-app-staff-")}  # fmt: skip
    # Operators operate in the app's namespace only: logging and monitoring run privileged Pod Security, where
    # creating a Job or patching a DaemonSet would give a privileged pod (root on a node). They read there.
    assert staff == {
        ("django-app", "django-app-staff-read-only", "staff:read-only"),
        ("django-app", "django-app-staff-operator", "shop:oncall"),
        *((ns, "django-app-staff-read-only", group) for ns in ("logging", "monitoring")
          for group in ("staff:read-only", "shop:oncall")),
    }  # fmt: skip
    privileged = {m["metadata"]["name"] for m in by_kind(manifests, "Namespace")
                  if m["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "privileged"}  # fmt: skip
    assert privileged == {"logging", "monitoring"}
    roles = [m for m in by_kind(manifests, "ClusterRole") if m["metadata"]["name"].startswith("django-app-staff-")]
    assert schema_problems(roles + [b for b in bindings if "staff" in b["metadata"]["name"]], ["1.31", "1.34"]) == []


def test_read_only_reads_and_the_operator_operates_and_neither_touches_secrets_or_rbac():
    manifests = render_manifests(load_config({}, environ={}))
    read_only = _rules(by_kind(manifests, "ClusterRole", "django-app-staff-read-only")[0])
    operator = _rules(by_kind(manifests, "ClusterRole", "django-app-staff-operator")[0])
    assert read_only[("", "pods/log")] == {"get", "list", "watch"}
    assert all(verbs <= {"get", "list", "watch"} for verbs in read_only.values())
    assert ("", "pods/portforward") not in read_only and ("", "pods/exec") not in read_only
    assert operator[("", "pods/portforward")] == {"create"}  # the runbook's port-forward to PostgreSQL
    assert "patch" in operator[("apps", "deployments")] and "create" in operator[("batch", "jobs")]
    for rules in (read_only, operator):
        assert not any(resource == "secrets" or group == "rbac.authorization.k8s.io" for group, resource in rules)
        assert not any("*" in verbs or "*" in resource for (_, resource), verbs in rules.items())
        assert rules[("networking.k8s.io", "networkpolicies")] == {"get", "list", "watch"}


def test_aws_provision_maps_each_iam_principal_to_its_group():
    template = cfn.render_template(load_config({"staff_access": STAFF}, environ={}))
    entries = {
        r["Properties"]["PrincipalArn"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EKS::AccessEntry"
    }
    assert {arn: e["KubernetesGroups"] for arn, e in entries.items()} == {
        "arn:aws:iam::123456789012:role/support": ["staff:read-only"],
        "arn:aws:iam::123456789012:user/ops/alice": ["staff:operators"],
    }
    assert all(e["ClusterName"] == {"Ref": "Cluster"} and "AccessPolicies" not in e for e in entries.values())
    default = cfn.render_template(load_config({}, environ={}))
    assert not [r for r in default["Resources"].values() if r["Type"] == "AWS::EKS::AccessEntry"]


@pytest.mark.parametrize(
    "value",
    [
        {"arn:aws:iam::123456789012:role/support": "admin"},
        {"support": "read-only"},
        {"arn:aws:iam::123:role/short-account": "operator"},
    ],
)
def test_a_staff_access_that_is_not_an_arn_to_a_role_is_refused(value):
    with pytest.raises(ConfigError, match="staff_access"):
        load_config({"staff_access": value}, environ={})
