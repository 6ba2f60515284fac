"""migrate_from_sqlite against a real SQLite file and the real PostgreSQL."""

import datetime as dt
import hashlib
import itertools
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from io import StringIO

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from deploy.sqlite import state
from deploy.sqlite.copy import truncate_tables
from deploy.sqlite.plan import copied_models, table_plan
from deploy.sqlite.source import open_source
from tests.conftest import PYTHON, ROOT, made_once, production_env, target_database_url
from tests.forkserver import run_python

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite_source"])

SEED_TESTAPP = r"""
import datetime as dt
import django
django.setup()
from tests.testapp.models import City, Country, Road
fr = Country.objects.create(code="FR", name="France")
jp = Country.objects.create(code="JP", name="日本")
z = Country.objects.create(code="zz", name="Lower-case code sorts after upper-case in bytes")
a = City.objects.create(country=fr, name="Paris", population=2_100_000, area=105.4, founded=dt.time(8, 30, 0, 5),
                        aliases=["Lutèce", "Ville lumière"])
b = City.objects.create(country=jp, name="東京", population=14_000_000, area=0.1 + 0.2, founded=None, aliases=None)
c = City.objects.create(country=z, name="Nowhere", population=2**40, area=None, aliases=[])
r = Road.objects.create(toll=None)
r.cities.set([a, b])
Road.objects.create(toll=True).cities.set([c])

# Values at the edges of each fast-path type's canonical text.
import uuid
from decimal import Decimal
from tests.testapp.models import Reading
UTC = dt.timezone.utc
Reading.objects.create(
    taken_at=dt.datetime(99, 1, 2, 3, 4, 5, 120000, tzinfo=UTC), day=dt.date(1, 1, 1), at=dt.time(0, 0),
    value=0.1 + 0.2, ratio=Decimal("12345678.1234"), whole=Decimal("999999"), label='comma, "quote"',
    note="line1\nline2\r\nline3\n\\.\n", data={"b": 1, "a": [1, 2.5, None, True], "ünï": "日本", "n": {"z": {}}},
    flag=True, raw=b"", span=dt.timedelta(days=3, microseconds=5), ref=uuid.uuid4(), count=32767, country=fr,
    ip="2001:0db8::0001",
)
Reading.objects.create(
    taken_at=dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC), day=dt.date(9999, 12, 31),
    at=dt.time(23, 59, 59, 999999), value=-0.0, ratio=Decimal("-0.0001"), whole=Decimal("-5"),
    label="back\\slash\ttab \b\f\v", note="\\.", data="just a string", extra=[2**70, 1e-07, "x,y"],
    flag=False, raw=b"\x00\xff", span=dt.timedelta(0), count=0, ip="::ffff:10.0.0.1",
)
Reading.objects.create(taken_at=dt.datetime(2024, 1, 1, tzinfo=UTC), at=dt.time(12, 0, 0, 100000), value=1e-05,
                       ratio=Decimal("0"), label="ünïcödé 日本", note="", data=None,
                       span=dt.timedelta(days=-1, seconds=5), ip="192.168.0.1")
# UUID keys: in PostgreSQL's uuid order, which is the order of SQLite's 32 hex digits.
from tests.testapp.models import Ticket
for n in (0, 1, 2**127, 2**128 - 1, 0xA0 << 120, 0x0F << 120):
    Ticket.objects.create(id=uuid.UUID(int=n), country=fr if n % 2 else None, payload={"n": str(n)}, note=f"t{n}")
for value in (1e15, 1e16, 123456789.0, 2.0**60, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), None):
    Reading.objects.create(taken_at=dt.datetime(2000, 1, 1, 0, 0, 0, 500000, tzinfo=UTC), value=value, data=0)
"""


def _manage_sqlite(path, *args):
    env = production_env(DATABASE_URL=f"sqlite:///{path}", DJANGO_SETTINGS_MODULE="tests.settings")
    run_python(["manage.py", *args], env=env, cwd=ROOT, check=True)


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory):
    """A SQLite database made by Django's migrate, filled by seed_demo and the test models (once per run).

    Read-only: the tests copy it (``source``, ``big_source``).
    """

    def seed(path):
        _manage_sqlite(path, "migrate", "--verbosity", "0")
        _manage_sqlite(path, "seed_demo", "--rows", "3000", "--verbosity", "0")
        env = production_env(DATABASE_URL=f"sqlite:///{path}", DJANGO_SETTINGS_MODULE="tests.settings")
        run_python(["-c", SEED_TESTAPP], env=env, cwd=ROOT, check=True)

    return made_once(tmp_path_factory, "seeded.sqlite3", seed)


@pytest.fixture
def source(seeded_sqlite, tmp_path):
    path = tmp_path / "source.sqlite3"
    shutil.copy(seeded_sqlite, path)
    return path


@pytest.fixture(autouse=True)
def clean_target():
    """Leave the test databases as they were, whatever a test interrupted.

    --source repoints the source alias at the test's file: point it back. A copy left unfinished (its
    checkpoint, the indexes and constraints it dropped) is put back; the rows are emptied by pytest-django's
    flush, which runs after this for every test here (transaction=True) and puts back the content types and
    permissions (its post_migrate). A second TRUNCATE of every table was a tenth of these tests' PostgreSQL time.
    """
    original = dict(connections.settings["sqlite_source"])
    yield
    connections["sqlite_source"].close()
    connections.settings["sqlite_source"] = original
    if hasattr(connections._connections, "sqlite_source"):
        delattr(connections._connections, "sqlite_source")
    with connection.cursor() as cursor:
        unfinished = state.current_run(cursor) is not None
    if unfinished:
        truncate_tables("default", [table_plan(m) for m in copied_models()[0]])


def migrate(*args, **options):
    out = StringIO()
    call_command("migrate_from_sqlite", *args, stdout=out, stderr=StringIO(), interactive=False, **options)
    return out.getvalue()


def all_values(model, alias):
    return list(model._base_manager.using(alias).order_by("pk").values_list())


# --- a copy that is proven -----------------------------------------------------


def test_copy_and_verify_every_model_and_field_type(source):
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = migrate("--source", str(source), "--verify")
    assert "Verified:" in out
    open_source(source)  # the source alias, for the ORM
    for model in apps.get_models(include_auto_created=True):
        assert all_values(model, "sqlite_source") == all_values(model, "default"), model._meta.label
    # Spot checks on the hard types, through the ORM on both sides.
    from apps.catalog.models import Comment, Product

    product = Product.objects.filter(warranty__isnull=False, thumbnail__isnull=False).first()
    twin = Product.objects.using("sqlite_source").get(pk=product.pk)
    assert product.created_at == twin.created_at and product.created_at.microsecond == twin.created_at.microsecond
    assert product.created_at.tzinfo is not None
    assert product.warranty == twin.warranty and product.warranty.microseconds == twin.warranty.microseconds
    assert bytes(product.thumbnail) == bytes(twin.thumbnail)
    assert product.attributes == twin.attributes and product.price == twin.price and product.uuid == twin.uuid
    # Generic relations still point at the right rows: content types kept their keys.
    for comment in Comment.objects.order_by("pk")[:50]:
        source_comment = Comment.objects.using("sqlite_source").get(pk=comment.pk)
        assert comment.content_type.model == source_comment.content_type.model
        assert comment.target.pk == source_comment.object_id
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before, "the source must not change"
    # Sequences are past the largest key: a new row gets a new id.
    from tests.testapp.models import Road

    largest = max(Road.objects.values_list("pk", flat=True))
    assert Road.objects.create().pk == largest + 1


def test_every_fast_table_is_proven_by_digests(source):
    """The canonical text SQLite gives each value is the one PostgreSQL renders back: no chunk needs the slow path."""
    import json

    report = json.loads(migrate("--source", str(source), "--verify", "--json"))
    assert report["verified"] is True
    slow = {label: t["compared_by_value"] for label, t in report["tables"].items() if t["compared_by_value"]}
    assert slow == {"testapp.City": 1}, "only the table with a custom field is compared value by value"
    # The copy validated every foreign key just before: no orphan query repeats that.
    from deploy.sqlite.verify import foreign_keys

    keys = len(foreign_keys([table_plan(m) for m in copied_models()[0]]))
    assert keys > 10 and report["foreign_keys"] == {"queried": 0, "validated_by_the_copy": keys}
    again = json.loads(migrate("--source", str(source), "--verify-only", "--json"))
    slow = {label: t["compared_by_value"] for label, t in again["tables"].items() if t["compared_by_value"]}
    assert slow == {"testapp.City": 1}
    assert again["foreign_keys"] == {"queried": keys, "validated_by_the_copy": 0}


def test_an_unusual_but_equal_value_is_compared_by_value_and_passes(source):
    import json

    with sqlite3.connect(source) as db:  # Django reads both; neither is the form Django writes
        db.execute("UPDATE catalog_order SET placed_at = '2024-01-01 10:00:00.5' WHERE id = 2")
        db.execute("UPDATE testapp_reading SET ref = upper(ref) WHERE ref IS NOT NULL")
    db.close()
    report = json.loads(migrate("--source", str(source), "--verify", "--json"))
    assert report["verified"] is True
    assert report["tables"]["catalog.Order"]["compared_by_value"] == 1
    assert report["tables"]["testapp.Reading"]["compared_by_value"] == 1
    from apps.catalog.models import Order

    assert Order.objects.get(pk=2).placed_at == dt.datetime(2024, 1, 1, 10, 0, 0, 500000, tzinfo=dt.UTC)


def test_json_report_and_plan(source):
    import json

    plan = json.loads(migrate("--source", str(source), "--plan", "--json"))
    assert plan["rows"] > 3000
    paths = {t["model"]: t["path"] for t in plan["tables"]}
    assert paths["testapp.City"] == "general" and paths["catalog.Product"] == "fast"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product")
        assert cursor.fetchone()[0] == 0, "--plan writes nothing"
    report = json.loads(migrate("--source", str(source), "--verify", "--json"))
    assert report["verified"] is True
    assert report["tables"]["catalog.Product"]["verified"] is True
    assert report["rows"] == plan["rows"]


def test_exclude_leaves_a_model_out(source):
    migrate("--source", str(source), "--exclude", "testapp.road", "--verify")
    from tests.testapp.models import City, Road

    assert Road.objects.count() == 0 and City.objects.count() == 3
    assert Road.cities.through.objects.count() == 0


# --- verification fails closed ----------------------------------------------------


CHANGES = [
    ("catalog_product", "name", "'changed'"),
    ("catalog_product", "description", "description || ' '"),
    ("catalog_product", "price", "price + 0.01"),
    ("catalog_product", "in_stock", "NOT in_stock"),
    ("catalog_product", "attributes", "attributes || '{\"extra\": 1}'"),
    ("catalog_product", "created_at", "created_at + interval '1 microsecond'"),
    ("catalog_product", "release_date", "release_date + 1"),
    ("catalog_product", "warranty", "warranty + interval '1 microsecond'"),
    ("catalog_product", "thumbnail", "thumbnail || '\\x00'::bytea"),
    ("catalog_product", "uuid", "gen_random_uuid()"),
    ("catalog_product", "category_id", "NULL"),
    ("catalog_comment", "object_id", "object_id + 1"),
    ("catalog_comment", "rating", "NULL"),
    ("testapp_city", "area", "area * 1.0000000001"),
    ("testapp_city", "founded", "founded + interval '1 microsecond'"),
    ("testapp_city", "aliases", "'[\"x\"]'"),
    ("testapp_country", "name", "name || '!'"),
    ("testapp_reading", "ip", "'10.9.9.9'"),
    ("testapp_ticket", "note", "note || 'x'"),
    ("testapp_ticket", "payload", "'{\"n\": 1}'"),
]


def _pick(table, column):
    with connection.cursor() as cursor:
        key = "code" if table == "testapp_country" else "id"
        cursor.execute(f"SELECT {key} FROM {table} WHERE {column} IS NOT NULL ORDER BY {key} LIMIT 1")
        return key, cursor.fetchone()[0]


def _verify_fails(source):
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source), "--verify-only")
    assert excinfo.value.returncode == 3
    return str(excinfo.value)


@pytest.mark.slow
@pytest.mark.parametrize(("table", "column", "expression"), CHANGES, ids=[f"{t}.{c}" for t, c, _ in CHANGES])
def test_verification_finds_a_changed_value_of_each_type(source, table, column, expression):
    migrate("--source", str(source))
    key, pk = _pick(table, column)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = {expression} WHERE {key} = %s", [pk])
        assert cursor.rowcount == 1
    message = _verify_fails(source)
    assert f"{table} pk={pk!r} column {column}" in message


def test_verification_finds_missing_and_extra_rows(source):
    migrate("--source", str(source))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM catalog_orderline WHERE id = 7")
        cursor.execute("INSERT INTO catalog_tag (id, name) VALUES (999, 'extra')")
    message = _verify_fails(source)
    assert "catalog_orderline pk=7: missing in the target" in message
    assert "catalog_tag pk=999: extra row in the target" in message
    assert "catalog_tag: 30 rows in the source, 31 in the target" in message


def test_verification_finds_a_stale_sequence(source):
    migrate("--source", str(source))
    with connection.cursor() as cursor:
        cursor.execute("SELECT setval(pg_get_serial_sequence('catalog_order', 'id'), 5)")
    message = _verify_fails(source)
    assert "catalog_order column id: sequence" in message and "not past the largest key" in message


def test_verification_finds_an_orphan_foreign_key(source):
    migrate("--source", str(source))
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # foreign-key triggers off, as a bad tool would
        cursor.execute("UPDATE catalog_orderline SET product_id = 10000000 WHERE id = 3")
        cursor.execute("SET session_replication_role = DEFAULT")
    message = _verify_fails(source)
    assert "catalog_orderline pk=3 column product_id: points at catalog_product 10000000, which is missing" in message


# --- interruptions ------------------------------------------------------------------


def _state(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('deploy_sqlite_copy_table')").fetchone()[0]:
            return None
        return conn.execute("SELECT count(*) FROM deploy_sqlite_copy_table").fetchone()[0]


def _start(dsn, source, *args, env=None, **popen):
    env = production_env(DATABASE_URL=dsn, DJANGO_SETTINGS_MODULE="tests.settings", **(env or {}))
    return subprocess.Popen(
        [PYTHON, "manage.py", "migrate_from_sqlite", "--source", str(source), "--no-input", "--batch-size", "500",
         "--workers", "1", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def _rows_in(dsn, table):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# When to kill the copy: (name, condition on (tables marked done or None, seconds since start)).
KILL_POINTS = [
    ("as soon as the checkpoint exists", lambda done, elapsed: done is not None),
    ("in the middle of the copy", lambda done, elapsed: done is not None and elapsed > 0.4),
    ("after the tables are committed", lambda done, elapsed: bool(done)),
    ("again while re-adding foreign keys", lambda done, elapsed: bool(done)),
]


@pytest.fixture
def big_source(seeded_sqlite, tmp_path):
    """The seeded source with 150,000 more rows: a copy long enough to be caught in the middle of a table."""
    source = tmp_path / "big.sqlite3"
    shutil.copy(seeded_sqlite, source)
    with sqlite3.connect(source) as db:
        db.executescript(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150000) "
            "INSERT INTO django_session (session_key, session_data, expire_date) "
            "SELECT printf('key%08d', i), printf('data-%d', i), '2030-01-01 00:00:00' FROM n;"
        )
    db.close()
    return source


@pytest.mark.slow
def test_killed_at_several_points_then_resumed_and_verified(big_source):
    source = big_source
    dsn = target_database_url()
    kills = []
    for name, condition in KILL_POINTS:
        process = _start(dsn, source, *(["--resume"] if kills else []))
        started = time.monotonic()
        while process.poll() is None and time.monotonic() < started + 60:
            done = _state(dsn)
            if condition(done, time.monotonic() - started):
                break
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            done = _state(dsn)
            kills.append((name, done))
            if not done:
                # Nothing is committed before every table is copied and checked.
                assert _rows_in(dsn, "catalog_product") == 0 and _rows_in(dsn, "django_session") == 0
    names = [name for name, _ in kills]
    assert len(kills) >= 3 and names[0] == KILL_POINTS[0][0], f"the copy ended before it could be interrupted: {kills}"
    assert any(done for _, done in kills), "no kill fell between the commit and the end"
    final = _start(dsn, source, "--resume", "--verify", "--json")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert '"verified": true' in out
    assert _state(dsn) is None, "a finished copy leaves no checkpoint"


@pytest.mark.slow
def test_ctrl_c_rolls_back_and_says_how_to_go_on(big_source):
    dsn = target_database_url()
    before = _schema()
    # Ctrl-C as at a terminal (a parent started in the background may have passed SIGINT on as ignored).
    process = _start(dsn, big_source, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # As soon as the checkpoint exists the workers are copying, and they commit only once all is copied.
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if conn.execute("SELECT to_regclass('deploy_sqlite_copy_run') IS NOT NULL").fetchone()[0]:
                break
    if process.poll() is not None:
        pytest.skip("the copy ended before it could be interrupted: " + process.communicate()[1][-300:])
    process.send_signal(signal.SIGINT)  # in the middle of the copy: nothing is committed yet
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert "Interrupted. Nothing of this run was kept: the target is as it was" in err and "Traceback" not in err
    assert _state(dsn) is None and _rows_in(dsn, "django_session") == 0
    assert _schema() == before, "every index and constraint the copy dropped is back"
    final = _start(dsn, big_source, "--verify")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err


def test_a_ctrl_c_inside_psycopg_that_leaves_the_connection_busy_is_still_an_interruption(source, monkeypatch):
    """A Ctrl-C that lands in psycopg's own code as the checkpoint's COMMIT is sent leaves the connection busy
    (ACTIVE): Django's atomic block then fails to restore autocommit, and that error came out as a traceback
    (seen once under load). It is the Ctrl-C: the target is put back and the message says so."""
    import deploy.sqlite.copy as copy_module

    before = _schema()
    start_run = copy_module.state.start_run

    def commit_interrupted(cursor, *args):
        run = start_run(cursor, *args)
        raw = connection.connection

        def commit():
            del raw.commit  # once
            raw.pgconn.send_query(b"COMMIT")  # sent, its result never read: the connection stays ACTIVE
            raise KeyboardInterrupt

        raw.commit = commit
        return run

    monkeypatch.setattr(copy_module.state, "start_run", commit_interrupted)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    assert str(excinfo.value).startswith("Interrupted. Nothing of this run was kept: the target is as it was")
    monkeypatch.undo()
    _assert_nothing_written(before)
    assert "Verified:" in migrate("--source", str(source), "--verify")


@pytest.mark.slow
def test_resume_then_verify_uses_the_digests_of_the_first_run(source):
    """Tables an earlier run committed are proven with the digests it kept, JSON included."""
    dsn = target_database_url()
    process = _start(dsn, source)
    deadline = time.monotonic() + 60
    while process.poll() is None and not _state(dsn) and time.monotonic() < deadline:
        time.sleep(0.002)
    if process.poll() is not None:
        pytest.skip("the copy ended before it could be interrupted after its commit")
    process.send_signal(signal.SIGKILL)
    process.wait()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE catalog_product SET attributes = attributes || '{\"extra\": 1}' WHERE id = 5")
        conn.execute("UPDATE catalog_tag SET name = 'renamed' WHERE id = 3")
    final = _start(dsn, source, "--resume", "--verify")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 3, err
    assert "catalog_product pk=5 column attributes" in err
    assert "catalog_tag pk=3 column name" in err


def test_doubles_are_printed_as_postgresql_prints_them():
    import random
    import struct

    from deploy.sqlite.fields import float8_text

    rng = random.Random(7)
    values = [0.1 + 0.2, -0.0, 1e-4, 1e-5, 1e15, 1e16, 123456789.0, 2.0**60, 5e-324, 1.7976931348623157e308]
    for _ in range(5000):
        values.append(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
        values.append(float(rng.getrandbits(rng.randint(50, 70))))
        values.append(round(rng.uniform(-1000, 1000), rng.randint(0, 6)))
    values = [v for v in values if v == v and abs(v) != float("inf")] + [float("inf"), float("-inf")]
    with connection.cursor() as cursor:
        cursor.execute("SET extra_float_digits TO 1")
        cursor.execute("SELECT v::text FROM unnest(%s::float8[]) v", [values])
        printed = [row[0] for row in cursor.fetchall()]
    assert [float8_text(v) for v in values] == printed


def test_printed_lines_are_the_strict_lines(source):
    """The copy's lines of the rows it does not set aside are the strict lines the rows set aside use."""
    from deploy.sqlite.chunks import open_reader
    from deploy.sqlite.sql import joined

    raw = open_reader(source)
    compared = {}
    for plan in (table_plan(m) for m in copied_models()[0]):
        if not plan.fast:
            continue
        plain, json = plan.line_sql()
        line = plain if json is None else f"{plain} || ',' || {json}"
        bad = plan.check_sql()
        differ, rows = raw.execute(
            f"SELECT total({line} IS NOT {plan.strict_line_sql()}), count(*) "
            f"FROM {plan.table} WHERE NOT coalesce({bad}, 0)"
        ).fetchone()
        assert differ == 0, plan.table
        compared[plan.table] = rows
    assert (
        raw.execute(f"SELECT {joined([str(i) for i in range(250)])}").fetchone()[0]
        == ",".join(str(i) for i in range(250)).encode()
    )
    raw.close()
    assert compared["testapp_reading"] >= 10 and compared["catalog_product"] > 100


def test_a_table_shared_by_two_readers_is_read_once_and_whole(source):
    """The owner splits the keys it has not read at a chunk boundary; the helper reads the upper half."""
    import threading

    from deploy.sqlite.chunks import Digests, TableReader, open_reader
    from deploy.sqlite.copy import _Share

    plan = table_plan(apps.get_model("catalog", "Product"))
    owner, helper = open_reader(source), open_reader(source)
    alone = [p.text for p in TableReader(owner, plan, 7).pieces()]
    last, count = owner.execute("SELECT max(id), count(*) FROM catalog_product").fetchone()
    digests = Digests(plan)
    share = _Share(plan, None, digests, last, 7)
    pieces = TableReader(owner, plan, 7).pieces(bound=share.bound)
    texts = [next(pieces)]
    asked = []
    thread = threading.Thread(target=lambda: asked.append(share.ask()))
    thread.start()
    while share.state == "open":
        time.sleep(0.01)
    texts += list(pieces)
    thread.join()
    assert asked[0] is not None and asked[0] == (share.limit, None) and share.limit < last
    texts += list(TableReader(helper, plan, 7).pieces(lo=share.limit))
    owner.close()
    helper.close()
    for piece in texts:
        digests.add(piece, clean=True)
    lines = sorted(b"\n".join(p.text for p in texts if p.text).split(b"\n"))
    assert lines == sorted(b"\n".join(alone).split(b"\n")), "every row once"
    chunks = digests.finish()
    assert chunks[0].lo is None and chunks[-1].hi is None
    assert all(a.hi == b.lo for a, b in itertools.pairwise(chunks)), "the chunks tile the keys"
    assert any(c.hi == asked[0][0] for c in chunks) and sum(c.rows for c in chunks) == count


def test_a_helper_that_read_its_part_asks_again_and_the_owner_splits_what_it_has_left(source):
    import threading

    from deploy.sqlite.chunks import Digests, TableReader, open_reader
    from deploy.sqlite.copy import _Share

    plan = table_plan(apps.get_model("catalog", "Product"))
    owner, helper = open_reader(source), open_reader(source)
    alone = [p.text for p in TableReader(owner, plan, 7).pieces()]
    last, count = owner.execute("SELECT max(id), count(*) FROM catalog_product").fetchone()
    share = _Share(plan, None, Digests(plan), last, 7)
    pieces = TableReader(owner, plan, 7).pieces(bound=share.bound)
    texts, parts, helped = [next(pieces)], [], [0]

    def help_once():
        asked = []
        thread = threading.Thread(target=lambda: asked.append(share.ask()))
        thread.start()
        while share.state == "open":
            time.sleep(0.01)
        texts.append(next(pieces))  # the owner's next chunk: it splits first
        thread.join()
        after, up_to = asked[0]
        read = list(TableReader(helper, plan, 7).pieces(lo=after, bound=lambda lo: up_to))
        texts.extend(read)
        share.done(sum(p.rows for p in read))
        helped[0] += sum(p.rows for p in read)
        parts.append((after, up_to, read[-1].hi))

    help_once()
    help_once()
    texts += list(pieces)
    assert share.finish() == helped[0], "the owner counts the rows its helper read"
    owner.close()
    helper.close()
    (first, first_end, _), (second, second_end, second_last) = parts
    assert first_end is None and second < second_end == first, "the second part is the top of what the owner kept"
    assert second_last == first, "the helper's bounded part ends where the first part starts"
    lines = sorted(b"\n".join(p.text for p in texts if p.text).split(b"\n"))
    assert lines == sorted(b"\n".join(alone).split(b"\n")), "every row once"
    assert sum(p.rows for p in texts) == count


def _slow_product(monkeypatch, table="catalog_product"):
    """Hold the reading of ``table`` until the other worker, out of tables, asks for a share of it (10 s at
    most), then slow it; record the shares. A fixed sleep alone left the sharing to the machine's load: on a
    busy one the other worker could reach its last table after this one had been read."""
    from deploy.sqlite import copy as copy_module

    feed, ask, shares, shared = copy_module.Copier._feed, copy_module._Share.ask, [], threading.Event()
    waited = []

    def slow_feed(self, reader, piece, pipe, digests):
        if reader.plan.table == table:
            if not waited:
                waited.append(shared.wait(10))
            time.sleep(0.02)
        return feed(self, reader, piece, pipe, digests)

    def recorded_ask(share):
        shared.set()  # the owner answers an ask between two pieces: it goes on once the helper asks
        given = ask(share)
        shares.append(given and given[0])  # where the helper's part starts
        return given

    monkeypatch.setattr(copy_module.Copier, "_feed", slow_feed)
    monkeypatch.setattr(copy_module._Share, "ask", recorded_ask)
    return shares


def test_a_worker_out_of_tables_helps_read_the_largest(source, monkeypatch):
    import json

    shares = _slow_product(monkeypatch)
    report = json.loads(migrate("--source", str(source), "--batch-size", "10", "--verify", "--json"))
    assert any(start is not None for start in shares), "the other worker took a share"
    assert report["verified"] is True
    open_source(source)
    from apps.catalog.models import Product

    assert all_values(Product, "default") == all_values(Product, "sqlite_source")


def test_a_text_keyed_table_is_shared_by_rowid_and_proven_whole(source, monkeypatch):
    """A text-keyed table is read in rowid order: a helper takes rowid ranges, and the order-free digest of
    the two readers' pieces proves it (keys stored in the reverse of their rowid order)."""
    import json

    with sqlite3.connect(source) as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) "
            "INSERT INTO django_session (session_key, session_data, expire_date) "
            "SELECT printf('key%08d', 1201 - i), printf('data-%d', i), '2030-01-01 00:00:00' FROM n"
        )
    db.close()
    shares = _slow_product(monkeypatch, "django_session")
    report = json.loads(migrate("--source", str(source), "--batch-size", "50", "--verify", "--json"))
    assert any(start is not None for start in shares), "the other worker took a share"
    assert report["verified"] is True and report["tables"]["sessions.Session"]["compared_by_value"] == 0
    open_source(source)
    from django.contrib.sessions.models import Session

    assert all_values(Session, "default") == all_values(Session, "sqlite_source")
    assert Session.objects.count() == 1200


def test_a_problem_in_a_shared_part_rolls_everything_back(source, monkeypatch):
    before = _schema()
    with sqlite3.connect(source) as db:
        last = db.execute("SELECT max(id) FROM catalog_product").fetchone()[0]
        db.execute("UPDATE catalog_product SET name = printf('%300s', 'x') WHERE id = ?", [last - 3])
    db.close()
    shares = _slow_product(monkeypatch)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source), "--batch-size", "10")
    assert any(start is not None and start < last - 3 for start in shares), "the helper read the bad row"
    assert f"catalog_product pk={last - 3} column name: is 300 characters long" in str(excinfo.value)
    _assert_nothing_written(before)


def test_an_interrupted_copy_must_be_resumed_or_truncated(source):
    migrate("--source", str(source))
    with connection.cursor() as cursor:  # as if a copy had died after its first step
        cursor.execute(
            "CREATE TABLE deploy_sqlite_copy_run (id serial PRIMARY KEY, started_at timestamptz DEFAULT now(), "
            "source jsonb NOT NULL, definitions jsonb NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO deploy_sqlite_copy_run (source, definitions) VALUES (%s, %s)",
            ["{}", '{"constraints": [], "indexes": []}'],
        )
        cursor.execute(
            "CREATE TABLE deploy_sqlite_copy_table (run_id integer, table_name text, rows bigint, seconds float, "
            "chunks jsonb)"
        )
    with pytest.raises(CommandError, match="interrupted: rerun with --resume"):
        migrate("--source", str(source))
    migrate("--source", str(source), "--truncate", "--verify")


def test_resume_refuses_a_wal_source_written_to_since(source, monkeypatch):
    """A WAL database's writes stay in its -wal while the writer is open: the file keeps its size and
    modification time, and a resume took the changed source for the one the committed tables were read from
    (a stale table, exit 0 without --verify). An untouched WAL source still resumes."""
    import deploy.sqlite.copy as copy_module

    db = sqlite3.connect(source)
    db.execute("PRAGMA journal_mode = WAL")
    db.close()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # every table committed, the foreign keys not re-added yet
        patch.setattr(copy_module, "validate_foreign_keys", interrupted)
        with pytest.raises(CommandError, match="Interrupted"):
            migrate("--source", str(source))
    assert "Verified:" in migrate("--source", str(source), "--resume", "--verify")

    with monkeypatch.context() as patch:
        patch.setattr(copy_module, "validate_foreign_keys", interrupted)
        with pytest.raises(CommandError, match="Interrupted"):
            migrate("--source", str(source), "--truncate")
    stat = source.stat()
    writer = sqlite3.connect(source)  # the app, still running
    try:
        writer.execute("UPDATE catalog_tag SET name = 'renamed by the app' WHERE id = 3")
        writer.commit()
        assert (source.stat().st_size, source.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        with pytest.raises(CommandError, match="has changed or is not this source"):
            migrate("--source", str(source), "--resume")
    finally:
        writer.close()
    assert _state(target_database_url()) is not None, "the checkpoint is kept"
    assert "Verified:" in migrate("--source", str(source), "--truncate", "--verify")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM catalog_tag WHERE id = 3")
        assert cursor.fetchone() == ("renamed by the app",)


# --- the preflight ---------------------------------------------------------------------


# (SQL applied to the source, the problem the preflight must report)
DAMAGE = [
    ("UPDATE catalog_product SET name = '{}' WHERE id = 1".format("x" * 201),
     "catalog_product pk=1 column name: is 201 characters long, more than max_length 200"),
    ("UPDATE catalog_product SET name = 'trailing' || printf('%200s', '') WHERE id = 14",  # PostgreSQL would cut it
     "catalog_product pk=14 column name: is 208 characters long, more than max_length 200"),
    ("UPDATE catalog_product SET description = 'nul' || char(0) || 'byte' WHERE id = 2",
     "catalog_product pk=2 column description: contains a NUL character"),
    ("UPDATE catalog_orderline SET quantity = 4294967296 WHERE id = 3",
     "catalog_orderline pk=3 column quantity: is not an integer from 0 to 2147483647 (the target column is integer)"),
    ("UPDATE catalog_product SET created_at = '2023-02-30 10:00:00' WHERE id = 4",
     "catalog_product pk=4 column created_at: is not a valid datetime"),
    ("UPDATE catalog_product SET release_date = '2023-13-01' WHERE id = 5",
     "catalog_product pk=5 column release_date: is not a valid date"),
    ("UPDATE catalog_product SET price = 'twelve' WHERE id = 6",
     "catalog_product pk=6 column price: is not a decimal number"),
    ("UPDATE catalog_product SET uuid = 'not-a-uuid' WHERE id = 7",
     "catalog_product pk=7 column uuid: is not a valid UUID"),
    ("UPDATE catalog_product SET attributes = '{bad json' WHERE id = 8",
     "catalog_product pk=8 column attributes: is not valid JSON"),
    ("UPDATE catalog_product SET name = CAST(X'C328' AS TEXT) WHERE id = 9",
     "catalog_product pk=9 column name: is not valid UTF-8"),
    ("UPDATE catalog_product SET price = 123456789012 WHERE id = 10",
     "catalog_product pk=10 column price: does not fit max_digits=10"),
    ("UPDATE catalog_product SET price = 1.015 WHERE id = 12",
     "catalog_product pk=12 column price: has more than decimal_places=2 decimal places"),
    ("UPDATE catalog_product SET sku = X'41424344' WHERE id = 13",
     "catalog_product pk=13 column sku: is stored as a BLOB, not as text"),
    ("UPDATE catalog_orderline SET order_id = 999999 WHERE id = 11", "catalog_orderline pk=11: orphan row"),
]  # fmt: skip


def _damage(source, extra=()):
    with sqlite3.connect(source) as db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("PRAGMA foreign_keys = OFF")
        for sql, _ in DAMAGE:
            db.execute(sql)
        for sql in extra:
            db.execute(sql)
    db.close()


def _assert_nothing_written(before):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT to_regclass('deploy_sqlite_copy_run')")
        assert cursor.fetchone()[0] is None
    assert _schema() == before, "every index and constraint the copy dropped is back"


def _schema():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
            "UNION ALL SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
        )
        return cursor.fetchall()


def test_preflight_during_the_copy_reports_every_problem_and_writes_nothing(source):
    """The checks run as the rows stream into uncommitted transactions: a problem rolls every one back."""
    before = _schema()
    _damage(source)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert excinfo.value.returncode == 1
    for _, line in DAMAGE:
        assert line in message, line
    assert "nothing was written" in message
    _assert_nothing_written(before)


def test_preflight_reports_every_problem_when_the_copy_cannot_start(source):
    before = _schema()
    _damage(source, ["DELETE FROM django_migrations WHERE app = 'catalog'"])
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert excinfo.value.returncode == 1
    for line in [*(line for _, line in DAMAGE), "migration(s) of the code are not applied to the SQLite file"]:
        assert line in message, line
    _assert_nothing_written(before)


def test_truncate_keeps_the_old_rows_when_the_preflight_fails(source):
    migrate("--source", str(source))
    _damage(source)
    with pytest.raises(CommandError, match="nothing was written"):
        migrate("--source", str(source), "--truncate")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product")
        assert cursor.fetchone()[0] > 0


def _files(table):
    """{relation: its file} for the table and each of its indexes: TRUNCATE gives new files, a re-build new ones."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relfilenode FROM pg_class c WHERE c.oid = %s::regclass "
            "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)",
            [table, table],
        )
        return dict(cursor.fetchall())


def test_a_table_the_source_has_no_rows_for_is_emptied_without_new_files(source):
    """No TRUNCATE, no index dropped and re-built for a table with nothing to load and none to remove: they cost
    a catalog change each, most of a small table's copy. A target table with rows is still emptied."""
    with sqlite3.connect(source) as db:
        assert db.execute("SELECT count(*) FROM auth_group").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM django_session").fetchone() == (0,)
    migrate("--source", str(source))
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO django_session VALUES ('left over', 'data', now())")
    empty, loaded = _files("auth_group"), _files("catalog_product")
    assert len(empty) == 4  # the table, its primary key, its unique name and the name's LIKE index
    assert "Verified:" in migrate("--source", str(source), "--truncate", "--verify")
    assert _files("auth_group") == empty
    assert _files("catalog_product").keys() == loaded.keys()
    assert not set(_files("catalog_product").values()) & set(loaded.values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_session")
        assert cursor.fetchone()[0] == 0
        # The foreign keys of the tables with no rows (auth_group_permissions) were added valid at once.
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated")
        assert cursor.fetchone()[0] == 0


def test_a_constraint_the_rows_break_names_its_table_and_writes_nothing(source):
    """Unique constraints are re-built after the load, each checking every row: one that fails rolls all back."""
    with connection.cursor() as cursor:  # the target is stricter than the source
        cursor.execute("ALTER TABLE catalog_order ADD CONSTRAINT test_one_order_per_status UNIQUE (status)")
    try:
        before = _schema()
        with pytest.raises(CommandError) as excinfo:
            migrate("--source", str(source))
        assert "catalog_order: constraint test_one_order_per_status does not hold" in str(excinfo.value)
        assert "is duplicated" in str(excinfo.value)
        _assert_nothing_written(before)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE catalog_order DROP CONSTRAINT IF EXISTS test_one_order_per_status")


def test_a_damaged_file_fails_integrity_check(source):
    data = bytearray(source.read_bytes())
    page = 4096
    data[page * 3 : page * 3 + 200] = b"\xff" * 200
    source.write_bytes(bytes(data))
    with pytest.raises(CommandError, match=r"(?s)source: damaged, PRAGMA quick_check says: .*Page 4"):
        migrate("--source", str(source))


def _swap_indexes(source, table):
    """Point a table's two unique indexes at each other's b-tree: each now disagrees with the table."""
    with sqlite3.connect(source) as db:
        (a, root_a), (b, root_b) = db.execute(
            "SELECT name, rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND name LIKE 'sqlite_autoindex_%' ORDER BY name LIMIT 2",
            [table],
        ).fetchall()
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "UPDATE sqlite_master SET rootpage = CASE name WHEN ? THEN ? ELSE ? END WHERE name IN (?, ?)",
            [a, root_b, root_a, a, b],
        )
    db.close()


def test_the_order_free_digest_is_computed_alike_on_both_sides():
    """Rows read in rowid order are proven by sums of their lines' hashes: SQLite's (the copy's read) and
    PostgreSQL's (the stored rows rendered back) agree, in any order; a line lost or repeated changes them."""
    from deploy.sqlite.chunks import _LINE_HASHES, _LineHashes

    lines = ['1,"ä, ""q""",2', '2,"x\ny"', "", "3,b", "3,b"]
    db = sqlite3.connect(":memory:")
    db.create_aggregate("deploy_line_hashes", 1, _LineHashes)
    db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, line TEXT)")
    db.executemany("INSERT INTO t (line) VALUES (?)", [(line,) for line in lines])

    def sqlite_sums(where="1 = 1", order="n"):
        sql = f"SELECT deploy_line_hashes(CAST(line AS BLOB)) FROM (SELECT line FROM t WHERE {where} ORDER BY {order})"
        return db.execute(sql).fetchone()[0]

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_LINE_HASHES} FROM (SELECT sha256(convert_to(l, 'UTF8')) AS h FROM unnest(%s::text[]) l) x",
            [lines],
        )
        assert cursor.fetchone()[0] == sqlite_sums() == sqlite_sums(order="n DESC")
    assert sqlite_sums("n <> 5") != sqlite_sums() and sqlite_sums("n <> 3") != sqlite_sums()
    db.close()


def test_a_damaged_index_of_a_text_keyed_table_is_named_and_nothing_written(source):
    """testapp_country's key is text: the copy reads its rows in rowid order, never through its indexes, so
    they are not checked in full before the copy. Swapped, they still stop it: the orphan check joins
    through the key's index (its children's keys are not found there), and the failure report names the
    damage from the full integrity check. (quick_check sees nothing.)
    """
    from deploy.sqlite.chunks import open_reader, rowid_column
    from deploy.sqlite.preflight import read_by_index

    raw = open_reader(source)
    plan = table_plan(apps.get_model("testapp", "Country"))
    assert read_by_index(raw, plan.table) and rowid_column(raw, plan) == "_rowid_"
    raw.close()
    before = _schema()
    _swap_indexes(source, "testapp_country")
    expected = r"damaged, PRAGMA integrity_check says: row \d+ missing from index sqlite_autoindex_testapp_country"
    with pytest.raises(CommandError, match=expected):
        migrate("--source", str(source))
    _assert_nothing_written(before)


def test_a_failed_copy_reports_what_the_full_integrity_check_finds(source):
    """catalog_product is read by rowid, so its indexes do not hold the copy up; a failure report still names them."""
    before = _schema()
    _damage(source)
    _swap_indexes(source, "catalog_product")
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert "damaged, PRAGMA integrity_check says: row 1 missing from index sqlite_autoindex_catalog_product" in message
    assert DAMAGE[0][1] in message
    _assert_nothing_written(before)


def test_the_copys_orphan_check_finds_what_foreign_key_check_finds(source):
    from deploy.sqlite.preflight import _orphans

    with sqlite3.connect(source) as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("UPDATE catalog_orderline SET order_id = 999999 WHERE id IN (3, 5)")
        db.execute("UPDATE catalog_product SET category_id = 777777 WHERE id = 8")
        db.execute("UPDATE testapp_city SET country_id = 'QQ' WHERE name = 'Paris'")  # a text key (to_field)
        db.execute("DELETE FROM testapp_country WHERE code = 'JP'")
        pragma = sorted(tuple(row[:3]) for row in db.execute("PRAGMA foreign_key_check"))
        assert sorted(_orphans(db)) == pragma
    db.close()
    assert len(pragma) == 5 and {table for table, _, _ in pragma} == {
        "catalog_orderline", "catalog_product", "testapp_city",
    }  # fmt: skip


def test_read_by_index_knows_the_rowid(source):
    from deploy.sqlite.preflight import read_by_index

    with sqlite3.connect(source) as db:
        indexed = {t: read_by_index(db, t) for t in ("catalog_product", "testapp_country", "testapp_road")}
        db.execute('CREATE TABLE "big" ("id" bigint NOT NULL PRIMARY KEY)')
        db.execute('CREATE TABLE "unsigned" ("id" integer unsigned NOT NULL PRIMARY KEY)')
        indexed.update(big=read_by_index(db, "big"), unsigned=read_by_index(db, "unsigned"))
    db.close()
    assert indexed == {
        "catalog_product": False, "testapp_country": True, "testapp_road": False, "big": True, "unsigned": True,
    }  # fmt: skip


# --- bad invocations ---------------------------------------------------------------


def test_bad_invocations_end_in_one_clear_message(source, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        migrate("--source", str(tmp_path / "nope.sqlite3"))
    text = tmp_path / "notes.sqlite3"
    text.write_text("hello")
    with pytest.raises(CommandError, match="is not a SQLite database"):
        migrate("--source", str(text))
    with pytest.raises(CommandError, match="is sqlite, not PostgreSQL"):
        migrate("--source", str(source), "--database", "sqlite_source")
    migrate("--source", str(source))
    with pytest.raises(CommandError, match="already has rows"):
        migrate("--source", str(source))
    with pytest.raises(CommandError, match="--exclude names no installed app or model: nosuchapp"):
        migrate("--source", str(source), "--exclude", "nosuchapp")
    with pytest.raises(CommandError, match="choose one"):
        migrate("--source", str(source), "--resume", "--truncate")


def test_no_source_configured_and_no_traceback(tmp_path):
    env = production_env(DATABASE_URL=target_database_url())  # project settings, no SQLITE_SOURCE
    env.pop("SQLITE_SOURCE", None)
    result = run_python(["manage.py", "migrate_from_sqlite"], env=env, cwd=ROOT)
    assert result.returncode == 1
    assert "No SQLite source: pass --source PATH, or set SQLITE_SOURCE" in result.stderr
    assert "Traceback" not in result.stderr


def test_system_checks_run_unless_skipped(source):
    from django.core import checks
    from django.core.management.base import SystemCheckError

    def failing(app_configs, **kwargs):
        return [checks.Error("broken on purpose", id="tests.E001")]

    checks.register(failing)
    try:
        with pytest.raises(SystemCheckError, match="broken on purpose"):
            call_command("migrate_from_sqlite", "--source", str(source), "--plan", skip_checks=False, stdout=StringIO())
        out = StringIO()
        call_command("migrate_from_sqlite", "--source", str(source), "--plan", "--skip-checks", stdout=out)
        assert "Nothing was written." in out.getvalue()
    finally:
        checks.registry.registry.registered_checks.discard(failing)


def test_truncate_asks_for_confirmation(source, monkeypatch):
    migrate("--source", str(source))
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Cancelled"):
        call_command("migrate_from_sqlite", "--source", str(source), "--truncate", stdout=StringIO())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_tag")
        assert cursor.fetchone()[0] == 30


def test_datetimes_keep_their_microseconds(source):
    with sqlite3.connect(source) as db:
        db.execute("UPDATE catalog_order SET placed_at = '2024-02-29 23:59:59.999999' WHERE id = 1")
    db.close()
    migrate("--source", str(source), "--verify")
    from apps.catalog.models import Order

    assert Order.objects.get(pk=1).placed_at == dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC)


def test_naive_datetimes_keep_their_wall_clock_time_without_use_tz(source):
    """USE_TZ = False: SQLite holds local wall-clock times, read and written in TIME_ZONE on both sides."""
    from django.test import override_settings

    with sqlite3.connect(source) as db:
        db.execute("UPDATE catalog_order SET placed_at = '2024-07-01 12:00:00' WHERE id = 1")
        db.execute("UPDATE catalog_order SET placed_at = '2024-01-15 23:30:00.250000' WHERE id = 2")
    db.close()
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):
        migrate("--source", str(source), "--verify")
        from apps.catalog.models import Order

        assert Order.objects.get(pk=1).placed_at == dt.datetime(2024, 7, 1, 12, 0)
        assert Order.objects.get(pk=2).placed_at == dt.datetime(2024, 1, 15, 23, 30, 0, 250000)
        open_source(source)
        assert all_values(Order, "sqlite_source") == all_values(Order, "default")


def test_a_naive_datetime_the_clocks_skip_is_refused_not_moved_an_hour(source):
    """USE_TZ = False in New York: 2024-03-10 02:30 does not exist there, and PostgreSQL would store 03:30."""
    from django.test import override_settings

    from apps.catalog.models import Order

    with sqlite3.connect(source) as db:
        db.execute("UPDATE catalog_order SET placed_at = '2024-03-10 02:30:00' WHERE id = 1")
        db.execute("UPDATE catalog_order SET placed_at = '2024-11-03 01:30:00' WHERE id = 2")  # twice, but exists
        db.execute("UPDATE catalog_order SET placed_at = '2024-03-10 03:00:00' WHERE id = 3")  # just after the gap
    db.close()
    with override_settings(USE_TZ=False, TIME_ZONE="America/New_York"):
        with pytest.raises(CommandError) as refused:
            migrate("--source", str(source))
        message = str(refused.value)
        assert "catalog_order pk=1 column placed_at" in message and "PostgreSQL would store 2024-03-10 03:30" in message
        assert "pk=2 " not in message and "pk=3 " not in message
        assert not Order.objects.exists()
        with sqlite3.connect(source) as db:
            db.execute("UPDATE catalog_order SET placed_at = '2024-03-10 01:59:59' WHERE id = 1")
        db.close()
        migrate("--source", str(source), "--verify")
        assert Order.objects.get(pk=2).placed_at == dt.datetime(2024, 11, 3, 1, 30)
        assert Order.objects.get(pk=3).placed_at == dt.datetime(2024, 3, 10, 3, 0)


def test_plan_runs_the_preflight_and_names_the_target(source):
    import json

    from apps.catalog.models import Product

    out = migrate("--source", str(source), "--plan")
    name = connection.settings_dict["NAME"]
    assert f"Target: database {name!r} on 127.0.0.1:5432 (alias 'default')." in out
    assert "Preflight: nothing stops the copy." in out
    migrate("--source", str(source))
    before = all_values(Product, "default")
    # A plan for a second copy into the filled target: the refusal the copy would give, now, with the plan.
    out = StringIO()
    with pytest.raises(CommandError, match=r"The preflight found problems .*the plan wrote nothing") as excinfo:
        call_command("migrate_from_sqlite", "--source", str(source), "--plan", stdout=out, interactive=False)
    assert "--truncate" in str(excinfo.value)
    assert f"Target: database {name!r}" in out.getvalue() and "Preflight: nothing stops" not in out.getvalue()
    assert all_values(Product, "default") == before  # the plan changed nothing
    plan = json.loads(migrate("--source", str(source), "--plan", "--json", "--truncate"))
    assert plan["target"]["name"] == name and plan["preflight"] == []


def test_plan_names_the_source_tables_no_model_copies(source):
    """A table no model has (a removed app's, one made by hand) is left behind by the copy: --plan says so."""
    import json

    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE legacy_notes (id TEXT PRIMARY KEY, body BLOB)")
        db.executemany("INSERT INTO legacy_notes VALUES (?, ?)", [(str(i), b"x") for i in range(7)])
        db.execute('CREATE TABLE "odd name" (x)')
    db.close()
    out = migrate("--source", str(source), "--plan")
    assert "not copied: table 'legacy_notes' (7 rows): no model of this code has it" in out
    assert "not copied: table 'odd name' (0 rows)" in out
    assert "django_migrations" not in out and "sqlite_" not in out
    assert "Preflight: nothing stops the copy." in out  # the copy is not refused for it
    plan = json.loads(migrate("--source", str(source), "--plan", "--json"))
    assert plan["not_copied"] == [{"table": "legacy_notes", "rows": 7}, {"table": "odd name", "rows": 0}]


# --- chunks and the plan's estimate ---------------------------------------------------


def test_long_rows_are_read_in_smaller_chunks(source, monkeypatch):
    """A chunk's text stays near CHUNK_BYTES whatever --batch-size says: long rows make smaller chunks."""
    import json

    from deploy.sqlite import chunks
    from deploy.sqlite.chunks import TableReader, open_reader

    monkeypatch.setattr(chunks, "CHUNK_BYTES", 40_000)
    plan = table_plan(apps.get_model("catalog", "Product"))
    raw = open_reader(source)
    reader = TableReader(raw, plan, 10_000)
    pieces = list(reader.pieces())
    (count,) = raw.execute("SELECT count(*) FROM catalog_product").fetchone()
    raw.close()
    assert 1 < reader.batch_size < count, "fewer rows than --batch-size per chunk"
    assert len(pieces) > 5 and sum(p.rows for p in pieces) == count
    assert max(len(p.text) for p in pieces) < 2 * 40_000
    report = json.loads(migrate("--source", str(source), "--verify", "--json"))
    assert report["verified"] is True
    open_source(source)
    from apps.catalog.models import Product

    assert all_values(Product, "default") == all_values(Product, "sqlite_source")


def test_plan_estimate_grows_with_the_copy_as_the_copy_does(source, big_source, monkeypatch):
    """--plan's estimate (deploy.sqlite.estimate.MEASURED) against the copy's own time, small and larger.

    Compared as ratios (larger / small), which a loaded machine slows roughly alike, not as seconds (a timed test):
    within a factor of 2, it catches a model without fixed costs, whose ratio is the rows' ratio (the 8x
    under-estimate of a fixed rate of rows per second on a small copy). The seconds themselves are
    printed next to each copy by bench/migration.py.
    """
    import json

    from deploy.sqlite import migrate as migrate_module
    from deploy.sqlite.estimate import MEASURED

    # The model's shape at the benchmark machine's figures: the CPU probe (tested below) measured on a loaded
    # machine moved the two estimates apart by its own noise, and over-stated a busy suite's slowdown of rows.
    monkeypatch.setattr(migrate_module, "cpu_slowdown", lambda: 1.0)
    times = []
    for path in (source, big_source):
        plan = json.loads(migrate("--source", str(path), "--plan", "--json", "--truncate"))
        report = json.loads(migrate("--source", str(path), "--json", "--truncate"))
        times.append((plan["rows"], plan["estimated_seconds"], report["copy_seconds"]))
    (small_rows, small_estimate, small_copy), (big_rows, big_estimate, big_copy) = times
    assert small_estimate >= MEASURED.overhead and big_rows > 10 * small_rows
    estimated, measured = big_estimate / small_estimate, big_copy / small_copy
    assert measured / 2 <= estimated <= measured * 2, times


def test_the_estimate_scales_the_work_per_row_by_the_machines_cpu_now_and_keeps_the_fixed_costs():
    """A busier machine slows the rows (CPU), not the catalog changes and commits (latency)."""
    import dataclasses

    from deploy.sqlite.estimate import MEASURED, TableSize, cpu_slowdown, estimate_seconds

    plans = [dataclasses.make_dataclass("Plan", ["table", "rows"])("t", 100_000)]
    sizes = {"t": TableSize(bytes=10_000_000, indexes=2, foreign_keys=1)}
    # A table with nothing to copy keeps its three definitions: no catalog work for them.
    empty = estimate_seconds([dataclasses.replace(plans[0], rows=0)], {"t": TableSize(0, 2, 1)})
    assert empty == pytest.approx(MEASURED.overhead + MEASURED.table)
    fixed = MEASURED.overhead + MEASURED.table + 3 * MEASURED.definition
    idle, busy = estimate_seconds(plans, sizes), estimate_seconds(plans, sizes, slowdown=3.0)
    assert idle > fixed
    assert busy - fixed == pytest.approx(3 * (idle - fixed))
    # The probe against the figure of a machine a hundred times faster, and slower, than this one is now.
    now = cpu_slowdown() * MEASURED.probe
    assert cpu_slowdown(dataclasses.replace(MEASURED, probe=now / 100)) > 3
    assert cpu_slowdown(dataclasses.replace(MEASURED, probe=now * 100)) < 0.3
