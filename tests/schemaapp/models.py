"""Schemas real projects have and the sample app does not.

- multi-table inheritance: ``Restaurant``'s table holds its own fields and the link to ``Place``;
- a foreign key declared ``db_constraint=False`` (``Visit.place``) that may point at a row deleted on
  purpose, and a generic relation (``Visit.content_type``/``object_id``) that may point at nothing;
- squashed migrations: ``0001_squashed_0002`` replaces the two files beside it, as Wagtail ships.
"""

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Place(models.Model):
    name = models.CharField(max_length=100)
    address = models.TextField(blank=True)


class Restaurant(Place):
    serves_pizza = models.BooleanField(default=False)
    rating = models.IntegerField(null=True)


class Franchise(Restaurant):
    """A grandchild: its table links to Restaurant's, not to Place's."""

    brand = models.CharField(max_length=50, unique=True)


class Visit(models.Model):
    place = models.ForeignKey(Place, on_delete=models.DO_NOTHING, db_constraint=False, null=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, null=True)
    object_id = models.PositiveIntegerField(null=True)
    target = GenericForeignKey("content_type", "object_id")
    note = models.TextField(blank=True)
