"""Settings for the test suite: the project's own, with test defaults.

PostgreSQL and Redis are the real servers on 127.0.0.1 unless
``DATABASE_URL`` / ``REDIS_URL`` say otherwise.

Under pytest-xdist (``-n N``) every worker has its own PostgreSQL test
database (pytest-django names it ``test_<name>_gw<N>``) and its own Redis
database: worker ``gw<N>`` uses the number in ``REDIS_URL`` plus ``N``
(``redis://…/8``, the default, gives workers 0 to 7 the databases 8 to 15).
Nothing is written outside the clone but pytest's own ``tmp_path``: the
static root and the SQLite placeholder are under ``build/test/<worker>/``.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_ROOT = Path(__file__).resolve().parent.parent
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", … under pytest-xdist; "" otherwise
_BUILD = _ROOT / "build" / "test" / (_WORKER or "main")
REDIS_DATABASES = 16  # Redis's default "databases" setting


def _redis_databases(url):
    """How many databases the Redis server at ``url`` has (its ``databases`` setting); the default if it cannot say."""
    import redis

    try:
        server = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return int(server.config_get("databases")["databases"])
    except (redis.RedisError, KeyError, ValueError):
        return REDIS_DATABASES


def worker_redis_url(url, worker):
    """``url`` with its database number moved up by the xdist worker's index (``gw2``: +2)."""
    if not worker:
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    number = base + int(worker.removeprefix("gw"))
    if number >= REDIS_DATABASES and number >= (databases := _redis_databases(url)):
        raise ImproperlyConfigured(
            f"pytest-xdist worker {worker} would use Redis database {number} (REDIS_URL's {base} + {worker}), "
            f"but Redis has {databases}: run fewer workers or lower the database number in REDIS_URL."
        )
    return urlunsplit(parts._replace(path=f"/{number}"))


os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# The number before any worker moved it, kept for the processes a worker starts with these settings.
os.environ.setdefault("TESTS_REDIS_BASE_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8"))
# Set in the environment so that the gunicorn processes the tests start use the same database.
os.environ["REDIS_URL"] = worker_redis_url(os.environ["TESTS_REDIS_BASE_URL"], _WORKER)
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CACHE_KEY_PREFIX", f"test-{os.getpid()}")
# Set, not defaulted: xdist workers inherit the controller's environment, and each needs its own folder.
os.environ["STATIC_ROOT"] = str(_BUILD / "static")
os.makedirs(os.environ["STATIC_ROOT"], exist_ok=True)

from project.settings import *  # noqa: E402,F403
from project.settings import INSTALLED_APPS, STORAGES  # noqa: E402

# Templates render {% static %} without a collectstatic manifest.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Models that exist only in the tests, so that the SQLite copy is shown to
# work for any project's models, custom fields included (testapp), and the
# schemas of real projects: inheritance, squashed migrations, keys without
# constraints (schemaapp).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp", "tests.schemaapp"]

# The SQLite source alias exists from the start, so that tests may list it in
# their databases; migrate_from_sqlite --source points it at each test's file.
_PLACEHOLDER = str(_BUILD / f"source-placeholder-{os.getpid()}.sqlite3")
DATABASES = {
    **DATABASES,  # noqa: F405
    "sqlite_source": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _PLACEHOLDER,
        "TEST": {"NAME": _PLACEHOLDER, "MIGRATE": False},
    },
}
