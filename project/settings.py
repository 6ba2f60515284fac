"""Settings for the project, read from the environment (12-factor).

Every variable is documented in ``.env.example``. Production secrets have no
default: with ``DEBUG`` off, a missing ``SECRET_KEY`` or ``DATABASE_URL`` stops
the process at start-up with a message naming the variable.
"""

import re
import sys
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from deploy.tls import https_marker

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
DOT_ENV_FILE = BASE_DIR / ".env"


def _reads_dot_env(path):
    """Whether to read ``.env``: ``DJANGO_READ_DOT_ENV_FILE`` from the environment, else from the file itself.

    ``.env.example`` says to set the flag in ``.env``, so the file's own line counts; the environment wins,
    as it does for every variable (``read_env`` never overwrites one already set).
    """
    if "DJANGO_READ_DOT_ENV_FILE" in env.ENVIRON:
        return env.bool("DJANGO_READ_DOT_ENV_FILE")
    try:
        text = path.read_text()
    except OSError:
        return False
    found = re.findall(r"^\s*(?:export\s+)?DJANGO_READ_DOT_ENV_FILE\s*=\s*['\"]?(\w+)", text, re.MULTILINE)
    return bool(found) and found[-1].lower() in {"true", "on", "yes", "1"}


if _reads_dot_env(DOT_ENV_FILE):
    env.read_env(str(DOT_ENV_FILE))

DEBUG = env.bool("DEBUG", default=False)


def _asks_only_for_help(argv):
    """``manage.py``, ``manage.py help [CMD]`` or ``manage.py CMD --help``: nothing runs, no secret is read.

    Such a run lists commands and options, so it must work in a fresh clone with nothing set.
    """
    if not argv or Path(argv[0]).name not in ("manage.py", "django-admin"):
        return False
    return len(argv) == 1 or argv[1] in ("help", "--help", "-h") or bool({"--help", "-h"} & set(argv[2:]))


_HELP_ONLY = _asks_only_for_help(sys.argv)


def _required(name, dev_default):
    """A variable production must set; development falls back to ``dev_default``.

    ``NAME_FILE`` names a file holding the value (a mounted Kubernetes Secret),
    which keeps the value out of the process environment.
    """
    if f"{name}_FILE" in env.ENVIRON:
        path = Path(env.str(f"{name}_FILE"))
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"Cannot read {name}_FILE ({path}): {exc.strerror}.") from None
    if name in env.ENVIRON:
        return env.str(name)
    if DEBUG or _HELP_ONLY:
        return dev_default
    raise ImproperlyConfigured(
        f"Set the {name} environment variable: it is required when DEBUG is off (see .env.example)."
    )


SECRET_KEY = _required("SECRET_KEY", "django-insecure-development-only-key-do-not-use-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_prometheus",
    "deploy",
    "apps.catalog",
]

METRICS_MIDDLEWARE = env.bool("METRICS_MIDDLEWARE", default=True)

MIDDLEWARE = [
    # Probes first: they answer whatever the Host header, before anything
    # calls request.get_host() and applies ALLOWED_HOSTS.
    "deploy.health.middleware.ProbeMiddleware",
    "deploy.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
if METRICS_MIDDLEWARE:
    MIDDLEWARE.insert(2, "django_prometheus.middleware.PrometheusBeforeMiddleware")
    MIDDLEWARE.append("django_prometheus.middleware.PrometheusAfterMiddleware")
# Last: it answers 503 before any view or CSRF check runs, inside the metrics middleware, which counts the 503s.
MIDDLEWARE.append("deploy.maintenance.MaintenanceMiddleware")

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases -------------------------------------------------------------


def _database(name, url):
    """A database URL as Django's settings, or ImproperlyConfigured saying what is wrong with it.

    The message never quotes the URL (it holds the password), nor does
    django-environ's own warning, which prints the parsed settings.
    """
    form = "postgres://USER:PASSWORD@HOST:PORT/NAME (or sqlite:///PATH)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = env.db_url_config(url)
    except ValueError:  # urllib: a port that is not a number, an unclosed '['
        raise ImproperlyConfigured(
            f"{name} is not a valid database URL (its host or port cannot be read): expected {form}; "
            "a password with '@', ':', '/' or '#' must be percent-encoded."
        ) from None
    if not config.get("ENGINE"):
        scheme = url.split("://", 1)[0] if "://" in url else ""
        said = f"its scheme {scheme!r} names no database engine" if scheme else "it has no scheme"
        raise ImproperlyConfigured(f"{name} is not a valid database URL ({said}): expected {form}.")
    return config


DATABASES = {
    "default": _database("DATABASE_URL", _required("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
# A persistent connection is checked before a request reuses it: after a failover the connections to the
# old primary are replaced, not handed to the next request of each thread (tests/test_failover.py).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Query counts and latencies per database in /metrics.
    DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    # A probe must not hang on an unreachable server: under the readiness probe's 3 s time-out.
    _options.setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=2))
    # A server that vanished with its node sends no reset: TCP keepalives drop an idle connection to it
    # after about 20 s, and tcp_user_timeout (ms) one with a query in flight, instead of the kernel's hours.
    _options.setdefault("keepalives", 1)
    _options.setdefault("keepalives_idle", 10)
    _options.setdefault("keepalives_interval", 5)
    _options.setdefault("keepalives_count", 2)
    _options.setdefault("tcp_user_timeout", env.int("DATABASE_TCP_USER_TIMEOUT_MS", default=20000))

# The SQLite database that migrate_from_sqlite copies from is SQLITE_SOURCE
# (or --source): the deploy app makes its read-only alias when the command
# runs. The router keeps that alias out of migrate, should it ever be defined.
DATABASE_ROUTERS = ["deploy.routers.SQLiteSourceRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and sessions ----------------------------------------------------

CACHES = {
    "default": {
        "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
        "LOCATION": _required("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="app"),
        "OPTIONS": {
            # After Redis fails to answer, operations fail at once for a few seconds
            # (deploy/cache.py): a hung Redis costs one time-out, not one per operation.
            "CLIENT_CLASS": "deploy.cache.DegradingClient",
            # A cache outage degrades the site instead of failing it: errors read
            # as misses (pages computed, sessions read from the database), after
            # short time-outs so that a request does not wait on a dead server.
            "IGNORE_EXCEPTIONS": True,
            "DOWN_SECONDS": env.float("CACHE_DOWN_SECONDS", default=5.0),
            "SOCKET_CONNECT_TIMEOUT": env.float("CACHE_CONNECT_TIMEOUT", default=0.5),
            "SOCKET_TIMEOUT": env.float("CACHE_TIMEOUT", default=1.0),
        },
    },
}
# Sessions are written to the database and cached: they survive a cache outage.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
# Maintenance mode (deploy/maintenance.py, `manage.py maintenance on|off|status`): a file for one machine
# (empty: none), and the cache whose key switches every process and pod that shares it (empty: none).
MAINTENANCE_FILE = env.str("MAINTENANCE_FILE", default="")
MAINTENANCE_CACHE = env.str("MAINTENANCE_CACHE", default="default")
MAINTENANCE_POLL_SECONDS = env.float("MAINTENANCE_POLL_SECONDS", default=1.0)
CATALOG_CACHE_SECONDS = env.int("CATALOG_CACHE_SECONDS", default=60)
# The currency the catalog's prices are in (an ISO 4217 code, shown beside every price).
CATALOG_CURRENCY = env.str("CATALOG_CURRENCY", default="EUR")
# /boom/ raises on purpose (log pipeline checks); off unless asked for.
CATALOG_ENABLE_BOOM = env.bool("CATALOG_ENABLE_BOOM", default=False)

# --- Static files ----------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed names let old and new pods serve their own files during a rollout.
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage",
    },
}

# --- Security --------------------------------------------------------------

# TLS ends at the load balancer. How a request that came over HTTPS is known,
# as META_KEY=value: HTTP_X_FORWARDED_PROTO=https behind a balancer that sends
# X-Forwarded-Proto (the ALB), SERVER_PORT=8443 behind one that sends HTTPS to
# its own port (the NLB), empty for "trust nothing". k8s_deploy sets it, with
# the redirect and cookie settings, from DEPLOY['exposure'] (deploy/k8s/exposure.py).
SECURE_PROXY_SSL_HEADER = https_marker(env.str("SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO=https"))
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The probe and metrics paths answer plain HTTP from the kubelet and Prometheus.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^startupz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging: one JSON object per line on stdout ---------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# Servers log on stdout; manage.py sets LOG_STREAM=stderr, so that a command's
# own output (a --json report) stays alone on stdout.
LOG_STREAM = env.str("LOG_STREAM", default="stdout")
if LOG_STREAM not in ("stdout", "stderr"):
    raise ImproperlyConfigured(f"LOG_STREAM must be 'stdout' or 'stderr', not {LOG_STREAM!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "deploy.request_id.RequestIdFilter"}},
    "formatters": {"json": {"()": "deploy.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": f"ext://sys.{LOG_STREAM}",
            "formatter": "json",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Django's defaults add a console handler under DEBUG: records go
        # to the root handler only, so each is written once.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
    },
}
