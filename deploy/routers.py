"""The dual-database router used while copying from SQLite to PostgreSQL."""

from django.conf import settings

DEFAULT_SOURCE_ALIAS = "sqlite_source"


def source_alias():
    return getattr(settings, "DEPLOY_SQLITE_ALIAS", DEFAULT_SOURCE_ALIAS)


class SQLiteSourceRouter:
    """Keeps the SQLite source alias read-only and out of ``migrate``.

    Reads and writes go to ``default`` unless code names the source alias
    explicitly with ``using()``; writes naming it are refused by SQLite
    itself, because the alias opens the file with ``mode=ro``. Everything else
    is left to Django (``None`` means "no opinion").
    """

    def db_for_read(self, model, **hints):
        return None

    def db_for_write(self, model, **hints):
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db == source_alias():
            return False
        return None
