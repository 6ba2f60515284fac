"""Checkpoints of a copy, kept in the target database.

A copy drops the target's secondary indexes, unique and foreign-key
constraints to load fast, then re-creates them. Their definitions are saved
here in the same transaction that drops them, and each table is marked done
in the same transaction as its COPY, so a copy killed at any moment can be
finished by ``--resume`` with no row lost or duplicated, and no constraint
forgotten. The table's chunk digests are kept with it, so that ``--verify``
after ``--resume`` proves the tables an earlier run copied.
"""

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from django.db import connections

RUN_TABLE = "deploy_sqlite_copy_run"
TABLE_TABLE = "deploy_sqlite_copy_table"


NOTHING_TO_RESUME = (
    "--resume finishes an interrupted copy, and this database has none (the last copy finished, or none "
    "started): nothing was changed. To copy again into it, use --truncate (it asks first)."
)


def foreign_run(run):
    return (
        f"The interrupted copy in this database read {run.source.get('path')}, which has changed or is not this "
        "source: nothing was changed. Resume with that file, or rerun with --truncate to start over."
    )


def source_identity(path):
    """What a resumed copy must read again: the same file, unchanged.

    A WAL database's writes land in its ``-wal`` first, and stay there while the writer
    is open (until a checkpoint): the file itself keeps its size and modification time,
    so the ``-wal``'s are part of it. An empty or absent ``-wal`` holds nothing (a
    read-only reader may leave an empty one behind).
    """
    stat = path.stat()
    try:
        wal = Path(f"{path}-wal").stat()
    except FileNotFoundError:
        wal = None
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "wal": [wal.st_size, wal.st_mtime_ns] if wal and wal.st_size else None,
    }


def same_source(run, path):
    """Whether ``path`` is the unchanged file ``run`` read (a checkpoint written before the ``-wal`` was
    part of the identity is compared without it)."""
    now = source_identity(path)
    if "wal" not in run.source:
        now.pop("wal")
    return run.source == now


@dataclass
class Run:
    id: int
    source: dict
    definitions: dict
    done: dict = field(default_factory=dict)  # table name -> rows
    chunks: dict = field(default_factory=dict)  # table name -> [[lo, hi, rows, digest], ...]


def ensure_tables(cursor):
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {RUN_TABLE} ("
        " id serial PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT now(),"
        " source jsonb NOT NULL, definitions jsonb NOT NULL)"
    )
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE_TABLE} ("
        f" run_id integer NOT NULL REFERENCES {RUN_TABLE} (id) ON DELETE CASCADE,"
        " table_name text NOT NULL, rows bigint NOT NULL, seconds double precision NOT NULL,"
        " chunks jsonb, PRIMARY KEY (run_id, table_name))"
    )


def state_exists(cursor):
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [RUN_TABLE])
    return cursor.fetchone()[0]


def current_run(cursor):
    """The unfinished run, if a copy was interrupted."""
    if not state_exists(cursor):
        return None
    cursor.execute(f"SELECT id, source, definitions FROM {RUN_TABLE} ORDER BY id DESC LIMIT 1")
    row = cursor.fetchone()
    if row is None:
        return None
    source, definitions = (v if isinstance(v, dict) else json.loads(v) for v in row[1:])
    cursor.execute(f"SELECT table_name, rows, chunks FROM {TABLE_TABLE} WHERE run_id = %s", [row[0]])
    done, chunks = {}, {}
    for table, rows, table_chunks in cursor.fetchall():
        done[table] = rows
        chunks[table] = json.loads(table_chunks) if isinstance(table_chunks, str) else table_chunks
    return Run(id=row[0], source=source, definitions=definitions, done=done, chunks=chunks)


def start_run(cursor, source, definitions):
    ensure_tables(cursor)
    cursor.execute(
        f"INSERT INTO {RUN_TABLE} (source, definitions) VALUES (%s, %s) RETURNING id",
        [json.dumps(source), json.dumps(definitions)],
    )
    return Run(id=cursor.fetchone()[0], source=source, definitions=definitions)


def mark_done(cursor, run_id, table, rows, seconds, chunks):
    cursor.execute(
        f"INSERT INTO {TABLE_TABLE} (run_id, table_name, rows, seconds, chunks) VALUES (%s, %s, %s, %s, %s)",
        [run_id, table, rows, seconds, json.dumps(chunks)],
    )


def finish(cursor):
    """The copy is complete: no checkpoint is left in the target."""
    cursor.execute(f"DROP TABLE IF EXISTS {TABLE_TABLE}")
    cursor.execute(f"DROP TABLE IF EXISTS {RUN_TABLE}")


# --- one copy at a time --------------------------------------------------------------
#
# A session-level advisory lock of the target database, held by a connection of its own
# for the whole command: released when the command ends, however it ends (a killed
# process's session ends with it). Advisory locks are per database: copies into two
# databases of one server do not wait for each other.

LOCK_KEY = int.from_bytes(hashlib.sha256(b"deploy.sqlite: migrate_from_sqlite").digest()[:8], "big", signed=True)


class Busy(Exception):
    """Another copy holds the target's lock; the message names its session."""


@contextlib.contextmanager
def exclusive(alias):
    """Hold the target's copy lock while the block runs; raise :class:`Busy` at once if another run has it.

    The lock's connection is opened apart from Django's, so that closing those (worker
    threads do) never releases it.
    """
    connection = connections[alias]
    raw = connection.get_new_connection(connection.get_connection_params())
    try:
        raw.autocommit = True
        if not raw.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:
            raise Busy(_holder(raw))
        try:
            yield
        finally:
            # Released now, not when the server notices the closed session: the next run may start at once.
            with contextlib.suppress(psycopg.Error):
                raw.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    finally:
        with contextlib.suppress(psycopg.Error):
            raw.close()


def _holder(raw):
    row = raw.execute(
        "SELECT a.pid, a.backend_start, a.application_name, host(a.client_addr) FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND (l.classid::bigint << 32 | l.objid::bigint) = %s LIMIT 1",
        [LOCK_KEY],
    ).fetchone()
    if row is None:
        return "another run"
    pid, since, _, host = row
    return f"PostgreSQL session {pid}, from {host or 'a local socket'}, since {since:%Y-%m-%d %H:%M:%S %Z}"
