"""What a copy moves: every concrete model of every installed app, as tables, and the SQL of their lines.

Each column's SQL comes from the codec of its field kind (deploy.sqlite.fields):
its CSV field as SQLite prints it (:func:`sqlite_text`), the same text as
PostgreSQL prints the stored value (:func:`pg_text`), and the checks of values
the fast path cannot carry as they are (:func:`fast_checks`). This module puts
them together into a table's lines.

A table with any column of another type (a custom or third-party field) is
copied on the general path instead: values read through the ORM, converted
by the field for PostgreSQL, written with psycopg, compared through the ORM.
"""

from dataclasses import dataclass

from django.apps import apps

from deploy.sqlite.fields import INTEGER_TYPES, codec, pg_json_hash
from deploy.sqlite.sql import joined, quote


def stored_type(field):
    """The internal type of the value a column stores (a foreign key stores its target's)."""
    while field.is_relation and (field.many_to_one or field.one_to_one):
        field = field.target_field
    return field.get_internal_type()


# --- the canonical text of a value (each kind's codec: deploy.sqlite.fields) ------


def sqlite_text(column):
    """SQLite expression: the same field, '' for NULL, and NULL for a value it cannot print (a float's text)."""
    return column.codec.sqlite_text(column)


def pg_text(column, time_zone, ref="t"):
    """PostgreSQL expression: the same text as :func:`sqlite_text`, from the stored value.

    Not for JSON: it is stored parsed (jsonb), so its source text cannot be
    rebuilt; JSON columns have digests of their own (see deploy.sqlite.chunks).
    """
    return column.codec.pg_text(column, f"{ref}.{quote(column.name)}", time_zone)


def fast_checks(column):
    """(kind of check, SQLite condition) pairs true for a value the fast path cannot carry as is."""
    return column.codec.fast_checks(column)


# --- tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    attname: str
    field: object
    kind: str

    @property
    def codec(self):
        return codec(self.kind)

    @property
    def fast(self):
        return self.codec.fast(self)

    @property
    def is_json(self):
        return self.kind == "JSONField"


@dataclass(frozen=True)
class TablePlan:
    model: type
    label: str
    table: str
    pk: Column
    columns: tuple
    rows: int = 0

    @property
    def fast(self):
        return all(c.fast for c in self.columns)

    @property
    def column_names(self):
        return [c.name for c in self.columns]

    @property
    def integer_pk(self):
        """Keys that can be cut into ranges on both sides alike."""
        return self.pk.kind in INTEGER_TYPES

    @property
    def json_columns(self):
        return [c for c in self.columns if c.is_json]

    @property
    def copy_columns(self):
        """Columns in the order of the COPY's fields: JSON last, so each line starts with what digests cover."""
        return [c for c in self.columns if not c.is_json] + self.json_columns

    def line_sql(self):
        """SQLite: (the CSV fields of the columns other than JSON, of the JSON columns or None).

        Joined with ``||`` (see :func:`~deploy.sqlite.sql.joined`), which keeps a text whole
        whatever bytes it holds: ``printf('%s')`` would end it at a NUL and shift the fields
        after it, so the read had to look for NULs in every text; a NUL now reaches
        PostgreSQL, which refuses it. A line is NULL only for a row :meth:`check_sql` flags
        (a float's text): such rows are set aside.
        """
        plain = joined([sqlite_text(c) for c in self.copy_columns if not c.is_json] or ["''"])
        json = joined([sqlite_text(c) for c in self.json_columns]) if self.json_columns else None
        return plain, json

    def strict_line_sql(self):
        """SQLite: the whole line as :meth:`line_sql` prints it, or NULL if a value cannot be printed.

        For the rows the checks set aside: their line is used only when they turn out fine.
        """
        return joined([sqlite_text(c) for c in self.copy_columns])

    def pg_line_sql(self, time_zone, ref="t"):
        """PostgreSQL: the same text as the first half of :meth:`line_sql`, from the stored row."""
        return joined([pg_text(c, time_zone, ref) for c in self.copy_columns if not c.is_json] or ["''"])

    def pg_json_sql(self, ref="t"):
        """PostgreSQL: the JSON columns' hashes (see :func:`pg_json_hash`), tab-separated."""
        return " || E'\\t' || ".join(pg_json_hash(f"{ref}.{quote(c.name)}") for c in self.json_columns)

    def check_sql(self):
        """SQLite: true when any value of the row needs a closer look."""
        conditions = [f"({sql})" for c in self.columns for _, sql in fast_checks(c)]
        return " OR ".join(conditions) if conditions else "0"


def _matches(model, patterns):
    label = model._meta.label_lower
    app_label = model._meta.app_label
    if app_label in patterns or label in patterns:
        return True
    # An automatic many-to-many table follows the model that declares it.
    if model._meta.auto_created:
        owner = model._meta.auto_created._meta
        return owner.label_lower in patterns
    return False


def copied_models(exclude=()):
    """The models a copy moves, and the ones it leaves (with the reason)."""
    patterns = {p.lower() for p in exclude}
    models, skipped, tables = [], [], set()
    for model in apps.get_models(include_auto_created=True):
        opts = model._meta
        if opts.proxy or opts.swapped:
            continue
        if not opts.managed:
            skipped.append((opts.label, "unmanaged: its table belongs to something else"))
        elif _matches(model, patterns):
            skipped.append((opts.label, "excluded with --exclude"))
        elif opts.db_table not in tables:
            tables.add(opts.db_table)
            models.append(model)
    return models, skipped


def table_columns(model):
    """The fields whose columns are in the model's own table, in table order.

    ``local_concrete_fields``: a multi-table-inheritance child's table holds its own
    fields and the link to its parent (the parent's fields live in the parent's
    table, copied as a model of its own). Generated columns are PostgreSQL's to
    compute: they are neither written nor compared.
    """
    return [f for f in model._meta.local_concrete_fields if not getattr(f, "generated", False)]


def table_plan(model, rows=0):
    opts = model._meta
    columns = tuple(Column(f.column, f.attname, f, stored_type(f)) for f in table_columns(model))
    pk = next(c for c in columns if c.field is opts.pk)
    return TablePlan(model=model, label=opts.label, table=opts.db_table, pk=pk, columns=columns, rows=rows)


def uncopied_tables(raw):
    """[(table, rows)] of the source's tables no model of the code has: a copy leaves them (and their rows) behind.

    A removed app's tables, or ones made by hand or by another program: ``--plan`` names them, so that rows
    the copy does not move are seen before the freeze, not after. SQLite's own tables and
    ``django_migrations`` (which ``migrate`` fills on the target) are not listed.
    """
    known = {m._meta.db_table for m in apps.get_models(include_auto_created=True)} | {"django_migrations"}
    tables = [name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return [
        (table, raw.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])
        for table in tables
        if table not in known and not table.startswith("sqlite_")
    ]


def source_plans(raw, exclude=()):
    """(the plans of the tables a copy moves, with their row counts in the source, the models it leaves).

    ``raw``: a connection to the SQLite source. A table missing from the source counts 0 rows (the
    preflight says it is missing).
    """
    models, skipped = copied_models(exclude)
    tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    plans = []
    for model in models:
        table = model._meta.db_table
        rows = raw.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0] if table in tables else 0
        plans.append(table_plan(model, rows))
    return plans, skipped


def unknown_excludes(exclude):
    """Patterns of --exclude that name no app or model."""
    known = {a.label for a in apps.get_app_configs()}
    known |= {m._meta.label_lower for m in apps.get_models(include_auto_created=True)}
    return [p for p in exclude if p.lower() not in known]
