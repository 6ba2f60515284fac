"""Where a copy's time goes, phase by phase, on one shape of data (bench/migration.py's shapes).

Runs ``migrate_from_sqlite --verify`` once in this process with every phase timed:
the source's integrity and foreign-key checks; reading and printing rows in SQLite;
PostgreSQL taking the COPY stream; the digests; index and constraint builds; the
foreign-key validation; the verification's reads on each side. Threads overlap, so
the phases are thread-seconds (what each side spent), next to the wall time of the
copy and of the verification: a phase's share says where to look, not what the
wall time would lose without it.

Usage: python bench/profile_copy.py --shape keys [--rows 100000] [--workers 2]
"""

import argparse
import collections
import contextlib
import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.migration import SHAPES, drop_made, env_for, migrated, row_count, seed  # noqa: E402

SPENT = collections.defaultdict(float)
LOCK = threading.Lock()


def _add(phase, seconds):
    with LOCK:
        SPENT[phase] += seconds


def _around(owner, name, done):
    """Replace ``owner.name`` by a wrapper that calls ``done(args, kwargs, started, ended)`` after each call."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            done(args, kwargs, started, time.monotonic())

    setattr(owner, name, wrapper)


def timed(owner, name, phase):
    """Count the time spent in ``owner.name`` as ``phase``."""
    _around(owner, name, lambda args, kwargs, started, ended: _add(phase, ended - started))


def timed_generator(owner, name, phase):
    """Count the time spent producing each item of the generator ``owner.name`` as ``phase``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        iterator = iter(function(*args, **kwargs))
        while True:
            started = time.monotonic()
            try:
                item = next(iterator)
            except StopIteration:
                _add(phase, time.monotonic() - started)
                return
            _add(phase, time.monotonic() - started)
            yield item

    setattr(owner, name, wrapper)


EVENTS = []  # (thread, what, table, start, end): the copy's timeline, with --timeline


def traced(owner, name, what, table_of):
    """Record each call of ``owner.name`` on the timeline: which thread, when, for which table."""

    def record(args, kwargs, started, ended):
        EVENTS.append((threading.current_thread().name, what, table_of(args, kwargs), started, ended))

    _around(owner, name, record)


def instrument():
    from deploy.sqlite import chunks, copy, preflight, verify

    traced(copy.Copier, "_copy_or_scan", "copy", lambda a, k: a[4].table)
    traced(copy, "recreate_missing", "build", lambda a, k: k.get("only_table") or "(all, foreign keys)")
    traced(copy, "integrity_problems", "source check", lambda a, k: "")
    traced(copy, "validate_foreign_keys", "validate", lambda a, k: "")

    timed(copy, "integrity_problems", "source: integrity + foreign-key checks (background)")
    timed(preflight, "value_problems", "source: every value checked (a problem was found)")
    timed(copy.Copier, "_copy_fast", "copy: a table's rows, COPY included (total)")
    timed_generator(chunks.TableReader, "pieces", "source: read + print rows (SQLite)")
    timed(chunks.Digests, "add", "digests of the pieces (Python)")
    timed(copy.Copier, "_closer_look", "source: rows set aside, judged")
    timed(copy._Pipe, "write", "copy: reader blocked on the COPY (PostgreSQL slower)")
    original_run = copy._Pipe._run

    def pipe_run(self):
        write = self.copy.write

        def timed_write(data):
            started = time.monotonic()
            try:
                return write(data)
            finally:
                _add("target: COPY stream taken (PostgreSQL)", time.monotonic() - started)

        self.copy.write = timed_write
        return original_run(self)

    copy._Pipe._run = pipe_run
    timed(copy, "_check_count", "target: row count check")
    timed(copy, "json_digests", "target: JSON digests after the copy")
    timed(copy.Copier, "_build", "target: index + constraint builds (per worker)")
    timed(copy, "recreate_missing", "target: constraints re-created (within builds, and after)")
    timed(copy, "validate_foreign_keys", "target: foreign keys validated")
    timed(copy, "start_source_check", "source check started")
    timed(verify._Verifier, "chunk", "verify: target digests of chunks")
    timed(verify._Verifier, "source_chunks", "verify: source read again")
    timed(verify._Verifier, "orphan_check", "verify: orphan queries")
    timed(verify, "compare_table", "verify: compared by value")
    timed(verify, "_count", "verify: counts")
    timed(verify, "check_sequences", "verify: sequences")


class BackendCPU:
    """CPU seconds of the PostgreSQL backends serving ``database`` (polled from /proc: same machine only)."""

    def __init__(self, database):
        self.database, self.seen, self.done = database, {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        from bench.migration import admin

        with admin() as conn:
            while not self.done.is_set():
                pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database]).fetchall()
                for (pid,) in pids:
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                        self.seen[pid] = (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
                time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    @property
    def seconds(self):
        return sum(self.seen.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeline", action="store_true", help="Also print when each table was copied and built.")
    parser.add_argument("--keep", metavar="PATH", help="Use (or keep) this source file instead of a new one.")
    args = parser.parse_args()
    if args.rows < 1:
        parser.error(f"--rows must be at least 1 (got {args.rows})")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1 (got {args.workers})")
    source = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="profile-copy-")) / "source.sqlite3"
    try:
        profile(args, source)
    finally:
        # Nothing left behind, even on a failure: the new source (not --keep's) and the target database.
        if not args.keep:
            with contextlib.suppress(OSError):
                source.unlink(missing_ok=True)
                source.parent.rmdir()
        drop_made()


def profile(args, source):
    if not source.exists():
        seed(source, args.rows, args.shape)
    url = migrated("profile")
    os.environ.update(env_for(url))
    import django

    django.setup()
    from django.core.management import call_command

    instrument()
    import resource

    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = __import__("io").StringIO()
    with BackendCPU(url.rsplit("/", 1)[1]) as backends:
        call_command(
            "migrate_from_sqlite", source=str(source), verify=True, interactive=False, json=True,
            workers=args.workers, stdout=out, verbosity=0,
        )  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    own = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    import json

    report = json.loads(out.getvalue())
    print(f"## {args.shape}: {row_count(source)} rows, workers={args.workers}, load {os.getloadavg()[0]:.1f}")
    print(f"wall {wall:.2f} s: copy {report['copy_seconds']:.2f} s, verify {report['verify_seconds']:.2f} s")
    print(f"CPU: this process {own:.2f} s (SQLite, Python), PostgreSQL's backends {backends.seconds:.2f} s (polled)")
    by_value = {label: t["compared_by_value"] for label, t in report["tables"].items() if t.get("compared_by_value")}
    print(f"verified: {report['verified']}; chunks compared by value: {by_value or 'none'}")
    if args.timeline and EVENTS:
        zero = min(start for *_, start, _ in EVENTS)
        print("timeline (seconds from the first event):")
        for thread, what, table, start, end in sorted(EVENTS, key=lambda e: e[3]):
            print(f"  {start - zero:7.2f} {end - zero:7.2f}  {thread:<16} {what:<13} {table}")
    total = sum(SPENT.values())
    for phase, seconds in sorted(SPENT.items(), key=lambda item: -item[1]):
        print(f"  {phase:<56}{seconds:>8.2f} s{seconds / total:>7.0%}")


if __name__ == "__main__":
    main()
