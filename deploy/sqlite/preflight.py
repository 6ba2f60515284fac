"""Everything that would make a copy fail or change data, found before writing.

Every problem is collected (table, primary key, column, a short preview of
the value) so a person can fix them all in one pass; the copy does not start
while there is one.
"""

import contextlib
import sqlite3
from dataclasses import dataclass

from django.db import DatabaseError, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

from deploy.sqlite import state
from deploy.sqlite.fields import TEXT_TYPES
from deploy.sqlite.sql import quote

MAX_PER_CHECK = 20
INTEGER_OIDS = {20, 21, 23}  # bigint, smallint, integer
# Rows that Django's own migrate creates (post_migrate); a copy replaces them.
MIGRATE_CREATED = {"contenttypes.contenttype", "auth.permission", "sites.site"}


@dataclass
class Problem:
    where: str
    message: str
    pk: object = None
    column: str | None = None
    value: object = None

    def __str__(self):
        where = self.where + (f" pk={self.pk!r}" if self.pk is not None else "")
        where += f" column {self.column}" if self.column else ""
        value = f" (value: {_preview(self.value)})" if self.value is not None else ""
        return f"{where}: {self.message}{value}"


def _preview(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


# --- the source -------------------------------------------------------------
#
# The copy runs these at different moments: the structure before anything is
# written; the integrity and foreign-key checks, and every value, while the
# rows stream into transactions that are committed only when all of them
# passed (see deploy.sqlite.copy). Either way a problem leaves the target as
# it was.


def structure_problems(source, plans):
    """Migrations, tables and columns: the source is the database this code expects."""
    raw = source.raw
    problems = _migration_problems(source)
    migrated = not problems
    existing = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for plan in plans:
        if plan.table not in existing:
            problems.append(
                Problem(plan.table, f"table of {plan.label} is missing from the source: apply its migrations there")
            )
            continue
        declared = {row[1]: row[2] for row in raw.execute(f"PRAGMA table_info({quote(plan.table)})")}
        missing = [c for c in plan.column_names if c not in declared]
        if missing and migrated:
            # Every migration is applied, yet the model has columns the file lacks: its fields depend on the
            # database vendor (Wagtail's search index has text columns only in PostgreSQL).
            problems.append(
                Problem(
                    plan.table,
                    f"columns of {plan.label} missing from the source: {', '.join(missing)}: its fields differ by "
                    f"database vendor, so the copy cannot fill them. Leave the model out with --exclude "
                    f"{exclude_label(plan)} and rebuild its rows on PostgreSQL (a search index with its own "
                    "command, e.g. Wagtail's update_index)",
                )
            )
        if missing:
            if not migrated:
                problems.append(Problem(plan.table, f"columns missing from the source: {', '.join(missing)}"))
            continue
        problems += _vendor_type_problems(plan, declared, connections[source.alias])
        problems += _blob_key_problems(raw, plan)
    return problems


def _blob_key_problems(raw, plan):
    """Rows whose text primary key is stored as a BLOB.

    A BLOB sorts after every text: a comparison by value (and, before text keys were
    read by rowid, the copy) reads a table by key ranges, and a BLOB key came back in
    every range after it. It is found through
    the key's index, at the end of it (``>= X''`` holds for every BLOB, for no text).
    """
    if plan.integer_pk:
        return []
    key = quote(plan.pk.name)
    rows = raw.execute(
        f"SELECT {key} FROM {quote(plan.table)} WHERE {key} >= X'' ORDER BY {key} LIMIT {MAX_PER_CHECK}"
    ).fetchall()
    return [
        Problem(
            plan.table,
            "its primary key is stored as a BLOB, not as text: the application cannot find the row by its key; "
            "store the key as text in the source (CAST(... AS TEXT))",
            _text_key(pk),
            plan.pk.name,
            pk,
        )
        for (pk,) in rows
    ]


def _text_key(value):
    return value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else value


def sqlite_affinity(declared):
    """SQLite's type affinity of a declared column type (its rules, in their order)."""
    declared = (declared or "").upper()
    if "INT" in declared:
        return "integer"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in declared or not declared:
        return "blob"
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


def exclude_label(plan):
    """What --exclude takes to leave this table out: an automatic many-to-many table follows its model."""
    owner = plan.model._meta.auto_created
    return owner._meta.label if owner else plan.label


def _vendor_problem(plan, column, said):
    field = column.field
    return Problem(
        plan.table,
        f"{plan.label}.{field.name} ({type(field).__name__}) {said}: its field differs by database vendor, so the "
        f"copy cannot carry its values. Leave the model out with --exclude {exclude_label(plan)} and rebuild its "
        "rows on PostgreSQL (a search index with its own command, e.g. Wagtail's update_index)",
        column=column.name,
    )


def _vendor_type_problems(plan, declared, sqlite_connection):
    """Columns whose source type is not what the field (as this code defines it) stores in SQLite.

    Some apps define a field by the database vendor they run on (Wagtail's search
    index: text in SQLite, ``tsvector`` in PostgreSQL): the model loaded for the copy
    is PostgreSQL's, the file was made by SQLite's. Types are compared by SQLite's
    affinity, so spellings from older Django versions (``bool``, ``integer unsigned``)
    agree with today's.
    """
    problems = []
    for column in plan.columns:
        expected = column.field.db_type(sqlite_connection)
        if expected is None or sqlite_affinity(expected) == sqlite_affinity(declared[column.name]):
            continue
        problems.append(_vendor_problem(plan, column, f"is {expected} here, but {declared[column.name]} in the source"))
    return problems


def read_by_index(raw, table):
    """Whether reading ``table`` in key order goes through an index: its key is not the rowid.

    Only a column declared exactly ``INTEGER PRIMARY KEY`` is the rowid; any other key
    (text, UUID, ``bigint``, ``integer unsigned``) is found through an index of its own.
    """
    keys = [(name, declared) for _, name, declared, _, _, pk in raw.execute(f"PRAGMA table_info({quote(table)})") if pk]
    return not (len(keys) == 1 and keys[0][1].upper() == "INTEGER")


def integrity_problems(raw, indexed=None, foreign_keys=True):
    """``PRAGMA integrity_check``, then ``PRAGMA foreign_key_check``; (problems, damaged).

    With ``indexed`` (table names), the copy's checks: ``PRAGMA quick_check`` of the whole
    file (every page, record, NOT NULL and CHECK constraint, in linear time), and the full
    check only of these tables, the ones whose rows are read through an index. What the
    full check adds for the others is that SQLite's indexes match its tables: the copy
    never reads them, and PostgreSQL builds its own and checks every unique constraint.
    Orphan rows are then found by :func:`_orphans` (and PostgreSQL validates every
    foreign key again when the copy re-creates it).
    """
    pragmas = ["integrity_check"] if indexed is None else ["quick_check"]
    pragmas += [f"integrity_check({quote(table)})" for table in indexed or ()]
    for pragma in pragmas:
        try:
            result = raw.execute(f"PRAGMA {pragma}").fetchall()
        except sqlite3.DatabaseError as exc:
            return [Problem("source", f"the file is damaged ({exc}): restore it from a backup")], True
        if result != [("ok",)]:
            # A damaged file: nothing else it says can be trusted.
            said = result[:MAX_PER_CHECK]
            return [Problem("source", f"damaged, PRAGMA {pragma} says: {row[0]}") for row in said], True
    if not foreign_keys:
        return [], False
    orphans = raw.execute("PRAGMA foreign_key_check").fetchall() if indexed is None else _orphans(raw)
    problems = [
        Problem(table, f"orphan row: its foreign key points at a missing row of {parent}", rowid)
        for table, rowid, parent in orphans[:MAX_PER_CHECK]
    ]
    return problems, False


def _orphans(raw):
    """(table, rowid, parent) of the rows whose foreign key points at a missing row: the copy's own check.

    What ``PRAGMA foreign_key_check`` finds, found in the order of each key's index:
    the pragma looks each row's parent up in the order of the rows, which reads the
    parent's pages at random, where an anti-join over the key's covering index reads
    them once, in order (on a million rows, a fifth of the reads and half the time).
    Keys it cannot express that way (several columns, no named parent column) go
    through the pragma, table by table.
    """
    found = []
    tables = [name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        keys = {}
        for key_id, _, parent, column, parent_column, *_ in raw.execute(f"PRAGMA foreign_key_list({quote(table)})"):
            keys.setdefault(key_id, []).append((parent, column, parent_column))
        simple = [k[0] for k in keys.values() if len(k) == 1 and k[0][2] is not None]
        try:
            if len(simple) < len(keys):
                raise sqlite3.OperationalError("a key the anti-join does not express")
            for parent, column, parent_column in simple:
                c, p = f"c.{quote(column)}", f"p.{quote(parent_column)}"
                rows = raw.execute(
                    f"SELECT c.rowid FROM {quote(table)} c WHERE {c} IS NOT NULL "
                    f"AND NOT EXISTS (SELECT 1 FROM {quote(parent)} p WHERE {p} = {c}) LIMIT {MAX_PER_CHECK}"
                ).fetchall()
                found += [(table, rowid, parent) for (rowid,) in rows]
        except sqlite3.OperationalError:
            found += [row[:3] for row in raw.execute(f"PRAGMA foreign_key_check({quote(table)})")]
    return found


def data_problems(source, plans, target_alias, checked=None):
    """Every check of the source's data, one after the other, writing nothing.

    For when the copy cannot start (its structure or the target has problems):
    the report still names every problem, so they can all be fixed in one pass.
    ``checked`` is the result of the copy's own checks, if they ran
    (:func:`integrity_problems` with ``indexed``): the full integrity check
    then adds what their quick check leaves out.
    """
    if checked is None:
        problems, damaged = integrity_problems(source.raw)
    else:
        problems, damaged = checked
        if not damaged:
            more, damaged = integrity_problems(source.raw, foreign_keys=False)
            problems = [*more, *problems]
    problems = list(problems)
    if damaged:
        return problems
    existing = {name for (name,) in source.raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    ops = connections[target_alias].ops
    types = {}
    if connections[target_alias].vendor == "postgresql":
        with contextlib.suppress(DatabaseError):  # the target cannot say (unreachable): judge by the fields
            types = target_column_types(target_alias, [p.table for p in plans])
    for plan in plans:
        if plan.table not in existing:
            continue
        columns = {row[1] for row in source.raw.execute(f"PRAGMA table_info({quote(plan.table)})")}
        if all(c in columns for c in plan.column_names):
            problems += value_problems(source.raw, plan, ops, types.get(plan.table))
    return problems


def _migration_problems(source):
    problems = []
    connection = connections[source.alias]
    try:
        loader = MigrationLoader(connection, ignore_no_migrations=True)
    except Exception as exc:
        return [Problem("source", f"cannot read its django_migrations table ({exc}): is this a Django database?")]
    if not loader.applied_migrations:
        return [Problem("source", "has no applied migrations (no django_migrations table): is this a Django database?")]
    executor = MigrationExecutor(connection)
    executor.loader = loader
    unapplied = [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(loader.graph.leaf_nodes())]
    if unapplied:
        problems.append(
            Problem(
                "source",
                f"{len(unapplied)} migration(s) of the code are not applied to the SQLite file "
                f"({', '.join(unapplied[:8])}{'…' if len(unapplied) > 8 else ''}). Apply them to a copy of the file "
                "with this code (DATABASE_URL=sqlite:///COPY python manage.py migrate), then copy from it.",
            )
        )
    unknown = sorted(f"{a}.{n}" for a, n in unknown_migrations(loader))
    if unknown:
        problems.append(
            Problem(
                "source",
                f"migration(s) applied to the SQLite file are unknown to this code ({', '.join(unknown[:8])}): "
                "the file comes from newer or other code.",
            )
        )
    return problems


def unknown_migrations(loader):
    """Applied migrations the code does not know, judged as Django's ``MigrationLoader`` judges them.

    A recorded name is known when it is a node of the graph, or one that a node
    replaces: applying a squashed migration records every name it replaces, and
    a file applied before the squash keeps its own name (``Migration.replaces``).
    """
    known = set(loader.graph.nodes)
    for key, migration in {**loader.disk_migrations, **loader.replacements}.items():
        known.add(key)
        known.update(tuple(replaced) for replaced in migration.replaces)
    return set(loader.applied_migrations) - known


# The range of each integer type of PostgreSQL: a column's real type decides, whatever the field says.
PG_INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


def target_column_types(alias, tables):
    """{table: {column: PostgreSQL type}} of the target's tables (information_schema's ``data_type``)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            [list(tables)],
        )
        types = {}
        for table, column, data_type in cursor.fetchall():
            types.setdefault(table, {})[column] = data_type
        return types


def integer_range(column, target_ops, column_type=None):
    """(low, high, what): the integers the target column takes, by its real type and the field's own bounds.

    A positive field's lower bound is a CHECK constraint of the table; the upper
    bound is the column type's, whatever the field's name says.
    """
    low, high = PG_INTEGER_RANGES.get(column_type, (None, None))
    try:
        field_low, field_high = target_ops.integer_field_range(column.kind)
    except KeyError:
        field_low = field_high = None
    if low is None:
        low, high = field_low, field_high
        column_type = column.kind
    elif field_low == 0:
        low = 0
    return low, high, column_type


def _checks(plan, target_ops, column_types=None):
    """(column, kind of check, SQL condition true for a bad or doubtful value, bounds): every check, exactly.

    The copy's own read runs the cheaper fast checks and leaves to PostgreSQL what
    it rejects outright; when anything is wrong, these name every problem of the
    table: each codec's full checks (deploy.sqlite.fields). ``column_types``: the
    target's real column types ({column: type}), for the integer ranges (``bounds``).
    """
    checks = []
    for c in plan.columns:
        bounds = integer_range(c, target_ops, (column_types or {}).get(c.name))
        checks += [(c, kind, sql, bounds) for kind, sql in c.codec.full_checks(c, bounds)]
    return checks


def value_problems(raw, plan, target_ops, column_types=None):
    """One pass over the table for every value check, then a UTF-8 pass over text."""
    problems = []
    checks = _checks(plan, target_ops, column_types)
    pk = quote(plan.pk.name)
    if checks:
        flags = ", ".join(f"({sql})" for _, _, sql, _ in checks)
        # Text as bytes (it may not be UTF-8); numbers as they are stored.
        values = ", ".join(
            quote(c.name) if kind == "decimal" else f"CAST({quote(c.name)} AS BLOB)" for c, kind, _, _ in checks
        )
        where = " OR ".join(f"({sql})" for _, _, sql, _ in checks)
        counts = {}
        query = f"SELECT {pk}, {flags}, {values} FROM {quote(plan.table)} WHERE {where} ORDER BY {pk}"
        for row in raw.execute(query):
            n = len(checks)
            for i, (column, kind, _, bounds) in enumerate(checks):
                if not row[1 + i]:
                    continue
                value = row[1 + n + i]
                message = column.codec.judge(kind, column, value, bounds)
                if message is None:
                    continue
                counts[(column.name, kind)] = counts.get((column.name, kind), 0) + 1
                if counts[(column.name, kind)] <= MAX_PER_CHECK:
                    problems.append(Problem(plan.table, message, row[0], column.name, value))
        for (column, kind), count in counts.items():
            if count > MAX_PER_CHECK:
                problems.append(Problem(plan.table, f"{count - MAX_PER_CHECK} more {kind} problem(s)", None, column))
    problems += _utf8_problems(raw, plan)
    return problems


def _utf8_problems(raw, plan):
    text_columns = [c for c in plan.columns if c.kind in TEXT_TYPES or c.is_json]
    problems = []
    for column in text_columns:
        col = quote(column.name)
        query = (
            f"SELECT {quote(plan.pk.name)}, CAST({col} AS BLOB) FROM {quote(plan.table)} "
            f"WHERE typeof({col}) = 'text' AND {col} GLOB '*[^ -~]*'"
        )
        found = 0
        for pk, value in raw.execute(query):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                found += 1
                if found <= MAX_PER_CHECK:
                    problems.append(Problem(plan.table, "is not valid UTF-8", pk, column.name, value))
        if found > MAX_PER_CHECK:
            problems.append(
                Problem(plan.table, f"{found - MAX_PER_CHECK} more invalid UTF-8 value(s)", None, column.name)
            )
    return problems


# --- the target -------------------------------------------------------------


def target_problems(alias, plans, truncate=False, resume=False, source=None):
    """What keeps the copy from writing into the target; ``source`` (a Source) for --resume's check."""
    if alias not in connections:
        return [Problem("target", f"there is no database alias {alias!r} in settings.DATABASES")]
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return [
            Problem(
                "target",
                f"database {alias!r} is {connection.vendor}, not PostgreSQL: point DATABASE_URL (or --database) "
                "at PostgreSQL",
            )
        ]
    try:
        connection.ensure_connection()
    except Exception as exc:
        return [Problem("target", f"cannot connect to database {alias!r}: {str(exc).strip().splitlines()[0]}")]
    problems = []
    executor = MigrationExecutor(connection)
    unapplied = [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(executor.loader.graph.leaf_nodes())]
    if unapplied:
        problems.append(
            Problem(
                "target",
                f"{len(unapplied)} migration(s) not applied ({', '.join(unapplied[:5])}"
                f"{'…' if len(unapplied) > 5 else ''}): run 'python manage.py migrate --database {alias}' first",
            )
        )
        return problems
    with connection.cursor() as cursor:
        problems += target_type_problems(cursor, connection, plans)
        run = state.current_run(cursor)
        if run and not (resume or truncate):
            problems.append(
                Problem(
                    "target",
                    "a previous copy into this database was interrupted: rerun with --resume to finish it, "
                    "or with --truncate to start over",
                )
            )
        if resume and run is None:
            problems.append(Problem("target", state.NOTHING_TO_RESUME.rstrip(".")))
        elif resume and source is not None and not state.same_source(run, source.path):
            problems.append(Problem("target", state.foreign_run(run).rstrip(".")))
        if truncate or resume:
            return problems
        checked = [p for p in plans if p.model._meta.label_lower not in MIGRATE_CREATED]
        if not checked:
            return problems
        # One query for every table (a round trip each added up on many small tables).
        cursor.execute(
            " UNION ALL ".join(
                f"SELECT {i} WHERE EXISTS (SELECT 1 FROM {quote(p.table)})" for i, p in enumerate(checked)
            )
        )
        filled = {i for (i,) in cursor.fetchall()}
        for i, plan in enumerate(checked):
            if i in filled:
                problems.append(
                    Problem(
                        plan.table,
                        "already has rows: the target must be empty apart from what migrate creates; "
                        "use --truncate to empty the copied tables first",
                    )
                )
    return problems


def _regtypes(cursor, connection, names):
    """{type as a field declares it: the oid of its base type, or None if PostgreSQL cannot name it}."""
    names = sorted(names)
    try:  # one query for them all; a name PostgreSQL cannot even parse fails it, then each is asked alone
        with transaction.atomic(using=connection.alias):
            cursor.execute("SELECT name, to_regtype(name)::oid FROM unnest(%s::text[]) AS name", [names])
            return dict(cursor.fetchall())
    except DatabaseError:
        pass
    oids = {}
    for name in names:
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute("SELECT to_regtype(%s)::oid", [name])
                oids[name] = cursor.fetchone()[0]
        except DatabaseError:
            oids[name] = None
    return oids


def target_type_problems(cursor, connection, plans):
    """Columns of the target whose type is not the one their field makes (changed by hand, or by vendor).

    The copy writes the source's text (or the field's value) into each column; a
    column of another type would refuse it or change it. Text types take each
    other's text (a ``varchar`` made ``text`` by hand is fine).
    """
    oids = _regtypes(cursor, connection, {c.field.db_type(connection) for p in plans for c in p.columns} - {None})
    cursor.execute(
        """
        SELECT r.relname, a.attname, a.atttypid::oid, format_type(a.atttypid, a.atttypmod), t.typcategory
        FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
        WHERE r.oid = ANY(%s::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped
        """,
        [[quote(p.table) for p in plans]],
    )
    actual = {(table, column): (oid, name, category) for table, column, oid, name, category in cursor.fetchall()}
    cursor.execute("SELECT oid, typcategory FROM pg_type WHERE oid = ANY(%s)", [[o for o in oids.values() if o]])
    categories = dict(cursor.fetchall())
    problems = []
    for plan in plans:
        for column in plan.columns:
            expected = column.field.db_type(connection)
            found = actual.get((plan.table, column.name))
            if found is None:
                problems.append(
                    Problem(
                        plan.table,
                        f"the target has no column {column.name}: migrate it with this code "
                        f"(python manage.py migrate --database {connection.alias})",
                        column=column.name,
                    )
                )
                continue
            oid, name, category = found
            want = oids.get(expected)
            if want is None or want == oid or (category == "S" and categories.get(want) == "S"):
                continue
            if oid in INTEGER_OIDS and want in INTEGER_OIDS:
                continue  # a key Django made bigint since: the values' range is checked row by row
            problems.append(
                Problem(
                    plan.table,
                    f"{plan.label}.{column.field.name} ({type(column.field).__name__}) makes {expected}, but the "
                    f"target's column is {name}: the copy cannot carry the source's values into it. Migrate the "
                    f"target with this code, or leave the model out with --exclude {exclude_label(plan)}",
                    column=column.name,
                )
            )
    return problems
