"""JSON log records, one per line, for Fluentd to parse without guessing.

Each record has ``timestamp``, ``level``, ``logger``, ``message`` and, when
there is one, ``request_id``; an exception's traceback stays inside the same
record (``exc_info``), never on lines of its own.
"""

import time

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter


class JsonFormatter(_BaseJsonFormatter):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s")
        kwargs.setdefault(
            "rename_fields",
            {"asctime": "timestamp", "levelname": "level", "name": "logger"},
        )
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def formatTime(self, record, datefmt=None):
        # RFC 3339 in UTC with milliseconds, which Elasticsearch maps as a date.
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"

    def add_fields(self, log_record, record, message_dict):
        super().add_fields(log_record, record, message_dict)
        if log_record.get("request_id") is None:
            log_record.pop("request_id", None)


def gunicorn_logconfig(level="INFO"):
    """``logconfig_dict`` for gunicorn: its error and access logs as JSON on stdout."""
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
        "formatter": "json",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "deploy.logging.JsonFormatter"}},
        "handlers": {"stdout": handler},
        "root": {"level": level, "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


class JsonAccessLogger(glogging.Logger):
    """gunicorn's logger, with each access line as structured fields."""

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        status = resp.status_code if hasattr(resp, "status_code") else atoms.get("s")
        self.access_log.info(
            "%s %s %s",
            atoms["m"],
            atoms["U"],
            status,
            extra={
                "http": {
                    "method": atoms["m"],
                    "path": atoms["U"],
                    "query": atoms["q"],
                    "status": int(status) if str(status).isdigit() else status,
                    "bytes": atoms["B"],
                    "duration_ms": round(request_time.total_seconds() * 1000, 3),
                    "remote_addr": atoms["h"],
                    "user_agent": atoms["a"],
                },
                "request_id": environ.get("HTTP_X_REQUEST_ID") or _response_header(resp, "x-request-id"),
            },
        )


def _response_header(resp, name):
    for key, value in getattr(resp, "headers", []) or []:
        if key.lower() == name:
            return value
    return None
