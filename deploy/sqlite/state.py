"""Checkpoints of a copy, kept in the target database.

A copy drops the target's secondary indexes, unique and foreign-key
constraints to load fast, then re-creates them. Their definitions are saved
here in the same transaction that drops them, and each table is marked done
in the same transaction as its COPY, so a copy killed at any moment can be
finished by ``--resume`` with no row lost or duplicated, and no constraint
forgotten. The table's chunk digests are kept with it, so that ``--verify``
after ``--resume`` proves the tables an earlier run copied.
"""

import json
from dataclasses import dataclass, field

RUN_TABLE = "deploy_sqlite_copy_run"
TABLE_TABLE = "deploy_sqlite_copy_table"


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
