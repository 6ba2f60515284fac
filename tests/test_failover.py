"""The app rides through a PostgreSQL failover: real clusters, a real proxy, the app under gunicorn.

What an operator (CloudNativePG) or RDS Multi-AZ does, played on this machine:

- two PostgreSQL 15 clusters of the test's own on free ports of 127.0.0.1: a primary and a streaming
  replica made by ``pg_basebackup -R``, with synchronous replication (``synchronous_standby_names``),
  the mode ``DEPLOY['postgres']['replication'] = "sync"`` stands for;
- haproxy (Debian's) in TCP mode stands for the read-write Service: its one enabled server is the primary;
- the app under gunicorn, its ``DATABASE_URL`` pointing at haproxy;
- a writer posts numbered comments through the Django admin (login, session, CSRF, the admin's own
  transaction) and records which ones the app acknowledged (the admin's 302);
- a prober asks ``/readyz`` all along;
- the primary is stopped as a crashed instance stops (``pg_ctl stop -m immediate``: no shutdown checkpoint,
  its connections reset), the replica promoted (``pg_ctl promote``) and the proxy switched on its admin
  socket (old server in maintenance with its sessions shut, new one ready), as the operator updates
  the ``-rw`` Service's endpoints.

Printed: the seconds during which clients saw errors and the readiness recovery time. Asserted: every
write the app acknowledged is in the new primary, and none is there twice; readiness failed while there
was no primary and came back by itself, with no restart of gunicorn.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from tests.conftest import admin_login, free_port, run_gunicorn, target_database_url

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = {"Host": "localhost"}
PASSWORD = "a-long-admin-password-1"
# How long the cluster takes to notice the lost primary before it promotes the replica. CloudNativePG's
# default is a few seconds (the instance manager's liveness and the failover delay); two seconds keep the
# test short while every readiness probe has time to see the outage. The figures printed are given from
# the promotion as well as from the loss.
DETECTION_SECONDS = 2.0

# The test database's name (the schema is copied from it) is known inside a database test only.
pytestmark = pytest.mark.django_db
needs_postgres = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15's server binaries are not installed"
)
needs_haproxy = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed (.ci/run installs it)")


def _as_postgres(command):
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user when the test is root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command, **kwargs):
    return subprocess.run(_as_postgres(command), check=True, capture_output=True, text=True, **kwargs)


class Instance:
    """One PostgreSQL cluster of the test's own: its data folder, port and log."""

    def __init__(self, base, name):
        self.data = base / name
        self.log = base / f"{name}.log"
        self.port = free_port()
        self.base = base

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}"

    def start(self):
        # fsync off for speed: an immediate stop kills the processes, not the machine, so the operating system
        # keeps what they wrote; what the test checks is replication, not the disk.
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off"
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"])

    def stop(self, mode):
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self):
        return (self.data / "postmaster.pid").exists()

    def connect(self, dbname="postgres"):
        return psycopg.connect(f"{self.url}/{dbname}", autocommit=True, connect_timeout=5)


@pytest.fixture
def pg_pair():
    """A primary and a synchronous streaming replica; both stopped afterwards, their folders removed."""
    base = Path(tempfile.mkdtemp(prefix="failover-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    primary, replica = Instance(base, "primary"), Instance(base, "replica")
    try:
        _run([str(PG_BIN / "initdb"), "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        primary.start()
        with primary.connect() as conn:
            conn.execute("CREATE DATABASE app")
        _run(
            [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
             "-D", str(replica.data), "-R", "-X", "stream", "--checkpoint=fast"]
        )  # fmt: skip
        replica.start()
        with primary.connect() as conn:
            # Synchronous from now on: a commit is acknowledged once the replica has flushed it.
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 20
            while conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall() != [("sync",)]:
                assert time.monotonic() < deadline, "the replica did not become synchronous"
                time.sleep(0.1)
        yield primary, replica
    finally:
        for instance in (primary, replica):
            if instance.running():
                subprocess.run(
                    _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(instance.data), "-m", "immediate", "stop"]),
                    capture_output=True,
                )
        shutil.rmtree(base, ignore_errors=True)


class Proxy:
    """haproxy in TCP mode: the read-write Service, switched on its admin socket."""

    def __init__(self, base, primary, replica):
        self.port = free_port()
        self.socket = base / "haproxy.sock"
        self.config = base / "haproxy.cfg"
        self.config.write_text(
            f"""global
    stats socket {self.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 1s
    # A Service whose endpoint died answers at once (the pod's address resets): no retry behind the client's back.
    retries 0
    timeout client 1h
    timeout server 1h
frontend rw
    bind 127.0.0.1:{self.port}
    default_backend postgres
backend postgres
    server primary 127.0.0.1:{primary.port}
    server replica 127.0.0.1:{replica.port} disabled
"""
        )
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.process.poll() is None, self.process.stdout.read().decode()
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)

    def command(self, line):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(4096), b"")).decode()

    def switch_to_replica(self):
        # The endpoints change: nothing more goes to the old primary, its sessions are cut, the new one serves.
        for line in (
            "set server postgres/primary state maint",
            "shutdown sessions server postgres/primary",
            "set server postgres/replica state ready",
        ):
            answer = self.command(line)
            assert answer.strip() == "", f"haproxy refused {line!r}: {answer}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class Writer(threading.Thread):
    """Posts comments numbered 0, 1, 2, … through the admin, each once; records which were acknowledged."""

    def __init__(self, base, username, password, content_type):
        super().__init__(daemon=True)
        self.base = base
        self.session = admin_login(base, username, password)
        self.token = self.session.cookies["csrftoken"]
        self.content_type = content_type
        self.acknowledged = []
        self.errors = []  # (monotonic time, number, what)
        self.sent = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            number = self.sent
            self.sent += 1
            data = {
                "csrfmiddlewaretoken": self.token,
                "content_type": self.content_type,
                "object_id": "1",
                "body": f"write {number}",
                "created_at_0": "2026-01-01",
                "created_at_1": "00:00:00",
            }
            try:
                answer = self.session.post(
                    f"{self.base}/admin/catalog/comment/add/",
                    data=data,
                    headers={**HOST, "Referer": f"{self.base}/admin/"},
                    allow_redirects=False,
                    timeout=15,
                )
            except requests.RequestException as exc:
                self.errors.append((time.monotonic(), number, type(exc).__name__))
                continue
            if answer.status_code == 302:
                self.acknowledged.append(number)
            else:
                self.errors.append((time.monotonic(), number, answer.status_code))
                time.sleep(0.02)


class Prober(threading.Thread):
    """Asks /readyz every 100 ms, as a kubelet would (much more often): records (time, status)."""

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base = base
        self.answers = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            asked = time.monotonic()  # when the probe was sent: a slow answer still describes that moment
            try:
                status = requests.get(f"{self.base}/readyz", timeout=10).status_code
            except requests.RequestException:
                status = None
            self.answers.append((asked, status))
            time.sleep(0.1)


def _load_schema(test_database_url, primary, hasher):
    """The schema Django's ``migrate`` made for this run's test database, copied into the new cluster.

    Faster than a second ``migrate`` (half a minute on a loaded machine) and the same tables; then one
    administrator, hashed as production hashes passwords (the test settings' MD5 hasher is not gunicorn's).
    """
    dump = subprocess.run(["pg_dump", "--no-owner", "--no-privileges", test_database_url],
                          check=True, capture_output=True)  # fmt: skip
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", f"{primary.url}/app"],
                   input=dump.stdout, check=True, capture_output=True)  # fmt: skip
    with primary.connect("app") as conn:
        conn.execute(
            "INSERT INTO auth_user (username, email, password, is_superuser, is_staff, is_active, first_name,"
            " last_name, date_joined) VALUES ('ops', 'ops@example.com', %s, true, true, true, '', '', now())",
            [hasher.encode(PASSWORD, hasher.salt())],
        )
        (content_type,) = conn.execute(
            "SELECT id FROM django_content_type WHERE app_label = 'catalog' AND model = 'product'"
        ).fetchone()
    return str(content_type)


def _wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
@needs_postgres
@needs_haproxy
def test_the_app_rides_through_a_failover_and_loses_no_acknowledged_write(pg_pair, tmp_path, static_root, capsys):
    primary, replica = pg_pair
    proxy = Proxy(primary.base, primary, replica)
    try:
        app_url = f"postgres://postgres@127.0.0.1:{proxy.port}/app"
        content_type = _load_schema(target_database_url(), primary, PBKDF2PasswordHasher())
        cookies = {"SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false"}
        with run_gunicorn(tmp_path, workers=2, DATABASE_URL=app_url, STATIC_ROOT=static_root, **cookies) as server:
            writer = Writer(server.url, "ops", PASSWORD, content_type)
            prober = Prober(server.url)
            writer.start()
            prober.start()
            _wait_for(lambda: len(writer.acknowledged) >= 20, 30, "the writer got no 20 writes through")
            # Both workers warm (a cold one's first request takes seconds here) and probing at their pace.
            _wait_for(lambda: len(prober.answers) >= 10, 30, "readiness was not probed ten times")

            stopping = time.monotonic()
            primary.stop("immediate")
            lost = time.monotonic()  # the primary's processes are gone (pg_ctl waited for them)
            time.sleep(DETECTION_SECONDS)
            _run([str(PG_BIN / "pg_ctl"), "-D", str(replica.data), "-w", "promote"])
            proxy.switch_to_replica()
            switched = time.monotonic()

            after = len(writer.acknowledged)
            _wait_for(lambda: len(writer.acknowledged) >= after + 20, 30, "no write got through after the failover")
            writer.stopping.set()
            prober.stopping.set()
            writer.join(30)
            prober.join(30)
            assert not writer.is_alive() and not prober.is_alive()
            assert server.process.poll() is None, "gunicorn died"

        with replica.connect("app") as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            bodies = [body for (body,) in conn.execute("SELECT body FROM catalog_comment WHERE body LIKE 'write %'")]
    finally:
        proxy.stop()

    stored = [int(body.split()[1]) for body in bodies]
    missing = sorted(set(writer.acknowledged) - set(stored))
    twice = sorted({n for n in stored if stored.count(n) > 1})
    assert not missing, f"acknowledged writes missing from the new primary: {missing}"
    assert not twice, f"writes stored twice: {twice}"
    unacknowledged_but_stored = sorted(set(stored) - set(writer.acknowledged))

    error_times = [at for at, _, _ in writer.errors]
    assert error_times, "the writer saw no error: the primary was not lost under it"
    assert all(at >= stopping for at in error_times), f"errors before the primary was lost: {writer.errors[:5]}"
    # The app's answer to a lost database: its error page (no CSRF or session failure, no hung request).
    assert {what for _, _, what in writer.errors} == {500}, writer.errors
    # Once the new primary serves, no request fails: no thread is left on a dead connection or hung on one.
    late = [error for error in writer.errors if error[0] > switched + 0.5]
    assert not late, f"requests failed after the switch: {late}"
    error_seconds = max(error_times) - min(error_times)

    failing = [at for at, status in prober.answers if at >= stopping and status != 200]
    seen = [(round(at - lost, 2), status) for at, status in prober.answers]
    assert failing, f"readiness never reflected the lost primary: {seen}"
    recovered = min(at for at, status in prober.answers if at > max(failing) and status == 200)
    assert all(status == 200 for at, status in prober.answers if at >= recovered)
    assert all(status == 200 for at, status in prober.answers if at < stopping)

    with capsys.disabled():
        print(
            f"\nfailover: {writer.sent} writes sent, {len(writer.acknowledged)} acknowledged, "
            f"{len(writer.errors)} failed, {len(unacknowledged_but_stored)} stored without acknowledgement; "
            f"client errors for {error_seconds:.2f} s (first {min(error_times) - lost:.2f} s after the loss, "
            f"last {max(error_times) - switched:.2f} s after the switch); readiness failing from "
            f"{min(failing) - lost:.2f} s after the loss, back {recovered - lost:.2f} s after it "
            f"({recovered - switched:.2f} s after the promotion and switch)"
        )


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_is_replaced_before_a_request_uses_it(gunicorn_factory):
    """One gunicorn thread, one persistent connection; the server ends it between two requests (a failover,
    a restart). CONN_HEALTH_CHECKS finds it dead before the next request runs: that request succeeds.
    Without the check it fails with a 500 ("server closed the connection unexpectedly")."""
    with gunicorn_factory(workers=1, GUNICORN_THREADS=1, CONN_MAX_AGE=600) as server:
        assert server.get("/products/live/")[0] == 200
        with connection.cursor() as cursor:  # the test's own connection stays
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            ended = cursor.fetchall()
        assert ended and all(row == (True,) for row in ended), "the app's connection was not found"
        assert server.get("/products/live/")[0] == 200
        assert server.get("/readyz")[0] == 200
