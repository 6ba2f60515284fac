import json

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/startupz"])
def test_probes_answer_ok(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/startupz", "/metrics"])
def test_probes_answer_whatever_the_host(path):
    response = Client(HTTP_HOST="10.0.0.7").get(path)
    assert response.status_code == 200


def test_pages_keep_allowed_hosts_protection():
    assert Client(HTTP_HOST="10.0.0.7").get("/").status_code == 400
    assert Client(HTTP_HOST="10.0.0.7").get("/healthz/extra").status_code == 400


def test_probe_middleware_lets_other_methods_through():
    # A POST to a probe path is not a probe: it meets ALLOWED_HOSTS like any request.
    assert Client(HTTP_HOST="10.0.0.7").post("/healthz").status_code == 400


def test_readiness_reports_a_cache_outage_as_degraded_not_unready(client, settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200
    assert body == {"status": "degraded", "checks": {"database": "ok", "cache": "unavailable"}}
    assert "127.0.0.1" not in json.dumps(body)
    assert client.get("/healthz").status_code == 200


def test_readiness_fails_only_on_the_database_and_hides_internals(client, monkeypatch):
    from deploy.health import checks

    def broken(self):
        raise OSError("could not connect to db.internal:5432 as app with password hunter2")

    monkeypatch.setattr(checks.DatabaseCheck, "run", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "fail", "checks": {"database": "unavailable", "cache": "ok"}}
    assert "hunter2" not in response.content.decode() and "db.internal" not in response.content.decode()


def test_unapplied_migrations_fail_startup_but_not_readiness(client, monkeypatch):
    from deploy.health import checks, views

    monkeypatch.setattr(views, "_started", False)

    class Pending(checks.MigrationsCheck):
        def run(self):
            raise checks.CheckFailed("2 migration(s) not applied")

    monkeypatch.setattr(views, "STARTUP_CHECKS", (*views.READINESS_CHECKS, Pending()))
    response = client.get("/startupz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "2 migration(s) not applied"
    assert client.get("/readyz").status_code == 200


def test_request_id_is_returned_and_sanitised(client):
    assert client.get("/healthz").status_code == 200
    response = client.get("/", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    response = client.get("/", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32
