from deploy.routers import SQLiteSourceRouter


def test_router_never_migrates_the_source_and_has_no_other_opinion():
    router = SQLiteSourceRouter()
    assert router.allow_migrate("sqlite_source", "catalog", "product") is False
    assert router.allow_migrate("default", "catalog", "product") is None
    assert router.db_for_read(object) is None
    assert router.db_for_write(object) is None


def test_router_follows_the_alias_setting(settings):
    settings.DEPLOY_SQLITE_ALIAS = "legacy"
    router = SQLiteSourceRouter()
    assert router.allow_migrate("legacy", "catalog") is False
    assert router.allow_migrate("sqlite_source", "catalog") is None
