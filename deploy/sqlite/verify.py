"""Prove the copy: the target holds exactly the source's rows, as the app reads them.

For every table: exact row counts, then the rows compared in primary-key
order, chunk by chunk. PostgreSQL renders each stored row back into the
canonical text the source gave it (see :mod:`deploy.sqlite.plan`) and hashes
each chunk server-side, so only digests cross the wire; the source's digests
come from the copy's own read (or, with ``--verify-only``, from a read made
for the purpose). JSON is stored parsed, so its digest is of PostgreSQL's
hashes of the parsed values (``jsonb_hash_extended``): the one the copy took
right after parsing the source's text, or, with ``--verify-only``, that of the
source's JSON sent again and parsed.

A chunk whose digests differ, or that holds a value the fast path set aside,
is compared value by value through the ORM on both sides, which names the
table, key and column of each difference; an unusual but equal value costs
that slower comparison, never a false pass. Tables of field types without a
fast path are compared through the ORM throughout. Then each sequence must be
past the largest key, and no foreign key may point at a missing row: queried,
unless the copy just before validated the key's constraint (PostgreSQL's
``VALIDATE CONSTRAINT`` checks every row, in the same run).
"""

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from itertools import zip_longest

import psycopg
from django.db import DataError, connections, transaction
from django.db.models.functions import Collate

from deploy.sqlite.chunks import Digests, TableReader, digest_sql, open_reader, source_json_digest_sql
from deploy.sqlite.fields import TEXT_TYPES
from deploy.sqlite.plan import sqlite_text
from deploy.sqlite.sql import joined, quote, range_sql
from deploy.sqlite.workers import Work, run_workers

MAX_DIFFERENCES = 100


@dataclass
class Difference:
    table: str
    pk: object
    column: str | None
    problem: str

    def __str__(self):
        where = f"{self.table} pk={self.pk!r}" if self.pk is not None else self.table
        return f"{where}{' column ' + self.column if self.column else ''}: {self.problem}"


@dataclass
class VerifyReport:
    tables: dict = field(default_factory=dict)  # label -> {"rows": n, "seconds": s, "verified": bool}
    differences: list = field(default_factory=list)
    seconds: float = 0.0
    foreign_keys: dict = field(default_factory=lambda: {"queried": 0, "validated_by_the_copy": 0})

    @property
    def ok(self):
        return not self.differences

    def add(self, difference):
        if len(self.differences) < MAX_DIFFERENCES:
            self.differences.append(difference)


def _rows(plan, alias, chunk_size, lo=None, hi=None):
    pk = plan.pk
    order = pk.attname
    if connections[alias].vendor == "postgresql" and pk.kind in TEXT_TYPES:
        # SQLite orders text by bytes; make PostgreSQL do the same.
        order = Collate(pk.attname, "C")
    queryset = plan.model._base_manager.using(alias).order_by(order)
    if lo is not None:
        queryset = queryset.filter(pk__gt=lo)
    if hi is not None:
        queryset = queryset.filter(pk__lte=hi)
    return queryset.values_list(*[c.attname for c in plan.columns]).iterator(chunk_size=chunk_size)


def _kind(value):
    return bytes if type(value) is memoryview else type(value)


def _rows_equal(source_row, target_row, json_columns):
    """The fast test: equal tuples, the same types column by column (True is not 1), JSON compared exactly."""
    return (
        source_row == target_row
        and list(map(_kind, source_row)) == list(map(_kind, target_row))
        and all(_equal(source_row[i], target_row[i]) for i in json_columns)
    )


def _equal(a, b):
    """Equal values of the same type; JSON compared in a canonical text (True is not 1)."""
    if isinstance(a, memoryview):
        a = bytes(a)
    if isinstance(b, memoryview):
        b = bytes(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict | list):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    if isinstance(a, float) and a != a:  # NaN equals NaN here
        return b != b
    return a == b


def compare_table(plan, source_alias, target_alias, report, chunk_size=5000, lo=None, hi=None):
    """Row-by-row comparison in primary-key order, of keys in (lo, hi]; differences go into ``report``."""
    names = [c.name for c in plan.columns]
    source_rows = _rows(plan, source_alias, chunk_size, lo, hi)
    target_rows = _rows(plan, target_alias, chunk_size, lo, hi)
    found = 0
    source_iter, target_iter = iter(source_rows), iter(target_rows)
    pk_index = names.index(plan.pk.name)
    json_columns = [i for i, c in enumerate(plan.columns) if c.kind == "JSONField" or not c.fast]

    def advance(iterator):
        return next(iterator, None)

    pending_source, pending_target = advance(source_iter), advance(target_iter)
    while pending_source is not None or pending_target is not None:
        if found >= MAX_DIFFERENCES:
            break
        s_pk = pending_source[pk_index] if pending_source is not None else None
        t_pk = pending_target[pk_index] if pending_target is not None else None
        if pending_target is None or (pending_source is not None and _before(s_pk, t_pk)):
            report.add(Difference(plan.table, s_pk, None, "missing in the target"))
            found += 1
            pending_source = advance(source_iter)
            continue
        if pending_source is None or _before(t_pk, s_pk):
            report.add(Difference(plan.table, t_pk, None, "extra row in the target"))
            found += 1
            pending_target = advance(target_iter)
            continue
        if not _rows_equal(pending_source, pending_target, json_columns):
            for name, a, b in zip_longest(names, pending_source, pending_target):
                if not _equal(a, b):
                    report.add(Difference(plan.table, s_pk, name, f"source {_preview(a)} != target {_preview(b)}"))
                    found += 1
        pending_source, pending_target = advance(source_iter), advance(target_iter)
    return found


def _before(a, b):
    if isinstance(a, str) and isinstance(b, str):
        return a.encode() < b.encode()
    return a < b


def _preview(value):
    text = repr(bytes(value) if isinstance(value, memoryview) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_sequences(plans, target_alias, report):
    target = connections[target_alias]
    with target.cursor() as cursor:
        for plan in plans:
            pk = plan.model._meta.pk
            if pk.get_internal_type() not in {"AutoField", "BigAutoField", "SmallAutoField"}:
                continue
            cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [f'"{plan.table}"', pk.column])
            sequence = cursor.fetchone()[0]
            if not sequence:
                continue
            cursor.execute(f'SELECT max("{pk.column}") FROM "{plan.table}"')
            largest = cursor.fetchone()[0]
            cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
            last_value, is_called = cursor.fetchone()
            next_value = last_value + 1 if is_called else last_value
            if largest is not None and next_value <= largest:
                report.add(
                    Difference(
                        plan.table,
                        None,
                        pk.column,
                        f"sequence {sequence} would give {next_value}, not past the largest key {largest}",
                    )
                )


def foreign_keys(plans):
    """(plan, field) for every foreign key (or one-to-one) column of the planned tables that is a constraint.

    A key declared ``db_constraint=False`` may point at a row that is gone on
    purpose (a log entry of a deleted page): its value is data, copied and
    compared like any other, never an orphan.
    """
    return [
        (plan, c.field)
        for plan in plans
        for c in plan.columns
        if c.field.is_relation and (c.field.many_to_one or c.field.one_to_one) and c.field.db_constraint
    ]


def validated_keys(target_alias, validated):
    """(table, column, parent table, parent column) of the single-column foreign keys validated by a copy.

    ``validated``: (table name, constraint name) pairs a copy validated in this run.
    """
    if not validated:
        return set()
    with connections[target_alias].cursor() as cursor:
        cursor.execute(
            """
            SELECT r.relname, c.conname, a.attname, fr.relname, fa.attname
            FROM pg_constraint c
            JOIN pg_class r ON r.oid = c.conrelid
            JOIN pg_class fr ON fr.oid = c.confrelid
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
            WHERE c.contype = 'f' AND c.convalidated AND cardinality(c.conkey) = 1
              AND pg_table_is_visible(c.conrelid)
            """
        )
        return {
            (table, column, parent, parent_column)
            for table, name, column, parent, parent_column in cursor.fetchall()
            if (table, name) in validated
        }


def orphans(cursor, plan, f):
    """Differences for rows of ``plan`` whose ``f`` points at a missing row (at most 10)."""
    parent = f.related_model._meta
    cursor.execute(
        f"SELECT c.{quote(plan.pk.name)}, c.{quote(f.column)} FROM {quote(plan.table)} c "
        f"LEFT JOIN {quote(parent.db_table)} p ON c.{quote(f.column)} = p.{quote(f.target_field.column)} "
        f"WHERE c.{quote(f.column)} IS NOT NULL AND p.{quote(f.target_field.column)} IS NULL LIMIT 10"
    )
    return [
        Difference(plan.table, pk, f.column, f"points at {parent.db_table} {value!r}, which is missing")
        for pk, value in cursor.fetchall()
    ]


class _Verifier:
    """Workers that take chunks (of any table), so a large table is spread over all of them."""

    def __init__(self, source, target_alias, batch_size, progress):
        self.source, self.alias = source, target_alias
        self.batch_size, self.progress = batch_size, progress
        self.lock = threading.Lock()
        self.time_zone = connections[target_alias].timezone_name
        self.sql = {}
        self.target_rows, self.suspect, self.started, self.orphans = {}, {}, {}, []

    def run(self, work, workers):
        """Do the queued (job, *arguments) items, ``workers`` at a time."""
        aliases = [self.alias, self.source.alias]
        run_workers(lambda: self._worker(work), min(workers, len(work)), "verify", work, aliases)

    def _worker(self, work):
        raw = open_reader(self.source.path)
        try:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SET DateStyle TO ISO, YMD")
                cursor.execute("SET extra_float_digits TO 1")
                cursor.execute("SET work_mem TO '64MB'")
                cursor.execute("SET enable_bitmapscan TO off")  # key ranges read in key order, without a sort
                for job, *arguments in work:
                    job(cursor, raw, *arguments)
        finally:
            raw.close()

    # Jobs ----------------------------------------------------------------------

    def orphan_check(self, cursor, raw, plan, f):
        found = orphans(cursor, plan, f)
        with self.lock:
            self.orphans += found

    def source_chunks(self, cursor, raw, plan, out):
        """Digests from a read of the source made for the purpose (--verify-only)."""
        reader = TableReader(raw, plan, self.batch_size)
        digests = Digests(plan)
        for piece in reader.pieces():
            digests.add(piece, clean=not piece.flagged)
        out[plan.table] = digests.finish()

    def chunk(self, cursor, raw, plan, chunk):
        """Count and digest the target's rows of one chunk; remember the range if they differ."""
        with self.lock:
            if plan.table not in self.started:
                self.started[plan.table] = time.monotonic()
                self.progress(plan, 0)
        params = []
        where = range_sql(f"t.{quote(plan.pk.name)}", chunk.lo, chunk.hi, params)
        unordered = ":" in (chunk.digest or "")  # the sums of its lines' hashes (see Digests)
        cursor.execute(self._digest_sql(plan, unordered).replace("{where}", where.replace("?", "%s")), params)
        rows, digest, json_digest = cursor.fetchone()
        digest = digest if unordered else bytes(digest).hex()
        same = chunk.digest is not None and rows == chunk.rows and digest == chunk.digest
        if same and plan.json_columns:
            expected = chunk.json_digest or self._source_json_digest(cursor, raw, plan, chunk)
            same = expected is not None and bytes(json_digest).hex() == expected
        with self.lock:
            self.target_rows[plan.table] = self.target_rows.get(plan.table, 0) + rows
            if not same:
                self.suspect.setdefault(plan.table, []).append((chunk.lo, chunk.hi))
        self.progress(plan, chunk.rows)

    def _digest_sql(self, plan, unordered):
        if (plan.table, unordered) not in self.sql:
            self.sql[plan.table, unordered] = digest_sql(plan, self.time_zone, unordered)
        return self.sql[plan.table, unordered]

    def _source_json_digest(self, cursor, raw, plan, chunk):
        """The JSON digest of the source's JSON texts, parsed by PostgreSQL (None: some are not valid JSON)."""
        columns = plan.json_columns
        table = _json_table(plan)
        cursor.execute(f"SELECT to_regclass('pg_temp.{table}') IS NOT NULL")
        if cursor.fetchone()[0]:
            cursor.execute(f"TRUNCATE {table}")
        else:
            names = ", ".join(f"j{i} text" for i in range(len(columns)))
            pk_type = "bigint" if plan.integer_pk else "text"
            cursor.execute(f"CREATE TEMPORARY TABLE {table} (pk {pk_type} PRIMARY KEY, ok boolean, {names})")
        valid = " AND ".join(
            f"({quote(c.name)} IS NULL OR (typeof({quote(c.name)}) = 'text' AND json_valid({quote(c.name)})))"
            for c in columns
        )
        line = joined([sqlite_text(plan.pk), f"({valid})", *(sqlite_text(c) for c in columns)])
        params = []
        where = range_sql(quote(plan.pk.name), chunk.lo, chunk.hi, params)
        (text,) = raw.execute(
            f"SELECT group_concat({line}, char(10)) FROM {quote(plan.table)} WHERE {where}", params
        ).fetchone()
        try:
            with transaction.atomic(using=self.alias):
                if text:
                    with cursor.cursor.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
                        copy.write(text + b"\n")
                cursor.execute(source_json_digest_sql(plan, table))
                valid, digest = cursor.fetchone()
        except (DataError, psycopg.DataError):
            # Text PostgreSQL cannot read (SQLite accepted it, psycopg's own error under the raw
            # cursor): compare by value, which names it.
            return None
        return bytes(digest).hex() if valid is not False else None


def _json_table(plan):
    return "deploy_verify_json_" + hashlib.sha256(plan.table.encode()).hexdigest()[:12]


def _count(alias, table):
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {quote(table)}")
        return cursor.fetchone()[0]


def verify_copy(
    plans, source, target_alias, *, chunks=None, validated=None, batch_size=10_000, workers=2, progress=None
):
    """Counts, every row, sequences and foreign keys; returns a :class:`VerifyReport`.

    ``chunks`` (table -> [Chunk]) are the digests a copy just made; other tables are read again.
    ``validated``: the foreign-key constraints that copy validated, (table, constraint name).
    """
    progress = progress or (lambda plan, rows: None)
    started = time.monotonic()
    verifier = _Verifier(source, target_alias, batch_size, progress)
    fast = [p for p in plans if p.fast]
    known = dict(chunks or {})
    by_size = sorted(fast, key=lambda p: -p.rows)
    unknown = Work((verifier.source_chunks, plan, known) for plan in by_size if not known.get(plan.table))
    if len(unknown):
        verifier.run(unknown, workers)
    # Chunks of any table, and the orphan checks, shared by the workers: the largest work first.
    work = Work()
    report = VerifyReport()
    proven = validated_keys(target_alias, validated)
    for plan, f in sorted(foreign_keys(plans), key=lambda item: -item[0].rows):
        parent = f.related_model._meta.db_table
        if (plan.table, f.column, parent, f.target_field.column) in proven:
            report.foreign_keys["validated_by_the_copy"] += 1
        else:
            report.foreign_keys["queried"] += 1
            work.put((verifier.orphan_check, plan, f))
    for plan in sorted(fast, key=lambda p: -p.rows):
        for chunk in known[plan.table]:
            work.put((verifier.chunk, plan, chunk))
    verifier.run(work, workers)

    for plan in sorted(plans, key=lambda p: p.label):
        table_started = verifier.started.get(plan.table, time.monotonic())
        before = len(report.differences)
        if plan.fast:
            # Counted apart from the read the digests come from: a read that missed rows cannot prove itself.
            source_rows = _count(source.alias, plan.table)
            target_rows = verifier.target_rows.get(plan.table, 0)
            suspect = verifier.suspect.get(plan.table, [])
            if sum(c.rows for c in known[plan.table]) != source_rows:
                suspect = [(None, None)]
        else:
            progress(plan, 0)
            source_rows, target_rows = _count(source.alias, plan.table), _count(target_alias, plan.table)
            suspect = [(None, None)]
        if source_rows != target_rows:
            report.add(
                Difference(plan.table, None, None, f"{source_rows} rows in the source, {target_rows} in the target")
            )
        for lo, hi in suspect:
            compare_table(plan, source.alias, target_alias, report, lo=lo, hi=hi)
        if not plan.fast:
            progress(plan, source_rows)
        report.tables[plan.label] = {
            "table": plan.table,
            "rows": source_rows,
            "seconds": round(time.monotonic() - table_started, 3),
            "verified": len(report.differences) == before,
            "compared_by_value": len(suspect),
        }
    check_sequences(plans, target_alias, report)
    for difference in sorted(verifier.orphans, key=lambda d: (d.table, d.column or "", str(d.pk))):
        report.add(difference)
    report.seconds = time.monotonic() - started
    return report
