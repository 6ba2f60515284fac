"""Output plumbing shared by the deploy app's commands.

With ``--json``, stdout holds exactly one JSON document for the whole run,
success or failure (``{"ok": false, "error": ...}``), so that
``manage.py k8s_deploy --json | python -c 'import json, sys; json.load(sys.stdin)'``
always works; log records go to stderr meanwhile.
"""

import json
import logging
import sys
from contextlib import contextmanager

from django.core.management.base import CommandError


@contextmanager
def logs_to_stderr():
    """Move every logging stream handler that writes to stdout onto stderr, for the block."""
    moved = []
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
                moved.append((handler, handler.setStream(sys.stderr)))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


class JsonDocument:
    """The one JSON document a ``--json`` run prints: set as the run goes, written once at the end."""

    def __init__(self, stdout):
        self.stdout = stdout
        self.document = None

    def set(self, document):
        self.document = document

    @contextmanager
    def run(self):
        """Write the document after the block; on a CommandError, write it with ``ok`` false and the error."""
        with logs_to_stderr():
            try:
                yield self
            except CommandError as exc:
                base = self.document if isinstance(self.document, dict) else {}
                self._write({**base, "ok": False, "error": str(exc)})
                raise
        if isinstance(self.document, dict):
            self._write({**self.document, "ok": self.document.get("ok", True)})
        elif self.document is not None:
            self._write(self.document)

    def _write(self, document):
        self.stdout.write(json.dumps(document, indent=2, default=str))
