"""migrate_from_sqlite on hostile data and under failure: never a wrong copy, never a damaged target.

Every failure path asserts what is left behind: the target's schema as
``pg_dump --schema-only`` prints it, its rows, the checkpoint, the source's bytes.
"""

# ruff: noqa: F811 - the fixtures of test_migrate_from_sqlite are imported, and taken as arguments

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from deploy.sqlite import copy as copy_module
from deploy.sqlite import state
from deploy.sqlite.plan import copied_models, table_plan
from tests.conftest import ROOT, production_env, target_database_url
from tests.forkserver import run_python
from tests.test_migrate_from_sqlite import (  # noqa: F401 - fixtures, found by pytest here
    _start,
    _state,
    big_source,
    clean_target,
    seeded_sqlite,
    source,
)

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite_source"])


def migrate(*args, **options):
    out = StringIO()
    call_command("migrate_from_sqlite", *args, stdout=out, stderr=StringIO(), interactive=False, **options)
    return out.getvalue()


def schema():
    """The target's schema as pg_dump prints it: every table, index, constraint and trigger, with its definition."""
    result = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", target_database_url()],
        capture_output=True,
        text=True,
        check=True,
    )
    # pg_dump 15.14 and later fence the dump with a random key: not part of the schema.
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def rows():
    """Every table's row count (the copy's checkpoint tables included, if any)."""
    with psycopg.connect(target_database_url(), autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(path, *sql):
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA ignore_check_constraints = ON")  # Django's CHECKs in SQLite: as a bad tool would
        for statement in sql:
            assert db.execute(statement).rowcount != 0, statement  # -1: a WITH statement does not say
    db.close()


def run(*args, source, dsn=None, timeout=300):
    """The command as a person runs it: a process of its own, its exit status and output."""
    env = production_env(DATABASE_URL=dsn or target_database_url(), DJANGO_SETTINGS_MODULE="tests.settings")
    return run_python(
        ["manage.py", "migrate_from_sqlite", "--source", str(source), "--no-input", *args],
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def assert_untouched(before_schema, before_rows):
    assert rows() == before_rows, "no row written, no checkpoint left"
    assert schema() == before_schema, "every index and constraint migrate made is back, with its definition"


# --- hostile values ------------------------------------------------------------------

# (name, SQL that puts the value in the source, what the message must say)
HOSTILE = [
    ("nul-in-text", ["UPDATE catalog_comment SET body = 'a' || char(0) || 'b' WHERE id = 10"],
     ["catalog_comment pk=10 column body: contains a NUL character"]),
    ("two-nul-rows", ["UPDATE catalog_comment SET body = 'x' || char(0) || 'y' WHERE id IN (10, 11)"],
     ["catalog_comment pk=10 column body: contains a NUL", "catalog_comment pk=11 column body: contains a NUL"]),
    ("nul-in-json", ["UPDATE catalog_product SET attributes = '{\"a\": \"' || char(0) || '\"}' WHERE id = 4"],
     ["catalog_product pk=4 column attributes: contains a NUL character"]),
    ("invalid-utf8", ["UPDATE catalog_product SET name = CAST(X'C328' AS TEXT) WHERE id = 9"],
     ["catalog_product pk=9 column name: is not valid UTF-8"]),
    ("integer-above-2**31", ["UPDATE catalog_orderline SET quantity = 2147483648 WHERE id = 3"],
     ["catalog_orderline pk=3 column quantity: is not an integer from 0 to 2147483647 (the target column is "
      "integer) (value: '2147483648')"]),
    ("negative-positive", ["UPDATE catalog_orderline SET quantity = -1 WHERE id = 5"],
     ["catalog_orderline pk=5 column quantity: is not an integer from 0 to 2147483647"]),
    ("smallint-out-of-range", ["UPDATE catalog_comment SET rating = 40000 WHERE id = 3"],
     ["catalog_comment pk=3 column rating: is not an integer from -32768 to 32767 (the target column is smallint)"]),
    ("invalid-json", ["UPDATE catalog_product SET attributes = '{bad json' WHERE id = 8"],
     ["catalog_product pk=8 column attributes: is not valid JSON"]),
    ("malformed-uuid", ["UPDATE catalog_product SET uuid = 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz' WHERE id = 7"],
     ["catalog_product pk=7 column uuid: is not a valid UUID"]),
    ("ip-rewritten", ["UPDATE testapp_reading SET ip = '2001:0DB8::0001' WHERE id = 1"],
     ["testapp_reading pk=1 column ip: is not written as Django writes addresses: PostgreSQL would store "
      "2001:db8::1"]),
    ("time-24:00", ["UPDATE testapp_reading SET at = '24:00:00' WHERE id = 1"],  # SQLite and PostgreSQL take it
     ["testapp_reading pk=1 column at: is not a valid time"]),
    ("ip-network", ["UPDATE testapp_reading SET ip = '10.0.0.0/8' WHERE id = 2"],
     ["testapp_reading pk=2 column ip: is not an IP address"]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "expected"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_value_is_refused_and_nothing_is_damaged(source, sql, expected):
    damage(source, *sql)
    digest, before_schema, before_rows = sha256(source), schema(), rows()
    result = run(source=source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr
    assert message.startswith("CommandError: The preflight found problems"), message
    for line in expected:
        assert line in message, message
    assert "nothing was written to the target" in message
    assert_untouched(before_schema, before_rows)
    assert sha256(source) == digest, "the source's bytes are unchanged"


def test_a_nul_is_sent_whole_for_postgresql_to_refuse(source):
    """A text holding a NUL is not cut there (printf would, and shift the fields after it): its line carries it
    whole, which PostgreSQL refuses (the cases above: the copy then names it, and writes nothing)."""
    from deploy.sqlite.chunks import TableReader, open_reader

    damage(source, "UPDATE catalog_comment SET body = 'x' || char(0) || 'y' WHERE id IN (10, 11)")
    plan = table_plan(next(m for m in copied_models()[0] if m._meta.db_table == "catalog_comment"))
    raw = open_reader(source)
    reader = TableReader(raw, plan, 1000, digests=False)
    pieces = list(reader.pieces())
    flagged = [(pk, [kind for _, kind, _ in found]) for pk, _, found in reader.flagged_rows(None, None)]
    raw.close()
    assert not any("nul" in kinds for _, kinds in flagged)
    text = b"".join(p.text for p in pieces)
    assert text.count(b'"x\x00y"') == 2, "each NUL inside its text, the text whole and quoted"
    assert sum(p.text.count(b"\n") + 1 for p in pieces if p.text) >= 150  # every row is there


def test_a_count_postgresql_did_not_receive_stops_the_commit(source, monkeypatch):
    """The rows each COPY received are compared with the rows read: a stream that lost a line is never committed."""
    before_schema, before_rows = schema(), rows()
    feed = copy_module.Copier._feed

    def lose_a_line(self, reader, piece, pipe, digests):
        if reader.plan.table == "catalog_tag" and b"\n" in piece.text:  # as a shifted stream would: a line lost
            piece.text = piece.text.split(b"\n", 1)[1]
        return feed(self, reader, piece, pipe, digests)

    monkeypatch.setattr(copy_module.Copier, "_feed", lose_a_line)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert "catalog_tag: PostgreSQL received" in message and "rows where" in message, message
    assert_untouched(before_schema, before_rows)


# --- fault injection -------------------------------------------------------------------


def _pk_of_row(source_path, table, n):
    plan = table_plan(next(m for m in copied_models()[0] if m._meta.db_table == table))
    with sqlite3.connect(source_path) as db:
        (pk,) = db.execute(f'SELECT "{plan.pk.name}" FROM "{table}" ORDER BY 1 LIMIT 1 OFFSET ?', [n]).fetchone()
    db.close()
    return plan, pk


def _tables_with_rows(source_path):
    with sqlite3.connect(source_path) as db:
        found = [
            table_plan(m)
            for m in copied_models()[0]
            if db.execute(f'SELECT count(*) FROM "{m._meta.db_table}"').fetchone()[0] > 2
        ]
    db.close()
    return found


@pytest.mark.slow
def test_postgresql_refusing_a_row_of_each_table_leaves_the_target_as_it_was(source):
    """A trigger makes PostgreSQL refuse the third row of each table in turn, while it is being copied.

    No check of the source foresees it: the message is PostgreSQL's, with the row it
    names found in the source (table, key, column), and the target is as it was.
    """
    tables = _tables_with_rows(source)
    assert len(tables) >= 12
    # The target before any trigger: each table's run is compared with it once its trigger is gone (one pg_dump
    # a table, not two), the trigger itself checked in place, untouched, before it goes.
    before_schema, before_rows = schema(), rows()
    for plan in tables:
        _, pk = _pk_of_row(source, plan.table, 2)
        column = plan.pk.name
        key = f"(to_jsonb(NEW) ->> '{column}')"
        if plan.pk.kind == "UUIDField":  # SQLite keeps 32 hex digits; PostgreSQL's text of a uuid has hyphens
            key = f"replace({key}, '-', '')"
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {key} = '{pk}' THEN RAISE EXCEPTION 'refused on purpose'; END IF; "
                "RETURN NEW; END $$"
            )
            cursor.execute(f'CREATE TRIGGER test_refuse BEFORE INSERT ON "{plan.table}" FOR EACH ROW '
                           "EXECUTE FUNCTION test_refuse()")  # fmt: skip
            trigger = _trigger_and_function(cursor)
        try:
            with pytest.raises(CommandError) as excinfo:
                migrate("--source", str(source))
            message = str(excinfo.value)
            assert f"{plan.table} pk={pk!r}" in message, message
            assert "PostgreSQL refused it: refused on purpose" in message, message
            with connection.cursor() as cursor:
                assert _trigger_and_function(cursor) == trigger, "the trigger is as the test made it"
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP TRIGGER IF EXISTS test_refuse ON "{plan.table}"')
                cursor.execute("DROP FUNCTION IF EXISTS test_refuse()")
        assert_untouched(before_schema, before_rows)


def _trigger_and_function(cursor):
    """The test's trigger and function as PostgreSQL defines them (its table, its state included)."""
    cursor.execute(
        "SELECT pg_get_triggerdef(t.oid), t.tgenabled, pg_get_functiondef(t.tgfoid) FROM pg_trigger t "
        "WHERE t.tgname = 'test_refuse'"
    )
    return cursor.fetchall()


def test_a_full_disk_while_re_creating_indexes_leaves_the_target_as_it_was(source, monkeypatch):
    recreate = copy_module.recreate_missing

    def disk_full(cursor, definitions, only_table=None, **options):
        if only_table == "catalog_product":
            raise psycopg.errors.DiskFull("could not extend file: No space left on device")
        return recreate(cursor, definitions, only_table=only_table, **options)

    monkeypatch.setattr(copy_module, "recreate_missing", disk_full)
    before_schema, before_rows = schema(), rows()
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert message.startswith("The copy stopped: PostgreSQL said: could not extend file: No space left"), message
    assert "Nothing of this run was kept: the target is as it was" in message
    assert_untouched(before_schema, before_rows)


def test_a_connection_lost_while_validating_foreign_keys_is_resumed(source, monkeypatch):
    """Every table is committed when the foreign keys are validated: the message says --resume, which finishes."""
    before_schema = schema()

    def lost(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(copy_module, "validate_foreign_keys", lost)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert "While the constraints were re-created, PostgreSQL said: server closed the connection" in message
    assert "committed and recorded in the target: rerun with --resume" in message
    assert "Traceback" not in message
    assert _state(target_database_url()) == len(table_plan_list())
    monkeypatch.undo()
    out = migrate("--source", str(source), "--resume", "--verify")
    assert "Verified:" in out and "(resumed)" in out
    assert _state(target_database_url()) is None
    assert schema() == before_schema


def test_a_constraint_that_fails_after_the_commit_empties_the_tables_and_puts_everything_back(source, monkeypatch):
    """--resume could not get past a constraint the rows break: the copy is undone rather than left half-made."""
    before_schema = schema()

    def orphan(*args, **kwargs):
        raise copy_module.ConstraintFailed(
            {"name": "catalog_orderline_order_id_fk", "table": "catalog_orderline"},
            psycopg.errors.ForeignKeyViolation("insert or update on table violates foreign key constraint"),
        )

    monkeypatch.setattr(copy_module, "validate_foreign_keys", orphan)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert "constraint catalog_orderline_order_id_fk does not hold" in message
    assert "The copied rows were removed and the target is as it was" in message
    assert _state(target_database_url()) is None
    assert schema() == before_schema
    assert sum(n for t, n in rows().items() if t.startswith("catalog_")) == 0


def table_plan_list():
    return [table_plan(m) for m in copied_models()[0]]


def test_a_failure_at_commit_is_either_undone_or_resumed_and_the_message_says_which(source):
    """A deferred trigger makes PostgreSQL refuse one worker's COMMIT; the other worker may have committed."""
    dsn = target_database_url()
    before_schema = schema()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'refused at commit'; END $$"
        )
        cursor.execute(
            "CREATE CONSTRAINT TRIGGER test_refuse_commit AFTER INSERT ON testapp_road DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_commit()"
        )
    try:
        with_trigger = schema()
        with pytest.raises(CommandError) as excinfo:
            migrate("--source", str(source), "--workers", "2")
        message = str(excinfo.value)
        assert "refused at commit" in message and "Traceback" not in message, message
        done = _state(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            tags = conn.execute("SELECT count(*) FROM testapp_road").fetchone()[0]
        assert tags == 0, "the refused transaction is not committed"
        if done:  # the other worker committed its tables: resumable, and the message says so
            assert "rerun with --resume to finish" in message, message
        else:
            assert "the target is as it was" in message, message
            assert schema() == with_trigger
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS test_refuse_commit ON testapp_road")
            cursor.execute("DROP FUNCTION IF EXISTS test_refuse_commit()")
    if done:
        out = migrate("--source", str(source), "--resume", "--verify")
        assert "Verified:" in out
    else:
        migrate("--source", str(source), "--verify")
    assert schema() == before_schema


@pytest.mark.slow
def test_killed_between_phases_then_either_as_before_or_resumed(big_source):
    """SIGKILL as soon as the checkpoint exists, then after the tables' commit: --resume finishes and verifies,
    and the schema is the one migrate made."""
    dsn = target_database_url()
    before_schema = schema()
    kills = []
    for resume, condition in [(False, lambda done: done is not None), (True, lambda done: bool(done))]:
        process = _start(dsn, big_source, *(["--resume"] if resume else []))
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and not condition(_state(dsn)):
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(_state(dsn))
    assert kills and kills[0] is not None, "killed once the checkpoint existed"
    # Killed: a plain run refuses and changes nothing.
    before_rows = rows()
    again = run(source=big_source)
    assert again.returncode == 1 and "interrupted: rerun with --resume" in again.stderr, again.stderr
    assert rows() == before_rows
    final = run("--resume", "--verify", source=big_source)
    assert final.returncode == 0, final.stderr
    assert _state(dsn) is None
    assert schema() == before_schema


# --- consent ---------------------------------------------------------------------------------


def test_resume_on_a_finished_copy_refuses_and_changes_nothing(source):
    migrate("--source", str(source), "--verify")
    with connection.cursor() as cursor:  # written after the cut-over
        cursor.execute("INSERT INTO catalog_tag (id, name) VALUES (9999, 'written after the copy')")
        cursor.execute("UPDATE catalog_category SET name = 'edited after the copy' WHERE id = 1")
    before_schema, before_rows = schema(), rows()
    result = run("--resume", source=source)
    assert result.returncode == 1
    assert "--resume finishes an interrupted copy, and this database has none" in result.stderr
    assert "Traceback" not in result.stderr
    assert_untouched(before_schema, before_rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM catalog_category WHERE id = 1")
        assert cursor.fetchone()[0] == "edited after the copy"


def test_resume_of_another_sources_copy_refuses(source, seeded_sqlite, tmp_path):
    other = tmp_path / "other.sqlite3"
    shutil.copy(seeded_sqlite, other)
    with connection.cursor() as cursor:
        state.start_run(cursor, state.source_identity(other), {"constraints": [], "indexes": []})
    before_schema, before_rows = schema(), rows()
    with pytest.raises(CommandError, match=r"read .*other.sqlite3, which has changed or is not this source"):
        migrate("--source", str(source), "--resume")
    assert_untouched(before_schema, before_rows)


def test_a_second_run_while_one_holds_the_lock_says_a_copy_is_running(source):
    before_schema, before_rows = schema(), rows()
    with psycopg.connect(target_database_url(), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [state.LOCK_KEY])
        pid = holder.info.backend_pid
        for args in [(), ("--resume",), ("--truncate",), ("--verify-only",)]:
            with pytest.raises(CommandError) as excinfo:
                migrate("--source", str(source), *args)
            assert excinfo.value.returncode == 4
            message = str(excinfo.value)
            assert f"A copy into this database is already running (PostgreSQL session {pid}" in message
            assert "interrupted" not in message
    assert_untouched(before_schema, before_rows)
    migrate("--source", str(source), "--verify")  # released with its session


@pytest.mark.slow
def test_two_runs_at_once_and_a_resume_during_a_copy(big_source):
    dsn = target_database_url()
    # Either run may be stopped below while it connects: a time-out of 2 s (the default) would run out while
    # it is stopped, and the run would end on it rather than on the lock.
    first, second = (_start(dsn, big_source, "--verify", env={"DATABASE_CONNECT_TIMEOUT": 120}) for _ in range(2))
    deadline = time.monotonic() + 60
    while _state(dsn) is None and time.monotonic() < deadline and first.poll() is None and second.poll() is None:
        time.sleep(0.01)
    # Hold both runs still while --resume starts (a stopped process keeps its PostgreSQL session, and so the
    # copy's lock): on a busy machine the copy could otherwise finish before --resume reaches its check.
    running = [p for p in (first, second) if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGSTOP)
    try:
        resume = run("--resume", source=big_source, dsn=dsn)
    finally:
        for process in running:
            process.send_signal(signal.SIGCONT)
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 4], results
    loser = next(err for code, _, err in results if code == 4)
    assert "A copy into this database is already running" in loser and "Traceback" not in loser
    assert resume.returncode == 4, resume.stderr
    assert "already running" in resume.stderr and "interrupted" not in resume.stderr


# --- the source is a path --------------------------------------------------------------------

NAMES = ["%61.sqlite3", "what?.sqlite3", "backup#1.sqlite3", "with space & more.sqlite3", "100%.sqlite3"]


def test_source_paths_are_paths(seeded_sqlite, tmp_path):
    """Each file, and only it: '%61' is not 'a', '?' and '#' start nothing, and no other file is created."""
    folder = tmp_path / "q"
    folder.mkdir()
    decoy = folder / "a.sqlite3"  # what 'q/%61.sqlite3' would mean as a URI
    shutil.copy(seeded_sqlite, decoy)
    damage(decoy, "UPDATE catalog_tag SET name = 'the decoy' WHERE id = 1")
    for name in NAMES:
        path = folder / name
        shutil.copy(seeded_sqlite, path)
        damage(path, f"UPDATE catalog_tag SET name = '{name}' WHERE id = 1")
    files = sorted(p.name for p in folder.iterdir())
    for name in NAMES:
        migrate("--source", str(folder / name), "--truncate", "--verify")
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM catalog_tag WHERE id = 1")
            assert cursor.fetchone()[0] == name
    assert sorted(p.name for p in folder.iterdir()) == files, "no other file was created"


def test_sqlite_source_setting_is_a_path_too(seeded_sqlite, tmp_path):
    folder = tmp_path / "q"
    folder.mkdir()
    shutil.copy(seeded_sqlite, folder / "a.sqlite3")
    damage(folder / "a.sqlite3", "DELETE FROM catalog_tag WHERE id > 3")  # what '%61' would mean as a URI
    shutil.copy(seeded_sqlite, folder / "%61#x.sqlite3")
    env = production_env(
        DATABASE_URL=target_database_url(),
        SQLITE_SOURCE=folder / "%61#x.sqlite3",
        DJANGO_SETTINGS_MODULE="tests.settings",
    )
    result = run_python(["manage.py", "migrate_from_sqlite", "--plan", "--json", "--skip-checks"], env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    tables = {t["table"]: t["rows"] for t in json.loads(result.stdout)["tables"]}
    assert tables["catalog_tag"] == 30
    assert sorted(p.name for p in folder.iterdir()) == ["%61#x.sqlite3", "a.sqlite3"]


# --- smaller -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["postgres://postgres:s3cr3t-pw@127.0.0.1:notaport/x", "nonsense", "postgres://postgres:s3cr3t-pw@[::1/x"],
)
def test_a_malformed_database_url_is_one_message_without_the_password(url, source):
    env = production_env(DATABASE_URL=url)
    result = run_python(["manage.py", "migrate_from_sqlite", "--source", str(source)], env=env, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.startswith("Configuration error: DATABASE_URL is not a valid database URL"), result.stderr
    assert "Traceback" not in result.stderr and "s3cr3t" not in result.stderr + result.stdout


def test_ctrl_c_during_verification_is_one_message(source, monkeypatch):
    from deploy.sqlite import migrate as command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "verify_copy", interrupted)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source), "--verify")
    assert str(excinfo.value).startswith("Interrupted during the verification")
    assert "The copy is complete and committed; rerun with --verify-only" in str(excinfo.value)
    assert _state(target_database_url()) is None


def test_ctrl_c_after_the_commit_says_the_tables_are_kept(source, monkeypatch):
    """Interrupted while the foreign keys are re-added: the tables are committed, never 'rolled back'."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(copy_module, "validate_foreign_keys", interrupted)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source))
    message = str(excinfo.value)
    assert message.startswith("Interrupted.") and "rolled back" not in message
    assert "committed and recorded in the target: rerun with --resume" in message
    assert _state(target_database_url()) == len(table_plan_list())
    monkeypatch.undo()
    migrate("--source", str(source), "--resume", "--verify")


@pytest.mark.slow
def test_ctrl_c_before_the_commit_puts_the_target_back(source, monkeypatch):
    before_schema, before_rows = schema(), rows()
    feed, fed = copy_module.Copier._feed, threading.Event()

    def slow(self, *args):
        fed.set()
        time.sleep(0.05)
        return feed(self, *args)

    def interrupt_when_copying(*args, **kwargs):
        if sys._getframe(1).f_code.co_name == "_source_checked":  # the check's own callback: the real result
            return result(*args, **kwargs)
        assert fed.wait(30), "the copy never started"
        raise KeyboardInterrupt

    monkeypatch.setattr(copy_module.Copier, "_feed", slow)
    check, result = copy_module.start_source_check, None

    def check_then_interrupt(path, plans):
        nonlocal result
        future = check(path, plans)
        result = future.result
        future.result = interrupt_when_copying  # the main thread waits on it: Ctrl-C arrives there
        return future

    from deploy.sqlite import migrate as command

    monkeypatch.setattr(command, "start_source_check", check_then_interrupt)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source), "--batch-size", "50")
    message = str(excinfo.value)
    assert message.startswith("Interrupted. Nothing of this run was kept: the target is as it was"), message
    assert_untouched(before_schema, before_rows)


def test_a_text_keyed_table_larger_than_a_chunk_is_copied_whole_and_counted_apart(source, monkeypatch):
    """Text keys read as bytes once bound as BLOBs ('key > blob' is never true): one chunk was copied, and proven."""
    damage(
        source,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) "
        "INSERT INTO django_session (session_key, session_data, expire_date) "
        "SELECT printf('key%08d', i), printf('data-%d', i), '2030-01-01 00:00:00' FROM n",
    )
    out = json.loads(migrate("--source", str(source), "--batch-size", "500", "--verify", "--json"))
    assert out["verified"] is True
    assert out["tables"]["sessions.Session"]["rows"] == 1200
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), min(session_key), max(session_key) FROM django_session")
        assert cursor.fetchone() == (1200, "key00000001", "key00001200")
    # A read that stops early is caught by the copy's own count, before anything commits.
    from deploy.sqlite.chunks import TableReader

    pieces = TableReader.pieces

    def first_piece_only(self, lo=None, bound=lambda lo: None):
        read = pieces(self, lo, bound)
        yield from [next(read)] if self.plan.table == "django_session" else read

    monkeypatch.setattr(TableReader, "pieces", first_piece_only)
    with pytest.raises(CommandError, match="django_session: 500 rows were read of the 1200 the source holds"):
        migrate("--source", str(source), "--batch-size", "500", "--truncate")


def test_a_connection_lost_while_copying_leaves_the_target_as_it_was(source, monkeypatch):
    """The server ends the session of the worker copying catalog_product, in the middle of its COPY."""
    before_schema, before_rows = schema(), rows()
    feed, killed = copy_module.Copier._feed, []

    def lose_the_connection(self, reader, piece, pipe, digests):
        if reader.plan.table == "catalog_product" and not killed:
            pid = pipe.copy.cursor.connection.info.backend_pid
            with psycopg.connect(target_database_url(), autocommit=True) as admin:
                killed.append(admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0])
        return feed(self, reader, piece, pipe, digests)

    monkeypatch.setattr(copy_module.Copier, "_feed", lose_the_connection)
    with pytest.raises(CommandError) as excinfo:
        migrate("--source", str(source), "--batch-size", "100")
    message = str(excinfo.value)
    assert killed == [True]
    assert message.startswith("The copy stopped: PostgreSQL said: "), message
    assert "terminating connection" in message or "server closed the connection" in message, message
    assert "Nothing of this run was kept: the target is as it was" in message
    assert_untouched(before_schema, before_rows)


@pytest.mark.parametrize(
    "stored",
    ["'[\"a' || char(0) || 'b\"]'", "'{not json'"],
    ids=["nul-in-a-custom-field", "a-value-the-field-cannot-read"],
)
def test_a_value_a_custom_fields_own_code_cannot_read_is_a_problem_and_nothing_is_damaged(source, stored):
    """The general path runs the fields' own from_db_value: what it raises is named, never a traceback."""
    damage(source, f"UPDATE testapp_city SET aliases = {stored} WHERE id = (SELECT min(id) FROM testapp_city)")
    with sqlite3.connect(source) as db:
        (pk,) = db.execute("SELECT min(id) FROM testapp_city").fetchone()
    db.close()
    digest, before_schema, before_rows = sha256(source), schema(), rows()
    result = run(source=source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("CommandError: The preflight found problems"), result.stderr
    assert f"testapp_city pk={pk} column aliases: cannot be read by its field (JSONDecodeError: " in result.stderr
    assert "nothing was written to the target" in result.stderr
    assert_untouched(before_schema, before_rows)
    assert sha256(source) == digest


@pytest.mark.parametrize(
    "sql",
    [
        ["UPDATE catalog_comment SET id = -id"],
        ["DELETE FROM catalog_comment WHERE id <> 10", "UPDATE catalog_comment SET id = 0"],
    ],
    ids=["all-negative", "only-zero"],
)
def test_keys_all_zero_or_negative_are_copied_and_the_sequence_starts_at_1(source, sql):
    """setval() refuses a largest key below the sequence's minimum: the sequence restarts at 1 instead."""
    damage(source, *sql)
    with sqlite3.connect(source) as db:
        expected = db.execute("SELECT id, body FROM catalog_comment ORDER BY id").fetchall()
    db.close()
    result = run("--verify", source=source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified:" in result.stdout
    with psycopg.connect(target_database_url(), autocommit=True) as conn:
        assert conn.execute("SELECT id, body FROM catalog_comment ORDER BY id").fetchall() == expected
        assert conn.execute("SELECT to_regclass('deploy_sqlite_copy_run') IS NULL").fetchone()[0], "no checkpoint left"
        assert conn.execute("SELECT nextval(pg_get_serial_sequence('catalog_comment', 'id'))").fetchone()[0] == 1


def test_values_sqlite_held_distinct_that_a_unique_constraint_refuses_name_each_row(source):
    """SQLite's unique index compares a UUID's text: upper and lower case are two values there, one in PostgreSQL.

    The constraint fails as the copy re-creates it: the message names the table, the
    primary key and the column of every row that shares the value, not the key alone.
    """
    damage(source, "UPDATE catalog_product SET uuid = upper((SELECT uuid FROM catalog_product WHERE id = 1)) "
                   "WHERE id = 2")  # fmt: skip
    with sqlite3.connect(source) as db:
        upper, lower = (db.execute("SELECT uuid FROM catalog_product WHERE id = ?", [n]).fetchone()[0] for n in (2, 1))
    db.close()
    digest, before_schema, before_rows = sha256(source), schema(), rows()
    result = run(source=source)
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr
    assert "catalog_product: constraint catalog_product_uuid_key does not hold" in message, message
    assert "catalog_product pk=1 column uuid: has the same value as another row in PostgreSQL's eyes" in message
    assert f"(value: {lower!r})" in message and "catalog_product pk=2 column uuid" in message, message
    assert f"(value: {upper!r})" in message, message
    assert "nothing was written to the target" in message
    assert_untouched(before_schema, before_rows)
    assert sha256(source) == digest


@pytest.mark.parametrize("table", ["testapp_country", "testapp_ticket"])
def test_a_primary_key_stored_as_a_blob_is_a_problem_not_a_copy_without_end(source, table):
    """A BLOB sorts after every text in SQLite: read back by key ranges, a BLOB key came again at each
    chunk, and the copy never ended. The preflight names the row, and nothing is written."""
    if table == "testapp_country":
        damage(source, "INSERT INTO testapp_country VALUES (X'4142', 'a key stored as bytes')")
        key = "AB"
    else:
        damage(source, "UPDATE testapp_ticket SET id = CAST(id AS BLOB) WHERE note = 't1'")
        key = "00000000000000000000000000000001"
    digest, before_schema, before_rows = sha256(source), schema(), rows()
    result = run(source=source, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("CommandError: The preflight found problems"), result.stderr
    assert f"{table} pk={key!r} column " in result.stderr, result.stderr
    assert "primary key is stored as a BLOB" in result.stderr, result.stderr
    assert_untouched(before_schema, before_rows)
    assert sha256(source) == digest
