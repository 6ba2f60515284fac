"""Settings as production reads them, in a fresh process each time."""

import sqlite3
import subprocess

from tests.conftest import PYTHON, ROOT, production_env


def manage(*args, **env):
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


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
    result = subprocess.run([PYTHON, "-c", SOURCE_PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    aliases, rows, error = result.stdout.splitlines()
    assert aliases == "['default']"  # the settings define no source alias: the deploy app makes it
    assert rows == "[('ä',)]"
    assert error == "OperationalError attempt to write a readonly database"
    assert path.read_bytes() == before
