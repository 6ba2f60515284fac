"""SQLite to PostgreSQL copy benchmark: migrate_from_sqlite against its peers, in one run.

Builds a source database of about N rows with seed_demo, then measures, one
after the other, against the same PostgreSQL:

- pgloader (Debian's package) loading the same file (its own schema);
- the floor: ``sqlite3 -csv`` export piped into ``psql \\copy``, per table,
  into the migrated schema (no conversion, no checks, no proof);
- dumpdata + loaddata (at a tenth of N: it is slow, and the output says so);
- migrate_from_sqlite (copy only);
- migrate_from_sqlite --verify (copy, then every row proven).

It prints wall time, rows/s and peak memory (largest process) for each, and
each time as a ratio of pgloader's. With --growth it also runs
migrate_from_sqlite at N/4 to show how its memory grows with the data.

Each fast tool runs ``--repeat`` times (default 5), each time into a fresh
target after a CHECKPOINT and with no autovacuum at work; the fastest run
counts, for every tool alike. The runs go in rounds (pgloader, the floor,
migrate_from_sqlite, migrate_from_sqlite --verify, then again): this
machine's speed drifts over minutes, and rounds share the drift out instead
of giving one tool all its runs in a fast or a slow spell.

Usage: python bench/migration.py [--rows 1000000] [--growth] [--repeat 5]
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BASE = ADMIN.rsplit("/", 1)[0]


def log(message):
    print(message, file=sys.stderr, flush=True)


def env_for(database_url, **extra):
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        SECRET_KEY="bench-" + "x" * 50,
        DATABASE_URL=database_url,
        REDIS_URL="redis://127.0.0.1:6379/14",
        ALLOWED_HOSTS="localhost",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def quiesce():
    """Start each measurement from the same state: dirty buffers written, no autovacuum still at work.

    Otherwise a tool pays for the checkpoint and the vacuums the previous tool's writes left behind.
    """
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()[0]
            if not busy:
                break
            time.sleep(0.2)
    time.sleep(1)


def measure(argv_list, env=None, shell=False):
    """Run a command (or a pipeline, with shell=True); return (seconds, peak RSS in MB of its largest process)."""
    quiesce()
    started = time.monotonic()
    process = subprocess.Popen(
        argv_list, env=env, cwd=ROOT, shell=shell, executable="/bin/bash" if shell else None, stdout=subprocess.DEVNULL
    )
    # wait4 gives the rusage of this child and of the children it waited for:
    # ru_maxrss is the largest of them (a pipeline's biggest member).
    _, status, usage = os.wait4(process.pid, 0)
    peak = usage.ru_maxrss
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {argv_list}")
    return seconds, peak / 1024


def in_rounds(repeat, tools):
    """{name: (fastest seconds, largest peak MB)} of ``repeat`` rounds, each running every tool once.

    ``tools``: {name: (fresh_target, run)}, ``run(target)`` giving seconds and peak MB.
    This machine's timings vary from one run to the next; every fast tool gets the same number of tries.
    """
    runs = {name: [] for name in tools}
    for round_ in range(repeat):
        for name, (fresh_target, run) in tools.items():
            runs[name].append(run(fresh_target()))
            log(f"round {round_ + 1}/{repeat}: {name}: {runs[name][-1][0]:.2f} s")
    return {
        name: (min(seconds for seconds, _ in measured), max(peak for _, peak in measured))
        for name, measured in runs.items()
    }


def recreate(name):
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{BASE}/{name}"


def migrated(name):
    url = recreate(name)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env_for(url), check=True)
    return url


def row_count(sqlite_path):
    import sqlite3

    with sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as db:
        tables = [
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        ]
        return sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables if t != "django_migrations")


def seed(path, rows):
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env_for(url), check=True)
    subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--rows", str(rows), "-v0"], cwd=ROOT, env=env_for(url), check=True
    )


def floor_command(sqlite_path, url):
    """sqlite3 -csv | psql \\copy per table, in the target's column order.

    bytea and interval are spelled for PostgreSQL; nothing else is converted.
    """
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name NOT IN "
            "('django_migrations', 'django_content_type', 'auth_permission') ORDER BY table_name, ordinal_position"
        ).fetchall()
    tables = {}
    for table, column, data_type in columns:
        expr = f'"{column}"'
        if data_type == "bytea":
            expr = f'CASE WHEN "{column}" IS NULL THEN NULL ELSE \'\\x\' || hex("{column}") END'
        elif data_type == "interval":
            expr = f"\"{column}\" || ' microseconds'"
        tables.setdefault(table, []).append((column, expr))
    steps = []
    for table, cols in tables.items():
        select = f'SELECT {", ".join(expr for _, expr in cols)} FROM "{table}"'
        copy = f'\\copy "{table}" ({", ".join(f'"{c}"' for c, _ in cols)}) FROM STDIN CSV'
        steps.append(
            f"sqlite3 -csv {shlex.quote(str(sqlite_path))} {shlex.quote(select)} "
            # The floor checks nothing: foreign-key triggers off (superuser), as a raw load would.
            f"| psql -q {shlex.quote(url)} -c 'SET session_replication_role = replica' -c {shlex.quote(copy)}"
        )
    return " && ".join(["set -e -o pipefail", *steps])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--growth", action="store_true", help="Also measure memory at N/4 rows.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs of each fast tool; the fastest counts (default 5).")
    args = parser.parse_args()
    for tool in ("pgloader", "sqlite3", "psql"):
        if not shutil.which(tool):
            raise SystemExit(
                f"{tool} is not installed: apt-get install {'postgresql-client' if tool == 'psql' else tool}"
            )

    work = Path(tempfile.mkdtemp(prefix="bench-migration-"))
    source = work / "source.sqlite3"
    log(f"seeding {args.rows} rows into {source}")
    seed(source, args.rows)
    rows = row_count(source)

    small = work / "small.sqlite3"
    tenth = max(args.rows // 10, 1000)
    seed(small, tenth)
    small_rows = row_count(small)
    dump = work / "dump.json"
    log(f"dumpdata + loaddata at {small_rows} rows")
    seconds_d, peak_d = measure(
        [sys.executable, "manage.py", "dumpdata", "--natural-foreign", "-e", "contenttypes", "-e", "auth.permission",
         "-o", str(dump)],
        env=env_for(f"sqlite:///{small}"),
    )  # fmt: skip
    url = migrated("bench_loaddata")
    seconds_l, peak_l = measure([sys.executable, "manage.py", "loaddata", str(dump)], env=env_for(url))
    slow = (seconds_d + seconds_l, max(peak_d, peak_l), small_rows, f"at {small_rows} rows")

    command = [sys.executable, "manage.py", "migrate_from_sqlite", "--source", str(source), "--no-input", "-v0"]
    fast = in_rounds(
        args.repeat,
        {
            "pgloader": (
                lambda: recreate("bench_pgloader"),
                lambda url: measure(["pgloader", "--quiet", str(source), url]),
            ),
            "floor (csv | \\copy)": (
                lambda: migrated("bench_floor"),
                lambda url: measure(floor_command(source, url), shell=True),
            ),
            "migrate_from_sqlite": (lambda: migrated("bench_copy"), lambda url: measure(command, env=env_for(url))),
            "migrate_from_sqlite --verify": (
                lambda: migrated("bench_copy"),
                lambda url: measure([*command, "--verify"], env=env_for(url)),
            ),
        },
    )
    results = {name: (*measured, rows, "") for name, measured in fast.items()}
    results["dumpdata + loaddata"] = slow

    if args.growth:
        # As many runs as at N, and the largest peak of them, as at N: a peak varies from run to run.
        quarter = work / "quarter.sqlite3"
        seed(quarter, args.rows // 4)
        command_q = [sys.executable, "manage.py", "migrate_from_sqlite", "--source", str(quarter), "--no-input", "-v0"]
        quarter_runs = in_rounds(
            args.repeat,
            {
                "migrate_from_sqlite at N/4": (
                    lambda: migrated("bench_copy"),
                    lambda url: measure(command_q, env=env_for(url)),
                )
            },
        )
        results["migrate_from_sqlite at N/4"] = (*quarter_runs["migrate_from_sqlite at N/4"], row_count(quarter), "")

    base_seconds = results["pgloader"][0]
    print(f"\n{'tool':<32}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}{'x pgloader':>12}")
    for name, (seconds, peak, count, note) in results.items():
        ratio = seconds / base_seconds * (rows / count)
        print(f"{name:<32}{count:>10}{seconds:>10.2f}{count / seconds:>12,.0f}{peak:>10.0f}{ratio:>12.2f} {note}")
    copy_ratio = results["migrate_from_sqlite"][0] / base_seconds
    verify_ratio = results["migrate_from_sqlite --verify"][0] / base_seconds
    peak = max(results["migrate_from_sqlite"][1], results["migrate_from_sqlite --verify"][1])
    print(f"\ncopy: {copy_ratio:.2f}x pgloader (target <= 0.6) {'OK' if copy_ratio <= 0.6 else 'MISSED'}")
    print(f"copy + verify: {verify_ratio:.2f}x pgloader (target <= 0.8) {'OK' if verify_ratio <= 0.8 else 'MISSED'}")
    print(f"largest process: {peak:.0f} MB (target < 200) {'OK' if peak < 200 else 'MISSED'}")
    if args.growth:
        small_peak = results["migrate_from_sqlite at N/4"][1]
        growth = results["migrate_from_sqlite"][1] / small_peak - 1
        print(f"memory growth N/4 -> N: {growth:.0%} (target < 25%) {'OK' if growth < 0.25 else 'MISSED'}")
    print("dumpdata + loaddata ran at a tenth of the rows; its ratio is scaled to N.")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
