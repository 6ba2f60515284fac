"""Maintenance mode: while it is on, every page answers 503 with ``Retry-After`` and nothing is written.

The switch is a flag that each process checks on each request, kept cheap:

- **a file** (``MAINTENANCE_FILE``), for one machine: every process of the old SQLite-backed deployment sees it
  at once. Checking it costs one ``stat()`` per request (about a microsecond); the file is read only while it
  exists, for its ``Retry-After``.
- **a cache key** (``MAINTENANCE_CACHE``, a cache alias such as ``default``), for many machines or pods that share
  one Redis: ``manage.py maintenance on`` run anywhere that reaches that Redis (``kubectl exec`` into one app
  pod) switches all of them. Each process reads the key at most once per ``MAINTENANCE_POLL_SECONDS``
  (default 1), so the cost per request is a clock read, and every pod follows within that time. A ConfigMap
  mounted as a file would take the kubelet up to a minute or two to reach the pods, and an environment
  variable a rolling restart: both would be added to the downtime, and neither says when every pod has seen it.
  A Redis that does not answer reads as "off" (the cache ignores its errors): say so to whoever relies on it.

The probes and ``/metrics`` are answered before this middleware (``ProbeMiddleware`` comes first), so readiness
stays up and the balancer keeps sending requests to the page. Browsers get HTML, other clients JSON.
"""

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.cache import caches
from django.http import HttpResponse, JsonResponse

CACHE_KEY = "deploy:maintenance"
DEFAULT_RETRY_AFTER = 600
# A day: a longer Retry-After is a typo (clients and crawlers would stay away that long), not a window.
MAX_RETRY_AFTER = 86400
DEFAULT_POLL_SECONDS = 1.0


class MaintenanceError(Exception):
    """The flag cannot be switched (no flag configured, a file that cannot be written)."""


@dataclass(frozen=True)
class MaintenanceFlag:
    """Where the flag lives: a file, a cache alias, or both (both are switched; either being on means on)."""

    file: str = ""
    cache: str = ""
    poll_seconds: float = DEFAULT_POLL_SECONDS

    @classmethod
    def from_settings(cls):
        """``MAINTENANCE_FILE``, ``MAINTENANCE_CACHE``, ``MAINTENANCE_POLL_SECONDS``: the environment, then settings."""

        def read(name, default):
            return os.environ.get(name) or getattr(settings, name, default) or default

        return cls(
            file=str(read("MAINTENANCE_FILE", "")),
            cache=str(read("MAINTENANCE_CACHE", "")),
            poll_seconds=float(read("MAINTENANCE_POLL_SECONDS", DEFAULT_POLL_SECONDS)),
        )

    @property
    def configured(self):
        return bool(self.file or self.cache)

    def where(self):
        return [w for w in (self.file and f"file {self.file}", self.cache and f"cache {self.cache!r}") if w]


def _state(retry_after, reason):
    return {"on": True, "since": datetime.now(UTC).isoformat(), "retry_after": int(retry_after), "reason": reason}


def switch_on(flag, retry_after=DEFAULT_RETRY_AFTER, reason=""):
    """Turn maintenance on wherever ``flag`` lives; returns the state written."""
    if not flag.configured:
        raise MaintenanceError(
            "No maintenance flag is configured: set MAINTENANCE_FILE (a path every process of this machine can "
            "read, for one machine) or MAINTENANCE_CACHE (a cache alias shared by every pod, such as 'default')."
        )
    state = _state(retry_after, reason)
    if flag.file:
        path = Path(flag.file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed, so that a request never reads half a file.
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(state))
            temporary.replace(path)
        except OSError as exc:
            raise MaintenanceError(f"Cannot write the maintenance file {flag.file}: {exc.strerror}.") from None
    if flag.cache:
        cache = caches[flag.cache]
        cache.set(CACHE_KEY, state, timeout=None)
        if cache.get(CACHE_KEY) != state:
            left = (
                f" The maintenance file {flag.file} is written, so this machine's processes are in maintenance; "
                "those that only read the cache are not. Turn it off with 'maintenance off' to go back, or, on a "
                "machine without that Redis, set MAINTENANCE_CACHE to an empty value and switch on again."
                if flag.file
                else " Nothing is in maintenance."
            )
            raise MaintenanceError(
                f"The cache {flag.cache!r} did not keep the maintenance key (is its server reachable from here? "
                f"check REDIS_URL).{left}"
            )
    return state


def switch_off(flag):
    """Turn maintenance off wherever ``flag`` lives; returns whether it was on."""
    was_on = read_state(flag) is not None
    if flag.file:
        try:
            Path(flag.file).unlink(missing_ok=True)
        except OSError as exc:
            raise MaintenanceError(f"Cannot remove the maintenance file {flag.file}: {exc.strerror}.") from None
    if flag.cache:
        cache = caches[flag.cache]
        cache.delete(CACHE_KEY)
        if cache.get(CACHE_KEY) is not None:
            raise MaintenanceError(f"The cache {flag.cache!r} still holds the maintenance key.")
    return was_on


def switch(action, retry_after=DEFAULT_RETRY_AFTER, reason="", flag=None):
    """``manage.py maintenance ACTION``: switch on or off (or only read, with "status"); the report it prints."""
    flag = flag or MaintenanceFlag.from_settings()
    if not 1 <= retry_after <= MAX_RETRY_AFTER:
        raise MaintenanceError(
            f"--retry-after must be between 1 and {MAX_RETRY_AFTER} seconds (a day), not {retry_after}: it is how "
            "long clients are told to wait, so give the window's length."
        )
    if action == "on":
        switch_on(flag, retry_after, reason)
    elif action == "off":
        switch_off(flag)
    elif action != "status":
        raise MaintenanceError(f"Unknown action {action!r}: on, off or status.")
    state = read_state(flag)
    return {"action": action, "on": state is not None, "state": state, "flags": flag.where()}


def _read_file(path):
    try:
        state = json.loads(Path(path).read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # A file there but unreadable or empty (`touch`) is still the switch, on.
        state = {}
    return {"on": True, "retry_after": DEFAULT_RETRY_AFTER, **(state if isinstance(state, dict) else {})}


def read_state(flag):
    """The state where the flag is on (the file's first), or None when off everywhere."""
    if flag.file and os.path.exists(flag.file):
        state = _read_file(flag.file)
        if state is not None:
            return state
    if flag.cache:
        state = caches[flag.cache].get(CACHE_KEY)
        if isinstance(state, dict):
            return state
    return None


class _Poll:
    """The cache key's last value in this process, read again at most once per ``poll_seconds``."""

    def __init__(self, flag):
        self.flag = flag
        self.value = None
        self.next_read = 0.0

    def get(self):
        now = time.monotonic()
        if now >= self.next_read:
            # Set before reading: the threads of a worker read the key once between them, not once each.
            self.next_read = now + self.flag.poll_seconds
            value = caches[self.flag.cache].get(CACHE_KEY)
            self.value = value if isinstance(value, dict) else None
        return self.value


def _wants_html(request):
    accept = request.headers.get("Accept", "")
    return "text/html" in accept or "application/xhtml+xml" in accept


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Down for maintenance</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Down for maintenance</h1>
<p>The site is being upgraded and will be back shortly. Please try again in a few minutes.</p></body></html>
"""


def retry_after_of(state):
    """The state's ``retry_after`` as whole seconds within 1..MAX_RETRY_AFTER; the default when it is not a
    number (a flag file written by hand): the maintenance page must never fail itself."""
    try:
        seconds = int(state.get("retry_after") or DEFAULT_RETRY_AFTER)
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_RETRY_AFTER
    return min(max(seconds, 1), MAX_RETRY_AFTER)


def response(request, state):
    retry_after = str(retry_after_of(state))
    if _wants_html(request):
        answer = HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8")
    else:
        answer = JsonResponse({"status": "maintenance", "retry_after": int(retry_after)}, status=503)
    answer["Retry-After"] = retry_after
    answer["Cache-Control"] = "no-store"
    # An expected answer, not a server error: without this Django logs every one at ERROR ("Service
    # Unavailable: /"), which floods the error log and its alerts for the whole window.
    answer._has_been_logged = True
    return answer


class MaintenanceMiddleware:
    """503 for every request while the flag is on. Place it after the session, CSRF and auth middleware, so
    that it answers before any view or ``process_view`` (CSRF) runs, and after ``PrometheusAfterMiddleware``,
    so that the 503s are counted."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.flag = MaintenanceFlag.from_settings()
        self.poll = _Poll(self.flag) if self.flag.cache else None

    def __call__(self, request):
        state = None
        if self.flag.file and os.path.exists(self.flag.file):
            state = _read_file(self.flag.file)
        if state is None and self.poll is not None:
            state = self.poll.get()
        if state is not None:
            return response(request, state)
        return self.get_response(request)
