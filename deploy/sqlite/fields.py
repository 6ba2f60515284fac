"""One codec per kind of field: everything the copy knows of how a kind of value travels.

A codec answers, for the columns of its field kinds:

- ``sqlite_field``: the SQLite expression giving the column's value as a CSV
  field that PostgreSQL's ``COPY ... (FORMAT csv)`` parses into the same value
  the ORM reads from SQLite. It is also the canonical text of the value that
  verification compares (``sqlite_text``: the same, '' for NULL).
- ``pg_text``: the PostgreSQL expression giving the same text from the stored
  value. A row is proven when PostgreSQL renders it back, byte for byte, as the
  text the source gave.
- ``fast_checks``: (check, SQLite condition) pairs true for a source value the
  fast path cannot carry faithfully (a value PostgreSQL would accept but
  change, or one the ORM reads in another way). Values PostgreSQL rejects
  outright (malformed JSON, invalid UTF-8, NUL characters, integers out of
  range) are left to PostgreSQL: the copy stops and the full checks name them.
- ``full_checks``: the preflight's checks, exact, including what PostgreSQL
  would reject.
- ``judge``: the sentence for a value a check flagged, or None when the doubtful
  value is fine after all.

These must agree with each other; keeping them side by side, a codec per kind,
is what lets a reader see that they do. A kind without a codec (a custom or
third-party field) is copied on the general path: values read through the ORM,
converted by the field for PostgreSQL, written with psycopg, compared through
the ORM.
"""

import datetime as dt
import decimal
import functools
import ipaddress
import math
import uuid
import zoneinfo
from decimal import Decimal, localcontext

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_date, parse_datetime, parse_time
from django.utils.ipv6 import clean_ipv6_address

from deploy.sqlite.sql import quote, sql_literal

# SQLite keeps decimals as doubles: beyond 15 digits they are not exact, so
# such columns take the general path (the ORM's own conversion).
MAX_FAST_DECIMAL_DIGITS = 15
_DIGIT = "[0-9]"
_QUOTED = "'\"' || replace({col}, '\"', '\"\"') || '\"'"  # a CSV field: text in quotes, quotes doubled


def _parses(parser, text):
    try:
        return parser(text) is not None
    except (ValueError, TypeError):
        return False


def _text(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class Codec:
    """The default behaviour: the value's text as SQLite and PostgreSQL print it, no check."""

    kinds = frozenset()

    def fast(self, column):
        """Whether the column takes the fast path (SQLite's text straight into COPY)."""
        return True

    def sqlite_field(self, column):
        return quote(column.name)

    def sqlite_text(self, column):
        return f"coalesce({self.sqlite_field(column)}, '')"

    def pg_text(self, column, col, time_zone):
        return f"coalesce({col}::text, '')"

    def fast_checks(self, column):
        return []

    def full_checks(self, column, bounds):
        """``bounds``: (low, high, what) of the target's integer column (see preflight.integer_range)."""
        return self.fast_checks(column)

    def judge(self, check, column, value, bounds):
        return f"failed the {check} check"


class IntegerCodec(Codec):
    kinds = frozenset(
        {
            "AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField", "SmallIntegerField",
            "PositiveIntegerField", "PositiveBigIntegerField", "PositiveSmallIntegerField",
        }
    )  # fmt: skip

    def full_checks(self, column, bounds):
        col = quote(column.name)
        low, high, _ = bounds
        limits = []
        if low is not None:
            limits.append(f"{col} < {int(low)}")
        if high is not None:
            limits.append(f"{col} > {int(high)}")
        return [("integer", f"typeof({col}) NOT IN ('integer', 'null') OR " + " OR ".join(limits))]

    def judge(self, check, column, value, bounds):
        low, high, what = bounds
        return f"is not an integer from {low} to {high} (the target column is {what})"


class TextCodec(Codec):
    kinds = frozenset(
        {"CharField", "TextField", "SlugField", "EmailField", "URLField", "FilePathField", "FileField", "ImageField"}
    )
    max_length = True  # PostgreSQL's varchar would cut a text whose excess is spaces

    def sqlite_field(self, column):
        return _QUOTED.format(col=quote(column.name))

    def pg_text(self, column, col, time_zone):
        return f"coalesce({_QUOTED.format(col=col)}, '')"

    def fast_checks(self, column):
        col = quote(column.name)
        checks = [("blob", f"typeof({col}) = 'blob'")]
        if self.max_length and getattr(column.field, "max_length", None):
            # PostgreSQL silently cuts a varchar whose excess is spaces: never let it.
            checks.append(("length", f"length({col}) > {int(column.field.max_length)}"))
        return checks

    def full_checks(self, column, bounds):
        # The read leaves a NUL to PostgreSQL: a line carries it whole (built with ||, which keeps it), and
        # PostgreSQL refuses any NUL byte in a COPY. Looking for it in every long text was a third of the read.
        col = quote(column.name)
        return [*self.fast_checks(column), ("nul", f"instr({col}, char(0)) > 0")]

    def judge(self, check, column, value, bounds):
        if check == "blob":
            return "is stored as a BLOB, not as text: the application reads bytes here"
        if check == "nul":
            return "contains a NUL character, which PostgreSQL text cannot hold"
        if check == "length":
            return f"is {len(_text(value))} characters long, more than max_length {column.field.max_length}"
        return super().judge(check, column, value, bounds)


class IpCodec(TextCodec):
    kinds = frozenset({"GenericIPAddressField", "IPAddressField"})

    def pg_text(self, column, col, time_zone):
        # inet in PostgreSQL: replace() takes no inet, and ::text adds a /32 that Django never reads;
        # abbrev() is inet's own output, the text Django reads back.
        return super().pg_text(column, f"abbrev({col})", time_zone)

    def fast_checks(self, column):
        checks = super().fast_checks(column)
        if column.kind == "GenericIPAddressField":
            col = quote(column.name)
            # PostgreSQL's inet rewrites an address it takes (2001:0DB8::0001 becomes 2001:db8::1) and accepts
            # networks. What does not look as Django writes addresses (lower case, no leading zeros, IPv4-mapped
            # ones dotted, no prefix or zone) is set aside for ip_problem, which decides exactly.
            checks.append(
                (
                    "ip",
                    f"{col} GLOB '*[^0-9a-f.:]*' OR {col} GLOB '0[0-9a-f]*' OR {col} GLOB '*[:.]0[0-9a-f]*' "
                    f"OR {col} GLOB '*:0:0*' OR ({col} GLOB '*::ffff:*' AND {col} NOT GLOB '*.*')",
                )
            )
        return checks

    def judge(self, check, column, value, bounds):
        if check == "ip":
            return ip_problem(_text(value))
        return super().judge(check, column, value, bounds)


class JsonCodec(TextCodec):
    """JSON is stored parsed (jsonb): its source text cannot be rendered back; see :func:`pg_json_hash`."""

    kinds = frozenset({"JSONField"})
    max_length = False

    def pg_text(self, column, col, time_zone):
        raise ValueError("JSON is compared by its hash (pg_json_hash), not by its text")

    def full_checks(self, column, bounds):
        col = quote(column.name)
        return [
            *super().full_checks(column, bounds),
            ("json", f"{col} IS NOT NULL AND (NOT json_valid({col}) OR instr({col}, '\\u0000') > 0)"),
        ]

    def judge(self, check, column, value, bounds):
        if check == "json":
            return "is not valid JSON for PostgreSQL (malformed, or a \\u0000 escape)"
        return super().judge(check, column, value, bounds)


def pg_json_hash(expression):
    """PostgreSQL: the text of a JSON value's 64-bit hash as parsed (jsonb), '' for NULL.

    JSON is stored parsed, so its source text cannot be rendered back: what is
    compared is the parsed value. ``jsonb_hash_extended`` hashes it as stored,
    consistently with jsonb equality, at half the cost of printing it.
    """
    return f"coalesce(jsonb_hash_extended(({expression})::jsonb, 0)::text, '')"


class BooleanCodec(Codec):
    kinds = frozenset({"BooleanField"})

    def pg_text(self, column, col, time_zone):
        return f"coalesce({col}::int::text, '')"

    def fast_checks(self, column):
        col = quote(column.name)
        return [("boolean", f"typeof({col}) NOT IN ('integer', 'null') OR {col} NOT IN (0, 1)")]

    def judge(self, check, column, value, bounds):
        return "is not 0 or 1"


def _trimmed_fraction(column, full_length):
    """SQLite: the text without the fraction's trailing zeros, as PostgreSQL prints a time."""
    col = quote(column.name)
    return f"CASE WHEN length({col}) = {full_length} THEN rtrim(rtrim({col}, '0'), '.') ELSE {col} END"


class DateTimeCodec(Codec):
    kinds = frozenset({"DateTimeField"})

    def sqlite_field(self, column):
        return _trimmed_fraction(column, 26)

    def pg_text(self, column, col, time_zone):
        return f"coalesce(({col} AT TIME ZONE {sql_literal(time_zone)})::text, '')"

    def fast_checks(self, column):
        col = quote(column.name)
        checks = [("datetime", datetime_check(col))]
        gap_hours = naive_gap_hours()
        if gap_hours:
            # Without USE_TZ the text is a local wall-clock time, which PostgreSQL reads in TIME_ZONE: a time
            # the clocks skip (spring forward) would be stored an hour later. Hours holding a gap are set
            # aside here; naive_time_problem decides to the minute.
            hours = ", ".join(f"'{hour}'" for hour in gap_hours)
            checks.append(("nonexistent", f"substr({col}, 1, 13) IN ({hours})"))
        return checks

    def judge(self, check, column, value, bounds):
        if check == "nonexistent":
            return naive_time_problem(_text(value))
        return None if _parses(parse_datetime, _text(value)) else "is not a valid datetime"


class TimeCodec(Codec):
    kinds = frozenset({"TimeField"})

    def sqlite_field(self, column):
        return _trimmed_fraction(column, 15)

    def fast_checks(self, column):
        col = quote(column.name)
        return [
            (
                "time",
                # SQLite's time() and PostgreSQL's time take 24:00:00; Python's (the application's) does not. The
                # hour is compared as text: the column's NUMERIC affinity would make '24' the number 24.
                f"{col} IS NOT NULL AND NOT (typeof({col}) = 'text' AND substr({col}, 1, 2) < '24' "
                f"AND time(substr({col}, 1, 8)) IS substr({col}, 1, 8) AND (length({col}) = 8 OR "
                f"(length({col}) = 15 AND substr({col}, 9) GLOB "
                f"'.{_DIGIT * 6}')))",
            )
        ]

    def judge(self, check, column, value, bounds):
        return None if _parses(parse_time, _text(value)) else "is not a valid time"


class DateCodec(Codec):
    kinds = frozenset({"DateField"})

    def fast_checks(self, column):
        col = quote(column.name)
        # '+0 days' makes SQLite carry an impossible day over (2023-02-30 becomes 2023-03-02).
        return [
            (
                "date",
                f"{col} IS NOT NULL AND NOT (typeof({col}) = 'text' AND length({col}) = 10 AND "
                f"date({col}, '+0 days') IS {col})",
            )
        ]

    def judge(self, check, column, value, bounds):
        return None if _parses(parse_date, _text(value)) else "is not a valid date"


class DecimalCodec(Codec):
    """SQLite keeps a decimal as a number (int or double); the application reads it rounded to the field."""

    kinds = frozenset({"DecimalField"})

    def fast(self, column):
        return column.field.max_digits <= MAX_FAST_DECIMAL_DIGITS

    def sqlite_field(self, column):
        col = quote(column.name)
        return f"CASE WHEN {col} IS NOT NULL THEN printf('%.{int(column.field.decimal_places)}f', {col}) END"

    def fast_checks(self, column):
        """Not a number, too large for max_digits, or (perhaps) more decimal places than the field keeps.

        ``round(x)`` with no digits is plain arithmetic in SQLite, where ``round(x, n)``
        prints and parses: the places are checked on the scaled value, with a margin far
        above a double's rounding error, and :meth:`judge` decides what this flags.
        """
        col, field = quote(column.name), column.field
        limit = 10 ** (field.max_digits - field.decimal_places)
        scaled = f"({col} * {10 ** int(field.decimal_places)})"
        return [
            (
                "decimal",
                f"typeof({col}) NOT IN ('integer', 'real', 'null') OR abs({col}) >= {limit} "
                f"OR abs({scaled} - round({scaled})) > 1e-9 * (1 + abs({scaled}))",
            )
        ]

    def judge(self, check, column, value, bounds):
        field = column.field
        if not isinstance(value, int | float):
            return "is not a decimal number"
        if not math.isfinite(value) or abs(value) >= 10 ** (field.max_digits - field.decimal_places):
            return f"does not fit max_digits={field.max_digits}, decimal_places={field.decimal_places}"
        places = decimal.Decimal(1).scaleb(-field.decimal_places)
        # As Django reads it: 15 significant digits, then rounded half-even to the field's places.
        read = (
            decimal.Context(prec=15).create_decimal_from_float(float(value)).quantize(places, decimal.ROUND_HALF_EVEN)
        )
        # As the copy writes it: the double rounded to the places (SQLite's printf).
        written = decimal.Decimal(f"{float(value):.{field.decimal_places}f}")
        if read != written:
            return (
                f"has more than decimal_places={field.decimal_places} decimal places: the application reads "
                f"{read}, PostgreSQL would store {written}"
            )
        return None


class FloatCodec(Codec):
    """SQLite's text of a double is not PostgreSQL's: the copy prints it with :func:`float8_text`."""

    kinds = frozenset({"FloatField"})

    def sqlite_field(self, column):
        return f"deploy_float8({quote(column.name)})"

    def sqlite_text(self, column):
        # NULL for a value it cannot print (not a number): the strict line is then NULL.
        return f"CASE WHEN {quote(column.name)} IS NULL THEN '' ELSE {self.sqlite_field(column)} END"

    def fast_checks(self, column):
        return [("float", f"typeof({quote(column.name)}) NOT IN ('real', 'integer', 'null')")]

    def judge(self, check, column, value, bounds):
        return "is not a number"


class UuidCodec(Codec):
    kinds = frozenset({"UUIDField"})

    def pg_text(self, column, col, time_zone):
        return f"coalesce(replace({col}::text, '-', ''), '')"

    def fast_checks(self, column):
        col = quote(column.name)
        # PostgreSQL rejects 32 characters that are not 32 hex digits; other spellings it would accept.
        return [("uuid", f"typeof({col}) NOT IN ('text', 'null') OR length({col}) <> 32")]

    def full_checks(self, column, bounds):
        col = quote(column.name)
        return [("uuid", f"{col} IS NOT NULL AND NOT (length({col}) = 32 AND NOT {col} GLOB '*[^0-9a-f]*')")]

    def judge(self, check, column, value, bounds):
        try:
            uuid.UUID(_text(value))
        except (ValueError, TypeError):
            return "is not a valid UUID"
        return None


class BinaryCodec(Codec):
    kinds = frozenset({"BinaryField"})

    def sqlite_field(self, column):
        col = quote(column.name)
        return f"CASE WHEN {col} IS NOT NULL THEN '\\x' || hex({col}) END"

    def pg_text(self, column, col, time_zone):
        return f"coalesce('\\x' || upper(encode({col}, 'hex')), '')"

    def fast_checks(self, column):
        return [("binary", f"typeof({quote(column.name)}) NOT IN ('blob', 'null')")]

    def judge(self, check, column, value, bounds):
        return "is stored as text, not as a BLOB: the application reads a string here"


class DurationCodec(Codec):
    kinds = frozenset({"DurationField"})

    def sqlite_field(self, column):
        return f"{quote(column.name)} || ' microseconds'"

    def pg_text(self, column, col, time_zone):
        return f"coalesce((extract(epoch FROM {col}) * 1000000)::bigint::text || ' microseconds', '')"

    def fast_checks(self, column):
        return [("duration", f"typeof({quote(column.name)}) NOT IN ('integer', 'null')")]

    def judge(self, check, column, value, bounds):
        return "is not a duration in microseconds"


class GeneralCodec(Codec):
    """A kind without a fast path (a custom or third-party field): the ORM reads, converts and compares it."""

    def fast(self, column):
        return False

    def sqlite_field(self, column):
        raise ValueError(f"no fast path for {column.kind}")

    def pg_text(self, column, col, time_zone):
        raise ValueError(f"no fast path for {column.kind}")


GENERAL = GeneralCodec()
_FAST = (
    IntegerCodec, TextCodec, IpCodec, JsonCodec, BooleanCodec, DateTimeCodec, TimeCodec, DateCodec, DecimalCodec,
    FloatCodec, UuidCodec, BinaryCodec, DurationCodec,
)  # fmt: skip
CODECS = {kind: codec() for codec in _FAST for kind in codec.kinds}
INTEGER_TYPES = IntegerCodec.kinds
TEXT_TYPES = TextCodec.kinds | IpCodec.kinds  # what PostgreSQL keeps as text (JSON aside)


def codec(kind):
    """The codec of a field kind (its internal type); :data:`GENERAL` for a kind without a fast path."""
    return CODECS.get(kind, GENERAL)


# --- datetimes ------------------------------------------------------------------


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


def naive_time_problem(text):
    """A sentence when the naive datetime ``text`` is a local time TIME_ZONE skips, else None."""
    from django.conf import settings

    naive = _parses(parse_datetime, text) and parse_datetime(text)
    if not naive:
        return "is not a valid datetime"
    zone = zoneinfo.ZoneInfo(settings.TIME_ZONE or "UTC")
    stored = naive.replace(tzinfo=zone).astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
    if stored == naive:
        return None
    return (
        f"is a local time that does not exist in {zone.key} (the clocks skip it): PostgreSQL would store {stored}; "
        "correct the value in the source (USE_TZ is off, so datetimes are read in TIME_ZONE)"
    )


# --- addresses --------------------------------------------------------------------


def ip_problem(text):
    """A sentence when ``text`` is not an address as Django stores it (PostgreSQL would refuse or rewrite it)."""
    try:
        # As Django writes them (and PostgreSQL prints them): IPv6 compressed, IPv4-mapped ones dotted.
        address = clean_ipv6_address(text) if ":" in text else str(ipaddress.IPv4Address(text))
    except (ValueError, ValidationError):
        return "is not an IP address (a network, or not an address at all)"
    if address != text:
        return f"is not written as Django writes addresses: PostgreSQL would store {address}; correct it in the source"
    return None


# --- doubles ----------------------------------------------------------------------


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
