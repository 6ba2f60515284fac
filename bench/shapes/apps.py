from django.apps import AppConfig


class ShapesConfig(AppConfig):
    """Models of the copy benchmark's shapes of data: installed by bench.settings only, never by the product."""

    name = "bench.shapes"
    label = "shapes"
    default_auto_field = "django.db.models.BigAutoField"
