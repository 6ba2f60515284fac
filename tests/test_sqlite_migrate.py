"""deploy.sqlite.migrate's run() called directly, without the command: its report and its failures.

The command's own behaviour (messages, exit codes, --json, verbosity) is tested through call_command in
test_migrate_from_sqlite.py and test_migrate_hostile.py.
"""

# ruff: noqa: F811 - the fixtures of test_migrate_from_sqlite are imported, and taken as arguments

import psycopg
import pytest
from django.db import connection

from deploy.management.exit_codes import DIFFERENCES_FOUND
from deploy.sqlite import copy as copy_module
from deploy.sqlite import migrate
from deploy.sqlite.copy import AS_BEFORE, FINISHED, RESUMABLE, UNKNOWN, CopyError
from tests.conftest import target_database_url
from tests.test_migrate_from_sqlite import (  # noqa: F401 - fixtures, found by pytest here
    DAMAGE,
    _assert_nothing_written,
    _damage,
    _schema,
    _state,
    clean_target,
    seeded_sqlite,
    source,
)

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite_source"])


def _products():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product")
        return cursor.fetchone()[0]


def test_a_plan_reports_the_tables_and_writes_nothing(source):
    checked = []
    report = migrate.run(migrate.Request(source=str(source), plan=True, system_checks=checked.append))
    assert checked == ["default"]
    tables = {t["model"]: t for t in report.document["tables"]}
    assert tables["catalog.Product"]["path"] == "fast" and tables["testapp.City"]["path"] == "general"
    assert report.document["rows"] == sum(t["rows"] for t in tables.values()) > 3000
    assert report.document["preflight"] == []
    assert report.output[0].startswith("Target: database ") and "(alias 'default')" in report.output[0]
    assert any(line.startswith("catalog.Product ") for line in report.output)
    assert report.output[-1] == "Preflight: nothing stops the copy."
    assert report.sentences == [] and report.verified == ""
    assert _products() == 0


def test_a_copy_with_verify_reports_both_and_shows_progress(source):
    shown = {}

    def progress(verb):
        shown[verb] = 0

        def advance(plan, rows):
            shown[verb] += rows

        return advance

    report = migrate.run(migrate.Request(source=str(source), verify=True, progress=progress))
    document = report.document
    assert document["verified"] is True and document["differences"] == []
    assert document["tables"]["catalog.Product"]["verified"] is True
    assert shown == {"copied": document["rows"], "verified": document["rows"]}
    assert report.sentences[0].startswith(f"Copied {document['rows']} rows in {len(document['tables'])} tables")
    assert report.verified.startswith(f"Verified: {len(document['tables'])} tables identical")
    assert report.output == []
    assert _products() > 0 and _state(target_database_url()) is None


def test_verify_only_after_a_change_fails_with_the_differences_and_its_report(source):
    migrate.run(migrate.Request(source=str(source)))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE catalog_product SET name = 'changed' WHERE id = 1")
    with pytest.raises(migrate.MigrationFailed) as excinfo:
        migrate.run(migrate.Request(source=str(source), verify_only=True))
    failed = excinfo.value
    assert failed.exit_code == DIFFERENCES_FOUND
    assert str(failed).startswith("Verification found 1 difference(s) between the source and the target:")
    assert failed.document["verified"] is False and len(failed.document["differences"]) == 1
    assert failed.report.sentences == [] and failed.report.verified == ""  # no copy ran, nothing proven


def test_a_refused_preflight_names_every_problem_and_writes_nothing(source):
    before = _schema()
    _damage(source)
    with pytest.raises(migrate.MigrationFailed) as excinfo:
        migrate.run(migrate.Request(source=str(source)))
    failed = excinfo.value
    assert failed.exit_code == 1 and failed.report is None and failed.document is None
    assert str(failed).startswith(f"The preflight found problems ({len(DAMAGE)}); nothing was written to the target:")
    for _, line in DAMAGE:
        assert line in str(failed), line
    _assert_nothing_written(before)


def test_a_plan_the_preflight_refuses_fails_with_the_plan_as_its_report(source):
    _damage(source, ["DELETE FROM django_migrations WHERE app = 'catalog'"])
    with pytest.raises(migrate.MigrationFailed) as excinfo:
        migrate.run(migrate.Request(source=str(source), plan=True))
    failed = excinfo.value
    assert "; the plan wrote nothing:" in str(failed)
    assert any("migration(s) of the code are not applied" in p for p in failed.document["preflight"])
    assert "Preflight: nothing stops the copy." not in failed.report.output
    assert failed.report.output[-1].endswith("Nothing was written.")
    assert _products() == 0


def test_truncate_asks_the_confirm_callable_and_a_no_changes_nothing(source):
    migrate.run(migrate.Request(source=str(source)))
    before, asked = _products(), []

    def refuse(question):
        asked.append(question)
        return False

    with pytest.raises(migrate.MigrationFailed, match=r"^Cancelled: nothing was changed\.$"):
        migrate.run(migrate.Request(source=str(source), truncate=True, confirm=refuse))
    assert len(asked) == 1 and "table(s) of database" in asked[0] and "(default) before copying" in asked[0]
    assert _products() == before


def test_a_stopped_copy_says_what_it_left_and_how_to_go_on(source, monkeypatch):
    """A real stop after the commit (the foreign keys could not be validated): the sentence says --resume."""

    def lost(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(copy_module, "validate_foreign_keys", lost)
    with pytest.raises(migrate.MigrationFailed) as excinfo:
        migrate.run(migrate.Request(source=str(source)))
    message = str(excinfo.value)
    assert message.startswith("The copy stopped: ") and excinfo.value.exit_code == 1
    assert message.endswith(
        "The tables copied so far are committed and recorded in the target: rerun with --resume to finish "
        "(or with --truncate to start over)."
    )
    assert _state(target_database_url()) is not None
    monkeypatch.undo()
    report = migrate.run(migrate.Request(source=str(source), resume=True, verify=True))
    assert report.document["resumed"] is True and report.document["verified"] is True


# What a stopped copy left, by outcome: (outcome, interrupted, the run's options, the sentence).
OUTCOMES = [
    (
        AS_BEFORE,
        False,
        {},
        "The copy stopped: Disk full. Nothing of this run was kept: the target is as it was before "
        "it (every index and constraint back, no checkpoint). Once the cause is fixed, rerun the same command to copy.",
    ),
    (
        AS_BEFORE,
        True,
        {"truncate": True},
        "Interrupted. Nothing of this run was kept: the target is as it was "
        "before it (every index and constraint back, no checkpoint). Rerun with --truncate to copy.",
    ),
    (
        AS_BEFORE,
        False,
        {"resume": True},
        "The copy stopped: Disk full. Nothing of this run was kept, and no unfinished copy is left: rerun with "
        "--truncate.",
    ),
    (
        FINISHED,
        False,
        {},
        "The copy stopped: Disk full. The copy had finished: every table is copied and committed, "
        "and no checkpoint is left. Run with --verify-only to prove it.",
    ),
    (
        RESUMABLE,
        True,
        {},
        "Interrupted. The tables copied so far are committed and recorded in the target: "
        "rerun with --resume to finish (or with --truncate to start over).",
    ),
    (
        UNKNOWN,
        False,
        {},
        "The copy stopped: Disk full. The target could not be checked afterwards: its checkpoint (if "
        "the copy got that far) says what is left. Rerun with --resume to finish, or with --truncate to start over.",
    ),
    (None, False, {}, "Disk full."),
]


def test_the_sentence_of_each_outcome():
    """One test, not one per outcome: clean_target (autouse) and the flush clean the target after each."""
    for outcome, interrupted, options, sentence in OUTCOMES:
        assert migrate.stopped(CopyError("Disk full.", outcome=outcome, interrupted=interrupted), **options) == sentence
