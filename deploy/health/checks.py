"""Small health checks: each has a name and one ``run()`` that raises on failure.

Readiness touches no application data: ``SELECT 1`` on the database, and in
the cache one key of its own per pod, written with a 10-second expiry and read
back (a cache that ignores its errors answers a miss rather than an error, so
only a write then a read proves it works). Unexpected exceptions are logged here and reported to the caller
as a generic message, so no host name, password or stack trace leaks into a
probe's response.
"""

import logging
import secrets
import socket
from dataclasses import dataclass, field

from django.core.cache import caches
from django.db import connections

logger = logging.getLogger(__name__)


class CheckFailed(Exception):
    """A check's expected failure, with a message that is safe to show."""


@dataclass(frozen=True)
class DatabaseCheck:
    alias: str = "default"
    name: str = "database"

    def run(self):
        with connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            if cursor.fetchone() != (1,):
                raise CheckFailed("unexpected answer to SELECT 1")


@dataclass(frozen=True)
class CacheCheck:
    alias: str = "default"
    name: str = "cache"
    key_prefix: str = field(default="deploy:readyz:", repr=False)

    def run(self):
        cache = caches[self.alias]
        key = f"{self.key_prefix}{socket.gethostname()}"
        value = secrets.token_hex(8)
        cache.set(key, value, timeout=10)
        if cache.get(key) != value:
            # A cache that ignores its errors (django-redis IGNORE_EXCEPTIONS) answers a miss when down.
            raise CheckFailed("unavailable")


@dataclass(frozen=True)
class MigrationsCheck:
    """Startup only: the schema matches the code (the migration Job has run)."""

    alias: str = "default"
    name: str = "migrations"

    def run(self):
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connections[self.alias])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            raise CheckFailed(f"{len(plan)} migration(s) not applied")


def run_checks(checks):
    """Run every check; return ``(ok, {name: "ok" | message})``."""
    results = {}
    for check in checks:
        try:
            check.run()
        except CheckFailed as exc:
            results[check.name] = str(exc)
        except Exception:
            logger.exception("health check %s failed", check.name)
            results[check.name] = "unavailable"
        else:
            results[check.name] = "ok"
    return all(v == "ok" for v in results.values()), results
