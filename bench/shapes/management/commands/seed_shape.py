"""Fill the database with one shape of data of the copy benchmark, about ``--rows`` rows, deterministically.

Shapes (models in bench.shapes): ``wide`` (long text and JSON), ``web`` (many small tables, many foreign
keys and unique constraints), ``keys`` (UUID and text primary keys). The sample app has its own: seed_demo.
"""

import datetime as dt
import random
import uuid
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from bench.shapes import models as m

SHAPES = ("wide", "web", "keys")
EPOCH = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
BATCH = 5000
WORDS = [
    "the",
    "copy",
    "of",
    "every",
    "row",
    "keeps",
    "its",
    "bytes",
    "café",
    "naïve",
    "façade",
    "smörgåsbord",
    "jalapeño",
    "déjà-vu",
    "Ångström",
    "文字",
    "данные",
    "δεδομένα",
    "lamp",
    "chair",
    "table",
    "kettle",
    "lantern",
    '"quoted"',
    "comma,",
    "semicolon;",
    "tab\tand",
    "back\\slash",
    "new\nline",
]


def _corpus(rng, size=1 << 20):
    words, length = [], 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


class Command(BaseCommand):
    help = "Fill the database with one shape of the copy benchmark (bench/migration.py), about --rows rows."

    def add_arguments(self, parser):
        parser.add_argument("--shape", choices=SHAPES, required=True)
        parser.add_argument("--rows", type=int, default=10_000)
        parser.add_argument("--seed", type=int, default=21)

    def handle(self, *args, shape, rows, seed, **options):
        self.rng = random.Random(seed)
        self.corpus = _corpus(self.rng)
        with transaction.atomic():
            getattr(self, f"_{shape}")(max(rows, 100))

    def text(self, average):
        length = self.rng.randint(average // 2, average * 3 // 2)
        start = self.rng.randrange(len(self.corpus) - length)
        return self.corpus[start : start + length]

    def moment(self, i):
        return EPOCH + dt.timedelta(seconds=i * 37, microseconds=self.rng.randrange(1_000_000))

    def save(self, model, objects):
        batch = []
        for obj in objects:
            batch.append(obj)
            if len(batch) == BATCH:
                model.objects.bulk_create(batch)
                batch = []
        model.objects.bulk_create(batch)

    def _wide(self, rows):
        articles = rows * 3 // 10
        self.save(
            m.Article,
            (
                m.Article(
                    id=i,
                    slug=f"article-{i}",
                    title=self.text(80),
                    summary=self.text(300),
                    body=self.text(1500),
                    metadata={
                        "source": self.text(20),
                        "authors": [self.text(12) for _ in range(3)],
                        "stats": {"views": self.rng.randrange(10**6), "ratio": self.rng.random()},
                        "notes": self.text(150),
                    },
                    tags=[self.text(8) for _ in range(self.rng.randrange(6))],
                    score=self.rng.random() * 100,
                    published=self.rng.random() < 0.8,
                    created_at=self.moment(i),
                    updated_at=self.moment(i + 1000),
                )
                for i in range(1, articles + 1)
            ),
        )
        self.save(
            m.Revision,
            (
                m.Revision(
                    article_id=i % articles + 1,
                    number=i // articles,
                    body=self.text(800),
                    diff={"added": self.text(60), "removed": self.text(40), "lines": [i, i + 3]},
                    author=self.text(20),
                    created_at=self.moment(i),
                )
                for i in range(rows - articles)
            ),
        )

    def _web(self, rows):
        def count(share):
            return max(10, int(rows * share))

        regions, countries = 10, 100
        cities, brands, suppliers, items = count(0.02), count(0.005), count(0.01), count(0.05)
        customers, carts, cart_items, reviews = count(0.1), count(0.15), count(0.3), count(0.15)
        shipments = min(count(0.12), carts)
        self.save(m.Region, (m.Region(id=i, code=f"R{i}", name=self.text(20)) for i in range(1, regions + 1)))
        self.save(
            m.Country,
            (
                m.Country(id=i, region_id=i % regions + 1, code=f"C{i}", name=self.text(20))
                for i in range(1, countries + 1)
            ),
        )
        self.save(
            m.City,
            (m.City(id=i, country_id=i % countries + 1, name=f"city {i}") for i in range(1, cities + 1)),
        )
        self.save(
            m.Brand,
            (m.Brand(id=i, name=f"brand {i}", country_id=i % countries + 1) for i in range(1, brands + 1)),
        )
        self.save(
            m.Supplier,
            (
                m.Supplier(id=i, name=f"supplier {i}", city_id=i % cities + 1, email=f"s{i}@example.com")
                for i in range(1, suppliers + 1)
            ),
        )
        self.save(
            m.Item,
            (
                m.Item(
                    id=i,
                    sku=f"SKU-{i:08d}",
                    name=f"item {i} {self.text(20)}",
                    brand_id=i % brands + 1,
                    supplier_id=i % suppliers + 1,
                    price=Decimal(self.rng.randrange(100, 10**6)) / 100,
                )
                for i in range(1, items + 1)
            ),
        )
        self.save(
            m.Customer,
            (
                m.Customer(
                    id=i,
                    email=f"customer{i}@example.com",
                    name=self.text(20),
                    city_id=i % cities + 1,
                    joined=(EPOCH + dt.timedelta(days=i % 900)).date(),
                )
                for i in range(1, customers + 1)
            ),
        )
        self.save(
            m.Account,
            (
                m.Account(
                    id=i,
                    customer_id=i,
                    number=f"AC{i:010d}",
                    balance=Decimal(self.rng.randrange(-(10**6), 10**8)) / 100,
                )
                for i in range(1, customers + 1)
            ),
        )
        self.save(
            m.Cart,
            (
                m.Cart(id=i, customer_id=i % customers + 1, account_id=i % customers + 1, created_at=self.moment(i))
                for i in range(1, carts + 1)
            ),
        )
        # (cart, item) and (item, customer) pairs are unique: for one cart (customer), i // carts
        # (i // customers) differs from one row to the next.
        self.save(
            m.CartItem,
            (
                m.CartItem(
                    cart_id=i % carts + 1,
                    item_id=(i // carts + i % carts * 13) % items + 1,
                    quantity=self.rng.randrange(1, 10),
                )
                for i in range(cart_items)
            ),
        )
        self.save(
            m.Review,
            (
                m.Review(
                    item_id=(i // customers + i % customers * 7) % items + 1,
                    customer_id=i % customers + 1,
                    stars=self.rng.randrange(1, 6),
                    text=self.text(120),
                )
                for i in range(reviews)
            ),
        )
        self.save(
            m.Shipment,
            (
                m.Shipment(cart_id=i, city_id=i % cities + 1, tracking=f"TRK{i:012d}", shipped_at=self.moment(i + 60))
                for i in range(1, shipments + 1)
            ),
        )

    def _keys(self, rows):
        tokens = rows * 3 // 10
        keys = [f"{self.rng.getrandbits(160):040x}" for _ in range(tokens)]
        self.save(
            m.Token,
            (
                m.Token(key=key, owner=self.rng.randrange(10**6), scope=self.text(30), expires_at=self.moment(i))
                for i, key in enumerate(keys)
            ),
        )
        self.save(
            m.Event,
            (
                m.Event(
                    id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
                    token_id=keys[i % tokens],
                    kind=f"kind-{i % 20}",
                    payload={"n": i, "what": self.text(40), "ok": i % 3 == 0},
                    at=self.moment(i),
                )
                for i in range(rows - tokens)
            ),
        )
