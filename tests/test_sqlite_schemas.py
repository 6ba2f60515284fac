"""migrate_from_sqlite on the schemas of real projects (tests.schemaapp): inheritance, squashed
migrations, keys without constraints, target columns of another type."""

import sqlite3

import pytest
from django.core.management.base import CommandError
from django.db import connection, connections
from django.db.migrations.loader import MigrationLoader

from deploy.sqlite import preflight
from deploy.sqlite.plan import copied_models, table_plan
from deploy.sqlite.source import open_source
from deploy.sqlite.verify import foreign_keys
from tests.conftest import ROOT, made_once, production_env
from tests.forkserver import run_python
from tests.schemaapp.models import Franchise, Place, Restaurant, Visit
from tests.test_migrate_from_sqlite import all_values, clean_target, migrate  # noqa: F401 (clean_target: autouse)

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite_source"])

SEED = r"""
import django
django.setup()
from django.contrib.contenttypes.models import ContentType
from tests.schemaapp.models import Franchise, Place, Restaurant, Visit
market = Place.objects.create(name="Market", address='1 rue "Quote", back\\slash\nline 2')
pizzeria = Restaurant.objects.create(name="Pizzeria", address="2 Via", serves_pizza=True, rating=5)
Franchise.objects.create(name="Chain #1", serves_pizza=False, rating=None, brand="Chain")
closed = Restaurant.objects.create(name="Closed", rating=1)
Visit.objects.create(place=market, content_type=ContentType.objects.get_for_model(Restaurant), object_id=pizzeria.pk,
                     note="kept")
Visit.objects.create(place=closed, note="its place is deleted below: the key keeps its value, on purpose")
Visit.objects.create(content_type=ContentType.objects.get_for_model(Place), object_id=99999, note="points at nothing")
closed.delete()  # Visit.place is DO_NOTHING without a constraint
"""


@pytest.fixture(scope="session")
def schema_sqlite(tmp_path_factory):
    """A SQLite file made by migrate (schemaapp through its squashed migration), filled through the ORM.

    Once per run, for all the workers (``made_once``); read-only: the tests copy it (``schema_source``).
    """

    def make(path):
        env = production_env(DATABASE_URL=f"sqlite:///{path}", DJANGO_SETTINGS_MODULE="tests.settings")
        run_python(["manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
        run_python(["-c", SEED], env=env, cwd=ROOT, check=True)

    return made_once(tmp_path_factory, "schemas.sqlite3", make)


@pytest.fixture
def schema_source(schema_sqlite, tmp_path):
    path = tmp_path / "source.sqlite3"
    path.write_bytes(schema_sqlite.read_bytes())
    return path


def test_an_inheritance_childs_plan_has_the_columns_of_its_own_table():
    assert table_plan(Place).column_names == ["id", "name", "address"]
    restaurant = table_plan(Restaurant)
    assert restaurant.column_names == ["place_ptr_id", "serves_pizza", "rating"]
    assert restaurant.pk.name == "place_ptr_id" and restaurant.pk.kind == "BigAutoField" and restaurant.fast
    # A grandchild's table links to its parent's, not to the root's.
    assert table_plan(Franchise).column_names == ["restaurant_ptr_id", "brand"]
    with connection.cursor() as cursor:
        for model in (Place, Restaurant, Franchise):
            description = connection.introspection.get_table_description(cursor, model._meta.db_table)
            assert table_plan(model).column_names == [c.name for c in description]


def test_squashed_migrations_are_known_and_others_are_not(schema_source):
    with sqlite3.connect(schema_source) as db:
        recorded = {name for (name,) in db.execute("SELECT name FROM django_migrations WHERE app = 'schemaapp'")}
    db.close()
    # What Django records for a squashed migration: the names it replaces (no node of the graph), and its own.
    assert recorded == {"0001_initial", "0002_franchise_visit", "0001_squashed_0002_franchise_visit"}
    source = open_source(schema_source)
    loader = MigrationLoader(connections[source.alias], ignore_no_migrations=True)
    assert ("schemaapp", "0001_initial") not in loader.graph.nodes
    assert ("schemaapp", "0001_squashed_0002_franchise_visit") in loader.graph.nodes
    assert preflight.unknown_migrations(loader) == set()
    assert preflight._migration_problems(source) == []
    source.close()

    with sqlite3.connect(schema_source) as db:
        db.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('schemaapp', '0099_future', '2030-01-01')"
        )
    db.close()
    source = open_source(schema_source)
    problems = preflight._migration_problems(source)
    source.close()
    assert [str(p) for p in problems] == [
        "source: migration(s) applied to the SQLite file are unknown to this code (schemaapp.0099_future): "
        "the file comes from newer or other code."
    ]


def test_inheritance_and_keys_without_constraints_are_copied_and_verified(schema_source):
    before = schema_source.read_bytes()
    out = migrate("--source", str(schema_source), "--verify")
    assert "Verified:" in out
    for model in (Place, Restaurant, Franchise, Visit):
        assert all_values(model, "sqlite_source") == all_values(model, "default"), model
        assert all_values(model, "default"), model
    # The dangling values are data, copied as they are.
    assert Visit.objects.filter(note__startswith="its place").values_list("place_id", flat=True).get() not in set(
        Place.objects.values_list("pk", flat=True)
    )
    assert Visit.objects.get(note="points at nothing").object_id == 99999
    assert Franchise.objects.get().brand == "Chain" and Restaurant.objects.get(name="Pizzeria").rating == 5
    assert schema_source.read_bytes() == before
    # Only keys with a constraint are checked for orphans.
    checked = {(p.label, f.name) for p, f in foreign_keys([table_plan(m) for m in copied_models()[0]])}
    assert ("schemaapp.Visit", "content_type") in checked and ("schemaapp.Visit", "place") not in checked
    assert ("schemaapp.Restaurant", "place_ptr") in checked


def test_verify_still_finds_a_real_orphan_of_a_child_table(schema_source):
    migrate("--source", str(schema_source))
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # no triggers: the key is left dangling
        try:
            cursor.execute("DELETE FROM schemaapp_place WHERE name = 'Pizzeria'")
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")
    with pytest.raises(CommandError, match=r"schemaapp_restaurant pk=\d+ column place_ptr_id: points at") as failed:
        migrate("--source", str(schema_source), "--verify-only")
    assert "schemaapp_visit" not in str(failed.value)  # its dangling values are the source's


@pytest.fixture
def tsvector_note():
    """The target's schemaapp_visit.note made a tsvector, as a search index's vendor-specific column is."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE schemaapp_visit ALTER COLUMN note TYPE tsvector USING to_tsvector(note)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE schemaapp_visit")
        cursor.execute("ALTER TABLE schemaapp_visit ALTER COLUMN note TYPE text USING note::text")


def test_a_target_column_of_another_type_is_refused_before_anything_is_written(schema_source, tsvector_note):
    with pytest.raises(CommandError) as failed:
        migrate("--source", str(schema_source))
    message = str(failed.value)
    assert "nothing was written to the target" in message
    assert (
        "schemaapp_visit column note: schemaapp.Visit.note (TextField) makes text, but the target's column is "
        "tsvector" in message
    )
    assert "--exclude schemaapp.Visit" in message and "Traceback" not in message
    assert not Place.objects.exists() and not Visit.objects.exists()
    # The documented way on: leave the model out.
    out = migrate("--source", str(schema_source), "--verify", "--exclude", "schemaapp.Visit")
    assert "Verified:" in out
    assert all_values(Place, "sqlite_source") == all_values(Place, "default") != []
    assert not Visit.objects.exists()


def test_the_target_names_every_type_in_one_query_or_each_alone_if_one_cannot_be_parsed():
    with connection.cursor() as cursor:
        assert preflight._regtypes(cursor, connection, {"integer", "varchar(20)", "no_such_type"}) == {
            "integer": 23,
            "varchar(20)": 1043,
            "no_such_type": None,
        }
        # PostgreSQL 15's to_regtype raises on a name it cannot parse: that one is None, the others still named.
        assert preflight._regtypes(cursor, connection, {"integer", "varchar("}) == {"integer": 23, "varchar(": None}


def test_sqlite_affinity_follows_sqlites_rules():
    assert [preflight.sqlite_affinity(t) for t in ("integer unsigned", "bigint", "varchar(20)", "text", "")] == [
        "integer", "integer", "text", "text", "blob"
    ]  # fmt: skip
    assert [preflight.sqlite_affinity(t) for t in ("real", "double precision", "decimal", "bool", "tsvector")] == [
        "real", "real", "numeric", "numeric", "numeric"
    ]  # fmt: skip


def test_a_source_column_of_another_type_than_its_field_stores_is_named_with_its_exclude(schema_source, monkeypatch):
    """As Wagtail's search index: the field (loaded for PostgreSQL) stores tsvector, the file has text."""
    field = Visit._meta.get_field("note")
    monkeypatch.setattr(field, "db_type", lambda connection: "tsvector")
    source = open_source(schema_source)
    try:
        problems = preflight.structure_problems(source, [table_plan(Visit), table_plan(Place)])
    finally:
        source.close()
    assert [(p.where, p.column) for p in problems] == [("schemaapp_visit", "note")]
    said = problems[0].message.lower()  # SQLite keeps the declared type as written
    assert "schemaapp.visit.note (textfield) is tsvector here, but text in the source" in said
    assert "--exclude schemaapp.Visit" in problems[0].message
