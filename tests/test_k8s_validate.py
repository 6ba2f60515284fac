import copy
import json
import subprocess
from pathlib import Path

import pytest

from deploy.conf import SUPPORTED_KUBERNETES_VERSIONS, load_config
from deploy.k8s.kinds import describe
from deploy.k8s.render import render_manifests, write_manifests
from deploy.k8s.validate import policy_problems, schema_problems
from tests.conftest import tool
from tests.k8s_helpers import MODES, by_kind, mode_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_is_valid_in_strict_mode_for_every_supported_version(mode):
    config = mode_config(mode)
    manifests = render_manifests(config)
    assert schema_problems(manifests, SUPPORTED_KUBERNETES_VERSIONS) == []
    assert policy_problems(manifests, config) == []


def test_schema_validation_rejects_unknown_fields_and_removed_api_versions():
    manifests = render_manifests(load_config({}, environ={}))
    deployment = copy.deepcopy(by_kind(manifests, "Deployment", "django-app")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    hpa = copy.deepcopy(by_kind(manifests, "HorizontalPodAutoscaler")[0])
    hpa["apiVersion"] = "autoscaling/v2beta2"  # removed in 1.26
    pdb = copy.deepcopy(by_kind(manifests, "PodDisruptionBudget")[0])
    pdb["apiVersion"] = "policy/v1beta1"  # removed in 1.25
    problems = schema_problems([deployment, hpa, pdb], ["1.31"])
    assert len(problems) == 3
    assert "imagePullPolicyy" in problems[0]
    assert "autoscaling/v2beta2" in problems[1] and "not served by Kubernetes 1.31" in problems[1]
    assert "policy/v1beta1" in problems[2]


def test_custom_resources_of_known_operators_may_have_no_schema():
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {},
    }
    assert schema_problems([monitor], ["1.33"]) == []
    monitor["apiVersion"] = "example.com/v1"
    assert schema_problems([monitor], ["1.33"])


def test_schema_problems_are_kubernetes_validates_own_verdict_remembered_by_content():
    """schema_problems builds each schema's validator once and remembers each object's result: the same
    sentences as kubernetes-validate's validate() gives, and a changed object is validated again."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, VersionNotSupportedError

    manifests = render_manifests(load_config({}, environ={}))
    deployment = copy.deepcopy(by_kind(manifests, "Deployment", "django-app")[0])
    service = copy.deepcopy(by_kind(manifests, "Service", "django-app")[0])
    assert schema_problems([deployment, service], ["1.31", "1.34"]) == []
    deployment["spec"]["replicas"] = "two"
    service["spec"]["ports"][0]["portt"] = 80
    hpa = copy.deepcopy(by_kind(manifests, "HorizontalPodAutoscaler")[0])
    hpa["apiVersion"] = "autoscaling/v2beta2"
    expected = []
    for manifest in (deployment, service, hpa):
        for version in ("1.31", "1.34"):
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except ValidationError as exc:
                path = ".".join(str(p) for p in exc.absolute_path)
                expected.append(f"{describe(manifest)} (Kubernetes {version}): {path}: {exc.message}")
            except SchemaNotFoundError:
                expected.append(
                    f"{describe(manifest)}: apiVersion 'autoscaling/v2beta2' kind 'HorizontalPodAutoscaler' "
                    f"is not served by Kubernetes {version} (removed or unknown)."
                )
    assert len(expected) == 6
    assert schema_problems([deployment, service, hpa], ["1.31", "1.34"]) == expected
    assert schema_problems([deployment, service, hpa], ["1.31", "1.34"]) == expected  # remembered: the same
    with pytest.raises(VersionNotSupportedError) as raised:
        schema_problems([deployment], ["9.99"])
    assert raised.value.version == "9.99"


def test_remembered_schema_verdicts_name_keys_and_tuples_as_the_object_has_them():
    """An object JSON would write as a remembered one's (a key 1 or None, a tuple) gets kubernetes-validate's
    verdict on the object as it is, not the remembered one's ("'1' was unexpected" for "1 was unexpected")."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    deployment = by_kind(render_manifests(load_config({}, environ={})), "Deployment", "django-app")[0]
    variants = []
    for key, value in [("1", 1), ("null", None)]:
        as_text, as_is = copy.deepcopy(deployment), copy.deepcopy(deployment)
        as_text["metadata"][key], as_is["metadata"][value] = "x", "x"
        variants += [as_text, as_is]
    listed, tupled = copy.deepcopy(deployment), copy.deepcopy(deployment)
    listed["spec"]["template"]["spec"]["containers"][0]["args"] = ["a", "b"]
    tupled["spec"]["template"]["spec"]["containers"][0]["args"] = ("a", "b")
    variants += [listed, tupled]
    for manifest in variants:
        try:
            kubernetes_validate.validate(manifest, "1.31", strict=True)
            expected = []
        except ValidationError as exc:
            expected = [
                f"{describe(manifest)} (Kubernetes 1.31): {'.'.join(map(str, exc.absolute_path))}: {exc.message}"
            ]
        assert schema_problems([manifest], ["1.31"]) == expected
    assert "(1 was unexpected)" in schema_problems([variants[1]], ["1.31"])[0]
    assert schema_problems([tupled], ["1.31"]) and not schema_problems([listed], ["1.31"])


def _broken(mutate):
    config = load_config({}, environ={})
    manifests = copy.deepcopy(render_manifests(config))
    mutate(manifests)
    return policy_problems(manifests, config)


def _deployment(manifests):
    return by_kind(manifests, "Deployment", "django-app")[0]["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda ms: _deployment(ms)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (
            lambda ms: (
                _deployment(ms)["containers"][0].setdefault("env", []).append({"name": "API_TOKEN", "value": "x"})
            ),
            "API_TOKEN without a Secret",
        ),
        (
            lambda ms: by_kind(ms, "ConfigMap")[0]["data"].update(DB_PASSWORD="hunter2"),
            "key DB_PASSWORD looks secret",
        ),
        (
            lambda ms: by_kind(ms, "Service", "django-app")[0]["spec"]["selector"].update(
                {"app.kubernetes.io/component": "web"}
            ),
            "matches no pod",
        ),
        (
            lambda ms: by_kind(ms, "NetworkPolicy", "django-app-redis")[0]["spec"]["ingress"][0]["from"][0][
                "podSelector"
            ]["matchLabels"].update({"app.kubernetes.io/component": "wbe"}),
            "ingress peer",
        ),
        (lambda ms: ms.remove(by_kind(ms, "NetworkPolicy", "django-app-default-deny")[0]), "no default-deny"),
        (
            lambda ms: _deployment(ms)["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation must be false",
        ),
        (lambda ms: _deployment(ms).update(hostNetwork=True), "hostNetwork"),
        (
            lambda ms: _deployment(ms)["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
            "only NET_BIND_SERVICE",
        ),
        (
            lambda ms: _deployment(ms)["containers"][0]["securityContext"].update(runAsNonRoot=False),
            "runAsNonRoot must be true",
        ),
        (
            lambda ms: _deployment(ms)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
            "seccompProfile",
        ),
        (
            lambda ms: by_kind(ms, "HorizontalPodAutoscaler")[0]["spec"].update(maxReplicas=50),
            "needs requests.cpu",
        ),
        (
            lambda ms: _deployment(ms)["containers"][0]["resources"]["limits"].update(memory="9Gi"),
            "above the LimitRange maximum",
        ),
    ],
)
def test_each_policy_rule_can_fail(mutate, expected):
    problems = _broken(mutate)
    assert any(expected in p for p in problems), problems


def test_secret_file_variables_must_point_into_a_mounted_secret():
    def mutate(ms):
        container = _deployment(ms)["containers"][0]
        container.setdefault("env", []).append({"name": "SECRET_KEY_FILE", "value": "/etc/elsewhere/key"})

    assert any("SECRET_KEY_FILE" in p for p in _broken(mutate))


@pytest.mark.slow
def test_checkov_reports_no_failed_check_in_any_mode(tmp_path):
    # Each distinct object once: most are alike in every mode (143 distinct of 1,071), and checkov's verdict
    # on an object depends on the object alone. Nine tenths of its scan, and of the test's time, were repeats.
    seen = set()
    for mode in MODES:
        manifests = []
        for manifest in render_manifests(mode_config(mode)):
            key = json.dumps(manifest, sort_keys=True)
            if key not in seen:
                seen.add(key)
                manifests.append(manifest)
        write_manifests(manifests, tmp_path / mode)
    command = [tool("checkov"), "--framework", "kubernetes", "--skip-download", "--compact", "-o", "json"]
    result = subprocess.run([*command, "-d", str(tmp_path)], capture_output=True, text=True, timeout=600)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for report in reports
        for c in report.get("results", {}).get("failed_checks", [])
    ]
    assert failed == []
    passed = sum(report["summary"]["passed"] for report in reports)
    assert passed > 300
    skipped = [c for report in reports for c in report.get("results", {}).get("skipped_checks", [])]
    # Every skip carries its reason.
    assert skipped
    assert all(len(c["check_result"].get("suppress_comment") or "") > 20 for c in skipped), skipped
