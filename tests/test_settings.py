"""Settings as production reads them, in a fresh process each time."""

import sqlite3

from tests.conftest import ROOT, production_env
from tests.forkserver import run_python


def manage(*args, **env):
    return run_python(["manage.py", *args], env=env, cwd=ROOT)


def test_check_deploy_is_clean_with_production_like_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env(SECURE_SSL_REDIRECT="true"))
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_flags_debug_in_production():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env(DEBUG="true"))
    assert result.returncode != 0
    assert "DEBUG" in result.stderr


def test_refuses_to_start_without_secret_key():
    env = production_env()
    del env["SECRET_KEY"]
    result = manage("check", **env)
    assert result.returncode != 0
    assert "Set the SECRET_KEY environment variable" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_has_development_defaults():
    env = production_env(DEBUG="true")
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        del env[name]
    result = manage("check", **env)
    assert result.returncode == 0, result.stderr


SOURCE_PROBE = """
import django, sys
django.setup()
from django.conf import settings
from django.db import connections
from deploy.sqlite.source import open_source
print(sorted(settings.DATABASES))
source = open_source()  # no --source: SQLITE_SOURCE
with connections[source.alias].cursor() as cursor:
    cursor.execute("SELECT v FROM t")
    print(cursor.fetchall())
    try:
        cursor.execute("INSERT INTO t (v) VALUES ('x')")
    except Exception as exc:
        print(type(exc).__name__, exc)
"""


def test_sqlite_source_is_a_read_only_alias(tmp_path):
    path = tmp_path / "source.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id integer primary key, v text)")
        db.execute("INSERT INTO t (v) VALUES ('ä')")
    db.close()
    before = path.read_bytes()
    env = production_env(SQLITE_SOURCE=path)
    result = run_python(["-c", SOURCE_PROBE], env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    aliases, rows, error = result.stdout.splitlines()
    assert aliases == "['default']"  # the settings define no source alias: the deploy app makes it
    assert rows == "[('ä',)]"
    assert error == "OperationalError attempt to write a readonly database"
    assert path.read_bytes() == before


def _clone_with_dot_env(tmp_path, text):
    """The project's code in a folder of its own, with ``text`` as its .env (the real clone's .env is left alone)."""
    import shutil

    for name in ("project", "apps", "deploy"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "manage.py", tmp_path / "manage.py")
    (tmp_path / ".env").write_text(text)
    return tmp_path


SHOW = "from django.conf import settings; print(settings.DEBUG, settings.CATALOG_CACHE_SECONDS, settings.SECRET_KEY)"


def _show(clone, **env):
    return run_python(["manage.py", "shell", "-v", "0", "-c", SHOW], env={"PATH": "/usr/bin:/bin", **env}, cwd=clone)


def test_dot_env_is_read_when_it_says_so_itself_as_env_example_tells(tmp_path):
    clone = _clone_with_dot_env(
        tmp_path, "DEBUG=true\nSECRET_KEY=from-the-dot-env\nCATALOG_CACHE_SECONDS=7\nDJANGO_READ_DOT_ENV_FILE=true\n"
    )
    run = _show(clone)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "7", "from-the-dot-env"]
    # The environment wins over the file, for the flag as for every variable.
    run = _show(clone, CATALOG_CACHE_SECONDS="9")
    assert run.stdout.split() == ["True", "9", "from-the-dot-env"]
    run = _show(clone, DJANGO_READ_DOT_ENV_FILE="false")
    assert run.returncode == 1 and "Set the SECRET_KEY environment variable" in run.stderr


def test_env_example_copied_to_dot_env_as_it_says_runs_the_commands(tmp_path):
    """`.env.example` copied to `.env` with its flag set: manage.py runs (its metrics folder, /tmp/prometheus-
    multiproc, did not exist outside the image, and prometheus_client stopped every command with a traceback)."""
    text = (ROOT / ".env.example").read_text()
    text = text.replace("DJANGO_READ_DOT_ENV_FILE=false", "DJANGO_READ_DOT_ENV_FILE=true")
    assert "DJANGO_READ_DOT_ENV_FILE=true" in text
    clone = _clone_with_dot_env(tmp_path, text)
    run = run_python(
        ["manage.py", "check"], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=clone, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "System check identified no issues" in run.stdout
    assert list(clone.glob("*.db")) == []  # no metric file written into the project's folder


def test_dot_env_is_not_read_while_its_flag_is_false(tmp_path):
    clone = _clone_with_dot_env(tmp_path, "DEBUG=true\nDJANGO_READ_DOT_ENV_FILE=false\n")
    run = _show(clone)
    assert run.returncode == 1 and "Set the SECRET_KEY environment variable" in run.stderr


def test_each_xdist_worker_has_its_own_redis_database():
    import os

    import pytest
    from django.core.exceptions import ImproperlyConfigured

    from tests.settings import _redis_databases, worker_redis_url

    assert worker_redis_url("redis://127.0.0.1:6379/5", "") == "redis://127.0.0.1:6379/5"
    assert worker_redis_url("redis://127.0.0.1:6379/5", "gw0") == "redis://127.0.0.1:6379/5"
    assert worker_redis_url("redis://:pw@10.0.0.1:6380/8", "gw3") == "redis://:pw@10.0.0.1:6380/11"
    assert worker_redis_url("redis://127.0.0.1:6379", "gw2") == "redis://127.0.0.1:6379/2"
    # Past the server's own number of databases (asked of the server: 16 unless it was started with more).
    databases = _redis_databases(os.environ["REDIS_URL"])
    assert databases >= 16
    with pytest.raises(ImproperlyConfigured, match=f"worker gw{databases - 5} would use Redis database {databases} "):
        worker_redis_url(os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/5", f"gw{databases - 5}")
