import re
from io import StringIO

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_redis import get_redis_connection

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_product_list_is_served_from_redis_the_second_time(client):
    from django.core.management import call_command

    call_command("seed_demo", rows=400, verbosity=0)
    redis = get_redis_connection("default")
    assert not redis.keys("*catalog*")
    with CaptureQueriesContext(connection) as first:
        response = client.get("/products/")
    assert response.status_code == 200
    assert "SKU-" in response.content.decode()
    assert len(first) > 0
    assert redis.keys("*views.decorators.cache.cache_page.catalog*")
    with CaptureQueriesContext(connection) as second:
        again = client.get("/products/")
    assert again.content == response.content
    assert len(second) == 0


def test_live_list_is_not_cached(client):
    with CaptureQueriesContext(connection) as first:
        client.get("/products/live/")
    with CaptureQueriesContext(connection) as second:
        client.get("/products/live/")
    assert len(first) == len(second) > 0


def test_pages_link_the_stylesheet(client):
    response = client.get("/")
    assert response.status_code == 200
    assert 'href="/static/catalog/site.css"' in response.content.decode()


def test_the_list_is_paginated_and_every_product_reachable(client, settings):
    from django.core.management import call_command

    from apps.catalog.models import Product
    from apps.catalog.views import PAGE_SIZE

    call_command("seed_demo", rows=600, verbosity=0)  # 150 products: 3 pages of 50
    total = Product.objects.count()
    pages = -(-total // PAGE_SIZE)
    assert pages >= 3
    seen = set()
    for number in range(1, pages + 1):
        text = client.get(f"/products/live/?page={number}").content.decode()
        assert f"{total} products; page {number} of {pages}." in text
        assert ('rel="next"' in text) == (number < pages) and ('rel="prev"' in text) == (number > 1)
        seen |= set(re.findall(r"SKU-\d{8}", text))
    assert len(seen) == total
    # Past the end or not a number: the last or the first page, not an error.
    assert f"page {pages} of {pages}." in client.get("/products/live/?page=999").content.decode()
    assert f"page 1 of {pages}." in client.get("/products/live/?page=x").content.decode()
    assert "Price (EUR)" in client.get("/products/live/").content.decode()


def test_the_detail_page_shows_category_tags_currency_and_a_way_back(client, settings):
    from django.core.management import call_command

    from apps.catalog.models import Product

    settings.CATALOG_CURRENCY = "CHF"
    call_command("seed_demo", rows=200, verbosity=0)
    product = Product.objects.filter(category__parent__isnull=False, tags__isnull=False).first()
    text = client.get(f"/products/{product.uuid}/").content.decode()
    assert f"{product.price} CHF" in text
    assert f"{product.category.parent} \u203a {product.category}" in text
    assert all(tag.name in text for tag in product.tags.all())
    assert 'href="/products/" rel="up"' in text


def test_seed_demo_superuser_can_open_the_admin(client, monkeypatch):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.management.base import CommandError

    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="set DJANGO_SUPERUSER_PASSWORD"):
        call_command("seed_demo", "--superuser", rows=50, verbosity=0)
    assert not get_user_model().objects.exists()  # refused before anything was written

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "demo-admin-pw-81")
    out = StringIO()
    call_command("seed_demo", "--superuser", rows=50, stdout=out)
    assert "Superuser 'admin' created" in out.getvalue() and "demo-admin-pw-81" not in out.getvalue()
    assert client.login(username="admin", password="demo-admin-pw-81")
    assert client.get("/admin/catalog/product/").status_code == 200


SEED_BOTH_WAYS = """
import shutil, sys
import django
django.setup()
from django.core.management import call_command
from apps.catalog.management.commands import seed_demo
command = seed_demo.Command()
command.sqlite_fast_path = sys.argv[1] == "fast"
call_command(command, rows=1200, seed=7, verbosity=0)
"""


def test_seed_demo_writes_sqlite_files_byte_for_byte_as_bulk_create_does(tmp_path):
    """The fast SQLite path (executemany, journal in memory) stores what the ORM would, and leaves a normal database.

    The rehearsal's seeder (bench/rehearse.py) and the SQLite copy's fixtures use it: a value stored in another
    format (a datetime, a UUID, a decimal) would make their files unlike the ones a Django project writes.
    """
    import sqlite3

    from tests.conftest import ROOT, production_env
    from tests.forkserver import run_python

    migrated = tmp_path / "migrated.sqlite3"
    env = production_env(DATABASE_URL=f"sqlite:///{migrated}")
    run_python(["manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
    dumps = {}
    for way in ("fast", "orm"):
        path = tmp_path / f"{way}.sqlite3"
        path.write_bytes(migrated.read_bytes())
        env = production_env(DATABASE_URL=f"sqlite:///{path}")
        run_python(["-c", SEED_BOTH_WAYS, way], env=env, cwd=ROOT, check=True)
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                      if t.startswith(("catalog_", "auth_user"))]  # fmt: skip
            dumps[way] = {}
            for table in tables:
                columns = [f'"{c}"' for (_, c, *_) in db.execute(f'PRAGMA table_info("{table}")')]
                # Values and their storage classes: 12 == 12.0 in Python, INTEGER and REAL apart in SQLite.
                query = f'SELECT {", ".join(columns)}, {", ".join(f"typeof({c})" for c in columns)} FROM "{table}"'
                dumps[way][table] = db.execute(query + " ORDER BY rowid").fetchall()
    assert sum(len(rows) for rows in dumps["fast"].values()) > 1000
    assert dumps["fast"] == dumps["orm"]


SEED_THEN_FAIL = """
import django
django.setup()
from django.core.management import call_command
from django.db.backends.signals import connection_created

# A page cache of a few pages: the rows spill to the file long before the transaction ends, as 10^5 rows do with
# SQLite's default cache, so what undoes them on failure is the rollback journal, not the cache.
connection_created.connect(
    lambda connection, **kwargs: connection.connection.execute("PRAGMA cache_size = 8"), weak=False
)
try:
    call_command("seed_demo", "--superuser", rows=2000, verbosity=0)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_seed_demo_that_fails_half_way_leaves_the_sqlite_file_as_it_was(tmp_path):
    """The fast path's failure is rolled back as the ORM's is: the migrated file stays whole and can be seeded again.

    Here the superuser's name is one of the seeded users', so the last INSERT fails after every table is written.
    With the rollback journal off, SQLite cannot undo pages it has already written: the file was left "malformed",
    its schema and django_migrations lost with the seed.
    """
    import sqlite3

    from tests.conftest import ROOT, production_env
    from tests.forkserver import run_python

    path = tmp_path / "db.sqlite3"
    env = production_env(DATABASE_URL=f"sqlite:///{path}")
    run_python(["manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
    with sqlite3.connect(path) as db:
        migrations = db.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    env.update(DJANGO_SUPERUSER_USERNAME="user0000001", DJANGO_SUPERUSER_PASSWORD="pw-of-the-test")
    failed = run_python(["-c", SEED_THEN_FAIL], env=env, cwd=ROOT)
    assert failed.stdout.startswith("IntegrityError UNIQUE constraint failed: auth_user.username"), failed
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert db.execute("SELECT count(*) FROM django_migrations").fetchone()[0] == migrations
        for table in ("auth_user", "catalog_category", "catalog_product", "catalog_orderline", "catalog_comment"):
            assert db.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (0,), table
    env["DJANGO_SUPERUSER_USERNAME"] = "admin"
    again = run_python(["manage.py", "seed_demo", "--rows", "2000", "--superuser"], env=env, cwd=ROOT)
    assert again.returncode == 0 and "Superuser 'admin' created" in again.stdout, again.stderr


WRITE_WITHOUT_UUID = """
import datetime as dt, json
from decimal import Decimal
import django
django.setup()
from django.db import connection
from apps.catalog.management.commands.seed_demo import _SqliteWriter
from apps.catalog.models import Product

connection.ensure_connection()
columns = ("id", "sku", "name", "price", "created_at")  # no uuid (default uuid4, unique), no attributes (dict)
rows = [(i, f"SKU-{i}", f"Product {i}", Decimal("1.50"), dt.datetime(2024, 1, i, tzinfo=dt.UTC)) for i in (1, 2, 3)]
_SqliteWriter(connection, Product, columns).write(rows)
orm = [(i + 3, f"ORM-{i}", *row[2:]) for i, row in enumerate(rows, 1)]
Product.objects.bulk_create([Product(**dict(zip(columns, row))) for row in orm])
print(json.dumps([[str(p.uuid), p.attributes, p.in_stock] for p in Product.objects.order_by("id")]))
"""


def test_the_fast_sqlite_path_gives_each_row_its_own_callable_default_as_the_orm_does(tmp_path):
    """A field the generator leaves out gets a value per row (uuid4 here), not one value computed for all.

    One value for every row broke the unique uuid at the second row; the ORM's rows, written after, show what the
    fast path must match: a new uuid each, the dict default, the plain default.
    """
    import json

    from tests.conftest import ROOT, production_env
    from tests.forkserver import run_python

    path = tmp_path / "db.sqlite3"
    env = production_env(DATABASE_URL=f"sqlite:///{path}")
    run_python(["manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
    ran = run_python(["-c", WRITE_WITHOUT_UUID], env=env, cwd=ROOT)
    assert ran.returncode == 0, ran.stderr[-2000:]
    products = json.loads(ran.stdout)
    assert len(products) == 6 and len({uuid for uuid, _, _ in products}) == 6
    assert [(attributes, in_stock) for _, attributes, in_stock in products] == [({}, True)] * 6
