"""Maintenance mode: the middleware on real gunicorn processes, the switch command, the flag's two homes."""

import http.client
import json
import re
import time
from io import StringIO
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from deploy import maintenance
from tests.conftest import ROOT, production_env
from tests.forkserver import run_python

PROBE_HOST = {"Host": "10.0.0.7"}
HTML = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
API = {"Accept": "application/json"}


def request(server, method, path, headers=None, body=None):
    """One request without following redirects: (status, headers, body)."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Host": "localhost", **(headers or {})})
        answer = connection.getresponse()
        return answer.status, answer, answer.read()
    finally:
        connection.close()


def cookies(answer):
    return dict(re.match(r"([^=]+)=([^;]*)", value).groups() for value in answer.headers.get_all("Set-Cookie") or [])


def manage(env, *args):
    return run_python(["manage.py", *args], env=production_env(**env), cwd=ROOT, timeout=60)


def login(server, jar, token):
    form = urlencode({"username": "ops", "password": "a-long-pass-phrase", "csrfmiddlewaretoken": token})
    return request(
        server,
        "POST",
        "/admin/login/?next=/admin/",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
            **HTML,
        },
        form,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_maintenance_file_on_a_real_gunicorn(gunicorn_factory, tmp_path):
    """Pages 503 with Retry-After (HTML or JSON), probes and /metrics 200, a POST refused and nothing written, from
    every worker; all back when switched off. Switched by the command, as on the old deployment's machine."""
    # Hashed with a hasher the production settings know (the tests' own use MD5), with few rounds: it is not the test.
    password = PBKDF2PasswordHasher().encode("a-long-pass-phrase", "maintenance-salt", iterations=1000)
    get_user_model().objects.create(username="ops", is_staff=True, is_superuser=True, password=password)
    flag_env = {"MAINTENANCE_FILE": str(tmp_path / "flag" / "maintenance.json"), "MAINTENANCE_CACHE": ""}
    with gunicorn_factory(workers=2, **flag_env) as server:
        status, answer, _ = request(server, "GET", "/admin/login/", HTML)
        assert status == 200
        jar = cookies(answer)
        token = jar["csrftoken"]
        assert request(server, "GET", "/", HTML)[0] == 200

        switched = manage(flag_env, "maintenance", "on", "--retry-after", "120", "--json")
        assert switched.returncode == 0, switched.stderr
        assert json.loads(switched.stdout)["on"] is True

        sessions = Session.objects.count()
        # Over new connections, so that both workers answer.
        for _ in range(6):
            status, answer, body = request(server, "GET", "/", {**HTML, "Connection": "close"})
            assert status == 503
            assert answer.headers["Retry-After"] == "120"
            assert answer.headers["Content-Type"].startswith("text/html")
            assert b"Down for maintenance" in body
        status, answer, body = request(server, "GET", "/products/", API)
        assert status == 503
        assert json.loads(body) == {"status": "maintenance", "retry_after": 120}
        assert answer.headers["Retry-After"] == "120"
        for path in ("/healthz", "/readyz", "/startupz", "/metrics"):
            assert request(server, "GET", path, PROBE_HOST)[0] == 200, path
        # A valid login (CSRF token and all) would write a session: refused, nothing written.
        status, answer, _ = login(server, jar, token)
        assert status == 503
        assert "sessionid" not in cookies(answer)
        assert Session.objects.count() == sessions
        # The 503s are counted like any answer.
        _, _, metrics = request(server, "GET", "/metrics", PROBE_HOST)
        assert re.search(rb'django_http_responses_total_by_status_total\{status="503"\} ([1-9]\d*)', metrics)

        switched = manage(flag_env, "maintenance", "off")
        assert switched.returncode == 0, switched.stderr
        assert "Maintenance is off" in switched.stdout
        for _ in range(4):
            assert request(server, "GET", "/", {**HTML, "Connection": "close"})[0] == 200
        status, answer, _ = login(server, jar, token)
        assert status == 302
        assert "sessionid" in cookies(answer)
        assert Session.objects.count() == sessions + 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_maintenance_cache_key_switches_every_worker(gunicorn_factory):
    """The cluster's switch: one key in the shared Redis, seen by every worker within MAINTENANCE_POLL_SECONDS."""
    flag = maintenance.MaintenanceFlag(cache="default")
    # The gunicorn processes inherit this process's REDIS_URL and CACHE_KEY_PREFIX: they read the same key.
    with gunicorn_factory(workers=2, MAINTENANCE_CACHE="default", MAINTENANCE_POLL_SECONDS="0.2") as server:
        try:
            assert request(server, "GET", "/", HTML)[0] == 200
            maintenance.switch_on(flag, retry_after=45)
            time.sleep(0.3)
            for _ in range(6):
                status, answer, _ = request(server, "GET", "/", {**HTML, "Connection": "close"})
                assert (status, answer.headers["Retry-After"]) == (503, "45")
            assert request(server, "GET", "/readyz", PROBE_HOST)[0] == 200
        finally:
            maintenance.switch_off(flag)
        time.sleep(0.3)
        for _ in range(4):
            assert request(server, "GET", "/", {**HTML, "Connection": "close"})[0] == 200


@pytest.mark.django_db
def test_a_touched_empty_file_is_on_and_html_or_json_by_accept(tmp_path, client):
    flag = tmp_path / "maintenance.json"
    with override_settings(MAINTENANCE_FILE=str(flag), MAINTENANCE_CACHE=""):
        assert client.get("/", headers=HTML).status_code == 200
        flag.touch()
        answer = client.get("/", headers=HTML)
        assert answer.status_code == 503
        assert answer["Retry-After"] == str(maintenance.DEFAULT_RETRY_AFTER)
        answer = client.post("/admin/login/", {"username": "x"})
        assert answer.status_code == 503
        assert answer.json() == {"status": "maintenance", "retry_after": maintenance.DEFAULT_RETRY_AFTER}
        assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("written", "expected"),
    [('{"retry_after": "soon"}', "600"), ('{"retry_after": -5}', "1"), ('{"retry_after": 1e30}', "86400")],
)
def test_a_hand_written_flag_file_still_gives_the_page_and_no_error_log(tmp_path, client, caplog, written, expected):
    """A flag file edited by hand with a retry_after that is not a sane number: the page, not a 500 on every
    request; and the 503s are not logged as server errors."""
    flag = tmp_path / "maintenance.json"
    flag.write_text(written)
    with override_settings(MAINTENANCE_FILE=str(flag), MAINTENANCE_CACHE=""), caplog.at_level("WARNING"):
        answer = client.get("/", headers=API)
    assert answer.status_code == 503
    assert answer["Retry-After"] == expected
    assert answer.json() == {"status": "maintenance", "retry_after": int(expected)}
    assert not [r for r in caplog.records if r.name == "django.request"]


def test_the_command_reports_and_refuses_what_it_cannot_do(tmp_path):
    flag = tmp_path / "sub" / "maintenance.json"
    out = StringIO()
    with override_settings(MAINTENANCE_FILE=str(flag), MAINTENANCE_CACHE=""):
        call_command("maintenance", "on", "--retry-after", "30", "--reason", "cut-over", "--json", stdout=out)
        report = json.loads(out.getvalue())
        assert report["on"] is True and report["state"]["retry_after"] == 30
        assert json.loads(flag.read_text())["reason"] == "cut-over"
        out = StringIO()
        call_command("maintenance", "status", "-v", "2", stdout=out)
        assert "Maintenance is on" in out.getvalue() and "Reason: cut-over" in out.getvalue()
        call_command("maintenance", "off", stdout=StringIO())
        assert not flag.exists()
        with pytest.raises(CommandError, match="--retry-after must be between 1 and 86400 seconds"):
            call_command("maintenance", "on", "--retry-after", "0", stdout=StringIO())
        with pytest.raises(CommandError, match="--retry-after must be between 1 and 86400 seconds"):
            call_command("maintenance", "on", "--retry-after", "99999999999999999999", stdout=StringIO())
        assert not flag.exists()

    # A folder that cannot be made (a file is in the way): refused, naming the file, nothing left.
    (tmp_path / "blocked").write_text("")
    with (
        override_settings(MAINTENANCE_FILE=str(tmp_path / "blocked" / "maintenance.json"), MAINTENANCE_CACHE=""),
        pytest.raises(CommandError, match=r"Cannot write the maintenance file .*blocked/maintenance.json"),
    ):
        call_command("maintenance", "on", stdout=StringIO())
    assert (tmp_path / "blocked").read_text() == ""

    with override_settings(MAINTENANCE_FILE="", MAINTENANCE_CACHE=""):
        with pytest.raises(CommandError, match="No maintenance flag is configured: set MAINTENANCE_FILE"):
            call_command("maintenance", "on", stdout=StringIO())
        out = StringIO()
        call_command("maintenance", "status", "--json", stdout=out)
        assert json.loads(out.getvalue())["on"] is False


def test_the_cache_flag_is_read_once_per_poll_interval(settings):
    """The cost per request is a clock read: the key is read at most once per MAINTENANCE_POLL_SECONDS."""
    flag = maintenance.MaintenanceFlag(cache="default", poll_seconds=60)
    poll = maintenance._Poll(flag)
    try:
        assert poll.get() is None
        maintenance.switch_on(flag, 5)
        assert poll.get() is None  # not read again before the interval
        poll.next_read = 0.0
        assert poll.get()["retry_after"] == 5
    finally:
        maintenance.switch_off(flag)
    assert caches["default"].get(maintenance.CACHE_KEY) is None


def test_a_cache_that_does_not_answer_says_the_file_is_on_and_how_to_go_back(tmp_path):
    """The file written, the cache not (Redis unreachable from the old machine): the error says what was left
    on, not only what failed."""
    flag = tmp_path / "maintenance.json"
    dead = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}  # keeps nothing, like an unreachable Redis
    with (
        override_settings(MAINTENANCE_FILE=str(flag), MAINTENANCE_CACHE="dead", CACHES={"default": dead, "dead": dead}),
        pytest.raises(CommandError) as excinfo,
    ):
        call_command("maintenance", "on", stdout=StringIO())
    message = str(excinfo.value)
    assert "did not keep the maintenance key" in message
    assert f"The maintenance file {flag} is written" in message and "maintenance off" in message
    assert "MAINTENANCE_CACHE to an empty value" in message
    assert flag.exists()
    with (
        override_settings(MAINTENANCE_FILE="", MAINTENANCE_CACHE="dead", CACHES={"default": dead, "dead": dead}),
        pytest.raises(CommandError, match="Nothing is in maintenance"),
    ):
        call_command("maintenance", "on", stdout=StringIO())


def test_switch_is_the_library_call_of_the_command(tmp_path):
    """maintenance.switch, called directly: on, status, off, and a Retry-After out of range refused before any write."""
    flag = maintenance.MaintenanceFlag(file=str(tmp_path / "flag"))
    with pytest.raises(maintenance.MaintenanceError, match="--retry-after must be between 1 and 86400"):
        maintenance.switch("on", 0, flag=flag)
    assert not (tmp_path / "flag").exists()
    on = maintenance.switch("on", 120, "upgrade", flag=flag)
    assert on["on"] and on["state"]["retry_after"] == 120 and on["state"]["reason"] == "upgrade"
    assert on["flags"] == [f"file {tmp_path / 'flag'}"]
    assert maintenance.switch("status", flag=flag)["on"]
    assert maintenance.switch("off", flag=flag) == {"action": "off", "on": False, "state": None, "flags": on["flags"]}
    assert not (tmp_path / "flag").exists()
