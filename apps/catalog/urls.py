from django.urls import path

from apps.catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.home, name="home"),
    path("products/", views.cached_product_list, name="product-list"),
    path("products/live/", views.product_list, name="product-list-live"),
    path("products/<uuid:uuid>/", views.product_detail, name="product-detail"),
    path("boom/", views.boom, name="boom"),
]
