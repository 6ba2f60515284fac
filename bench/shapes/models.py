"""The shapes of data the copy benchmark measures besides the sample app (see bench/migration.py).

- wide: a few tables of long rows: long text and JSON documents;
- web: many small tables joined by many foreign keys, with unique constraints;
- keys: tables keyed by a UUID and by text (read through an index in SQLite).
"""

import uuid

from django.db import models

# --- wide: long text and JSON ---------------------------------------------------


class Article(models.Model):
    slug = models.SlugField(max_length=200, unique=True)
    title = models.CharField(max_length=300)
    summary = models.TextField()
    body = models.TextField()
    metadata = models.JSONField()
    tags = models.JSONField(default=list)
    score = models.FloatField()
    published = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    def __str__(self):
        return self.slug


class Revision(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    body = models.TextField()
    diff = models.JSONField()
    author = models.CharField(max_length=150)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["article", "number"], name="shapes_revision_unique_number")]

    def __str__(self):
        return f"{self.article_id}#{self.number}"


# --- web: many small tables, many foreign keys and unique constraints --------------


class Region(models.Model):
    code = models.CharField(max_length=8, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.code


class Country(models.Model):
    region = models.ForeignKey(Region, on_delete=models.PROTECT)
    code = models.CharField(max_length=8, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.code


class City(models.Model):
    country = models.ForeignKey(Country, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["country", "name"], name="shapes_city_unique_name")]

    def __str__(self):
        return self.name


class Brand(models.Model):
    name = models.CharField(max_length=100, unique=True)
    country = models.ForeignKey(Country, on_delete=models.PROTECT)

    def __str__(self):
        return self.name


class Supplier(models.Model):
    name = models.CharField(max_length=100, unique=True)
    city = models.ForeignKey(City, on_delete=models.PROTECT)
    email = models.EmailField(unique=True)

    def __str__(self):
        return self.name


class Item(models.Model):
    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT)
    supplier = models.ForeignKey(Supplier, on_delete=models.PROTECT)
    price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["brand", "name"], name="shapes_item_unique_name")]

    def __str__(self):
        return self.sku


class Customer(models.Model):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150)
    city = models.ForeignKey(City, on_delete=models.PROTECT)
    joined = models.DateField()

    def __str__(self):
        return self.email


class Account(models.Model):
    customer = models.OneToOneField(Customer, on_delete=models.CASCADE)
    number = models.CharField(max_length=20, unique=True)
    balance = models.DecimalField(max_digits=12, decimal_places=2)

    def __str__(self):
        return self.number


class Cart(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    account = models.ForeignKey(Account, on_delete=models.CASCADE)
    created_at = models.DateTimeField()

    def __str__(self):
        return str(self.pk)


class CartItem(models.Model):
    cart = models.ForeignKey(Cart, on_delete=models.CASCADE)
    item = models.ForeignKey(Item, on_delete=models.PROTECT)
    quantity = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cart", "item"], name="shapes_cartitem_unique_item")]

    def __str__(self):
        return f"{self.cart_id}/{self.item_id}"


class Review(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    stars = models.PositiveSmallIntegerField()
    text = models.CharField(max_length=500)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "customer"], name="shapes_review_unique_customer")]

    def __str__(self):
        return f"{self.item_id}/{self.customer_id}"


class Shipment(models.Model):
    cart = models.OneToOneField(Cart, on_delete=models.CASCADE)
    city = models.ForeignKey(City, on_delete=models.PROTECT)
    tracking = models.CharField(max_length=40, unique=True)
    shipped_at = models.DateTimeField(db_index=True)

    def __str__(self):
        return self.tracking


# --- keys: text and UUID primary keys ------------------------------------------------


class Token(models.Model):
    key = models.CharField(max_length=64, primary_key=True)
    owner = models.PositiveIntegerField(db_index=True)
    scope = models.CharField(max_length=100)
    expires_at = models.DateTimeField()

    def __str__(self):
        return self.key


class Event(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    token = models.ForeignKey(Token, on_delete=models.CASCADE)
    kind = models.CharField(max_length=32, db_index=True)
    payload = models.JSONField()
    at = models.DateTimeField()

    def __str__(self):
        return str(self.id)
