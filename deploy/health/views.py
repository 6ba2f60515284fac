"""Probe endpoints.

``/healthz``  liveness: the process answers; touches no database or cache, so
              an outage of either never makes the kubelet restart healthy pods.
``/readyz``   readiness: the database answers. The cache is checked and
              reported too, but a pod serves without it (pages computed,
              sessions from the database), so a cache outage answers 200
              with ``"status": "degraded"``, sets ``deploy_cache_up`` to 0
              and never takes every pod out of the load balancer at once.
``/startupz`` startup: readiness plus "no unapplied migration"; once it has
              passed, the process remembers it (the kubelet stops asking).
"""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import Gauge

from deploy.health.checks import CacheCheck, DatabaseCheck, MigrationsCheck, run_checks

# What a pod cannot serve without: a failure is 503.
READINESS_CHECKS = (DatabaseCheck(),)
STARTUP_CHECKS = (*READINESS_CHECKS, MigrationsCheck())
# What a pod serves without, slower: a failure is reported, in the body and the metric.
DEGRADED_CHECKS = (CacheCheck(),)

# Under gunicorn each worker writes its own value: the most recent of the live ones is the pod's.
CACHE_UP = Gauge(
    "deploy_cache_up",
    "1 when the last readiness probe reached the cache, 0 when it did not (the site then runs degraded).",
    multiprocess_mode="livemostrecent",
)

_started = False


def _answer(checks):
    ok, results = run_checks(checks)
    cache_ok, optional = run_checks(DEGRADED_CHECKS)
    CACHE_UP.set(1 if cache_ok else 0)
    status = "fail" if not ok else "ok" if cache_ok else "degraded"
    return JsonResponse({"status": status, "checks": {**results, **optional}}, status=200 if ok else 503)


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
