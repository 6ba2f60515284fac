"""k8s_deploy against the in-process fake API server (tests/fake_apiserver.py)."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.k8s.client import Cluster
from deploy.k8s.connect import Endpoint, api_client
from tests.fake_apiserver import Fault
from tests.k8s_helpers import deploy, fake_cluster

NS = "django-app"


@pytest.fixture
def server(tmp_path, monkeypatch):
    with fake_cluster(tmp_path, monkeypatch) as fake:
        yield fake


def failing_deploy(*args):
    with pytest.raises(CommandError) as excinfo:
        deploy(*args)
    return str(excinfo.value)


def failing_rollout(server, monkeypatch, tag, scenario):
    """A first deploy, then one of image ``tag``, which the fake cluster runs as ``scenario``: the error message."""
    deploy()
    server.scenarios[f"image/django-app:{tag}"] = scenario
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", tag)
    return failing_deploy()


def live_versions(server):
    with server.lock:
        return {key: obj["metadata"].get("resourceVersion") for key, obj in server.objects.items() if key[1] != "pods"}


def image_of(server, name="django-app"):
    return server.get("deployments", name, NS)["spec"]["template"]["spec"]["containers"][0]["image"]


def test_first_deploy_creates_everything_in_rank_order_and_the_second_changes_nothing(server):
    report = deploy()
    assert report["outcome"] == "deployed" and report["revision"] == 1
    assert all(o["result"] == "created" for o in report["objects"])
    applied = server.applied_order()
    kinds = [path.split("/")[-2] for path in applied if "/leases/" not in path and "release-v" not in path]
    assert kinds[0] == "namespaces"
    # Configuration before data services before the Job before the app; NetworkPolicies before any workload.
    assert kinds.index("configmaps") < kinds.index("statefulsets") < kinds.index("jobs")
    assert (
        kinds.index("jobs") < kinds.index("deployments", kinds.index("jobs")) < kinds.index("horizontalpodautoscalers")
    )
    assert max(i for i, k in enumerate(kinds) if k == "networkpolicies") < kinds.index("statefulsets")
    # Server-side apply with one field manager.
    patches = [(q, h) for m, p, q, h in server.requests if m == "PATCH"]
    assert {q["fieldManager"] for q, _ in patches} == {"django-k8s-deploy"}
    assert all(h["Content-Type"] == "application/apply-patch+yaml" for _, h in patches)
    assert server.get("deployments", "django-app", NS)["metadata"]["managedFields"][0]["manager"] == "django-k8s-deploy"

    before = live_versions(server)
    again = deploy()
    assert again["changed"] == 0
    assert all(o["result"] == "unchanged" for o in again["objects"])
    after = live_versions(server)
    changed = {k for k in before if before[k] != after.get(k) and k[1] != "secrets" and k[1] != "events"}
    assert changed == set(), changed


def test_a_kind_the_cluster_does_not_serve_is_discovered_once_per_run(server):
    """The prune asks for the Prometheus operator's kinds, which this cluster does not serve: the discoverer fetched
    the whole discovery again for each of them (three times a deploy), now once a run at most."""
    deploy()
    before = len(server.requests)
    report = deploy()
    assert report["outcome"] == "deployed"
    asked = [path for method, path, _, _ in server.requests[before:] if method == "GET"]
    roots = [path for path in asked if path in ("/version", "/api", "/apis")]
    assert sorted(roots) == sorted(set(roots)), roots  # each at most once (before: /version and /apis 3 times)
    assert not [path for path in asked if path.startswith("/apis/monitoring.coreos.com")]
    from deploy.k8s.client import NotServed

    cluster = Cluster(api_client(None, endpoint=Endpoint(host=server.url, token=lambda: server.token)))
    for _ in range(2):
        with pytest.raises(NotServed, match=r"does not serve PodMonitor in monitoring\.coreos\.com/v1"):
            cluster.resource("monitoring.coreos.com/v1", "PodMonitor")


def test_a_discovery_answer_that_is_not_json_is_one_clear_error(server):
    """A proxy's page where the API server's group list should be: named, not an AttributeError."""
    from deploy.k8s.client import ClusterError

    endpoint = Endpoint(host=server.url, token=lambda: server.token)
    server.faults.append(Fault("GET", r"^/apis$", body="<html>Please log in</html>"))
    with pytest.raises(ClusterError, match=r"\(API discovery\): the answer is not what a Kubernetes API server"):
        Cluster(api_client(None, endpoint=endpoint))  # the client's own discovery reads it first
    cluster = Cluster(api_client(None, endpoint=endpoint))  # its discovery cached now: our group list reads it
    server.faults.append(Fault("GET", r"^/apis$", body="<html>Please log in</html>"))
    with pytest.raises(ClusterError, match=r"Discovering the API \(/apis\).*the answer is not JSON"):
        cluster.resource("apps/v1", "Deployment")


def test_a_new_image_rolls_out_and_the_history_grows(server, monkeypatch):
    deploy()
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.2.0")
    report = deploy()
    assert report["outcome"] == "deployed" and report["revision"] == 2
    assert image_of(server) == "django-app:0.2.0"
    assert "deployment django-app successfully rolled out" in report["waits"]
    out = StringIO()
    call_command("k8s_deploy", "--history", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "superseded" in lines[1] and "django-app:0.1.0" in lines[1]
    assert "deployed" in lines[2] and "django-app:0.2.0" in lines[2]
    # The old migration Job is pruned; the new one ran.
    jobs = [j["metadata"]["name"] for j in server.list("jobs", NS)]
    assert len(jobs) == 1


def test_turning_logging_off_prunes_it_in_its_own_namespace(server, monkeypatch):
    deploy()
    assert server.get("daemonsets", "fluentd", "logging") is not None
    monkeypatch.setenv("DEPLOY_LOGGING", "false")
    report = deploy()
    assert "DaemonSet logging/fluentd" in report["pruned"]
    assert "ClusterRole django-app-fluentd" in report["pruned"]
    assert server.get("daemonsets", "fluentd", "logging") is None
    # The Elasticsearch volumes stay: they are volumes.
    assert server.get("statefulsets", "django-app-elasticsearch", "logging") is None


def test_a_rollout_that_never_becomes_ready_is_rolled_back(server, monkeypatch):
    message = failing_rollout(server, monkeypatch, "0.3.0-broken", "crashloop")
    assert "rolled back to revision 1" in message
    assert "CrashLoopBackOff" in message
    assert "Set the SECRET_KEY environment variable" in message  # the pods' last log lines
    assert image_of(server) == "django-app:0.1.0"
    out = StringIO()
    call_command("k8s_deploy", "--history", "--json", stdout=out)
    outcomes = {r["revision"]: r["outcome"] for r in json.loads(out.getvalue())}
    assert outcomes == {1: "deployed", 2: "rolled-back"}


def test_a_progress_deadline_is_a_failed_rollout(server, monkeypatch):
    message = failing_rollout(server, monkeypatch, "0.4.0", "deadline")
    assert "progress deadline exceeded" in message


def test_a_failing_migration_leaves_the_running_deployment_untouched(server, monkeypatch):
    deploy()
    before = server.get("deployments", "django-app", NS)
    server.scenarios["job/migrate"] = "fail"
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.5.0")
    message = failing_deploy()
    assert "The migration Job failed; the running Deployment was not touched" in message
    assert 'column "price" cannot be cast' in message  # its log tail
    assert "BackoffLimitExceeded" in message  # its events
    after = server.get("deployments", "django-app", NS)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert image_of(server) == "django-app:0.1.0"


def test_turning_a_component_off_prunes_it_but_not_volumes(server, monkeypatch):
    deploy()
    assert server.get("deployments", "django-app-redis", NS)
    monkeypatch.setenv("DEPLOY_REDIS_MODE", "external")
    monkeypatch.setenv("DEPLOY_REDIS_HOST", "10.0.5.5")
    monkeypatch.setenv("DEPLOY_REDIS_CIDR", "10.0.5.0/24")
    monkeypatch.setenv("DEPLOY_POSTGRES_MODE", "external")
    monkeypatch.setenv("DEPLOY_POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("DEPLOY_POSTGRES_CIDR", "10.0.6.0/24")
    report = deploy()
    pruned = set(report["pruned"])
    assert {
        f"Deployment {NS}/django-app-redis",
        f"Service {NS}/django-app-redis",
        f"Secret {NS}/django-app-redis",
        f"NetworkPolicy {NS}/django-app-redis",
        f"StatefulSet {NS}/django-app-postgres",
        f"CronJob {NS}/django-app-postgres-backup",
    } <= pruned
    assert server.get("deployments", "django-app-redis", NS) is None
    assert server.get("persistentvolumeclaims", "django-app-postgres-backup", NS) is not None
    assert not any("PersistentVolumeClaim" in p for p in pruned)
    report = deploy("--prune-volumes")
    assert f"PersistentVolumeClaim {NS}/django-app-postgres-backup" in report["pruned"]
    assert server.get("persistentvolumeclaims", "django-app-static", NS) is not None


def test_a_kind_the_render_no_longer_makes_is_pruned_but_a_storage_class(server, monkeypatch):
    monkeypatch.setenv("DEPLOY_PRIORITY_CLASS", "web-critical")
    monkeypatch.setenv("DEPLOY_CREATE_STORAGE_CLASSES", "true")
    monkeypatch.setenv("DEPLOY_EFS_FILE_SYSTEM_ID", "fs-0123456789abcdef0")
    deploy()
    assert server.get("priorityclasses", "web-critical") is not None
    assert server.get("storageclasses", "gp3") is not None
    monkeypatch.delenv("DEPLOY_PRIORITY_CLASS")
    monkeypatch.setenv("DEPLOY_CREATE_STORAGE_CLASSES", "false")
    out = StringIO()
    call_command("k8s_deploy", "--timeout", "30", "--prune-volumes", interactive=False, stdout=out)
    assert "PriorityClass web-critical pruned" in out.getvalue()
    assert server.get("priorityclasses", "web-critical") is None
    # The PVCs still name the classes, and a bound volume needs its class to grow: kept, saying so.
    assert server.get("storageclasses", "gp3") is not None and server.get("storageclasses", "efs-ap") is not None
    assert "StorageClass gp3 pruned" not in out.getvalue()
    assert "kept StorageClass gp3 (a StorageClass is never pruned: delete it by hand)" in out.getvalue()


ROLE = """apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ name("reader") }}
  namespace: {{ namespace }}
  labels: {{ labels("reader") }}
rules:
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get"]
"""


def test_a_kind_only_a_project_template_made_is_pruned_when_the_template_goes(server, settings, tmp_path):
    templates = tmp_path / "templates"
    (templates / "app").mkdir(parents=True)
    (templates / "app" / "reader.yaml").write_text(ROLE)
    settings.DEPLOY = {"template_dirs": [str(templates)]}
    deploy()
    assert server.get("roles", "django-app-reader", NS, group="rbac.authorization.k8s.io") is not None
    (templates / "app" / "reader.yaml").unlink()
    dry = deploy("--dry-run")
    assert f"Role {NS}/django-app-reader" in dry["pruned"]
    assert server.get("roles", "django-app-reader", NS, group="rbac.authorization.k8s.io") is not None
    report = deploy()
    assert f"Role {NS}/django-app-reader" in report["pruned"]
    assert server.get("roles", "django-app-reader", NS, group="rbac.authorization.k8s.io") is None


def _lease(server, holder, renewed):
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    server.create(
        "coordination.k8s.io", "v1", "Lease", "leases", NS,
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": "django-app-deploy-lock", "namespace": NS},
         "spec": {"holderIdentity": holder, "leaseDurationSeconds": 900, "acquireTime": stamp, "renewTime": stamp}},
        False,
    )  # fmt: skip


def test_a_second_deploy_while_the_lock_is_held_is_refused(server):
    deploy()
    _lease(server, "alice@laptop/4242", datetime.now(UTC))
    message = failing_deploy()
    assert "Another deploy holds the lock django-app/django-app-deploy-lock: alice@laptop/4242" in message
    assert "Nothing was applied" in message


def test_a_stale_lock_is_taken_over_saying_so(server):
    deploy()
    server.objects.pop(("coordination.k8s.io", "leases", NS, "django-app-deploy-lock"), None)
    _lease(server, "bob@ci/1", datetime.now(UTC) - timedelta(hours=1))
    report = deploy()
    assert report["lock_taken_over"].startswith("bob@ci/1 (expired at")
    assert server.get("leases", "django-app-deploy-lock", NS) is None  # released at the end


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault("PATCH", r"/services/django-app$", status=500), "the API server failed (500)"),
        (Fault("PATCH", r"/services/django-app$", drop=True), "cannot reach the cluster's API server"),
        (Fault("PATCH", r"/statefulsets/", status=504), "the API server failed (504)"),
    ],
)
def test_a_fault_in_the_middle_ends_clearly_and_the_rerun_converges(server, fault, expected):
    server.faults.append(fault)
    message = failing_deploy()
    assert expected in message
    assert "Applied before the failure:" in message and "Rerun k8s_deploy" in message
    report = deploy()
    assert report["outcome"] == "deployed"
    assert server.get("deployments", "django-app", NS) is not None
    assert deploy()["changed"] == 0


def test_a_request_that_times_out_ends_clearly(server):
    server.faults.append(Fault("PATCH", r"/configmaps/django-app$", latency=1.5))
    message = failing_deploy("--request-timeout", "0.5")
    assert (
        f"Applying ConfigMap django-app/django-app: the cluster's API server {server.url} did not answer in time "
        "(0.5 s to connect, 0.5 s to answer)"
    ) in message


def test_forbidden_names_the_verb_and_resource(server):
    server.forbidden.add(("patch", "networkpolicies"))
    message = failing_deploy()
    assert "forbidden (403)" in message and 'cannot patch resource "networkpolicies"' in message


def test_wrong_credentials_are_a_clear_401(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "bad", token="wrong")))
    message = failing_deploy()
    assert "401" in message


def test_a_field_owned_by_another_manager_is_a_conflict_unless_forced(server):
    deploy()
    configmap = server.get("configmaps", "django-app", NS)
    server.server_side_apply(
        "", "v1", "ConfigMap", "configmaps", NS, "django-app",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "django-app"},
         "data": {"LOG_LEVEL": "DEBUG"}},
        "kubectl-edit", True, False,
    )  # fmt: skip
    assert server.get("configmaps", "django-app", NS)["data"]["LOG_LEVEL"] == "DEBUG"
    # This tool owned LOG_LEVEL before: it takes it back.
    report = deploy()
    assert server.get("configmaps", "django-app", NS)["data"]["LOG_LEVEL"] == configmap["data"]["LOG_LEVEL"]
    assert {"object": f"ConfigMap {NS}/django-app", "result": "configured"} in report["objects"]


def test_a_field_this_tool_never_managed_is_not_taken_without_force_conflicts(server, monkeypatch):
    deploy()
    server.server_side_apply(
        "", "v1", "ConfigMap", "configmaps", NS, "django-app",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "django-app"}, "data": {"HAND_MADE": "1"}},
        "kubectl-edit", True, False,
    )  # fmt: skip
    # The next render manages HAND_MADE too, which another manager owns.
    monkeypatch.setenv("DEPLOY_EXTRA_ENV", '{"HAND_MADE": "2"}')
    message = failing_deploy()
    assert 'conflict with "kubectl-edit": .data.HAND_MADE' in message and "--force-conflicts" in message
    assert server.get("configmaps", "django-app", NS)["data"]["HAND_MADE"] == "1"
    deploy("--force-conflicts")
    assert server.get("configmaps", "django-app", NS)["data"]["HAND_MADE"] == "2"


def test_an_invalid_object_is_a_clear_422(server):
    server.faults.append(Fault("PATCH", r"/horizontalpodautoscalers/", status=422))
    message = failing_deploy()
    assert "rejected the object as invalid (422)" in message and "Applied before the failure" in message


def test_fields_a_manager_stops_applying_are_removed(server, monkeypatch):
    monkeypatch.setenv("DEPLOY_EXTRA_ENV", '{"FEATURE_X": "on"}')
    deploy()
    assert server.get("configmaps", "django-app", NS)["data"]["FEATURE_X"] == "on"
    monkeypatch.delenv("DEPLOY_EXTRA_ENV")
    deploy()
    assert "FEATURE_X" not in server.get("configmaps", "django-app", NS)["data"]


def test_dry_run_and_diff_change_nothing(server, monkeypatch):
    before = set(server.objects)
    report = deploy("--dry-run")
    assert report["outcome"] == "dry-run" and report["applied"] is False
    assert set(server.objects) == before
    deploy()
    before = live_versions(server)
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.9.0")
    report = deploy("--dry-run")
    assert {"object": f"Deployment {NS}/django-app", "result": "configured"} in report["objects"]
    assert any(m == "PATCH" and q.get("dryRun") == "All" for m, p, q, h in server.requests)
    out = StringIO()
    call_command("k8s_deploy", "--diff", stdout=out)
    text = out.getvalue()
    assert "+        image: django-app:0.9.0" in text and "-        image: django-app:0.1.0" in text
    assert "pg-secret-pw" not in text and "redis-secret-pw" not in text
    assert live_versions(server) == before


def test_rollback_command_reapplies_a_revision(server, monkeypatch):
    deploy()
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.2.0")
    deploy()
    report = deploy("--rollback")
    assert report["outcome"] == "deployed" and report["revision"] == 3
    assert image_of(server) == "django-app:0.1.0"
    message = failing_deploy("--rollback", "17")
    assert "no such revision (recorded: 1, 2, 3)" in message


def test_a_rollback_records_the_image_it_deployed(server, monkeypatch):
    """--history after a rollback names the image the cluster runs, not the one today's settings render."""
    deploy()
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.2.0")
    deploy()
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.3.0")  # the settings on the machine that rolls back
    deploy("--rollback", "1")
    assert image_of(server) == "django-app:0.1.0"
    out = StringIO()
    call_command("k8s_deploy", "--history", stdout=out)
    line = next(row for row in out.getvalue().splitlines() if row.split()[:1] == ["3"])
    assert "django-app:0.1.0" in line and "0.3.0" not in line and line.endswith("rollback to revision 1")


def test_release_records_hold_no_secret_values(server):
    deploy()
    records = [s for s in server.list("secrets", NS) if s["metadata"]["name"].startswith("django-app-release-v")]
    assert len(records) == 1
    import base64
    import gzip

    manifests = json.loads(gzip.decompress(base64.b64decode(records[0]["data"]["manifests"])))
    assert "Secret" not in {m["kind"] for m in manifests}
    assert "pg-secret-pw" not in json.dumps(manifests)


def test_an_endpoint_token_is_asked_for_every_request(server):
    calls = []

    def token():
        calls.append(1)
        return "t0ken"

    cluster = Cluster(api_client(None, endpoint=Endpoint(host=server.url, token=token)))
    before = len(server.requests)
    assert cluster.get("v1", "Namespace", "nothing") is None
    assert cluster.get("v1", "Namespace", "nothing-either") is None
    # Discovery may come from the client's cache: count what reached the server.
    made = len(server.requests) - before
    assert made >= 2 and len(calls) >= made
    headers = {k.lower(): v for k, v in server.requests[-1][3].items()}
    assert headers["authorization"] == "Bearer t0ken"


def test_a_rollback_keeps_the_secrets(server, monkeypatch):
    deploy()
    monkeypatch.setenv("DEPLOY_IMAGE_TAG", "0.2.0")
    deploy()
    secrets = {s["metadata"]["name"] for s in server.list("secrets", NS) if "-release-v" not in s["metadata"]["name"]}
    assert {"django-app", "django-app-postgres", "django-app-redis"} <= secrets
    report = deploy("--rollback")
    assert image_of(server) == "django-app:0.1.0"
    assert not [o for o in report["pruned"] if o.startswith("Secret ")]
    after = {s["metadata"]["name"] for s in server.list("secrets", NS) if "-release-v" not in s["metadata"]["name"]}
    assert after == secrets
