"""SQLite to PostgreSQL copy benchmark: migrate_from_sqlite against its peers, on several shapes of data.

For each shape (``--shapes``), builds a source database of about N rows, then
measures, one after the other, against the same PostgreSQL:

- pgloader (Debian's package) loading the same file (its own schema);
- the floor: ``sqlite3 -csv`` export piped into ``psql \\copy``, per table,
  into the migrated schema (no conversion, no checks, no proof);
- dumpdata + loaddata (at a tenth of N: it is slow, and the output says so);
- migrate_from_sqlite (copy only);
- migrate_from_sqlite --verify (copy, then every row proven).

It prints wall time, rows/s and peak memory (largest process) for each, and
each time as a ratio of pgloader's. With --growth it also runs
migrate_from_sqlite at N/4 to show how its memory grows with the data.

The shapes: ``sample`` (the sample app, filled by seed_demo); ``wide`` (a few
tables of long text and JSON); ``web`` (twelve small tables, 16 foreign keys,
unique constraints); ``keys`` (a text and a UUID primary key). The last three
are models of ``bench.shapes``, which only ``bench.settings`` installs, filled
by its ``seed_shape`` command. dumpdata + loaddata run on the sample app only.

Each fast tool runs ``--repeat`` times (default 5), each time into a fresh
target after a CHECKPOINT and with no autovacuum at work; the fastest run
counts, for every tool alike. The runs go in rounds (pgloader, the floor,
migrate_from_sqlite, migrate_from_sqlite --verify, then again): this
machine's speed drifts over minutes, and rounds share the drift out instead
of giving one tool all its runs in a fast or a slow spell.

Databases are named ``$BENCH_DB_PREFIX_*`` (default ``bench``).

With ``--baseline DIR`` (another checkout of the project, say the code before a
change) its copy and proven copy run in the same rounds, so that the two are
compared under the same drift; ``--sources DIR`` keeps the seeded files there
and uses them again.

Usage: python bench/migration.py [--rows 1000000] [--shapes sample,wide,web,keys] [--growth] [--repeat 5]
       [--sources DIR] [--baseline DIR]
"""

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BASE = ADMIN.rsplit("/", 1)[0]
PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench")
SHAPES = ("sample", "wide", "web", "keys")
# pgloader reads 100,000 rows ahead by default: on long rows its heap (SBCL's) is exhausted and it dies.
PGLOADER_OPTIONS = {"wide": ["--with", "prefetch rows = 10000"]}


def log(message):
    print(message, file=sys.stderr, flush=True)


def env_for(database_url, **extra):
    env = dict(os.environ)
    # Python's bytecode compiled once, as an installed program runs (`make venv` compiles the venv's, as pip
    # does at install; the project's is written by the first run). With PYTHONDONTWRITEBYTECODE set, as on
    # this machine, every manage.py compiled Django and the project again: about 0.7 s of CPU per run, a cost
    # of this machine's set-up that pgloader (a compiled program) never pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
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
    with admin() as conn:
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


def measure(argv_list, env=None, shell=False, cwd=ROOT):
    """Run a command (or a pipeline, with shell=True); return (seconds, peak RSS in MB of its largest process)."""
    quiesce()
    started = time.monotonic()
    process = subprocess.Popen(
        argv_list, env=env, cwd=cwd, shell=shell, executable="/bin/bash" if shell else None, stdout=subprocess.DEVNULL
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


def admin():
    """An autocommit connection to BENCH_PG_ADMIN_URL's server; one that cannot be made stops the run, named."""
    try:
        return psycopg.connect(ADMIN, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is not reachable at {ADMIN} (BENCH_PG_ADMIN_URL): {exc}".rstrip()) from None


MADE = set()  # the databases this run made: dropped when it ends (drop_made)


def drop_made():
    """Drop every database this run made (its targets and template), so a run leaves no bench_* behind."""
    if not MADE:
        return
    with admin() as conn:
        for name in sorted(MADE):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    MADE.clear()
    MIGRATED.clear()


def recreate(name):
    name = f"{PREFIX}_{name}"
    MADE.add(name)
    with admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{BASE}/{name}"


def migrated(name):
    """A fresh database as ``migrate`` leaves it: a copy of one migrated once per run (much faster than migrate)."""
    template = f"{PREFIX}_migrated"
    with admin() as conn:
        made = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [template]).fetchone()
    if not made or template not in MIGRATED:
        url = recreate("migrated")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env_for(url), check=True)
        MIGRATED.add(template)
    name = f"{PREFIX}_{name}"
    MADE.add(name)
    with admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return f"{BASE}/{name}"


MIGRATED = set()  # the template made by this run (one left by an older run may lack new migrations)


def row_count(sqlite_path):
    import sqlite3

    with sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as db:
        tables = [
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        ]
        return sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables if t != "django_migrations")


def seed(path, rows, shape="sample"):
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env_for(url), check=True)
    seeder = ["seed_demo"] if shape == "sample" else ["seed_shape", "--shape", shape]
    subprocess.run(
        [sys.executable, "manage.py", *seeder, "--rows", str(rows), "-v0"], cwd=ROOT, env=env_for(url), check=True
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


def dump_and_load(work, rows):
    """dumpdata + loaddata of the sample app at a tenth of ``rows``: (seconds, peak MB, rows, note)."""
    small = work / "small.sqlite3"
    tenth = max(rows // 10, 1000)
    seed(small, tenth)
    small_rows = row_count(small)
    dump = work / "dump.json"
    log(f"dumpdata + loaddata at {small_rows} rows")
    seconds_d, peak_d = measure(
        [sys.executable, "manage.py", "dumpdata", "--natural-foreign", "-e", "contenttypes", "-e", "auth.permission",
         "-o", str(dump)],
        env=env_for(f"sqlite:///{small}"),
    )  # fmt: skip
    url = migrated("loaddata")
    seconds_l, peak_l = measure([sys.executable, "manage.py", "loaddata", str(dump)], env=env_for(url))
    return seconds_d + seconds_l, max(peak_d, peak_l), small_rows, f"at {small_rows} rows"


def copy_command(source, root=ROOT):
    manage = str(root / "manage.py")
    return [sys.executable, manage, "migrate_from_sqlite", "--source", str(source), "--no-input", "-v0"]


def estimate(source):
    """(--plan's estimate, the copy's own seconds) for ``source``: deploy.sqlite.estimate.MEASURED checked."""
    import json

    url = migrated("estimate")
    planned = subprocess.run(
        [*copy_command(source), "--plan", "--json"], cwd=ROOT, env=env_for(url), check=True, capture_output=True
    )
    copied = subprocess.run(
        [*copy_command(source), "--json"], cwd=ROOT, env=env_for(url), check=True, capture_output=True
    )
    return json.loads(planned.stdout)["estimated_seconds"], json.loads(copied.stdout)["copy_seconds"]


def bench_shape(shape, work, args):
    """{tool: (seconds, peak MB, rows, note)} for one shape of data."""
    kept = args.sources and (args.sources / f"{shape}.sqlite3")
    source = kept or work / f"{shape}.sqlite3"
    if not source.exists():
        log(f"{shape}: seeding {args.rows} rows into {source}")
        seed(source, args.rows, shape)
    rows = row_count(source)
    command = copy_command(source)
    baseline = {}
    if args.baseline:
        # The same copy by another checkout of the project (the code before a change), in the same rounds.
        base = copy_command(source, args.baseline)
        env = {"PYTHONPATH": str(args.baseline)}
        baseline = {
            "baseline: migrate_from_sqlite": (
                lambda: migrated("copy"),
                lambda url: measure(base, env=env_for(url, **env), cwd=args.baseline),
            ),
            "baseline: --verify": (
                lambda: migrated("copy"),
                lambda url: measure([*base, "--verify"], env=env_for(url, **env), cwd=args.baseline),
            ),
        }
    fast = in_rounds(
        args.repeat,
        {
            "pgloader": (
                lambda: recreate("pgloader"),
                lambda url: measure(["pgloader", "--quiet", *PGLOADER_OPTIONS.get(shape, []), str(source), url]),
            ),
            "floor (csv | \\copy)": (
                lambda: migrated("floor"),
                lambda url: measure(floor_command(source, url), shell=True),
            ),
            "migrate_from_sqlite": (lambda: migrated("copy"), lambda url: measure(command, env=env_for(url))),
            "migrate_from_sqlite --verify": (
                lambda: migrated("copy"),
                lambda url: measure([*command, "--verify"], env=env_for(url)),
            ),
            **baseline,
        },
    )
    results = {name: (*measured, rows, "") for name, measured in fast.items()}
    results["estimate"] = estimate(source)
    if shape == "sample" and not args.no_loaddata:
        results["dumpdata + loaddata"] = dump_and_load(work, args.rows)
    if args.growth:
        # As many runs as at N, and the largest peak of them, as at N: a peak varies from run to run.
        quarter = work / f"{shape}-quarter.sqlite3"
        seed(quarter, args.rows // 4, shape)
        quarter_runs = in_rounds(
            args.repeat,
            {
                "migrate_from_sqlite at N/4": (
                    lambda: migrated("copy"),
                    lambda url: measure(copy_command(quarter), env=env_for(url)),
                )
            },
        )
        results["migrate_from_sqlite at N/4"] = (*quarter_runs["migrate_from_sqlite at N/4"], row_count(quarter), "")
        quarter.unlink()
    if not kept:
        source.unlink()
    return results


def print_shape(shape, results):
    """The shape's table, and its figures against the targets: {figure: value}."""
    rows = results["migrate_from_sqlite"][2]
    base_seconds = results["pgloader"][0]
    estimated, copied = results.pop("estimate")
    print(f"\n## {shape} ({rows} rows)")
    print(f"{'tool':<32}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}{'x pgloader':>12}")
    for name, (seconds, peak, count, note) in results.items():
        ratio = seconds / base_seconds * (rows / count)
        print(f"{name:<32}{count:>10}{seconds:>10.2f}{count / seconds:>12,.0f}{peak:>10.0f}{ratio:>12.2f} {note}")
    print(f"--plan estimated {estimated:.1f} s; that copy's own time (copy_seconds): {copied:.1f} s")
    sys.stdout.flush()
    figures = {
        "copy": results["migrate_from_sqlite"][0] / base_seconds,
        "verify": results["migrate_from_sqlite --verify"][0] / base_seconds,
        "peak": max(results["migrate_from_sqlite"][1], results["migrate_from_sqlite --verify"][1]),
    }
    if "migrate_from_sqlite at N/4" in results:
        figures["growth"] = results["migrate_from_sqlite"][1] / results["migrate_from_sqlite at N/4"][1] - 1
    return figures


# The targets: (figure, limit, how it prints).
TARGETS = (
    ("copy", 0.5, "copy x pgloader", "{:.2f}"),
    ("verify", 0.6, "copy + verify x pgloader", "{:.2f}"),
    ("peak", 200, "largest process MB", "{:.0f}"),
    ("growth", 0.25, "memory growth N/4 -> N", "{:.0%}"),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows of each shape (default 1000000).")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"Comma-separated, of {', '.join(SHAPES)}.")
    parser.add_argument("--growth", action="store_true", help="Also measure memory at N/4 rows.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs of each fast tool; the fastest counts (default 5).")
    parser.add_argument("--no-loaddata", action="store_true", help="Leave dumpdata + loaddata out (slow).")
    parser.add_argument(
        "--sources", type=Path, help="Keep each shape's source as DIR/SHAPE.sqlite3, and use it if it is there."
    )
    parser.add_argument(
        "--baseline", type=Path, help="Also time the copy of this other checkout of the project, in the same rounds."
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1 (got {args.rows})")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not shapes:
        parser.error(f"--shapes names none; choose among {', '.join(SHAPES)}")
    if unknown := [s for s in shapes if s not in SHAPES]:
        parser.error(f"unknown shape(s): {', '.join(unknown)}; choose among {', '.join(SHAPES)}")
    for tool in ("pgloader", "sqlite3", "psql"):
        if not shutil.which(tool):
            raise SystemExit(
                f"{tool} is not installed: apt-get install {'postgresql-client' if tool == 'psql' else tool}"
            )

    with admin() as conn:
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'max_wal_size')"))
    # A test server may run without fsync (.ci/run): every tool's commits and checkpoints are cheaper there.
    print(f"PostgreSQL: fsync={settings['fsync']}, max_wal_size={settings['max_wal_size']} MB")
    if args.sources:
        args.sources.mkdir(parents=True, exist_ok=True)
    # A SIGTERM (timeout, a closed session) ends the run through its clean-up, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="bench-migration-"))
    try:
        # Each shape's table as soon as it is measured: a run cut short still gives what it measured.
        figures = {shape: print_shape(shape, bench_shape(shape, work, args)) for shape in shapes}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_made()
    print(f"\n{'target':<28}{'limit':>8}" + "".join(f"{shape:>10}" for shape in shapes))
    for key, limit, title, fmt in TARGETS:
        if not all(key in f for f in figures.values()):
            continue
        cells = "".join(f"{fmt.format(f[key]) + ('' if f[key] <= limit else '!'):>10}" for f in figures.values())
        print(f"{title:<28}{fmt.format(limit):>8}{cells}")
    print("('!': target missed.)")
    if "sample" in shapes and not args.no_loaddata:
        print("dumpdata + loaddata ran at a tenth of the rows; its ratio is scaled to N.")


if __name__ == "__main__":
    main()
