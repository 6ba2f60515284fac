from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import cache_page

from apps.catalog.models import Product

PAGE_SIZE = 50


def home(request):
    return render(request, "catalog/home.html", {"product_count": Product.objects.count()})


def product_list(request):
    products = Product.objects.select_related("category").prefetch_related("tags").order_by("-created_at", "id")
    # get_page: a page number out of range or not a number shows the last or the first page, never an error.
    page = Paginator(products, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request, "catalog/product_list.html", {"page": page, "products": page, "currency": settings.CATALOG_CURRENCY}
    )


def cached_product_list(request):
    # cache_page is applied per call so that CATALOG_CACHE_SECONDS is read at
    # request time, never at import time.
    view = cache_page(settings.CATALOG_CACHE_SECONDS, key_prefix="catalog")(product_list)
    return view(request)


def product_detail(request, uuid):
    product = get_object_or_404(Product.objects.select_related("category__parent").prefetch_related("tags"), uuid=uuid)
    return render(request, "catalog/product_detail.html", {"product": product, "currency": settings.CATALOG_CURRENCY})


def boom(request):
    """Raises on purpose, to check that an error becomes one JSON log record."""
    if not settings.CATALOG_ENABLE_BOOM:
        raise Http404("disabled")
    raise RuntimeError("boom: an error raised on purpose")
