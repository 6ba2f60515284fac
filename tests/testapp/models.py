"""Models that exist only in the tests: the copy must work for any project's models."""

import json

from django.db import models


class CommaListField(models.TextField):
    """A custom field with no fast path: stored as text, read as a list."""

    def from_db_value(self, value, expression, connection):
        return None if value is None else json.loads(value)

    def to_python(self, value):
        return json.loads(value) if isinstance(value, str) else value

    def get_prep_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def get_internal_type(self):
        return "CommaListField"

    def db_type(self, connection):
        return "text"


class Country(models.Model):
    code = models.CharField(max_length=2, primary_key=True)
    name = models.CharField(max_length=80, unique=True)


class City(models.Model):
    country = models.ForeignKey(Country, on_delete=models.CASCADE, to_field="code")
    name = models.CharField(max_length=80)
    population = models.BigIntegerField()
    area = models.FloatField(null=True)
    founded = models.TimeField(null=True)
    aliases = CommaListField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["country", "name"], name="testapp_city_unique")]


class Road(models.Model):
    id = models.SmallAutoField(primary_key=True)
    cities = models.ManyToManyField(City, related_name="roads")
    toll = models.BooleanField(null=True)


class Reading(models.Model):
    """Every fast-path field type, nullable, for values at the edges of their canonical text."""

    taken_at = models.DateTimeField()
    day = models.DateField(null=True)
    at = models.TimeField(null=True)
    value = models.FloatField(null=True)
    ratio = models.DecimalField(max_digits=12, decimal_places=4, null=True)
    whole = models.DecimalField(max_digits=6, decimal_places=0, null=True)
    label = models.CharField(max_length=50, blank=True)
    note = models.TextField(null=True)  # noqa: DJ001 - NULL and '' must both survive the copy
    data = models.JSONField(null=True)
    extra = models.JSONField(default=list)
    flag = models.BooleanField(null=True)
    raw = models.BinaryField(null=True)
    span = models.DurationField(null=True)
    ref = models.UUIDField(null=True)
    ip = models.GenericIPAddressField(null=True)  # inet in PostgreSQL, text in SQLite
    count = models.PositiveSmallIntegerField(null=True)
    country = models.ForeignKey(Country, null=True, on_delete=models.SET_NULL)


class Ticket(models.Model):
    """A UUID primary key (a table read through an index, digested whole) with JSON."""

    id = models.UUIDField(primary_key=True)
    country = models.ForeignKey(Country, on_delete=models.CASCADE, null=True)
    payload = models.JSONField(null=True)
    note = models.TextField(blank=True)
