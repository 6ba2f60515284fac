"""The SQLite source: a database alias for the ORM, and a raw read-only connection.

The alias (``sqlite_source`` unless ``DEPLOY_SQLITE_ALIAS`` says otherwise)
is made here, at run time, for the file ``--source PATH`` names, or else
``SQLITE_SOURCE`` (the environment, then settings): a project that adds the
deploy app to ``INSTALLED_APPS`` needs nothing more. A project may still
define the alias in ``DATABASES`` itself; it is used when neither says a
file. Either way the file is opened with ``mode=ro``, and the deploy app's
router (if the project lists it) keeps the alias out of ``migrate``.

The copy reads through a second, raw ``sqlite3`` connection to the same file:
Django's SQLite connection converts values to Python objects as it reads
(``detect_types``), which is the largest cost of a copy, while SQLite's own
text for Django's standard field types is what PostgreSQL's COPY parses.
"""

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from django.db import DEFAULT_DB_ALIAS, connections

from deploy import conf
from deploy.routers import source_alias

SQLITE_MAGIC = b"SQLite format 3\x00"


class SourceError(Exception):
    """The source cannot be used; the message says why and what to do."""


@dataclass
class Source:
    path: Path
    alias: str
    raw: sqlite3.Connection

    def close(self):
        self.raw.close()
        connections[self.alias].close()


def _path_of_alias(alias):
    name = connections.settings[alias]["NAME"]
    name = str(name)
    if name.startswith("file:"):
        name = unquote(name[len("file:") :].split("?", 1)[0])
    return Path(name)


def read_only_uri(path):
    """A ``file:`` URI that opens exactly ``path``, read-only.

    SQLite reads ``%HH`` escapes, ``?`` (parameters) and ``#`` in a URI: every
    character but letters, digits and ``/-._~`` is percent-encoded, so that a
    path is only ever a path.
    """
    return f"file:{quote(str(Path(path).resolve()), safe='/')}?mode=ro"


def alias_settings(path):
    """The source alias's ``DATABASES`` entry: the file, read-only, never migrated (built only here)."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": read_only_uri(path),
        "OPTIONS": {"uri": True},
        "TEST": {"MIGRATE": False},
    }


def open_source(path=None):
    """Open the SQLite source read-only; raise :class:`SourceError` if it cannot be used."""
    alias = source_alias()
    if path is None:
        path = conf.sqlite_source() or None
    if path is None:
        if alias not in connections.settings:
            raise SourceError(
                "No SQLite source: pass --source PATH, or set SQLITE_SOURCE to the SQLite file to copy from."
            )
        path = _path_of_alias(alias)
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"The SQLite source {path} does not exist or is not a file.")
    with open(path, "rb") as handle:
        if handle.read(16) != SQLITE_MAGIC:
            raise SourceError(f"{path} is not a SQLite database (its header is not 'SQLite format 3').")
    settings_dict = alias_settings(path)
    current = connections.settings.get(alias)
    if current is None or _path_of_alias(alias).resolve() != path.resolve():
        if current is not None:
            connections[alias].close()
        configured = connections.configure_settings(
            {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], alias: settings_dict}
        )
        connections.settings[alias] = configured[alias]
        if hasattr(connections._connections, alias):
            delattr(connections._connections, alias)
    try:
        raw = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False)
        raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot open {path} read-only as SQLite: {exc}.") from None
    return Source(path=path, alias=alias, raw=raw)
