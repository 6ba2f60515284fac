"""bench/migration.py's refusals and clean-up: bad input stops it before any work, and a run leaves no database."""

import os

import psycopg
import pytest

from bench import migration


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "0"], "--rows must be at least 1 (got 0)"),
        (["--rows", "-5"], "--rows must be at least 1 (got -5)"),
        (["--repeat", "0"], "--repeat must be at least 1 (got 0)"),
        (["--shapes", ","], "--shapes names none"),
        (["--shapes", "sample,tall"], "unknown shape(s): tall"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys, monkeypatch, tmp_path):
    # --rows 0 seeded and timed a few hundred rows anyway; --repeat 0 ended in a traceback after seeding.
    monkeypatch.setattr(migration.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        migration.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unreachable_postgresql_is_named_without_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setattr(migration, "ADMIN", "postgresql://postgres@127.0.0.1:1/postgres")
    monkeypatch.setattr(migration.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(migration.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        migration.main(["--rows", "10", "--shapes", "web"])
    assert str(exited.value.code).startswith(
        "PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/postgres (BENCH_PG_ADMIN_URL): "
    )
    assert list(tmp_path.iterdir()) == []


def test_the_databases_a_run_made_are_dropped(monkeypatch):
    # Each run left its five bench_* databases (targets and template) on the server, a failed one too.
    admin = os.environ.get("BENCH_PG_ADMIN_URL", migration.ADMIN)
    prefix = f"bench_test{os.getpid()}"
    monkeypatch.setattr(migration, "ADMIN", admin)
    monkeypatch.setattr(migration, "BASE", admin.rsplit("/", 1)[0])
    monkeypatch.setattr(migration, "PREFIX", prefix)

    def existing():
        with psycopg.connect(admin, autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{prefix}%"]).fetchall()
        return sorted(name for (name,) in rows)

    try:
        migration.recreate("pgloader")
        migration.recreate("copy")
        assert existing() == [f"{prefix}_copy", f"{prefix}_pgloader"]
        migration.drop_made()
        assert existing() == []
        assert not migration.MADE
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in existing():
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_profile_copy_names_an_unreachable_postgresql_and_leaves_no_source(monkeypatch, tmp_path):
    # It ended in psycopg's traceback, and its new source stayed in /tmp/profile-copy-*.
    from bench import profile_copy

    monkeypatch.setattr(migration, "ADMIN", "postgresql://postgres@127.0.0.1:1/postgres")
    monkeypatch.setattr(profile_copy.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(profile_copy, "seed", lambda path, rows, shape: path.write_bytes(b"seeded"))
    monkeypatch.setattr("sys.argv", ["profile_copy.py", "--shape", "web", "--rows", "10"])
    with pytest.raises(SystemExit) as exited:
        profile_copy.main()
    assert str(exited.value.code).startswith("PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/")
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_ends_the_run_through_its_clean_up(monkeypatch, tmp_path):
    # A run stopped by timeout or a closed session left its bench_* databases and its seeded files behind.
    import signal

    dropped = []
    monkeypatch.setattr(migration.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(migration.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(migration, "admin", lambda: FakeAdmin())
    monkeypatch.setattr(migration, "drop_made", lambda: dropped.append(True))

    def bench_shape(shape, work, args):
        (work / f"{shape}.sqlite3").write_bytes(b"seeded")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(migration, "bench_shape", bench_shape)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exited:
            migration.main(["--rows", "10", "--shapes", "web"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exited.value.code == 128 + signal.SIGTERM
    assert dropped == [True]
    assert list(tmp_path.iterdir()) == []


class FakeAdmin:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, *args):
        return [("fsync", "on"), ("max_wal_size", "1024")]
