"""A django-redis client that stops waiting on a Redis that does not answer.

``IGNORE_EXCEPTIONS`` turns a cache error into a miss, but each operation
still waits for its own time-out first. A Redis that refuses costs nothing
(the refusal is immediate); a Redis that accepts and never answers (a hung
or overloaded server, a network that drops packets) costs ``SOCKET_TIMEOUT``
per operation: a page with a session read, a cache read and two writes
waited 3 s, ``/readyz`` (a write and a read) 2.5 s against the probe's 3 s,
and every gunicorn thread was held that long, so a busy pod stopped
answering its probes and the outage took the site down after all.

After an operation fails to reach Redis, this client answers every
operation at once, as failed, for ``DOWN_SECONDS`` (an ``OPTIONS`` key,
default 5), then tries Redis again. So a hung Redis costs each process one
time-out per ``DOWN_SECONDS`` (its threads share what one of them learnt),
not one per operation. Errors Redis answers
(``ResponseError``: a wrong type, out of memory) say nothing about reaching
it and do not pause it.
"""

import functools
import socket
import time

from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

DOWN_SECONDS = 5.0
# Until when each Redis (by LOCATION) is not tried, per process: Django gives each thread its own cache
# object, and a gunicorn worker's threads should learn from one another's time-out.
_down_until = {}
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, socket.timeout, OSError)


class CacheSkipped(RedisConnectionError):
    """The operation was not tried: Redis did not answer a moment ago."""


def _guarded(name):
    operation = getattr(DefaultClient, name)

    @functools.wraps(operation)
    def guarded(self, *args, **kwargs):
        if time.monotonic() < _down_until.get(self.location, 0.0):
            raise ConnectionInterrupted(connection=None) from CacheSkipped(
                f"Redis did not answer in the last {self.down_seconds:g} s; not tried"
            )
        try:
            return operation(self, *args, **kwargs)
        except ConnectionInterrupted as exc:
            if isinstance(exc.__cause__, _UNREACHABLE):
                _down_until[self.location] = time.monotonic() + self.down_seconds
            raise

    return guarded


class DegradingClient(DefaultClient):
    def __init__(self, server, params, backend):
        super().__init__(server, params, backend)
        self.down_seconds = float(self._options.get("DOWN_SECONDS", DOWN_SECONDS))
        self.location = repr(self._server)


# Every operation that talks to Redis (the helpers that only build keys or values are left alone).
_OPERATIONS = (
    "set", "incr_version", "add", "get", "persist", "expire", "pexpire", "pexpire_at", "expire_at", "delete",
    "delete_pattern", "delete_many", "clear", "get_many", "set_many", "incr", "decr", "ttl", "pttl", "has_key",
    "keys", "touch", "sadd", "scard", "sdiff", "sdiffstore", "sinter", "sinterstore", "smismember", "sismember",
    "smembers", "smove", "spop", "srandmember", "srem", "sscan", "sunion", "sunionstore", "hset", "hdel", "hlen",
    "hkeys", "hexists",
)  # fmt: skip
for _name in _OPERATIONS:
    if hasattr(DefaultClient, _name):
        setattr(DegradingClient, _name, _guarded(_name))
