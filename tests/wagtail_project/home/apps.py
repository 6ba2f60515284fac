from django.apps import AppConfig


class HomeConfig(AppConfig):
    name = "tests.wagtail_project.home"
    label = "home"
