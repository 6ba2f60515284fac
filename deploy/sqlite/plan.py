"""What a copy moves: every concrete model of every installed app, as tables.

For each column whose field type has a fast path, this module holds three
pieces of SQL that must agree with each other:

- :func:`sqlite_field`: the SQLite expression giving the column's value as a
  CSV field that PostgreSQL's ``COPY ... (FORMAT csv)`` parses into the same
  value the ORM reads from SQLite. It is also the canonical text of the value
  that verification compares.
- :func:`pg_text`: the PostgreSQL expression giving the same text from the
  stored value. A row is proven when PostgreSQL renders it back, byte for
  byte, as the text the source gave.
- :func:`fast_checks`: conditions that are true for a source value the fast
  path cannot carry faithfully (a value PostgreSQL would accept but change,
  or one the ORM reads in another way). Values PostgreSQL rejects outright
  (malformed JSON, invalid UTF-8, NUL characters, integers out of range) are
  left to PostgreSQL: the copy stops and the full preflight names them.

A table with any column of another type (a custom or third-party field) is
copied on the general path instead: values read through the ORM, converted
by the field for PostgreSQL, written with psycopg, compared through the ORM.
"""

import datetime as dt
import functools
import math
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal, localcontext

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
# SQLite keeps decimals as doubles: beyond 15 digits they are not exact, so
# such columns take the general path (the ORM's own conversion).
MAX_FAST_DECIMAL_DIGITS = 15


def stored_type(field):
    """The internal type of the value a column stores (a foreign key stores its target's)."""
    while field.is_relation and (field.many_to_one or field.one_to_one):
        field = field.target_field
    return field.get_internal_type()


def _q(name):
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text):
    return "'" + str(text).replace("'", "''") + "'"


# --- the canonical text of a value ----------------------------------------------


def sqlite_field(column):
    """SQLite expression: the CSV field of one column's value, NULL for NULL (text always quoted).

    A field is NULL only for a NULL value, or for a value :func:`fast_checks` flags
    (a float column's text): the copy's lines are built with ``printf``, which
    prints NULL as the empty field.
    """
    col, kind = _q(column.name), column.kind
    if kind in INTEGER_TYPES or kind in {"BooleanField", "UUIDField", "DateField"}:
        return col
    if kind in TEXT_TYPES or kind == "JSONField":
        return f"'\"' || replace({col}, '\"', '\"\"') || '\"'"
    if kind in {"DateTimeField", "TimeField"}:  # PostgreSQL prints no trailing zeros in the fraction
        full = 26 if kind == "DateTimeField" else 15
        return f"CASE WHEN length({col}) = {full} THEN rtrim(rtrim({col}, '0'), '.') ELSE {col} END"
    if kind == "DecimalField":
        return f"CASE WHEN {col} IS NOT NULL THEN printf('%.{int(column.field.decimal_places)}f', {col}) END"
    if kind == "FloatField":
        return f"deploy_float8({col})"
    if kind == "BinaryField":
        return f"CASE WHEN {col} IS NOT NULL THEN '\\x' || hex({col}) END"
    if kind == "DurationField":
        return f"{col} || ' microseconds'"
    raise ValueError(f"no fast path for {kind}")


def pg_json_hash(expression):
    """PostgreSQL: the text of a JSON value's 64-bit hash as parsed (jsonb), '' for NULL.

    JSON is stored parsed, so its source text cannot be rendered back: what is
    compared is the parsed value. ``jsonb_hash_extended`` hashes it as stored,
    consistently with jsonb equality, at half the cost of printing it.
    """
    return f"coalesce(jsonb_hash_extended(({expression})::jsonb, 0)::text, '')"


def sqlite_text(column):
    """SQLite expression: the same field, '' for NULL, and NULL for a value it cannot print (a float's text)."""
    field = sqlite_field(column)
    if column.kind == "FloatField":
        return f"CASE WHEN {_q(column.name)} IS NULL THEN '' ELSE {field} END"
    return f"coalesce({field}, '')"


def _printed(fields):
    """One ``printf`` for a line of fields (NULL prints as ''), a function's arguments at a time."""
    groups = [fields[i : i + 100] for i in range(0, len(fields), 100)]
    return " || ',' || ".join(f"printf('{','.join(['%s'] * len(g))}', {', '.join(g)})" for g in groups)


def pg_text(column, time_zone, ref="t"):
    """PostgreSQL expression: the same text as :func:`sqlite_text`, from the stored value.

    Not for JSON: it is stored parsed (jsonb), so its source text cannot be
    rebuilt; JSON columns have digests of their own (see deploy.sqlite.chunks).
    """
    col, kind = f"{ref}.{_q(column.name)}", column.kind
    if kind in INTEGER_TYPES or kind in {"DateField", "DecimalField", "FloatField", "TimeField"}:
        return f"coalesce({col}::text, '')"
    if kind == "BooleanField":
        return f"coalesce({col}::int::text, '')"
    if kind in {"GenericIPAddressField", "IPAddressField"}:
        # inet in PostgreSQL: replace() takes no inet, and ::text adds a /32 that Django never reads;
        # abbrev() is inet's own output, the text Django reads back.
        col = f"abbrev({col})"
    if kind in TEXT_TYPES:
        return f"coalesce('\"' || replace({col}, '\"', '\"\"') || '\"', '')"
    if kind == "DateTimeField":
        return f"coalesce(({col} AT TIME ZONE {sql_literal(time_zone)})::text, '')"
    if kind == "UUIDField":
        return f"coalesce(replace({col}::text, '-', ''), '')"
    if kind == "BinaryField":
        return f"coalesce('\\x' || upper(encode({col}, 'hex')), '')"
    if kind == "DurationField":
        return f"coalesce((extract(epoch FROM {col}) * 1000000)::bigint::text || ' microseconds', '')"
    raise ValueError(f"no fast path for {kind}")


def fast_checks(column):
    """(kind of check, SQLite condition) pairs true for a value the fast path cannot carry as is."""
    col, kind, field = _q(column.name), column.kind, column.field
    checks = []
    if kind in TEXT_TYPES or kind == "JSONField":
        checks.append(("blob", f"typeof({col}) = 'blob'"))
        # printf('%s') ends a text at its first NUL: the line would lose its closing quote and
        # shift every field after it. PostgreSQL's text cannot hold a NUL anyway.
        checks.append(("nul", f"instr({col}, char(0)) > 0"))
        if kind in TEXT_TYPES and getattr(field, "max_length", None):
            # PostgreSQL silently cuts a varchar whose excess is spaces: never let it.
            checks.append(("length", f"length({col}) > {int(field.max_length)}"))
        if kind == "GenericIPAddressField":
            # PostgreSQL's inet rewrites an address it takes (2001:0DB8::0001 becomes 2001:db8::1) and accepts
            # networks. What does not look as Django writes addresses (lower case, no leading zeros, IPv4-mapped
            # ones dotted, no prefix or zone) is set aside for preflight.ip_problem, which decides exactly.
            checks.append(
                (
                    "ip",
                    f"{col} GLOB '*[^0-9a-f.:]*' OR {col} GLOB '0[0-9a-f]*' OR {col} GLOB '*[:.]0[0-9a-f]*' "
                    f"OR {col} GLOB '*:0:0*' OR ({col} GLOB '*::ffff:*' AND {col} NOT GLOB '*.*')",
                )
            )
    elif kind == "BooleanField":
        checks.append(("boolean", f"typeof({col}) NOT IN ('integer', 'null') OR {col} NOT IN (0, 1)"))
    elif kind == "DateTimeField":
        checks.append(("datetime", datetime_check(col)))
        gap_hours = naive_gap_hours()
        if gap_hours:
            # Without USE_TZ the text is a local wall-clock time, which PostgreSQL reads in TIME_ZONE: a time
            # the clocks skip (spring forward) would be stored an hour later. Hours holding a gap are set
            # aside here; preflight.naive_time_problem decides to the minute.
            hours = ", ".join(f"'{hour}'" for hour in gap_hours)
            checks.append(("nonexistent", f"substr({col}, 1, 13) IN ({hours})"))
    elif kind == "DateField":
        checks.append(("date", date_check(col)))
    elif kind == "TimeField":
        checks.append(("time", time_check(col)))
    elif kind == "DecimalField":
        checks.append(("decimal", decimal_check(col, field)))
    elif kind == "FloatField":
        checks.append(("float", f"typeof({col}) NOT IN ('real', 'integer', 'null')"))
    elif kind == "UUIDField":
        # PostgreSQL rejects 32 characters that are not 32 hex digits; other spellings it would accept.
        checks.append(("uuid", f"typeof({col}) NOT IN ('text', 'null') OR length({col}) <> 32"))
    elif kind == "BinaryField":
        checks.append(("binary", f"typeof({col}) NOT IN ('blob', 'null')"))
    elif kind == "DurationField":
        checks.append(("duration", f"typeof({col}) NOT IN ('integer', 'null')"))
    return checks


def naive_gap_hours():
    """'YYYY-MM-DD HH' of every hour in which TIME_ZONE skips local times, when datetimes are naive (no USE_TZ).

    Empty with ``USE_TZ`` (the text is UTC) or a zone without gaps. Read at call time, never at import.
    """
    from django.conf import settings

    if settings.USE_TZ:
        return ()
    return _gap_hours(settings.TIME_ZONE or "UTC")


@functools.lru_cache(maxsize=8)
def _gap_hours(zone_name, first_year=1900, last_year=2100):
    zone = zoneinfo.ZoneInfo(zone_name)
    hours = []
    step = dt.timedelta(hours=1)
    moment = dt.datetime(first_year, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(last_year + 1, 1, 1, tzinfo=dt.UTC)
    offset = moment.astimezone(zone).utcoffset()
    # Day by day, then hour by hour around a change: a gap opens where the offset grows.
    while moment < end:
        following = moment + dt.timedelta(days=1)
        if following.astimezone(zone).utcoffset() != offset:
            hour = moment
            while hour < following:
                after = (hour + step).astimezone(zone).utcoffset()
                if after > offset:
                    # The local times skipped are [local before the change, that + (after - offset)).
                    start = (hour + step).astimezone(zone).replace(tzinfo=None) - (after - offset)
                    cursor = start.replace(minute=0, second=0, microsecond=0)
                    while cursor < start + (after - offset):
                        hours.append(cursor.strftime("%Y-%m-%d %H"))
                        cursor += step
                offset = after
                hour += step
        moment = following
    return tuple(dict.fromkeys(hours))


def datetime_check(col):
    """Anything but Django's own 'YYYY-MM-DD HH:MM:SS[.ffffff]' naming a real instant."""
    fraction = f"substr({col}, 20) GLOB '.{_DIGIT * 6}'"
    return (
        # '+0 days' carries an impossible day over (2023-02-30 becomes 2023-03-02); given the fraction it
        # would also round the seconds, so it sees the first 19 characters only.
        f"{col} IS NOT NULL AND NOT (datetime(substr({col}, 1, 19), '+0 days') IS substr({col}, 1, 19) "
        f"AND (length({col}) = 19 OR (length({col}) = 26 AND {fraction})))"
    )


def date_check(col):
    # '+0 days' makes SQLite carry an impossible day over (2023-02-30 becomes 2023-03-02).
    return (
        f"{col} IS NOT NULL AND NOT (typeof({col}) = 'text' AND length({col}) = 10 AND date({col}, '+0 days') IS {col})"
    )


def time_check(col):
    return (
        f"{col} IS NOT NULL AND NOT (typeof({col}) = 'text' AND time(substr({col}, 1, 8)) IS substr({col}, 1, 8) "
        f"AND (length({col}) = 8 OR (length({col}) = 15 AND substr({col}, 9) GLOB '.{_DIGIT * 6}')))"
    )


def decimal_check(col, field):
    """Not a number, too large for max_digits, or (perhaps) more decimal places than the field keeps.

    ``round(x)`` with no digits is plain arithmetic in SQLite, where ``round(x, n)``
    prints and parses: the places are checked on the scaled value, with a margin far
    above a double's rounding error, and the preflight judges what this flags.
    """
    limit = 10 ** (field.max_digits - field.decimal_places)
    scaled = f"({col} * {10 ** int(field.decimal_places)})"
    return (
        f"typeof({col}) NOT IN ('integer', 'real', 'null') OR abs({col}) >= {limit} "
        f"OR abs({scaled} - round({scaled})) > 1e-9 * (1 + abs({scaled}))"
    )


def float8_text(value):
    """A double as PostgreSQL prints it: the shortest exact digits, fixed notation from 1e-4 to below 1e15."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)  # the shortest digits that read back as this double
    if abs(value) >= 2.0**53 and _on_boundary(text, value):
        text = _inside(value)
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exp = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    if not digits.rstrip("0"):
        return sign + "0"
    # The value is 0.DIGITS times 10 ** point.
    point = len(whole) + int(exp or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    return sign + (_fixed(digits, point) if -4 < point <= 15 else _scientific(digits, point))


def _on_boundary(text, value):
    """PostgreSQL's shortest digits must fall strictly between a double's neighbours' midpoints.

    Python's may sit exactly on a midpoint (only possible from 2**53 on, where midpoints are integers).
    """
    with localcontext(prec=800):
        candidate, exact = Decimal(text), Decimal(value)
        below = (exact + Decimal(math.nextafter(value, -math.inf))) / 2
        above = (exact + Decimal(math.nextafter(value, math.inf))) / 2
        return candidate in (below, above)


def _inside(value):
    for precision in range(1, 18):
        text = f"{value:.{precision - 1}e}"
        if float(text) == value and not _on_boundary(text, value):
            return text
    return repr(value)


def _fixed(digits, point):
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _scientific(digits, point):
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp = point - 1
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


# --- tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    attname: str
    field: object
    kind: str

    @property
    def fast(self):
        if self.kind == "DecimalField":
            return self.field.max_digits <= MAX_FAST_DECIMAL_DIGITS
        return self.kind in FAST_TYPES

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

        One ``printf`` per line: it builds the line once, where ``||`` copies it at every step.
        """
        plain = _printed([sqlite_field(c) for c in self.copy_columns if not c.is_json] or ["''"])
        json = _printed([sqlite_field(c) for c in self.json_columns]) if self.json_columns else None
        return plain, json

    def strict_line_sql(self):
        """SQLite: the whole line as :meth:`line_sql` prints it, or NULL if a value cannot be printed.

        For the rows the checks set aside: their line is used only when they turn out fine.
        """
        return _joined([sqlite_text(c) for c in self.copy_columns])

    def pg_line_sql(self, time_zone, ref="t"):
        """PostgreSQL: the same text as the first half of :meth:`line_sql`, from the stored row."""
        return _joined([pg_text(c, time_zone, ref) for c in self.copy_columns if not c.is_json] or ["''"])

    def pg_json_sql(self, ref="t"):
        """PostgreSQL: the JSON columns' hashes (see :func:`pg_json_hash`), tab-separated."""
        return " || E'\\t' || ".join(pg_json_hash(f"{ref}.{_q(c.name)}") for c in self.json_columns)

    def check_sql(self):
        """SQLite: true when any value of the row needs a closer look."""
        conditions = [f"({sql})" for c in self.columns for _, sql in fast_checks(c)]
        return " OR ".join(conditions) if conditions else "0"


_DIGIT = "[0-9]"


def _joined(parts):
    """``a || ',' || b || ...`` nested as a balanced tree: each byte is copied log(n) times, not n/2."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"({_joined(parts[:middle])} || ',' || {_joined(parts[middle:])})"


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


def unknown_excludes(exclude):
    """Patterns of --exclude that name no app or model."""
    known = {a.label for a in apps.get_app_configs()}
    known |= {m._meta.label_lower for m in apps.get_models(include_auto_created=True)}
    return [p for p in exclude if p.lower() not in known]
