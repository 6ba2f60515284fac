"""Fill a database with deterministic demo data, fast.

The same ``--rows`` and ``--seed`` give the same rows, byte for byte, on
SQLite and on PostgreSQL: the demo, the tests and the benchmarks rely on it.
Values are chosen to be hard to copy right: non-ASCII text, microsecond
datetimes, durations, binary data with NUL bytes, nested JSON, decimals.
"""

import datetime as dt
import os
import random
import uuid
from contextlib import contextmanager
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from apps.catalog.models import Category, Comment, Order, OrderLine, Product, Tag

EPOCH = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
WORDS = [
    "café",
    "crème",
    "naïve",
    "façade",
    "über",
    "smörgåsbord",
    "jalapeño",
    "piñata",
    "déjà-vu",
    "Ångström",
    "文字",
    "данные",
    "δεδομένα",
    "lamp",
    "chair",
    "table",
    "mug",
    "kettle",
    "bowl",
    "plate",
    "lantern",
    "rope",
    "scarf",
    "boots",
    "jacket",
    "glove",
    "hat",
    "candle",
    "teapot",
    "notebook",
    "pencil",
    "ruler",
]
TAGS = [f"tag-{word}" for word in WORDS[:30]]
BATCH = 5000
PRODUCT_COLUMNS = ("id", "uuid", "sku", "name", "description", "price", "in_stock", "attributes", "created_at",
                   "release_date", "warranty", "thumbnail", "category_id")  # fmt: skip
COMMENT_COLUMNS = ("id", "content_type_id", "object_id", "author_id", "body", "rating", "created_at")
# Kinds whose Python value is what sqlite3 stores: no get_db_prep_save() per value on the fast path.
AS_IS = {"AutoField", "BigAutoField", "BooleanField", "CharField", "EmailField", "ForeignKey", "IntegerField",
         "BigIntegerField", "PositiveBigIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField",
         "SlugField", "SmallIntegerField", "TextField"}  # fmt: skip


def _plan(rows):
    """How many of each model make about ``rows`` rows in all."""
    products = max(rows // 4, 1)
    return {
        "users": max(rows // 200, 1),
        "categories": max(rows // 2000, 6),
        "products": products,
        "orders": max(rows // 10, 1),
        "comments": max(rows // 20, 1),
    }


def _superuser_credentials():
    """(username, password) from the environment, as ``createsuperuser --no-input`` reads them."""
    password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
    if not password:
        raise CommandError(
            "--superuser needs a password: set DJANGO_SUPERUSER_PASSWORD (and DJANGO_SUPERUSER_USERNAME, default "
            "'admin'), or leave --superuser out and run 'python manage.py createsuperuser' afterwards. "
            "Nothing was written."
        )
    return os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin", password


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fresh(field):
    """The value the ORM gives ``field`` on a new instance it was not given: now for auto_now(_add), else its
    default (a callable's new result)."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return field.pre_save(field.model(), add=True)
    return field.get_default()


class _SqliteWriter:
    """One model's rows written to SQLite with ``executemany`` on the driver's connection.

    What ``bulk_create`` stores, value for value (each field's own ``get_db_prep_save``, the backend's adapters),
    without building a model instance and compiling an INSERT per batch: that work made 10^6 rows take a quarter
    of an hour on a loaded machine. Fields the generator does not give get their model default, as in the ORM.
    """

    def __init__(self, connection, model, columns):
        fields = model._meta.concrete_fields
        unknown = set(columns) - {field.attname for field in fields}
        if unknown:
            raise CommandError(f"seed_demo: {model._meta.label} has no column {sorted(unknown)}.")
        self.connection = connection
        self.steps = []
        for field in fields:
            if field.attname in columns:
                prep = None if field.get_internal_type() in AS_IS else field.get_db_prep_save
                self.steps.append((columns.index(field.attname), prep, None))
            elif (
                (field.has_default() and callable(field.default))
                or getattr(field, "auto_now", False)
                or getattr(field, "auto_now_add", False)
            ):
                # A value per row, as the ORM makes one per instance (uuid4, now): one value computed here for
                # every row would break a unique field and give every row the same time.
                self.steps.append((None, field.get_db_prep_save, field))  # the field, for _fresh()
            else:
                self.steps.append((None, None, field.get_db_prep_save(field.get_default(), connection)))
        quote = connection.ops.quote_name
        self.sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 (names quoted by the backend)
            quote(model._meta.db_table),
            ", ".join(quote(field.column) for field in fields),
            ", ".join("?" * len(fields)),
        )

    def _prepared(self, rows):
        connection = self.connection
        steps = self.steps
        for row in rows:
            yield tuple(
                (row[index] if prep is None else prep(row[index], connection))
                if index is not None
                else (default if prep is None else prep(_fresh(default), connection))
                for index, prep, default in steps
            )

    def write(self, rows):
        created = 0
        cursor = self.connection.connection.cursor()  # the driver's: Django's wrapper would rewrite %s per row
        try:
            for batch in _batches(self._prepared(rows), BATCH):
                cursor.executemany(self.sql, batch)
                created += len(batch)
        finally:
            cursor.close()
        return created


@contextmanager
def _building(connection):
    """A SQLite file being filled from empty: the rollback journal in memory, no fsync, as pragmas of this connection.

    The journal stays, in memory: a seed that fails half-way (the superuser's name taken by a seeded user) is rolled
    back and leaves the migrated file as it was. With the journal off, SQLite cannot undo the pages it has already
    spilled to the file, and a failure left it malformed. Filling from empty, the journal holds only the few pages
    that existed before (pages past the file's old end are not journaled), so it costs no time. One that succeeds
    leaves a normal SQLite database, since neither pragma is stored in the file.
    """
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    journal = raw.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = raw.execute("PRAGMA synchronous").fetchone()[0]
    raw.execute("PRAGMA journal_mode = MEMORY")
    raw.execute("PRAGMA synchronous = OFF")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA journal_mode = {journal}")
        raw.execute(f"PRAGMA synchronous = {int(synchronous)}")


class Command(BaseCommand):
    help = "Fill the database with deterministic demo data (the same --rows and --seed give the same rows)."
    # SQLite files are written by _SqliteWriter; False writes them through bulk_create like any database (the test
    # that shows both store the same bytes turns it off).
    sqlite_fast_path = True

    def add_arguments(self, parser):
        parser.add_argument(
            "--rows", type=int, default=2000, help="About how many rows to create in all (default 2000)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default 'default').")
        parser.add_argument(
            "--superuser",
            action="store_true",
            help="Also create a staff superuser who can open /admin/: DJANGO_SUPERUSER_USERNAME (default 'admin') "
            "with the password in DJANGO_SUPERUSER_PASSWORD, as createsuperuser --no-input reads them.",
        )

    def handle(self, *args, rows, seed, database, superuser=False, **options):
        if rows < 1:
            raise CommandError(f"--rows must be at least 1, not {rows}.")
        admin = _superuser_credentials() if superuser else None
        if Product.objects.using(database).exists() or get_user_model().objects.using(database).exists():
            raise CommandError(
                f"The database '{database}' already has users or products: seed_demo fills an empty, "
                "migrated database. Use a new database or flush this one first (manage.py flush)."
            )
        self.rng = random.Random(seed)
        self.verbosity = options["verbosity"]
        self.db = database
        counts = _plan(rows)
        with _building(connections[database]), transaction.atomic(using=database):
            total = self._seed(counts)
            self._reset_sequences()
            if admin:
                get_user_model().objects.db_manager(database).create_superuser(admin[0], password=admin[1])
        if self.verbosity >= 1:
            self.stdout.write(f"Created {total} rows in '{database}' (seed {seed}).")
            if admin:
                self.stdout.write(
                    f"Superuser {admin[0]!r} created (password: DJANGO_SUPERUSER_PASSWORD); log in at /admin/."
                )

    def _bulk(self, model, columns, rows):
        """Insert ``rows`` (tuples of the values of ``columns``, attnames) into ``model``'s table."""
        if self.sqlite_fast_path and connections[self.db].vendor == "sqlite":
            created = _SqliteWriter(connections[self.db], model, columns).write(rows)
        else:
            created = 0
            for batch in _batches((model(**dict(zip(columns, row, strict=True))) for row in rows), BATCH):
                model.objects.using(self.db).bulk_create(batch)
                created += len(batch)
        if self.verbosity >= 2:
            self.stdout.write(f"  {model._meta.label}: {created}")
        return created

    def _text(self, n):
        return " ".join(self.rng.choices(WORDS, k=n))

    def _when(self, spread_days=700):
        seconds = self.rng.randrange(spread_days * 86400)
        return EPOCH + dt.timedelta(seconds=seconds, microseconds=self.rng.randrange(1_000_000))

    def _uuid(self):
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _seed(self, counts):
        rng = self.rng
        total = 0
        total += self._bulk(
            get_user_model(),
            ("id", "username", "email", "first_name", "password", "is_active", "date_joined"),
            (
                (
                    i,
                    f"user{i:07d}",
                    f"user{i}@example.com",
                    rng.choice(WORDS).capitalize(),
                    f"!seed-demo-unusable-{i}",
                    rng.random() > 0.05,
                    self._when(),
                )
                for i in range(1, counts["users"] + 1)
            ),
        )
        roots = 5
        total += self._bulk(
            Category,
            ("id", "name", "slug", "parent_id"),
            (
                (i, f"{self._text(2).capitalize()} {i}", f"category-{i}", None if i <= roots else rng.randint(1, roots))
                for i in range(1, counts["categories"] + 1)
            ),
        )
        total += self._bulk(Tag, ("id", "name"), enumerate(TAGS, start=1))
        total += self._bulk(Product, PRODUCT_COLUMNS, self._products(counts))
        total += self._bulk(Product.tags.through, ("product_id", "tag_id"), self._product_tags(counts["products"]))
        total += self._bulk(Order, ("id", "reference", "customer_id", "status", "placed_at"), self._orders(counts))
        total += self._bulk(
            OrderLine, ("id", "order_id", "product_id", "quantity", "unit_price"), self._order_lines(counts)
        )
        total += self._bulk(Comment, COMMENT_COLUMNS, self._comments(counts))
        return total

    def _products(self, counts):
        rng = self.rng
        for i in range(1, counts["products"] + 1):
            created = self._when()
            yield (
                i,
                self._uuid(),
                f"SKU-{i:08d}",
                f"{self._text(3).capitalize()} #{i}",
                self._text(rng.randint(5, 30)) + ("\n« multi-line »\ttext" if i % 7 == 0 else ""),
                Decimal(rng.randrange(1, 10_000_000)) / 100,
                rng.random() > 0.2,
                {
                    "colour": rng.choice(["red", "vert", "青", "blue"]),
                    "size": rng.choice([None, 1, 2.5, "XL"]),
                    "dims": [rng.randint(1, 100) for _ in range(3)],
                    "nested": {"ok": rng.random() > 0.5, "note": self._text(2)},
                },
                created,
                (created + dt.timedelta(days=rng.randint(0, 90))).date() if i % 5 else None,
                (
                    dt.timedelta(
                        days=rng.randint(0, 1000), seconds=rng.randint(0, 86399), microseconds=rng.randrange(1_000_000)
                    )
                    if i % 3
                    else None
                ),
                rng.randbytes(rng.randint(0, 24)) if i % 4 else None,
                rng.randint(1, counts["categories"]) if i % 10 else None,
            )

    def _product_tags(self, products):
        for product_id in range(1, products + 1):
            for tag_id in sorted(self.rng.sample(range(1, len(TAGS) + 1), self.rng.randint(0, 3))):
                yield product_id, tag_id

    def _orders(self, counts):
        statuses = [choice for choice, _ in Order.Status.choices]
        for i in range(1, counts["orders"] + 1):
            yield i, self._uuid(), self.rng.randint(1, counts["users"]), self.rng.choice(statuses), self._when()

    def _order_lines(self, counts):
        line_id = 0
        products = counts["products"]
        for order_id in range(1, counts["orders"] + 1):
            for product_id in sorted(self.rng.sample(range(1, products + 1), min(2, products))):
                line_id += 1
                yield (
                    line_id,
                    order_id,
                    product_id,
                    self.rng.randint(1, 5),
                    Decimal(self.rng.randrange(1, 1_000_000)) / 100,
                )

    def _comments(self, counts):
        product_type = ContentType.objects.db_manager(self.db).get_for_model(Product).pk
        order_type = ContentType.objects.db_manager(self.db).get_for_model(Order).pk
        for i in range(1, counts["comments"] + 1):
            on_product = self.rng.random() < 0.8
            yield (
                i,
                product_type if on_product else order_type,
                self.rng.randint(1, counts["products"] if on_product else counts["orders"]),
                self.rng.randint(1, counts["users"]) if i % 6 else None,
                self._text(self.rng.randint(3, 40)),
                self.rng.randint(1, 5) if i % 2 else None,
                self._when(),
            )

    def _reset_sequences(self):
        """Explicit ids leave PostgreSQL's sequences behind: move them past the data."""
        connection = connections[self.db]
        models = [get_user_model(), Category, Tag, Product, Product.tags.through, Order, OrderLine, Comment]
        statements = connection.ops.sequence_reset_sql(no_style(), models)
        if statements:
            with connection.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql)
