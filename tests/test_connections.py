"""Connecting fails fast and clearly; --json stdout is one JSON document, errors included."""

import json
import os
import socket
import sqlite3
import subprocess
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.k8s.apply import Cluster, ClusterError
from deploy.k8s.cluster import ClusterSource
from deploy.k8s.connect import api_client
from tests.conftest import PYTHON, ROOT, production_env, target_database_url
from tests.fake_apiserver import FakeApiServer

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
    done = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args, "--json"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout), done.stderr


def _has_log_records(stderr):
    records = []
    for line in stderr.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict) and "level" in r and "logger" in r]


def test_json_render_only_success_and_failure(tmp_path):
    code, report, _ = _manage(tmp_path, "k8s_deploy")
    assert code == 0 and report["ok"] is True and report["cluster"] is None
    code, report, stderr = _manage(tmp_path, "k8s_deploy", DEPLOY_APP_NAME="bad\n")
    assert code == 1 and report["ok"] is False and "DEPLOY['app_name']" in report["error"]
    assert "CommandError" in stderr


def test_json_preflight_and_deploy_against_an_unanswering_server(tmp_path, silent_server):
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://{silent_server}")
    for args in (("--preflight",), ()):
        code, report, stderr = _manage(tmp_path, "k8s_deploy", *args, "--request-timeout", "1", KUBECONFIG=kubeconfig)
        assert code == 1 and report["ok"] is False
        assert f"http://{silent_server} did not answer in time" in report["error"]
        assert _has_log_records(stderr), "the log records went to stderr, not into the report"


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
    source = tmp_path / "migrated.sqlite3"
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--verbosity", "0"],
        cwd=ROOT, check=True, capture_output=True,
        env=production_env(DATABASE_URL=f"sqlite:///{source}", DJANGO_SETTINGS_MODULE="tests.settings"),
    )  # fmt: skip
    dsn = target_database_url()
    code, plan, stderr = _manage(tmp_path, "migrate_from_sqlite", "--source", str(source), "--plan", DATABASE_URL=dsn)
    assert code == 0 and plan["ok"] is True and plan["rows"] > 0 and plan["tables"], stderr[-2000:]
    # --plan runs the preflight: a file that is not this project's database is refused, still as one JSON document.
    unrelated = tmp_path / "unrelated.sqlite3"
    with sqlite3.connect(unrelated) as conn:
        conn.execute("CREATE TABLE unrelated (id integer)")
    code, plan, _ = _manage(tmp_path, "migrate_from_sqlite", "--source", str(unrelated), "--plan", DATABASE_URL=dsn)
    assert code == 1 and plan["ok"] is False and "missing from the source" in plan["error"]
    missing = tmp_path / "missing.sqlite3"
    code, report, _ = _manage(tmp_path, "migrate_from_sqlite", "--source", str(missing), DATABASE_URL=dsn)
    assert code == 1 and report["ok"] is False and str(missing) in report["error"]
    assert not missing.exists()
