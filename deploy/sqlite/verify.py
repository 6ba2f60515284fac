"""Prove the copy: the target holds exactly the source's rows, as the app reads them.

For every table: exact row counts, then every row compared value by value
through the ORM on both sides (the values the application will see), in
primary-key order, streamed in chunks so memory stays flat. Then each
sequence must be past the largest key, and no foreign key may point at a
missing row. Any unusual value is compared the slow, exact way; nothing
passes unless it is equal.
"""

import json
import time
from dataclasses import dataclass, field
from itertools import zip_longest

from django.db import connections
from django.db.models.functions import Collate

from deploy.sqlite.plan import TEXT_TYPES

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

    @property
    def ok(self):
        return not self.differences

    def add(self, difference):
        if len(self.differences) < MAX_DIFFERENCES:
            self.differences.append(difference)


def _count(alias, table):
    with connections[alias].cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{table}"')
        return cursor.fetchone()[0]


def _rows(plan, alias, chunk_size):
    pk = plan.pk
    order = pk.attname
    if connections[alias].vendor == "postgresql" and pk.kind in TEXT_TYPES:
        # SQLite orders text by bytes; make PostgreSQL do the same.
        order = Collate(pk.attname, "C")
    queryset = plan.model._base_manager.using(alias).order_by(order)
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


def compare_table(plan, source_alias, target_alias, report, chunk_size=5000):
    """Row-by-row comparison in primary-key order; differences go into ``report``."""
    names = [c.name for c in plan.columns]
    source_rows = _rows(plan, source_alias, chunk_size)
    target_rows = _rows(plan, target_alias, chunk_size)
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


def check_orphans(plans, target_alias, report):
    target = connections[target_alias]
    with target.cursor() as cursor:
        for plan in plans:
            for f in plan.model._meta.concrete_fields:
                if not (f.is_relation and (f.many_to_one or f.one_to_one)):
                    continue
                parent = f.related_model._meta
                cursor.execute(
                    f'SELECT c."{plan.pk.name}", c."{f.column}" FROM "{plan.table}" c '
                    f'LEFT JOIN "{parent.db_table}" p ON c."{f.column}" = p."{f.target_field.column}" '
                    f'WHERE c."{f.column}" IS NOT NULL AND p."{f.target_field.column}" IS NULL LIMIT 10'
                )
                for pk, value in cursor.fetchall():
                    report.add(
                        Difference(plan.table, pk, f.column, f"points at {parent.db_table} {value!r}, which is missing")
                    )


def verify_copy(plans, source_alias, target_alias, progress=None):
    """Counts, every row, sequences and foreign keys; returns a :class:`VerifyReport`."""
    progress = progress or (lambda plan, rows: None)
    started = time.monotonic()
    report = VerifyReport()
    for plan in plans:
        table_started = time.monotonic()
        progress(plan, 0)
        source_count, target_count = _count(source_alias, plan.table), _count(target_alias, plan.table)
        before = len(report.differences)
        if source_count != target_count:
            report.add(
                Difference(plan.table, None, None, f"{source_count} rows in the source, {target_count} in the target")
            )
        compare_table(plan, source_alias, target_alias, report)
        progress(plan, source_count)
        report.tables[plan.label] = {
            "table": plan.table,
            "rows": source_count,
            "seconds": round(time.monotonic() - table_started, 3),
            "verified": len(report.differences) == before,
        }
    check_sequences(plans, target_alias, report)
    check_orphans(plans, target_alias, report)
    report.seconds = time.monotonic() - started
    return report
