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
