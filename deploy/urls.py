"""Health and metrics endpoints. Include with ``path("", include("deploy.urls"))``."""

from django.urls import path
from django_prometheus import exports

from deploy.health import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("startupz", views.startupz, name="startupz"),
    # Sums the per-worker files when PROMETHEUS_MULTIPROC_DIR is set (gunicorn).
    path("metrics", exports.ExportToDjangoView, name="prometheus-django-metrics"),
]
