"""Probe endpoints.

``/healthz``  liveness: the process answers; touches no database or cache, so
              an outage of either never makes the kubelet restart healthy pods.
``/readyz``   readiness: the database and the cache answer.
``/startupz`` startup: readiness plus "no unapplied migration"; once it has
              passed, the process remembers it (the kubelet stops asking).
"""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from deploy.health.checks import CacheCheck, DatabaseCheck, MigrationsCheck, run_checks

READINESS_CHECKS = (DatabaseCheck(), CacheCheck())
STARTUP_CHECKS = (*READINESS_CHECKS, MigrationsCheck())

_started = False


def _answer(checks):
    ok, results = run_checks(checks)
    return JsonResponse(
        {"status": "ok" if ok else "fail", "checks": results},
        status=200 if ok else 503,
    )


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    return _answer(READINESS_CHECKS)


@never_cache
def startupz(request):
    global _started
    if _started:
        return _answer(READINESS_CHECKS)
    response = _answer(STARTUP_CHECKS)
    _started = response.status_code == 200
    return response
