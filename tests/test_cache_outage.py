"""A Redis outage degrades the site; it does not take it down.

The test runs a Redis of its own on a free port, starts gunicorn on it,
logs in to the admin, then stops Redis under the running gunicorn.
"""

import re
import signal
import subprocess
import time

import pytest
import redis
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.conftest import admin_login, free_port, own_redis_client

# slow: gunicorn, a Redis of their own and admin logins hashed as in production (PBKDF2).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
HOST = {"Host": "localhost"}
HUNG_TIMEOUT = 4.0  # the cache's socket time-out in the hung-Redis test: longer than a busy machine's slowest request


@pytest.fixture
def own_redis(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = own_redis_client(port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield process, port, client
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


def _get(session, base, path):
    started = time.monotonic()
    response = session.get(f"{base}{path}", headers=HOST, allow_redirects=False, timeout=10)
    return response, time.monotonic() - started


def _cache_up(base):
    text = requests.get(f"{base}/metrics", timeout=10).text
    (value,) = re.findall(r"^deploy_cache_up(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return float(value)


def test_a_redis_outage_degrades_the_site_without_taking_it_down(gunicorn_factory, own_redis):
    process, port, client = own_redis
    # Hashed as production hashes it (the test settings use a fast MD5 hasher that gunicorn does not accept).
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", None)
    user.password = PBKDF2PasswordHasher().encode("a-long-admin-password-1", PBKDF2PasswordHasher().salt())
    user.save()
    overrides = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "SESSION_COOKIE_SECURE": "false",
                 "CSRF_COOKIE_SECURE": "false"}  # fmt: skip
    with gunicorn_factory(workers=2, **overrides) as server:
        base = server.url
        before = admin_login(base, "ops", "a-long-admin-password-1")
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json() == {
            "status": "ok",
            "checks": {"database": "ok", "cache": "ok"},
        }
        assert _cache_up(base) == 1
        assert _get(requests, base, "/products/")[0].status_code == 200
        assert client.dbsize() > 0, "the session and the page were cached in this Redis"

        process.terminate()
        process.wait(timeout=10)
        with pytest.raises(redis.ConnectionError):
            client.ping()

        for path in ("/", "/products/", "/products/live/"):
            response, seconds = _get(requests, base, path)
            assert response.status_code == 200, (path, response.status_code)
            assert seconds < 3, f"{path} waited {seconds:.1f} s on the dead cache"
        ready = requests.get(f"{base}/readyz", headers={"Host": "10.0.0.7"}, timeout=10)
        assert ready.status_code == 200
        assert ready.json() == {"status": "degraded", "checks": {"database": "ok", "cache": "unavailable"}}
        assert _cache_up(base) == 0
        # The session made before the outage is kept: it is read from the database.
        response, _ = _get(before, base, "/admin/")
        assert response.status_code == 200 and "Log out" in response.text
        # A new admin login works while Redis is down, and its session holds.
        during = admin_login(base, "ops", "a-long-admin-password-1")
        response, _ = _get(during, base, "/admin/auth/user/")
        assert response.status_code == 200 and "ops@example.com" in response.text
        assert not [line for line in server.log_lines() if '"level": "ERROR"' in line], "no request failed"


def test_a_redis_that_hangs_costs_one_time_out_not_one_per_cache_call(gunicorn_factory, own_redis):
    """A Redis that accepts and never answers (stopped with SIGSTOP: the kernel still completes connections).

    Without a pause after the first failure, every cache call waited its 1 s time-out: a catalog page 3 s,
    /readyz 2.5 s against the probe's 3 s, the admin login 3.8 s, each holding a gunicorn thread.

    The cache's time-out is long here (HUNG_TIMEOUT) so that "waited on the hung Redis" cannot be mistaken for
    "the machine is busy": a request that waited took at least one time-out; the login is compared with the
    same login while Redis was up.
    """
    process, port, _client = own_redis
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", None)
    user.password = PBKDF2PasswordHasher().encode("a-long-admin-password-1", PBKDF2PasswordHasher().salt())
    user.save()
    overrides = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "SESSION_COOKIE_SECURE": "false",
                 "CSRF_COOKIE_SECURE": "false", "CACHE_DOWN_SECONDS": "30",
                 "CACHE_TIMEOUT": str(HUNG_TIMEOUT)}  # fmt: skip
    with gunicorn_factory(workers=1, **overrides) as server:
        base = server.url
        started = time.monotonic()
        before = admin_login(base, "ops", "a-long-admin-password-1")
        login_while_up = time.monotonic() - started
        assert _get(requests, base, "/products/")[0].status_code == 200
        process.send_signal(signal.SIGSTOP)
        try:
            # The first cache call in the worker waits its time-out; the calls after it do not.
            assert _get(requests, base, "/products/")[1] >= HUNG_TIMEOUT, "the first cache call waited"
            for path in ("/", "/products/", "/products/live/", "/products/"):
                response, seconds = _get(requests, base, path)
                assert response.status_code == 200, (path, response.status_code)
                assert seconds < HUNG_TIMEOUT, f"{path} waited {seconds:.1f} s on the hung cache"
            started = time.monotonic()
            ready = requests.get(f"{base}/readyz", headers={"Host": "10.0.0.7"}, timeout=10)
            assert time.monotonic() - started < HUNG_TIMEOUT
            assert ready.status_code == 200
            assert ready.json() == {"status": "degraded", "checks": {"database": "ok", "cache": "unavailable"}}
            assert _cache_up(base) == 0
            response, seconds = _get(before, base, "/admin/")
            assert response.status_code == 200 and "Log out" in response.text and seconds < HUNG_TIMEOUT
            started = time.monotonic()
            during = admin_login(base, "ops", "a-long-admin-password-1")
            login_while_hung = time.monotonic() - started
            assert login_while_hung < login_while_up + HUNG_TIMEOUT, (
                f"the login took {login_while_hung:.1f} s ({login_while_up:.1f} s with Redis up): it waited on Redis"
            )
            response, _ = _get(during, base, "/admin/auth/user/")
            assert response.status_code == 200 and "ops@example.com" in response.text
        finally:
            process.send_signal(signal.SIGCONT)
        assert not [line for line in server.log_lines() if '"level": "ERROR"' in line], "no request failed"
