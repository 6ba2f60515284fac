"""Copy every planned table from the SQLite source into PostgreSQL.

The order of work, and why:

1. Capture the target tables' secondary indexes, unique and foreign-key
   constraints (``pg_get_indexdef``, ``pg_get_constraintdef``), save them as a
   checkpoint and drop them, in one transaction. Loading into bare tables,
   then re-creating them, checks each constraint in one set-based pass
   instead of one deferred trigger per row.
2. Copy each table in its own transaction, marked done in that transaction:
   TRUNCATE, then ``COPY ... FROM STDIN`` fed in bounded chunks. On the fast
   path SQLite itself builds each row's COPY text; tables are spread over
   worker threads (SQLite and psycopg release the GIL while they work).
3. In one final transaction: re-create indexes and constraints (every row is
   checked here, before the commit), move sequences past the largest key,
   and remove the checkpoint.
"""

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.core.management.color import no_style
from django.db import connections, transaction

from deploy.sqlite import state
from deploy.sqlite.source import read_only_uri


class CopyError(Exception):
    """The copy stopped; the message says where and what was already done."""


@dataclass
class TableResult:
    label: str
    table: str
    rows: int
    seconds: float
    path: str  # "fast", "general" or "resumed"


@dataclass
class CopyReport:
    tables: list = field(default_factory=list)
    seconds: float = 0.0
    resumed: bool = False

    @property
    def rows(self):
        return sum(t.rows for t in self.tables)


def _q(name):
    return '"' + name.replace('"', '""') + '"'


# --- constraints -----------------------------------------------------------


def capture_definitions(cursor, tables):
    """Secondary indexes, unique and foreign-key constraints touching ``tables``."""
    cursor.execute(
        """
        SELECT c.conname, c.conrelid::regclass::text, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c
        WHERE c.contype IN ('f', 'u')
          AND (c.conrelid = ANY(%(oids)s::regclass[]) OR c.confrelid = ANY(%(oids)s::regclass[]))
        ORDER BY c.contype DESC, c.conname
        """,
        {"oids": list(tables)},
    )
    constraints = [
        {"name": name, "table": table, "type": contype, "definition": definition}
        for name, table, contype, definition in cursor.fetchall()
    ]
    cursor.execute(
        """
        SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY(%(oids)s::regclass[])
          AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ORDER BY 1
        """,
        {"oids": list(tables)},
    )
    indexes = [{"name": name, "table": table, "definition": d} for name, table, d in cursor.fetchall()]
    return {"constraints": constraints, "indexes": indexes}


def drop_definitions(cursor, definitions):
    # Foreign keys first: they depend on the unique constraints they reference.
    for c in sorted(definitions["constraints"], key=lambda c: c["type"] != "f"):
        cursor.execute(f"ALTER TABLE {c['table']} DROP CONSTRAINT IF EXISTS {_q(c['name'])}")
    for index in definitions["indexes"]:
        cursor.execute(f"DROP INDEX IF EXISTS {index['name']}")


def recreate_definitions(cursor, definitions):
    """Indexes, then unique constraints, then foreign keys (which validate every row)."""
    for index in definitions["indexes"]:
        cursor.execute(index["definition"])
    for c in sorted(definitions["constraints"], key=lambda c: c["type"] == "f"):
        try:
            with transaction.atomic(using=cursor.db.alias):
                cursor.execute(f"ALTER TABLE {c['table']} ADD CONSTRAINT {_q(c['name'])} {c['definition']}")
        except Exception as exc:
            raise CopyError(
                f"Re-creating constraint {c['name']} on {c['table']} failed: {str(exc).strip()}. "
                "The rows are copied but this constraint does not hold; fix the source, then rerun with --truncate."
            ) from None


# --- one table -----------------------------------------------------------


def _copy_fast(plan, raw, pg_cursor, batch_size, progress):
    cursor = raw.execute(plan.select_copy_text())
    columns = ", ".join(_q(c) for c in plan.column_names)
    rows = 0
    with pg_cursor.copy(f"COPY {_q(plan.table)} ({columns}) FROM STDIN") as copy:
        while True:
            batch = cursor.fetchmany(batch_size)
            if not batch:
                break
            copy.write("\n".join([row[0] for row in batch]) + "\n")
            rows += len(batch)
            progress(plan, len(batch))
    return rows


def _copy_general(plan, source_alias, target, pg_cursor, batch_size, progress):
    """Values through the ORM on both sides: correct for any field type."""
    columns = ", ".join(_q(c) for c in plan.column_names)
    fields = [c.field for c in plan.columns]
    queryset = (
        plan.model._base_manager.using(source_alias)
        .order_by(plan.pk.attname)
        .values_list(*[c.attname for c in plan.columns])
    )
    rows = 0
    with pg_cursor.copy(f"COPY {_q(plan.table)} ({columns}) FROM STDIN") as copy:
        for values in queryset.iterator(chunk_size=batch_size):
            copy.write_row([f.get_db_prep_save(v, connection=target) for f, v in zip(fields, values, strict=True)])
            rows += 1
            if rows % batch_size == 0:
                progress(plan, batch_size)
    progress(plan, rows % batch_size)
    return rows


def copy_table(plan, source, target_alias, run_id, batch_size, progress):
    """Copy one table in one transaction that also records it as done."""
    started = time.monotonic()
    progress(plan, 0)
    target = connections[target_alias]
    raw = sqlite3.connect(read_only_uri(source.path), uri=True)
    try:
        with transaction.atomic(using=target_alias), target.cursor() as cursor:
            cursor.execute("SET LOCAL TIME ZONE 'UTC'")
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute(f"TRUNCATE {_q(plan.table)}")
            if plan.fast:
                rows = _copy_fast(plan, raw, cursor.cursor, batch_size, progress)
            else:
                rows = _copy_general(plan, source.alias, target, cursor.cursor, batch_size, progress)
            seconds = time.monotonic() - started
            state.mark_done(cursor, run_id, plan.table, rows, seconds)
    except CopyError:
        raise
    except Exception as exc:
        raise CopyError(f"Copying {plan.label} (table {plan.table}) failed: {str(exc).strip()}") from exc
    finally:
        raw.close()
    return TableResult(plan.label, plan.table, rows, seconds, "fast" if plan.fast else "general")


# --- the whole copy ----------------------------------------------------------


def source_identity(source):
    stat = source.path.stat()
    return {"path": str(source.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def copy_database(source, plans, target_alias, *, batch_size=10_000, resume=False, workers=2, progress=None):
    """Copy ``plans`` (a list of TablePlan) from ``source`` into ``target_alias``."""
    progress = progress or (lambda plan, rows: None)
    started = time.monotonic()
    report = CopyReport()
    target = connections[target_alias]
    tables = [p.table for p in plans]
    with transaction.atomic(using=target_alias), target.cursor() as cursor:
        run = state.current_run(cursor)
        if run and not resume:
            raise CopyError(
                "A previous copy into this database was interrupted: rerun with --resume to finish it, "
                "or with --truncate to start over."
            )
        if run and run.source != source_identity(source):
            raise CopyError(
                f"The interrupted copy read {run.source['path']}, which has changed or is not this source: "
                "rerun with --truncate to start over."
            )
        if run is None:
            definitions = capture_definitions(cursor, tables)
            run = state.start_run(cursor, source_identity(source), definitions)
            drop_definitions(cursor, definitions)
        else:
            report.resumed = True

    todo = [p for p in plans if p.table not in run.done]
    for plan in plans:
        if plan.table in run.done:
            report.tables.append(TableResult(plan.label, plan.table, run.done[plan.table], 0.0, "resumed"))
            progress(plan, run.done[plan.table])

    def work(plan):
        try:
            return copy_table(plan, source, target_alias, run.id, batch_size, progress)
        finally:
            # Each worker thread has its own Django connections: close them.
            connections[target_alias].close()
            connections[source.alias].close()

    # Largest tables first, so the workers finish together.
    todo.sort(key=lambda p: -p.rows)
    if workers > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as pool:
            report.tables += list(pool.map(work, todo))
    else:
        report.tables += [copy_table(p, source, target_alias, run.id, batch_size, progress) for p in todo]

    with transaction.atomic(using=target_alias), target.cursor() as cursor:
        recreate_definitions(cursor, run.definitions)
        for sql in target.ops.sequence_reset_sql(no_style(), [p.model for p in plans]):
            cursor.execute(sql)
        state.finish(cursor)
    report.tables.sort(key=lambda t: t.label)
    report.seconds = time.monotonic() - started
    return report


def truncate_tables(target_alias, plans):
    """Empty every planned table (``--truncate``), and forget any interrupted copy."""
    target = connections[target_alias]
    with transaction.atomic(using=target_alias), target.cursor() as cursor:
        run = state.current_run(cursor)
        cursor.execute(f"TRUNCATE {', '.join(_q(p.table) for p in plans)}")
        if run:
            _recreate_if_missing(cursor, run.definitions)
            state.finish(cursor)


def _recreate_if_missing(cursor, definitions):
    """After an interrupted copy: put back what it had dropped (the tables are empty now)."""
    cursor.execute("SELECT indexrelid::regclass::text FROM pg_index")
    existing_indexes = {row[0] for row in cursor.fetchall()}
    cursor.execute("SELECT conname FROM pg_constraint")
    existing_constraints = {row[0] for row in cursor.fetchall()}
    for index in definitions["indexes"]:
        if index["name"] not in existing_indexes:
            cursor.execute(index["definition"])
    for c in sorted(definitions["constraints"], key=lambda c: c["type"] == "f"):
        if c["name"] not in existing_constraints:
            cursor.execute(f"ALTER TABLE {c['table']} ADD CONSTRAINT {_q(c['name'])} {c['definition']}")
