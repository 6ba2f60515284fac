"""A small Wagtail site, for the copy's test on a real third-party schema (tests/test_wagtail_copy.py).

Separate from tests.settings so that the rest of the suite does not load Wagtail: the test runs
``manage``-style commands in subprocesses with ``DJANGO_SETTINGS_MODULE=tests.wagtail_project.settings``
and ``DATABASE_URL`` naming the SQLite file or the PostgreSQL target. The deploy app is added the
way a project adopts it: in ``INSTALLED_APPS``, and nothing else.
"""

import os

import environ

SECRET_KEY = "wagtail-test-only-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["localhost"]
INSTALLED_APPS = [
    "tests.wagtail_project.home",
    "wagtail.search",
    "wagtail",
    "modelcluster",
    "taggit",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "deploy",
]
MIDDLEWARE = []
ROOT_URLCONF = "tests.wagtail_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": environ.Env.db_url_config(os.environ["DATABASE_URL"])}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "Europe/Paris"
LANGUAGE_CODE = "en"
USE_I18N = True
WAGTAIL_I18N_ENABLED = True
LANGUAGES = WAGTAIL_CONTENT_LANGUAGES = [("en", "English"), ("fr", "French")]
WAGTAIL_SITE_NAME = "copy test"
WAGTAILADMIN_BASE_URL = "http://localhost"
STATIC_URL = "static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
