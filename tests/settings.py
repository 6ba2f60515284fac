"""Settings for the test suite: the project's own, with test defaults.

PostgreSQL and Redis are the real servers on 127.0.0.1 unless
``DATABASE_URL`` / ``REDIS_URL`` say otherwise.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CACHE_KEY_PREFIX", f"test-{os.getpid()}")
os.environ.setdefault("STATIC_ROOT", os.path.join(tempfile.gettempdir(), "django-k8s-aws-test-static"))
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
_PLACEHOLDER = os.path.join(tempfile.gettempdir(), f"django-k8s-aws-source-placeholder-{os.getpid()}.sqlite3")
DATABASES = {
    **DATABASES,  # noqa: F405
    "sqlite_source": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _PLACEHOLDER,
        "TEST": {"NAME": _PLACEHOLDER, "MIGRATE": False},
    },
}
