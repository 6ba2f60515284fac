"""How the app tells a request that came over HTTPS, when TLS ends at a load balancer.

One value, ``META_KEY=value`` (the ``SECURE_PROXY_SSL_HEADER`` environment
variable), is read by both Django's settings and gunicorn's configuration,
so the two never disagree: ``HTTP_X_FORWARDED_PROTO=https`` trusts the
balancer's header; ``SERVER_PORT=8443`` trusts the port gunicorn accepted
the connection on (a client cannot forge it); an empty value trusts nothing.
"""

import re

from django.core.exceptions import ImproperlyConfigured

_MARKER = re.compile(r"([A-Z][A-Z0-9_]*)=([^\s,]+)")


def https_marker(text):
    """``SECURE_PROXY_SSL_HEADER`` for Django: a ``(META_KEY, value)`` pair, or None."""
    if not text:
        return None
    match = _MARKER.fullmatch(text)
    if not match:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER must be META_KEY=value, such as HTTP_X_FORWARDED_PROTO=https or "
            f"SERVER_PORT=8443, or empty; got {text!r}."
        )
    return match.group(1), match.group(2)


def gunicorn_secure_scheme_headers(text):
    """gunicorn's ``secure_scheme_headers`` for the same marker: only a header marker is a header."""
    marker = https_marker(text)
    if marker is None or not marker[0].startswith("HTTP_"):
        return {}
    return {marker[0].removeprefix("HTTP_").replace("_", "-"): marker[1]}
