from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("deploy.urls")),
    path("", include("apps.catalog.urls")),
    path("admin/", admin.site.urls),
]
