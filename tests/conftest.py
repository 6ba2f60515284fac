import fcntl
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Every Python process of a test run (xdist workers, manage.py, gunicorn and its workers) reads bytecode compiled
# once: the virtualenvs' at install (`make venv` has uv compile it, as pip does by default), the project's by the
# first process that imports it, next to the sources (`__pycache__/`, ignored by git and the image's build).
# With PYTHONDONTWRITEBYTECODE set (as on this machine) and nothing compiled, every manage.py or gunicorn worker
# compiled Django again (about 1.7 s of CPU per start-up) and every xdist worker's collection took 9 s more.
# Unset before xdist starts the workers, and so for the processes the tests start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# moto's EC2 backend reads its list of public AMIs (a large JSON file) each time it is made, once per test that
# starts moto; no test uses an AMI.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def _share_botocore_data():
    """Every botocore loader of a worker shares one cache of botocore's data files (service models, endpoints).

    moto resets boto3's default session, and each command makes its own: each new session read the same
    JSON files again (a sixth of the AWS tests' CPU). The files never change during a run.

    botocore's own Loader only: the cache holds the parsed files, which a loader's extras are merged into, and
    moto's Loader (a subclass, with its own search path) merges moto's extras (operations and errors real AWS
    does not have): shared, they reached the clients of the code under test.
    """
    import botocore.loaders

    cache, init = {}, botocore.loaders.Loader.__init__

    def shared(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self) is botocore.loaders.Loader:
            self._cache = cache  # what instance_cache keeps, by method and arguments

    botocore.loaders.Loader.__init__ = shared


_share_botocore_data()


def _database_rank(item):
    """pytest-django's order: tests in a transaction (0), then tests that flush the database (1), then the rest (2)."""
    marker = item.get_closest_marker("django_db")
    fixtures = set(getattr(item, "fixturenames", ()))
    transactional = bool(fixtures & {"transactional_db", "live_server"})
    if marker:
        transactional = transactional or marker.kwargs.get("transaction", marker.args[0] if marker.args else False)
        transactional = transactional or marker.kwargs.get("reset_sequences", False)
    if transactional:
        return 1
    return 0 if marker or "db" in fixtures else 2


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The long tests first, so that under pytest-xdist none of them starts last and keeps one worker busy alone.

    Long means marked ``slow``; the ``docker`` tests lead them, because they wait for the run's image to be
    built and the rehearsal that follows is the run's longest chain. pytest-django's order holds where it
    matters: a test that flushes the database (``transaction=True``) still runs after every test that only
    rolls back; tests without a database go anywhere, so the slow ones go first. Every worker sorts the same
    collection the same way, as xdist requires.
    """

    def key(indexed):
        index, item = indexed
        rank = _database_rank(item)
        slow = item.get_closest_marker("slow") is not None
        if rank == 2:
            return (0, item.get_closest_marker("docker") is None, index) if slow else (3, index)
        return (1 + rank, not slow, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]
    _mark_xdist_groups(config, items)


def _mark_xdist_groups(config, items):
    """What ``--dist loadgroup`` does on each worker, done again where pytest-xdist's own step had no effect.

    pytest-xdist 3.8 names a grouped test ``<nodeid>@<group>`` by setting ``item._nodeid``, which pytest 9 no
    longer reads (the id is ``item._id``): every ``xdist_group`` was silently ignored, so the image tests ran on
    every worker at once, each building the image.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        groups = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        )
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix):
            from _pytest.nodeid import NodeId  # pytest 9's; earlier versions took xdist's renaming

            item._id = NodeId.parse(item.nodeid + suffix)


def tool(name):
    """A scanner from .venv-tools (make venv installs requirements/tools.lock there), else from PATH."""
    found = ROOT / ".venv-tools" / "bin" / name
    if not found.exists():
        found = Path(shutil.which(name) or found)
    if not found.exists():
        pytest.fail(f"{name} is not installed: run 'make venv' (it installs requirements/tools.lock into .venv-tools)")
    return str(found)


def load_envs():
    """requirements/envs.py (what `make venv` and `make lock` run), loaded from its file."""
    if "envs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("envs", ROOT / "requirements" / "envs.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["envs"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["envs"]


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """Nothing points at a cluster: no KUBECONFIG, an empty home, not in a pod."""
    for name in list(os.environ):
        if name.startswith("DEPLOY_") or name in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def own_redis_client(port, **options):
    """A client of a test's own redis-server that asks once.

    redis-py retries a refused connection, and a refused AUTH, three times with a back-off of seconds: a test
    that polls for its server to start, or expects a refusal, would only wait them out.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), **options)


def http_get(url, headers=None, timeout=10):
    """GET ``url``; return ``(status, headers, body)`` whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def production_env(**overrides):
    """A production-like environment: DEBUG off, every secret set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR", "DEBUG"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        SECRET_KEY="prod-like-" + "k3y-" * 12,
        DATABASE_URL=os.environ["DATABASE_URL"],
        REDIS_URL=os.environ["REDIS_URL"],
        ALLOWED_HOSTS="app.example.com,localhost,127.0.0.1",
        CSRF_TRUSTED_ORIGINS="https://app.example.com",
        SECURE_SSL_REDIRECT="false",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def stop_process(process, timeout):
    """Ask ``process`` to stop (SIGTERM); kill it if it has not within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def target_database_url():
    """The URL of the database pytest-django created for this run."""
    settings = connection.settings_dict
    return "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**{**settings, "PORT": settings["PORT"] or 5432})


@contextmanager
def scratch_database(suffix):
    """A PostgreSQL database of the test's own, named after this run's (and xdist worker's) test database.

    Yields ``(name, url)``; the database is dropped afterwards, whatever holds connections to it.
    """
    import psycopg

    name = f"{connection.settings_dict['NAME']}_{suffix}"
    base = target_database_url().rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin_login(base, username, password):
    """The admin's own form, as a browser posts it: returns the logged-in session."""
    session = requests.Session()
    page = session.get(f"{base}/admin/login/?next=/admin/", headers={"Host": "localhost"}, timeout=10)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = session.post(
        f"{base}/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
        headers={"Host": "localhost"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/", answer.text[:500]
    return session


def made_once(tmp_path_factory, name, make):
    """``make(path)`` once per test run, by whichever pytest-xdist worker asks first; the others wait for it.

    Returns the path, in the run's temporary folder (shared by its workers). What is made there is read-only
    to the tests: a test that changes it works on a copy.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, above popen-gwN/
    path = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the worker dies
        if not path.exists():
            partial = shared / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.unlink(missing_ok=True)
            make(partial)
            partial.rename(path)
    return path


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    """The app's image, built from this clone once per run under a tag of its own (tests/docker_images.py)."""
    from tests.docker_images import app_image

    return app_image(tmp_path_factory)


def pytest_sessionfinish(session):
    """The run's image untagged once, by the process that started the run (not by each xdist worker); each
    process's fork server (tests/forkserver.py) stopped and reaped, so that its children's CPU counts as ours."""
    if "tests.forkserver" in sys.modules:
        sys.modules["tests.forkserver"].stop()
    basetemp = session.config._tmp_path_factory._basetemp  # None: nothing made a temporary folder, nor an image
    if basetemp and not hasattr(session.config, "workerinput"):
        from tests.docker_images import remove_run_image

        remove_run_image(basetemp)


@pytest.fixture(scope="session")
def static_root(tmp_path_factory):
    """collectstatic, as the image build does, into a folder of the test run (once for all its workers)."""

    def collect(root):
        from tests.forkserver import run_python

        run_python(
            ["manage.py", "collectstatic", "--noinput", "-v0"],
            env=production_env(STATIC_ROOT=root),
            cwd=ROOT,
            check=True,
        )

    return made_once(tmp_path_factory, "static", collect)


class Gunicorn:
    def __init__(self, process, url, log_path):
        self.process = process
        self.url = url
        self.log_path = log_path

    def get(self, path, headers=None):
        return http_get(self.url + path, {"Host": "localhost", **(headers or {})})

    def log_lines(self):
        return self.log_path.read_text().splitlines()


@contextmanager
def run_gunicorn(tmp_path, workers=1, **env_overrides):
    """gunicorn on a free port, or on ``GUNICORN_BIND`` (addresses separated by commas; the first is ``url``).

    One worker unless a test asks for more (each worker loads Django on its own: about a second of CPU).
    """
    bind = env_overrides.pop("GUNICORN_BIND", None) or f"127.0.0.1:{free_port()}"
    port = int(bind.split(",")[0].rpartition(":")[2])
    log_path = tmp_path / f"gunicorn-{port}.log"
    env_overrides.setdefault("PROMETHEUS_MULTIPROC_DIR", tmp_path / f"metrics-{port}")
    env = production_env(GUNICORN_BIND=bind, WEB_CONCURRENCY=workers, **env_overrides)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", "project/gunicorn.conf.py", "project.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Gunicorn(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                status, _, _ = server.get("/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        stop_process(process, timeout=30)


@pytest.fixture
def gunicorn_factory(tmp_path, static_root, django_db_setup, django_db_blocker):
    """Start gunicorn on the test database: ``with gunicorn_factory(workers=3) as server``."""

    def factory(**overrides):
        overrides.setdefault("DATABASE_URL", target_database_url())
        overrides.setdefault("STATIC_ROOT", static_root)
        return run_gunicorn(tmp_path, **overrides)

    with django_db_blocker.unblock():
        yield factory


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``TEST_CPU_LOG=path``: each test's CPU seconds (its process's and its finished children's), one line
    a test appended to ``path.<worker>`` — where a run's CPU goes, which wall times on a shared machine hide."""
    log = os.environ.get("TEST_CPU_LOG")
    if not log:
        yield
        return
    import resource

    from tests import forkserver

    def cpu():
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        # A forked run's child is reaped by the fork server, not by this process: its CPU is counted there.
        return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime + forkserver.children_cpu()

    own, children = cpu()
    started = time.monotonic()
    yield
    own_after, children_after = cpu()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"{log}.{worker}", "a") as out:
        out.write(
            f"{own_after - own:.2f}\t{children_after - children:.2f}\t{time.monotonic() - started:.2f}\t{item.nodeid}\n"
        )


def pytest_report_header(config):
    """A line at the top of the run when the test server's PostgreSQL has fsync on (tests/README.md: each DROP
    DATABASE then waits for a checkpoint's fsync of the other workers' writes; the run works, slower)."""
    if hasattr(config, "workerinput"):
        return None
    import psycopg

    try:
        with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
            (fsync,) = conn.execute("SHOW fsync").fetchone()
    except (KeyError, psycopg.Error):
        return None
    if fsync == "on":
        return (
            "PostgreSQL has fsync on: every DROP DATABASE waits for a checkpoint, which slows this run "
            "(on a server that holds nothing you keep: ALTER SYSTEM SET fsync = off; tests/README.md)"
        )
    return None
