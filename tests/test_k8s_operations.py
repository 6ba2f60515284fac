"""deploy/k8s/operations.py called directly (k8s_deploy's command only parses options and prints what it returns)."""

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from deploy.conf import DeploySecrets, load_config
from deploy.k8s import kinds, operations
from deploy.k8s.client import Cluster
from deploy.k8s.render import render_manifests
from tests.k8s_helpers import fake_cluster

SECRETS = DeploySecrets(
    secret_key="k" * 40,
    postgres_password="pg-secret-pw",
    postgres_superuser_password="pg-superuser-pw",
    redis_password="redis-secret-pw",
)


@pytest.fixture
def server(tmp_path, monkeypatch):
    with fake_cluster(tmp_path, monkeypatch) as fake:  # the secrets are the request's own (SECRETS)
        yield fake


@pytest.fixture
def calls(monkeypatch):
    """Every render and every validation of the run, by the identity of the list."""
    seen = {"rendered": [], "validated": []}
    render, validate = operations.render_manifests, operations.validate_manifests

    def counting_render(*args, **kwargs):
        manifests = render(*args, **kwargs)
        seen["rendered"].append(manifests)
        return manifests

    def counting_validate(manifests, config):
        seen["validated"].append(manifests)
        return validate(manifests, config)

    monkeypatch.setattr(operations, "render_manifests", counting_render)
    monkeypatch.setattr(operations, "validate_manifests", counting_validate)
    return seen


def _request(mode="deploy", **kwargs):
    return operations.Request(load_config({}, environ={}), mode=mode, secrets=SECRETS, **kwargs)


@pytest.mark.usefixtures("no_cluster")
def test_without_a_cluster_the_run_writes_the_validated_render_and_reports_each_object(tmp_path, calls):
    report = operations.run(_request(output="out"))
    (rendered,) = calls["rendered"]
    assert calls["validated"] == [rendered]
    assert report.document["objects"] == [{"object": kinds.describe(m), "result": "written"} for m in rendered]
    assert report.document["secrets_redacted"] and report.document["cluster"] is None
    assert (tmp_path / "out" / "kustomization.yaml").is_file()
    assert "nothing was applied" in report.sentence


@pytest.mark.usefixtures("no_cluster")
def test_modes_that_need_a_cluster_stop_before_rendering_and_name_every_flag(tmp_path, calls):
    with pytest.raises(operations.OperationFailed) as caught:
        operations.run(_request("diff", push=True))
    assert str(caught.value).startswith("No cluster configured: --push, --diff need a cluster")
    assert caught.value.exit_code == 1 and calls["rendered"] == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["deploy", "diff", "dry-run"])
def test_a_run_against_a_cluster_renders_once_and_validates_exactly_what_it_applies(
    server, calls, mode, tmp_path, monkeypatch
):
    given = []

    class Recording(operations.Deployer):
        def deploy(self, manifests, rollback_of=None):
            given.append(manifests)
            return super().deploy(manifests, rollback_of)

        def diff(self, manifests):
            given.append(manifests)
            return super().diff(manifests)

        def dry_run(self, manifests):
            given.append(manifests)
            return super().dry_run(manifests)

    monkeypatch.setattr(operations, "Deployer", Recording)
    report = operations.run(_request(mode, wait=False, output="out"))
    (rendered,) = calls["rendered"]
    assert calls["validated"] == [rendered] and given == [rendered]
    # Applied with the real values, written redacted: from the same render.
    (secret,) = [m for m in rendered if m["kind"] == "Secret" and m["metadata"]["name"] == "django-app"]
    written = (tmp_path / "out" / "03-django-app-secret-django-app.yaml").read_text()
    assert secret["data"]["SECRET_KEY"] not in written and "PHJlZGFjdGVkPg==" in written
    objects = report.document["objects"]
    assert all(set(o) == {"object", "result"} for o in objects) and (objects or mode == "diff")
    assert report.document["applied"] is (mode == "deploy")


def test_push_builds_nothing_for_a_stack_that_would_be_refused(server, monkeypatch):
    pushed = []
    monkeypatch.setattr(operations, "push", lambda request: pushed.append(request) or request.config)
    request = operations.Request(load_config({"quota_pods": 2}, environ={}), secrets=SECRETS, push=True)
    with pytest.raises(operations.OperationFailed) as caught:
        operations.run(request)
    assert "nothing was written or applied" in str(caught.value) and "needs pods 12" in str(caught.value)
    assert pushed == [] and server.get("namespaces", "django-app") is None


def test_push_validates_and_applies_the_render_with_the_pushed_digest(server, monkeypatch, calls):
    digest = "sha256:" + "ab" * 32

    def push(request):
        import dataclasses

        return dataclasses.replace(request.config, image_digest=digest)

    monkeypatch.setattr(operations, "push", push)
    report = operations.run(_request(push=True, wait=False))
    assert report.document["applied"] is True
    applied = calls["rendered"][-1]
    assert calls["validated"][-1] is applied
    (web,) = [m for m in applied if m["kind"] == "Deployment" and m["metadata"]["name"] == "django-app"]
    assert web["spec"]["template"]["spec"]["containers"][0]["image"].endswith(digest)
    live = server.get("deployments", "django-app", "django-app")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith(digest)


def test_render_with_output_writes_the_files_and_applies_nothing_though_a_cluster_is_configured(
    server, calls, tmp_path
):
    report = operations.run(_request(render=True, output="out"))
    (rendered,) = calls["rendered"]
    assert calls["validated"] == [rendered]
    assert (tmp_path / "out" / "kustomization.yaml").is_file()
    assert report.document["applied"] is False and report.document["output"] == "out"
    assert report.document["objects"] == [{"object": kinds.describe(m), "result": "written"} for m in rendered]
    assert report.output == [] and report.sentence.startswith("--render: no cluster was asked, nothing was applied.")
    assert server.get("namespaces", "django-app") is None


def test_a_failed_deploy_carries_its_report_and_exit_code(server):
    server.scenarios["deployment/django-app"] = "crashloop"
    with pytest.raises(operations.OperationFailed) as caught:
        operations.run(_request(timeout=5))
    failed = caught.value
    assert failed.exit_code == 1 and failed.document["applied"] is True
    assert failed.document["outcome"] == "failed" and failed.document["revision"] == 1
    assert all(set(o) == {"object", "result"} for o in failed.document["objects"])


def test_ctrl_c_mid_deploy_records_the_revision_as_interrupted_and_releases_the_lock(server):
    seen = []

    def progress(message):
        seen.append(message)
        if len(seen) == 10:  # inside the lock, once some objects are applied
            raise KeyboardInterrupt

    with pytest.raises(operations.OperationFailed) as caught:
        operations.run(_request(progress=progress, wait=False))
    message = str(caught.value)
    assert message.startswith("Interrupted (Ctrl-C): revision 1 is recorded as interrupted")
    assert "Rerun k8s_deploy to converge" in message and caught.value.exit_code == 1
    assert caught.value.document["outcome"] == "interrupted"
    assert [(r["revision"], r["outcome"]) for r in operations.run(_request("history")).document] == [(1, "interrupted")]
    assert server.list("leases", "django-app") == []
    assert operations.run(_request(wait=False)).document["outcome"] == "applied"  # the rerun converges


def test_a_cancelled_deploy_applies_nothing(server):
    with pytest.raises(operations.OperationFailed, match="Cancelled: nothing was applied"):
        operations.run(_request(confirm=lambda question: False))
    assert server.list("deployments", "django-app") == []


def test_history_is_read_without_rendering(server, calls):
    report = operations.run(_request("history"))
    assert report.document == [] and "No revision recorded" in report.output[0]
    assert calls["rendered"] == []


def test_the_redacted_copy_is_what_a_redacted_render_gives():
    config = load_config({}, environ={})
    real = render_manifests(config, SECRETS, redact=False)
    assert operations.redacted(real) == render_manifests(config, SECRETS, redact=True)
    assert real != render_manifests(config, SECRETS, redact=True)


class _Refusing:
    def __init__(self, exc):
        self.exc = exc

    def request(self, *args, **kwargs):
        raise self.exc


def _cluster(exc):
    cluster = object.__new__(Cluster)  # no discovery: only pod_log is exercised
    cluster.host, cluster.timeout, cluster.dynamic = "https://k8s.invalid", (1, 1), _Refusing(exc)
    return cluster


def test_pod_log_is_empty_when_the_cluster_cannot_give_it_and_a_bug_is_not_hidden():
    assert _cluster(DynamicApiError(ApiException(status=400, reason="container not started"))).pod_log("ns", "p") == ""
    assert _cluster(urllib3.exceptions.ProtocolError("connection reset")).pod_log("ns", "p") == ""
    with pytest.raises(TypeError):
        _cluster(TypeError("a bug")).pod_log("ns", "p")


def test_an_api_error_is_explained_in_a_process_that_has_made_no_cluster(monkeypatch):
    """The client module imports the Kubernetes client with the first Cluster: an error raised before (by a test's
    half-made Cluster, or another caller of ``explain``) is still the cluster's answer, not a bug."""
    from deploy.k8s import client

    monkeypatch.setattr(client, "DynamicApiError", None)  # as before the first Cluster of the process
    error = client.explain(DynamicApiError(ApiException(status=403, reason="Forbidden")), "Reading the Secret")
    assert isinstance(error, client.ClusterError) and error.status == 403
    assert str(error).startswith("Reading the Secret: forbidden (403)")
