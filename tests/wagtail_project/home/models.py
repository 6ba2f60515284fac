"""Page types of several kinds: every one is a multi-table-inheritance child of wagtailcore.Page."""

from django.db import models
from modelcluster.contrib.taggit import ClusterTaggableManager
from modelcluster.fields import ParentalKey
from taggit.models import TaggedItemBase
from wagtail import blocks
from wagtail.fields import StreamField
from wagtail.models import Page


class HomePage(Page):
    intro = models.TextField(blank=True)


class BlogPageTag(TaggedItemBase):
    content_object = ParentalKey("BlogPage", related_name="tagged_items", on_delete=models.CASCADE)


class BlogPage(Page):
    date = models.DateField(null=True, blank=True)
    body = StreamField(
        [("heading", blocks.CharBlock()), ("paragraph", blocks.RichTextBlock()), ("quote", blocks.TextBlock())],
        blank=True,
    )
    tags = ClusterTaggableManager(through=BlogPageTag, blank=True)


class EventPage(Page):
    starts_at = models.DateTimeField(null=True, blank=True)
    venue = models.CharField(max_length=200, blank=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
