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


class Command(BaseCommand):
    help = "Fill the database with deterministic demo data (the same --rows and --seed give the same rows)."

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
        with transaction.atomic(using=database):
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

    def _bulk(self, model, objects):
        created = 0
        batch = []
        for obj in objects:
            batch.append(obj)
            if len(batch) >= BATCH:
                model.objects.using(self.db).bulk_create(batch)
                created += len(batch)
                batch = []
        if batch:
            model.objects.using(self.db).bulk_create(batch)
            created += len(batch)
        if self.verbosity >= 2:
            self.stdout.write(f"  {model._meta.label}: {created}")
        return created

    def _text(self, n):
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def _when(self, spread_days=700):
        seconds = self.rng.randrange(spread_days * 86400)
        return EPOCH + dt.timedelta(seconds=seconds, microseconds=self.rng.randrange(1_000_000))

    def _uuid(self):
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _seed(self, counts):
        rng = self.rng
        User = get_user_model()
        total = 0
        total += self._bulk(
            User,
            (
                User(
                    id=i,
                    username=f"user{i:07d}",
                    email=f"user{i}@example.com",
                    first_name=rng.choice(WORDS).capitalize(),
                    password=f"!seed-demo-unusable-{i}",
                    is_active=rng.random() > 0.05,
                    date_joined=self._when(),
                )
                for i in range(1, counts["users"] + 1)
            ),
        )
        roots = 5
        total += self._bulk(
            Category,
            (
                Category(
                    id=i,
                    name=f"{self._text(2).capitalize()} {i}",
                    slug=f"category-{i}",
                    parent_id=None if i <= roots else rng.randint(1, roots),
                )
                for i in range(1, counts["categories"] + 1)
            ),
        )
        total += self._bulk(Tag, (Tag(id=i, name=name) for i, name in enumerate(TAGS, start=1)))
        total += self._bulk(Product, self._products(counts))
        total += self._bulk(Product.tags.through, self._product_tags(counts["products"]))
        total += self._bulk(Order, self._orders(counts))
        total += self._bulk(OrderLine, self._order_lines(counts))
        total += self._bulk(Comment, self._comments(counts))
        return total

    def _products(self, counts):
        rng = self.rng
        for i in range(1, counts["products"] + 1):
            created = self._when()
            yield Product(
                id=i,
                uuid=self._uuid(),
                sku=f"SKU-{i:08d}",
                name=f"{self._text(3).capitalize()} #{i}",
                description=self._text(rng.randint(5, 30)) + ("\n« multi-line »\ttext" if i % 7 == 0 else ""),
                price=Decimal(rng.randrange(1, 10_000_000)) / 100,
                in_stock=rng.random() > 0.2,
                attributes={
                    "colour": rng.choice(["red", "vert", "青", "blue"]),
                    "size": rng.choice([None, 1, 2.5, "XL"]),
                    "dims": [rng.randint(1, 100) for _ in range(3)],
                    "nested": {"ok": rng.random() > 0.5, "note": self._text(2)},
                },
                created_at=created,
                release_date=(created + dt.timedelta(days=rng.randint(0, 90))).date() if i % 5 else None,
                warranty=(
                    dt.timedelta(
                        days=rng.randint(0, 1000), seconds=rng.randint(0, 86399), microseconds=rng.randrange(1_000_000)
                    )
                    if i % 3
                    else None
                ),
                thumbnail=bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 24))) if i % 4 else None,
                category_id=rng.randint(1, counts["categories"]) if i % 10 else None,
            )

    def _product_tags(self, products):
        through = Product.tags.through
        for product_id in range(1, products + 1):
            for tag_id in sorted(self.rng.sample(range(1, len(TAGS) + 1), self.rng.randint(0, 3))):
                yield through(product_id=product_id, tag_id=tag_id)

    def _orders(self, counts):
        statuses = [choice for choice, _ in Order.Status.choices]
        for i in range(1, counts["orders"] + 1):
            yield Order(
                id=i,
                reference=self._uuid(),
                customer_id=self.rng.randint(1, counts["users"]),
                status=self.rng.choice(statuses),
                placed_at=self._when(),
            )

    def _order_lines(self, counts):
        line_id = 0
        products = counts["products"]
        for order_id in range(1, counts["orders"] + 1):
            for product_id in sorted(self.rng.sample(range(1, products + 1), min(2, products))):
                line_id += 1
                yield OrderLine(
                    id=line_id,
                    order_id=order_id,
                    product_id=product_id,
                    quantity=self.rng.randint(1, 5),
                    unit_price=Decimal(self.rng.randrange(1, 1_000_000)) / 100,
                )

    def _comments(self, counts):
        product_type = ContentType.objects.db_manager(self.db).get_for_model(Product)
        order_type = ContentType.objects.db_manager(self.db).get_for_model(Order)
        for i in range(1, counts["comments"] + 1):
            on_product = self.rng.random() < 0.8
            yield Comment(
                id=i,
                content_type=product_type if on_product else order_type,
                object_id=self.rng.randint(1, counts["products"] if on_product else counts["orders"]),
                author_id=self.rng.randint(1, counts["users"]) if i % 6 else None,
                body=self._text(self.rng.randint(3, 40)),
                rating=self.rng.randint(1, 5) if i % 2 else None,
                created_at=self._when(),
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
