"""The SQLite side's library, called directly: each field kind's codec, and the plans read from a source.

Cheap: an in-memory SQLite database per case, no PostgreSQL.
"""

import sqlite3

import pytest
from django.db import models

from deploy.sqlite.chunks import _float8
from deploy.sqlite.fields import CODECS, GENERAL, codec
from deploy.sqlite.plan import Column, source_plans, sqlite_text
from deploy.sqlite.sql import quote, range_sql

UUID_HEX = "0123456789abcdef0123456789abcdef"

# (field, a value the fast path carries as it is, a value the checks must flag, the check that flags it)
CASES = [
    (models.SmallIntegerField(), 5, 2**15, "integer"),
    (models.CharField(max_length=3), "abc", "abcd", "length"),
    (models.TextField(), 'line\nof "text"', b"bytes", "blob"),
    (models.GenericIPAddressField(), "10.0.0.1", "010.0.0.1", "ip"),
    (models.JSONField(), '{"a": [1, 2]}', '{"a": ', "json"),
    (models.BooleanField(), 1, 2, "boolean"),
    (models.DateTimeField(), "2024-01-02 03:04:05.123450", "2023-02-30 00:00:00", "datetime"),
    (models.DateField(), "2024-02-29", "2023-02-29", "date"),
    (models.TimeField(), "12:00:00.500000", "25:00:00", "time"),
    (models.DecimalField(max_digits=5, decimal_places=2), 1.25, 1234.5, "decimal"),
    (models.FloatField(), 1.5, "one", "float"),
    (models.UUIDField(), UUID_HEX, "z" * 32, "uuid"),
    (models.BinaryField(), b"\x00\x01", "text", "binary"),
    (models.DurationField(), 1_000_000, "1 day", "duration"),
]


def _column(field):
    field.set_attributes_from_name("v")
    return Column("v", "v", field, field.get_internal_type())


def _table(*values):
    raw = sqlite3.connect(":memory:")
    raw.create_function("deploy_float8", 1, _float8, deterministic=True)
    raw.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
    raw.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in values])
    return raw


@pytest.mark.parametrize(("field", "good", "bad", "check"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_kind_has_one_codec_whose_checks_pass_good_values_and_judge_bad_ones(field, good, bad, check):
    column = _column(field)
    kind_codec = codec(column.kind)
    assert kind_codec is not GENERAL and column.fast
    bounds = (-(2**15), 2**15 - 1, "smallint")
    raw = _table(good, bad)
    fast = " OR ".join(f"({sql})" for _, sql in kind_codec.fast_checks(column)) or "0"
    full = kind_codec.full_checks(column, bounds)
    flagged = {
        name: [k for (k,) in raw.execute(f"SELECT k FROM t WHERE {sql} ORDER BY k")] for name, sql in full
    }  # fmt: skip
    # The good value passes every check, fast or full, and prints; the bad one is flagged by its check.
    assert raw.execute(f"SELECT count(*) FROM t WHERE k = 1 AND ({fast})").fetchone() == (0,)
    assert all(1 not in rows for rows in flagged.values()), flagged
    assert flagged[check] == [2]
    assert raw.execute(f"SELECT {sqlite_text(column)} FROM t WHERE k = 1").fetchone()[0] not in (None, "")
    # The judge names what is wrong with the bad value.
    (value,) = raw.execute("SELECT CAST(v AS BLOB) FROM t WHERE k = 2").fetchone()
    if check == "decimal":
        value = bad
    message = kind_codec.judge(check, column, value, bounds)
    assert isinstance(message, str) and message


def test_a_kind_without_a_codec_takes_the_general_path():
    column = _column(models.FileField())  # a text kind: fast
    assert column.fast
    general = Column("v", "v", object(), "MyThirdPartyField")
    assert not general.fast and general.codec is GENERAL
    assert GENERAL.fast_checks(general) == []
    with pytest.raises(ValueError, match="no fast path for MyThirdPartyField"):
        sqlite_text(general)
    assert {"CharField", "DateTimeField", "JSONField", "BinaryField"} <= set(CODECS)


def test_quoting_and_ranges():
    assert quote('we"ird') == '"we""ird"'
    params = []
    assert range_sql("k", 3, b"x", params) == "k > ? AND k <= CAST(? AS TEXT)"
    assert params == [3, b"x"]
    assert range_sql("k", None, None, []) == "1 = 1"


def test_source_plans_count_each_table_in_the_source_and_leave_out_the_excluded(db):
    raw = sqlite3.connect(":memory:")
    raw.execute('CREATE TABLE "catalog_tag" (id INTEGER PRIMARY KEY, name TEXT)')
    raw.executemany('INSERT INTO "catalog_tag" (name) VALUES (?)', [("a",), ("b",), ("c",)])
    plans, skipped = source_plans(raw, ["sessions"])
    rows = {p.table: p.rows for p in plans}
    assert rows["catalog_tag"] == 3
    assert rows["catalog_product"] == 0  # not in the source: the preflight says so
    assert "django_session" not in rows
    assert ("sessions.Session", "excluded with --exclude") in skipped
