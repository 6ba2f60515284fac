"""What a copy moves: every concrete model of every installed app, as tables.

Each column gets the SQLite expression that turns its stored value into the
text PostgreSQL's COPY parses (the fast path), when its field type has one.
A table with any column of another type (a custom or third-party field) is
copied on the general path instead: values read through the ORM, converted by
the field for PostgreSQL, written with psycopg.
"""

from dataclasses import dataclass

from django.apps import apps

INTEGER_TYPES = {
    "AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField", "SmallIntegerField",
    "PositiveIntegerField", "PositiveBigIntegerField", "PositiveSmallIntegerField",
}  # fmt: skip
TEXT_TYPES = {
    "CharField", "TextField", "SlugField", "EmailField", "URLField", "FilePathField", "FileField", "ImageField",
    "GenericIPAddressField", "IPAddressField",
}  # fmt: skip
TEMPORAL_TYPES = {"DateTimeField", "DateField", "TimeField"}
FAST_TYPES = (
    INTEGER_TYPES
    | TEXT_TYPES
    | TEMPORAL_TYPES
    | {"BooleanField", "UUIDField", "JSONField", "DecimalField", "FloatField", "BinaryField", "DurationField"}
)

RATE_ESTIMATE = 250_000  # rows per second on the fast path, for --plan's estimate


def stored_type(field):
    """The internal type of the value a column stores (a foreign key stores its target's)."""
    while field.is_relation and (field.many_to_one or field.one_to_one):
        field = field.target_field
    return field.get_internal_type()


def _q(name):
    return '"' + name.replace('"', '""') + '"'


def _escaped(expr):
    """COPY text escaping: backslash, tab, newline, carriage return."""
    return f"replace(replace(replace(replace({expr}, '\\', '\\\\'), char(9), '\\t'), char(10), '\\n'), char(13), '\\r')"


def copy_expression(column, kind):
    """SQLite expression giving the COPY text of one column (``\\N`` for NULL)."""
    col = _q(column)
    if kind in INTEGER_TYPES or kind == "BooleanField":
        expr = col
    elif kind in TEXT_TYPES or kind == "JSONField":
        expr = _escaped(col)
    elif kind in TEMPORAL_TYPES or kind == "UUIDField":
        expr = col  # formats checked by the preflight: digits, '-', ':', '.', ' '
    elif kind == "DecimalField":
        expr = f"CAST({col} AS TEXT)"  # SQLite's 15 significant digits, as Django reads it
    elif kind == "FloatField":
        expr = f"printf('%!.17g', {col})"  # round-trips a double exactly
    elif kind == "BinaryField":
        expr = f"'\\\\x' || hex({col})"
    elif kind == "DurationField":
        expr = f"{col} || ' microseconds'"
    else:
        raise ValueError(f"no fast path for {kind}")
    # Not coalesce(): hex(NULL) and printf() of NULL give '' rather than NULL.
    return f"CASE WHEN {col} IS NULL THEN '\\N' ELSE {expr} END"


@dataclass(frozen=True)
class Column:
    name: str
    attname: str
    field: object
    kind: str

    @property
    def fast(self):
        return self.kind in FAST_TYPES


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

    def select_copy_text(self):
        """One row of COPY text per source row, in primary-key order."""
        parts = " || char(9) || ".join(copy_expression(c.name, c.kind) for c in self.columns)
        return f"SELECT {parts} FROM {_q(self.table)} ORDER BY {_q(self.pk.name)}"


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


def table_plan(model, rows=0):
    opts = model._meta
    columns = tuple(Column(f.column, f.attname, f, stored_type(f)) for f in opts.concrete_fields)
    pk = next(c for c in columns if c.field is opts.pk)
    return TablePlan(model=model, label=opts.label, table=opts.db_table, pk=pk, columns=columns, rows=rows)


def unknown_excludes(exclude):
    """Patterns of --exclude that name no app or model."""
    known = {a.label for a in apps.get_app_configs()}
    known |= {m._meta.label_lower for m in apps.get_models(include_auto_created=True)}
    return [p for p in exclude if p.lower() not in known]
