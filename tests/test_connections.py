"""Connecting fails fast and clearly; --json stdout is one JSON document, errors included."""

import hashlib
import json
import os
import socket
import sqlite3
import tempfile
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.k8s.client import Cluster, ClusterError
from deploy.k8s.connect import ClusterSource, Endpoint, api_client
from tests.conftest import ROOT, production_env, target_database_url
from tests.fake_apiserver import FakeApiServer
from tests.forkserver import run_python

SECRETS = {
    "DEPLOY_SECRET_KEY": "k" * 40,
    "DEPLOY_POSTGRES_PASSWORD": "pg-pw",
    "DEPLOY_REDIS_PASSWORD": "redis-pw",
    "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "pg-su-pw",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("DEPLOY_") or name in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST"}:
            monkeypatch.delenv(name)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def silent_server():
    """A socket that accepts connections (the kernel completes them) and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _kubeconfig(path, server):
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def _deploy(*args):
    out = StringIO()
    call_command("k8s_deploy", *args, interactive=False, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_server_that_never_answers_fails_within_the_timeout_naming_it(tmp_path, monkeypatch, silent_server, scheme):
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"{scheme}://{silent_server}")
    # The connection itself, timed: discovery is the first request.
    started = time.monotonic()
    with pytest.raises(ClusterError) as excinfo:
        Cluster(api_client(ClusterSource("kubeconfig", str(kubeconfig)), timeout=(1, 1)))
    elapsed = time.monotonic() - started
    assert elapsed < 4, f"took {elapsed:.1f} s with a 1 s time-out"
    assert f"{scheme}://{silent_server} did not answer in time" in str(excinfo.value)
    # The command: one line naming the server, nothing written.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(CommandError) as excinfo:
        _deploy("--request-timeout", "1")
    message = str(excinfo.value)
    assert message.startswith(f"Connecting to {scheme}://{silent_server} (API discovery): the cluster's API server")
    assert "did not answer in time (1 s to connect, 1 s to answer)" in message
    assert "\n" not in message
    assert not (tmp_path / "build").exists(), "with a cluster named, nothing is written to build/"


def test_a_refused_connection_is_not_reported_as_a_time_out(tmp_path):
    # urllib3's NewConnectionError subclasses ConnectTimeoutError: a refusal read as "did not answer in time
    # (5 s to connect, 30 s to answer)" although nothing waited, hiding a wrong port or a stopped server.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    server = f"http://127.0.0.1:{port}"
    with pytest.raises(ClusterError) as excinfo:
        Cluster(api_client(None, endpoint=Endpoint(host=server), timeout=(5, 30)))
    message = str(excinfo.value)
    assert message.startswith(f"Connecting to {server} (API discovery): cannot reach the cluster's API server")
    assert "refused" in message and "did not answer in time" not in message


def test_a_discovery_cache_planted_in_the_shared_temp_directory_is_not_trusted(tmp_path, silent_server):
    """The discovery cache was /tmp/k8s-deploy-discovery-<sha256(server)[:16]>.json, for every user.

    A document there (planted by another local user, or left by another server that had the same address)
    was read instead of asking the server: the time-out in discovery never came, and the kinds and paths
    this tool applied to came from that file.
    """
    with FakeApiServer() as fake:
        cluster = Cluster(api_client(None, endpoint=Endpoint(host=fake.url), timeout=(1, 1)))
        written = Path(cluster.dynamic.resources._Discoverer__cache_file)
        document = written.read_text()
    home = Path(os.environ["HOME"])
    assert written.is_relative_to(home), f"the cache went to {written}, not under this user's home"
    assert written.parent.stat().st_mode & 0o077 == 0, "the cache directory is this user's only"
    server = f"http://{silent_server}"
    digest = hashlib.sha256(server.encode()).hexdigest()[:16]
    planted = Path(tempfile.gettempdir()) / f"k8s-deploy-discovery-{digest}.json"
    planted.write_text(document)
    try:
        with pytest.raises(ClusterError) as excinfo:
            Cluster(api_client(None, endpoint=Endpoint(host=server), timeout=(1, 1)))
        assert f"Connecting to {server} (API discovery)" in str(excinfo.value)
    finally:
        planted.unlink()


def test_an_invalid_kubeconfig_is_one_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nclusters:\n  - name: c\n    cluster: {server: [unclosed\n")
    monkeypatch.setenv("KUBECONFIG", str(bad))
    with pytest.raises(CommandError) as excinfo:
        _deploy()
    message = str(excinfo.value)
    assert message.startswith(f"Cannot use the kubeconfig ({bad}): it is not valid YAML (line ")
    assert "point KUBECONFIG at a valid one" in message
    assert not (tmp_path / "build").exists()


def test_a_kubeconfig_named_but_missing_is_an_error_not_no_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nonexistent"))
    with pytest.raises(CommandError) as excinfo:
        _deploy()
    message = str(excinfo.value)
    assert f"KUBECONFIG names {tmp_path / 'nonexistent'}, which does not exist" in message
    assert "unset KUBECONFIG" in message
    assert not (tmp_path / "build").exists(), "nothing rendered to build/ as if there were no cluster"


@pytest.mark.slow
def test_an_empty_kubeconfig_variable_still_means_no_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "")
    assert "No cluster configured" in _deploy()
    assert (tmp_path / "build" / "k8s" / "kustomization.yaml").is_file()


# --- --json through a real pipe ---------------------------------------------


def _manage(tmp_path, *args, **env):
    environ = production_env(DJANGO_SETTINGS_MODULE="tests.settings", HOME=str(tmp_path / "home"), LOG_LEVEL="DEBUG")
    environ = {
        k: v for k, v in environ.items() if not k.startswith("DEPLOY_") and k not in {"KUBECONFIG", "LOG_STREAM"}
    }
    environ.update(SECRETS, **{k: str(v) for k, v in env.items()})
    done = run_python([str(ROOT / "manage.py"), *args, "--json"], env=environ, cwd=tmp_path, timeout=300)
    return done.returncode, json.loads(done.stdout), done.stderr


def _has_log_records(stderr):
    records = []
    for line in stderr.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict) and "level" in r and "logger" in r]


@pytest.mark.slow
def test_json_render_only_success_and_failure(tmp_path):
    code, report, _ = _manage(tmp_path, "k8s_deploy")
    assert code == 0 and report["ok"] is True and report["cluster"] is None
    code, report, stderr = _manage(tmp_path, "k8s_deploy", DEPLOY_APP_NAME="bad\n")
    assert code == 1 and report["ok"] is False and "DEPLOY['app_name']" in report["error"]
    assert "CommandError" in stderr
    # --render too: the manifests inside the report, not YAML on a --json stdout.
    code, report, _ = _manage(tmp_path, "k8s_deploy", "--render")
    assert code == 0 and report["ok"] is True and report["secrets_redacted"] is True
    kinds = [m["kind"] for m in report["manifests"]]
    assert kinds[0] == "Namespace" and "Deployment" in kinds and "NetworkPolicy" in kinds
    code, report, _ = _manage(tmp_path, "k8s_deploy", "--render", DEPLOY_APP_NAME="bad\n")
    assert code == 1 and report["ok"] is False and "DEPLOY['app_name']" in report["error"]


@pytest.mark.slow
def test_json_preflight_and_deploy_against_an_unanswering_server(tmp_path, silent_server):
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://{silent_server}")
    for args in (("--preflight",), ()):
        code, report, stderr = _manage(tmp_path, "k8s_deploy", *args, "--request-timeout", "1", KUBECONFIG=kubeconfig)
        assert code == 1 and report["ok"] is False
        assert f"http://{silent_server} did not answer in time" in report["error"]
        assert _has_log_records(stderr), "the log records went to stderr, not into the report"


@pytest.mark.slow
def test_json_deploy_success_and_failure_against_the_fake_api_server(tmp_path):
    with FakeApiServer(token="t0ken") as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
        code, report, stderr = _manage(tmp_path, "k8s_deploy", "--no-wait", KUBECONFIG=kubeconfig)
        assert code == 0 and report["ok"] is True and report["applied"] is True, stderr[-2000:]
        assert report["outcome"] == "applied" and report["revision"] == 1
        assert _has_log_records(stderr)
        code, report, _ = _manage(tmp_path, "k8s_deploy", "--preflight", KUBECONFIG=kubeconfig)
        assert isinstance(report["ok"], bool) and report["checks"]
        fake.forbidden.add(("patch", "configmaps"))
        code, report, _ = _manage(tmp_path, "k8s_deploy", "--no-wait", KUBECONFIG=kubeconfig)
        assert code == 1 and report["ok"] is False and "forbidden (403)" in report["error"]


@pytest.mark.django_db(transaction=True)
def test_json_migrate_from_sqlite_success_and_failure(tmp_path):
    # --plan runs the preflight (read-only): a source without the project's tables is refused, in JSON.
    unmigrated = tmp_path / "unmigrated.sqlite3"
    with sqlite3.connect(unmigrated) as conn:
        conn.execute("CREATE TABLE unrelated (id integer)")
    dsn = target_database_url()
    code, plan, _ = _manage(tmp_path, "migrate_from_sqlite", "--source", str(unmigrated), "--plan", DATABASE_URL=dsn)
    assert code == 1 and plan["ok"] is False and "catalog_product" in plan["error"]
    # A source that Django's migrate made (no rows but its content types and permissions): the plan succeeds.
    source = tmp_path / "empty.sqlite3"
    environ = production_env(DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=f"sqlite:///{source}")
    run_python(["manage.py", "migrate", "--verbosity", "0"], env=environ, cwd=ROOT, check=True)
    with sqlite3.connect(source) as conn:
        (made,) = conn.execute(
            "SELECT (SELECT count(*) FROM auth_permission) + (SELECT count(*) FROM django_content_type)"
        ).fetchone()
    code, plan, stderr = _manage(tmp_path, "migrate_from_sqlite", "--source", str(source), "--plan", DATABASE_URL=dsn)
    assert code == 0 and plan["ok"] is True and plan["rows"] == made and plan["tables"], stderr[-2000:]
    missing = tmp_path / "missing.sqlite3"
    code, report, _ = _manage(tmp_path, "migrate_from_sqlite", "--source", str(missing), DATABASE_URL=dsn)
    assert code == 1 and report["ok"] is False and str(missing) in report["error"]
    assert not missing.exists()
