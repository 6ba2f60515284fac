"""Copy every planned table from the SQLite source into PostgreSQL.

The order of work, and why:

1. Capture the target tables' secondary indexes, unique and foreign-key
   constraints (``pg_get_indexdef``, ``pg_get_constraintdef``), save them as a
   checkpoint and drop them, in one transaction. Loading into bare tables,
   then re-creating them, checks each constraint in one set-based pass
   instead of one deferred trigger per row.
2. Workers (threads: SQLite and psycopg release the GIL while they work)
   each open one transaction on the target and take tables, largest first:
   TRUNCATE, ``COPY ... FROM STDIN (FORMAT csv)`` fed with chunks whose text
   SQLite builds itself. A worker out of tables helps read a large table
   another is still copying (see :class:`_Share`); then each re-builds its
   tables' indexes and unique constraints and marks them done. Meanwhile
   another thread checks the source's integrity and looks for orphan rows
   (see :func:`~deploy.sqlite.preflight.integrity_problems`).
3. The workers commit only when every check passed: the integrity checks,
   every value of every table (the read flags what the fast path cannot
   carry, a NUL included; PostgreSQL rejects the rest), the rows each COPY
   received against the rows read and the source's count, every index. If
   anything failed, every transaction is rolled back, the dropped
   definitions are put back and the full preflight names every problem: the
   target is as it was.
4. Re-add the foreign keys NOT VALID and move sequences past the largest
   key (one transaction), validate the keys (tables in parallel), and
   remove the checkpoint.

Whatever stops it, :func:`settle` says what is left and makes it one of two
states: as it was (nothing committed: the definitions are put back, the
checkpoint removed), or resumable (tables committed: they are marked done in
the transaction that loads them, with the digests verification needs, and
``--resume`` finishes). A copy killed at any moment is the second kind, or
the first with a checkpoint that ``--resume`` finishes. Errors are caught as
Django's and as psycopg's own (the raw cursor's COPY raises those).
"""

import contextlib
import csv
import queue
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field

import psycopg
from django.db import DatabaseError, IntegrityError, connections, models, transaction

from deploy.sqlite import state
from deploy.sqlite.chunks import Chunk, Digests, TableReader, json_digest_sql, open_reader, rowid_column
from deploy.sqlite.preflight import (
    Problem,
    integrity_problems,
    read_by_index,
    target_column_types,
    value_problems,
)
from deploy.sqlite.sql import quote, range_sql, sql_literal
from deploy.sqlite.workers import Work, background, run_workers, running

# What the target may raise: Django's wrapped errors, and psycopg's own from the raw cursor (COPY).
TARGET_ERRORS = (DatabaseError, psycopg.Error)

# Page cache of the full integrity check, whose index checks look rows up at random: a larger
# cache saves most of their reads. It runs only when a copy has failed, with the workers done.
CHECK_CACHE_KB = 32_000


# What a failed copy left in the target (see :func:`settle`).
AS_BEFORE = "as before"  # nothing written, every dropped index and constraint back, no checkpoint
RESUMABLE = "resumable"  # tables committed and recorded: --resume finishes
UNKNOWN = "unknown"  # the target could not be read: its checkpoint (if any) says at the next run
FINISHED = "finished"  # interrupted as the copy ended: it is complete, committed, no checkpoint left


class CopyError(Exception):
    """The copy stopped; ``outcome`` says what it left in the target (AS_BEFORE, RESUMABLE or UNKNOWN).

    None: it refused before changing anything, and the message says what to do.
    """

    def __init__(self, message, outcome=UNKNOWN, interrupted=False):
        super().__init__(message)
        self.outcome, self.interrupted = outcome, interrupted


def error_text(exc):
    """The first line of a database error, with PostgreSQL's detail: one line, no traceback."""
    diag = getattr(exc, "diag", None) or getattr(getattr(exc, "__cause__", None), "diag", None)
    message = (getattr(diag, "message_primary", None) or str(exc)).strip()
    message = message.splitlines()[0] if message else type(exc).__name__
    detail = getattr(diag, "message_detail", None)
    return f"{message} ({detail.strip()})" if detail else message


def interruption(exc):
    """Whether ``exc`` is a Ctrl-C, or an error raised while one was being handled.

    A Ctrl-C that lands inside psycopg's own code (say, as a COMMIT is sent) may leave
    the connection busy; Django's atomic block then fails to restore autocommit, and
    that error, not the KeyboardInterrupt, is what comes out: it is still Ctrl-C.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def refuses_data(exc):
    """Whether PostgreSQL refused the data (a value, a constraint, a trigger), not the session.

    SQLSTATE classes 22 (data exception), 23 (integrity constraint) and P0 (raised
    by PL/pgSQL): the source is named, row by row. Anything else (a full disk, a
    lost connection, an administrator's command) stops the copy as such.
    """
    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "__cause__", None), "sqlstate", None)
    return bool(sqlstate) and sqlstate[:2] in ("22", "23", "P0")


def copy_context(exc):
    """(line, column, value) of the COPY line PostgreSQL refused, from its CONTEXT; Nones if it says none."""
    diag = getattr(exc, "diag", None) or getattr(getattr(exc, "__cause__", None), "diag", None)
    context = getattr(diag, "context", None) or ""
    match = re.search(r'COPY [^,]+, line (\d+)(?:, column ([^:]+))?(?:: "(.*)")?', context)
    if not match:
        return None, None, None
    return int(match.group(1)), match.group(2), match.group(3)


class PreflightFailed(Exception):
    """The source has problems: every transaction was rolled back."""

    def __init__(self, problems, resumed=False):
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems
        self.resumed = resumed


@dataclass
class TableResult:
    label: str
    table: str
    rows: int
    seconds: float
    path: str  # "fast", "general" or "resumed"


@dataclass
class CopyReport:
    tables: list = field(default_factory=list)
    seconds: float = 0.0
    resumed: bool = False
    chunks: dict = field(default_factory=dict)  # table -> [Chunk], for verification
    validated: set = field(default_factory=set)  # (table name, constraint name) of the foreign keys this run validated

    @property
    def rows(self):
        return sum(t.rows for t in self.tables)


# --- constraints -----------------------------------------------------------


def capture_definitions(cursor, tables, empty=()):
    """Secondary indexes, unique and foreign-key constraints touching ``tables``.

    Of the tables in ``empty`` (no rows to load), only the foreign keys: an index built on no
    rows costs its drop and its build for nothing, while every foreign key between the tables
    must go for each to be emptied (TRUNCATE) on its own.
    """
    empty = set(empty)
    oids = [quote(t) for t in tables]
    loaded = [quote(t) for t in tables if t not in empty]
    cursor.execute(
        """
        SELECT c.conname, c.conrelid::regclass::text, r.relname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
        WHERE (c.contype = 'f' AND (c.conrelid = ANY(%(oids)s::regclass[]) OR c.confrelid = ANY(%(oids)s::regclass[])))
           OR (c.contype = 'u' AND c.conrelid = ANY(%(loaded)s::regclass[]))
        ORDER BY c.contype DESC, c.conname
        """,
        {"oids": oids, "loaded": loaded},
    )
    constraints = [
        {"name": name, "table": table, "relname": relname, "type": contype, "definition": definition}
        for name, table, relname, contype, definition in cursor.fetchall()
    ]
    cursor.execute(
        """
        SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, r.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class r ON r.oid = i.indrelid
        WHERE i.indrelid = ANY(%(loaded)s::regclass[])
          AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ORDER BY 1
        """,
        {"loaded": loaded},
    )
    indexes = [
        {"name": name, "table": table, "relname": relname, "definition": d}
        for name, table, relname, d in cursor.fetchall()
    ]
    return {"constraints": constraints, "indexes": indexes}


def drop_definitions(cursor, definitions):
    # Foreign keys first: they depend on the unique constraints they reference.
    for c in sorted(definitions["constraints"], key=lambda c: c["type"] != "f"):
        cursor.execute(f"ALTER TABLE {c['table']} DROP CONSTRAINT IF EXISTS {quote(c['name'])}")
    for index in definitions["indexes"]:
        cursor.execute(f"DROP INDEX IF EXISTS {index['name']}")


def _existing(cursor):
    """Index names, and (table, constraint name) pairs: constraint names are only unique per table."""
    cursor.execute("SELECT indexrelid::regclass::text FROM pg_index")
    indexes = {row[0] for row in cursor.fetchall()}
    cursor.execute("SELECT conrelid::regclass::text, conname FROM pg_constraint")
    return indexes, {tuple(row) for row in cursor.fetchall()}


def recreate_missing(cursor, definitions, only_table=None, foreign_keys=True, existing=None, empty=()):
    """Put back what a copy dropped and is not there yet: indexes, unique constraints, then foreign keys.

    Indexes and unique constraints are checked against every row as they are
    created. ``foreign_keys`` is True (add and check them), False (leave
    them), or "later": add them NOT VALID, for :func:`validate_foreign_keys`,
    except those of the tables in ``empty``, added and checked at once (a check
    of no rows costs nothing; a validation of its own, a lock and a catalog change).
    ``existing``: what :func:`_existing` said, when the caller asked it once for several tables.
    """
    existing_indexes, existing_constraints = existing or _existing(cursor)
    for index in definitions["indexes"]:
        if only_table in (None, index.get("relname")) and index["name"] not in existing_indexes:
            cursor.execute(index["definition"])
    for c in sorted(definitions["constraints"], key=lambda c: c["type"] == "f"):
        if (c["table"], c["name"]) in existing_constraints or (c["type"] == "f" and not foreign_keys):
            continue
        if only_table not in (None, c.get("relname")):
            continue
        later = " NOT VALID" if c["type"] == "f" and foreign_keys == "later" and c.get("relname") not in empty else ""
        try:
            with transaction.atomic(using=cursor.db.alias):
                cursor.execute(f"ALTER TABLE {c['table']} ADD CONSTRAINT {quote(c['name'])} {c['definition']}{later}")
        except IntegrityError as exc:  # the rows break it; any other error (a lost connection) is no verdict
            raise ConstraintFailed(c, exc) from None


def validate_foreign_keys(target_alias, definitions, workers=2):
    """Check every row against each foreign key added NOT VALID, tables in parallel.

    Validating takes a lock that two validations of one table cannot share, so
    each worker takes a table and validates its keys one after the other.
    Returns the (table name, constraint name) pairs it validated.
    """
    ours = {(c["table"], c["name"]): c.get("relname", c["table"]) for c in definitions["constraints"]}
    with connections[target_alias].cursor() as cursor:
        pending = {}
        for table, name in unvalidated_keys(cursor, definitions):
            pending.setdefault(table, []).append(name)
    if not pending:
        return set()
    work = Work(pending.items())

    def worker():
        with connections[target_alias].cursor() as cursor:
            for table, constraint_names in work:
                for name in constraint_names:
                    try:
                        cursor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {quote(name)}")
                    except IntegrityError as exc:
                        raise ConstraintFailed({"name": name, "table": table}, exc) from None

    run_workers(worker, min(workers, len(pending)), "validate", work, aliases=[target_alias])
    return {(ours[(table, name)], name) for table, names in pending.items() for name in names}


def unvalidated_keys(cursor, definitions):
    """(table, constraint) of the foreign keys of ``definitions`` that are NOT VALID in the target, in order."""
    ours = {(c["table"], c["name"]) for c in definitions["constraints"] if c["type"] == "f"}
    cursor.execute(
        "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated "
        "ORDER BY 1, 2"
    )
    return [(table, name) for table, name in cursor.fetchall() if (table, name) in ours]


# A unique or primary-key constraint as pg_get_constraintdef prints it: its columns.
UNIQUE_COLUMNS = re.compile(r"^(?:UNIQUE|PRIMARY KEY)(?: NULLS NOT DISTINCT)? \(([^()]+)\)")
MAX_SHARING_ROWS = 20


class ConstraintFailed(Exception):
    def __init__(self, constraint, exc):
        self.constraint = constraint
        detail = getattr(getattr(exc, "__cause__", None), "diag", None)
        detail = getattr(detail, "message_detail", None) or ""
        message = str(exc).strip().splitlines()[0]
        detail = f" ({detail})" if detail else ""
        super().__init__(f"constraint {constraint['name']} does not hold: {message}{detail}")


# --- the copy ----------------------------------------------------------------


class _Pipe:
    """Feeds a COPY from a second thread, so SQLite builds the next chunk while PostgreSQL takes this one.

    At most two chunks wait in between: memory stays bounded whichever side is faster.
    """

    def __init__(self, copy):
        self.copy, self.error = copy, None
        self.queue = queue.Queue(maxsize=2)
        # The key range of each piece, in the order sent: a refused line is found from them (see _locate).
        self.sent = []
        self.order = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="copy-pipe", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _run(self):
        try:
            while (data := self.queue.get()) is not None:
                self.copy.write(memoryview(data))
        except BaseException as exc:
            self.error = exc
            while self.queue.get() is not None:  # let the reader finish; it raises at its next write
                pass

    def write(self, data, piece=None):
        if self.error:
            raise self.error
        with self.order:  # the owner and a helper may both write: keep the record in the order sent
            if piece is not None:
                self.sent.append((piece.lo, piece.hi))
            self.queue.put(data)

    def __exit__(self, *exc_info):
        self.queue.put(None)
        self.thread.join()
        if self.error and exc_info[0] is None:
            raise self.error


class _Share:
    """A table one worker is copying whose rows a worker with nothing left to do may help read.

    The helper asks; at its next chunk boundary the owner splits the keys it has
    not read yet in two, keeps the lower half and hands the upper half over. The
    helper reads it with its own SQLite connection into the owner's COPY, then may
    ask again: the owner splits what it has left once more, until too little is
    left to share. So the largest table does not keep one worker busy while the
    other waits, neither at the first split nor at the end of its halves.
    """

    def __init__(self, plan, pipe, digests, last_key, batch_size):
        self.plan, self.pipe, self.digests = plan, pipe, digests
        self.last_key, self.batch_size = last_key, batch_size
        self.cond = threading.Condition()
        self.state = "open"  # then "asked" (and "open" again after a split), "declined" or "closed"
        self.limit = None  # the largest key the owner still reads (None: to the end)
        self.given = None  # the keys (after, up to) the owner just handed to the helper that asked
        self.helping = 0  # parts handed over and not read yet
        self.rows, self.error, self.abandoned = 0, None, False

    def ask(self):
        """The helper: the keys (after, up to; None: to the end) it reads, or None if none (waits for the owner)."""
        with self.cond:
            if self.state != "open":
                return None
            self.state = "asked"
            self.cond.wait_for(lambda: self.state != "asked")
            given, self.given = self.given, None
            return given

    def bound(self, lo):
        """The owner, before each chunk: the largest key it still reads (None: to the end)."""
        with self.cond:
            if self.state == "asked" and lo is not None:
                top = self.last_key if self.limit is None else self.limit
                if top - lo > 2 * self.batch_size:  # worth sharing
                    middle = lo + (top - lo) // 2
                    self.given, self.limit = (middle, self.limit), middle
                    self.helping += 1
                    self.state = "open"  # the helper may ask again once it has read this part
                else:
                    self.state = "declined"
                self.cond.notify_all()
            return self.limit

    def done(self, rows, error=None):
        """The helper, after reading its part (or failing): its rows, or what it raised."""
        with self.cond:
            self.rows += rows
            if error is not None and self.error is None:
                self.error = error
            self.helping -= 1
            self.cond.notify_all()

    def finish(self, abandon=False):
        """The owner, done (or failing): no more sharing; wait for the helpers. The helpers' rows."""
        with self.cond:
            self.abandoned = abandon
            if self.state in ("open", "asked"):
                self.state = "closed"
                self.cond.notify_all()
            self.cond.wait_for(lambda: self.helping == 0)  # a helper stops at its next chunk if abandoned
            if self.error is not None and not abandon:
                raise self.error
            return self.rows


class _Switch(Exception):
    """Stop copying this table: a problem was found, here or elsewhere."""


class _Rollback(Exception):
    pass


def start_source_check(path, plans):
    """The source's integrity and foreign-key checks in a background thread: a future of (problems, damaged).

    The command starts it first thing, so that it runs while everything else gets ready.
    The copy commits only once it passed; if anything was found, the full preflight
    (with the full ``PRAGMA integrity_check``) names every problem.
    """

    def check():
        raw = open_reader(path, text=True)  # its page cache stays at SQLite's default: the copy's memory is bounded
        try:
            existing = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            # Read through an index: a table of a type without a fast path (the ORM reads it in key
            # order), and integer keys that are not the rowid; text and UUID keys are read by rowid.
            indexed = [
                p.table
                for p in plans
                if p.table in existing and read_by_index(raw, p.table) and not (p.fast and rowid_column(raw, p))
            ]
            return integrity_problems(raw, indexed=indexed)
        finally:
            raw.close()

    return background(check, "source-check")


def full_integrity_problems(path):
    """What the full ``PRAGMA integrity_check`` finds beyond the copy's quick check: named in any failure report."""
    raw = open_reader(path, text=True)
    raw.execute(f"PRAGMA cache_size = -{CHECK_CACHE_KB}")
    try:
        return integrity_problems(raw, foreign_keys=False)[0]
    finally:
        raw.close()


def source_identity(source):
    return state.source_identity(source.path)


class Copier:
    """Workers that copy tables into uncommitted transactions, and commit them together when all is well."""

    def __init__(self, source, target_alias, run, batch_size, workers, progress, source_check, digests):
        self.source, self.alias, self.run, self.source_check = source, target_alias, run, source_check
        self.digests = digests
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.problems, self.results, self.chunks = [], [], {}
        self.shares = []  # tables being copied that a worker out of work may help read
        self.lock = threading.Lock()
        self.problem_found = threading.Event()  # workers stop copying and only look for problems
        self.damaged = threading.Event()  # the source cannot be trusted: stop everything
        self.cancelled = threading.Event()  # interrupted (Ctrl-C): roll back and leave
        self.commit = False
        target = connections[target_alias]
        self.time_zone = target.timezone_name
        self.ops = target.ops
        self.column_types = {}  # table -> {column: the target's type}: integer ranges by the real type
        self.sent = {}  # table -> the key ranges sent to its COPY, in order

    # The coordinator ---------------------------------------------------------

    def copy(self, plans):
        self.column_types = target_column_types(self.alias, [p.table for p in plans])
        self.expected = len(plans)
        work = Work(sorted(plans, key=lambda p: -p.rows))  # largest first, so the workers finish together
        n = max(1, min(self.workers, len(plans)))
        barrier = threading.Barrier(n + 1, action=self._decide)
        self.source_check.add_done_callback(self._source_checked)
        aliases = [self.alias, self.source.alias]
        with running(lambda: self._worker(work, barrier), n, "copy", work, aliases):  # a worker's failure: raised
            try:
                try:
                    self.source_check.result()
                except Exception as exc:  # the checks did not run: nothing may be committed
                    self._add([Problem("source", f"the integrity check could not run: {exc}")])
                with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: it says why below
                    barrier.wait()
            except BaseException:  # interrupted: the workers roll back and stop
                self.cancelled.set()
                barrier.abort()
                raise
        if not self.commit:
            if not self.damaged.is_set() and not self.cancelled.is_set():
                self._add(full_integrity_problems(self.source.path))
            raise PreflightFailed(self._sorted_problems(plans))

    def _decide(self):
        # Commit only what is whole: every table copied, and nothing found anywhere.
        self.commit = not self.problems and len(self.results) == self.expected

    def _add(self, problems):
        if problems:
            with self.lock:
                self.problems += problems
            self.problem_found.set()

    def _sorted_problems(self, plans):
        """Each problem once (the read and the full checks may both name it), table by table."""
        order = {p.table: i for i, p in enumerate(plans)}
        unique = {}
        for problem in self.problems:
            unique.setdefault((problem.where, str(problem.pk), problem.column, problem.message[:20]), problem)
        return sorted(unique.values(), key=lambda p: (order.get(p.where, -1), str(p.pk), p.column or ""))

    def _source_checked(self, future):
        if future.exception() is not None:
            return  # copy() reports it
        problems, damaged = future.result()
        if damaged:
            self.damaged.set()
        self._add(problems)

    # A worker ----------------------------------------------------------------

    def _worker(self, work, barrier):
        raw = open_reader(self.source.path)
        text_raw = open_reader(self.source.path, text=True)
        try:
            with transaction.atomic(using=self.alias), connections[self.alias].cursor() as cursor:
                cursor.execute(f"SET LOCAL TIME ZONE {sql_literal(self.time_zone)}")
                cursor.execute("SET LOCAL DateStyle TO ISO, YMD")
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
                cursor.execute("SET LOCAL maintenance_work_mem TO '256MB'")
                loaded = []  # tables whose rows are in, their indexes still to build
                for plan in work:
                    if self.damaged.is_set() or self.cancelled.is_set():
                        continue
                    if self.problem_found.is_set():
                        self._scan(text_raw, plan)
                        continue
                    loaded += self._copy_or_scan(cursor, raw, text_raw, plan)
                # Out of tables: help read one another worker is still copying, then build the indexes
                # of this worker's tables while that one builds its own (they commit together anyway).
                self._help(raw)
                self._build(cursor, loaded, text_raw)
                barrier.wait()
                if not self.commit:
                    raise _Rollback
        except (_Rollback, threading.BrokenBarrierError):
            return
        except BaseException:
            self.cancelled.set()  # the others stop at their next chunk: nothing will be committed
            barrier.abort()
            raise
        finally:
            raw.close()
            text_raw.close()

    def _copy_or_scan(self, cursor, raw, text_raw, plan):
        """Load a table's rows; [(plan, rows, chunks, started)] if they are in, [] if not (a problem was found)."""
        started = time.monotonic()
        self.progress(plan, 0)
        try:
            with transaction.atomic(using=self.alias):  # a savepoint: a failed table leaves nothing
                if plan.fast and not plan.rows and not _source_rows(raw, plan):
                    rows, chunks = self._empty(cursor, plan)
                else:
                    cursor.execute(f"TRUNCATE {quote(plan.table)}")
                    if plan.fast:
                        rows, chunks = self._copy_fast(cursor, raw, plan)
                    else:
                        if self._scan(text_raw, plan):
                            return []
                        rows = self._copy_general(cursor, plan)
                        chunks = None  # compared through the ORM
                # The rows read, counted apart: a read that stopped early must not pass for a whole table.
                count = _source_rows(raw, plan)
                if count != rows:
                    raise _Miscount(f"{rows} rows were read of the {count} the source holds (nothing is committed)")
        except _Switch:
            if not self.damaged.is_set():
                self._scan(text_raw, plan)
            return []
        except sqlite3.DatabaseError as exc:
            self.damaged.set()
            self._add([Problem(plan.table, f"cannot be read from the source ({exc}): restore it from a backup")])
            return []
        except _Unreadable as exc:
            self._add([exc.args[0]])
            return []
        except _Miscount as exc:
            # A line PostgreSQL read differently from the row SQLite printed: never commit that.
            if not self._scan(text_raw, plan):
                self._add([Problem(plan.table, str(exc))])
            return []
        except TARGET_ERRORS as exc:
            if self.cancelled.is_set():
                raise threading.BrokenBarrierError from None  # the interruption, not this error, is the story
            if not refuses_data(exc):
                raise
            # PostgreSQL refused a value the read did not flag: the full checks say which. If they
            # find nothing, PostgreSQL's own words, with the row it names found in the source.
            if not self._scan(text_raw, plan):
                self._add([self._refused(raw, plan, exc)])
            return []
        return [(plan, rows, chunks, started)]

    def _refused(self, raw, plan, exc):
        """A Problem naming the row (key, column, value) of a COPY line PostgreSQL refused."""
        message = f"PostgreSQL refused it: {error_text(exc)}"
        line, column, value = copy_context(exc)
        if line is None:
            return Problem(plan.table, message)
        try:
            pk, fields = self._locate(raw, plan, line)
        except (sqlite3.DatabaseError, csv.Error, ValueError, IndexError):
            pk, fields = None, None
        if column and fields is not None and column in plan.column_names and value is None:
            value = fields.get(column)
        if plan.integer_pk and isinstance(pk, str) and pk.lstrip("-").isdigit():
            pk = int(pk)
        where = "" if pk is not None else f" (line {line} of its COPY)"
        return Problem(plan.table, message + where, pk, column, value)

    def _locate(self, raw, plan, line):
        """(key, {column: text}) of the record PostgreSQL numbers ``line`` in the table's COPY, as it was sent.

        The pieces are read again in the order they were sent: only a failed copy pays
        this. PostgreSQL's count (copyfromparse.c) is one per record, plus each newline
        inside a quoted value; until the first record has ended it knows no end-of-line
        yet, and counts carriage returns there instead.
        """
        if not plan.fast:
            queryset = plan.model._base_manager.using(self.source.alias).order_by(plan.pk.attname)
            return queryset.values_list(plan.pk.attname, flat=True)[line - 1], None
        reader = TableReader(raw, plan, self.batch_size, digests=False)
        names = [c.name for c in plan.copy_columns]
        counted = 0
        for lo, hi in self.sent.get(plan.table, []):
            text = reader.text_between(lo, hi)
            extra = [ln for _, ln, _ in reader.flagged_rows(lo, hi) if ln is not None]
            text = b"\n".join([t for t in [text, *extra] if t])
            for record in csv.reader(ln + "\n" for ln in text.decode("utf-8", errors="replace").split("\n")):
                inside = "\r" if counted == 0 else "\n"
                counted += 1 + sum(value.count(inside) for value in record)
                if counted >= line:
                    fields = dict(zip(names, record, strict=False))
                    return fields.get(plan.pk.name), fields
        return None, None

    def _build(self, cursor, loaded, raw_source):
        """Re-build the loaded tables' indexes and unique constraints (each checks every row); mark them done."""
        existing = _existing(cursor) if loaded else None  # once: each table's own are only re-built here
        for plan, rows, chunks, started in loaded:
            if self.problem_found.is_set() or self.damaged.is_set() or self.cancelled.is_set():
                return  # nothing will be committed
            try:
                with transaction.atomic(using=self.alias):
                    recreate_missing(
                        cursor, self.run.definitions, only_table=plan.table, foreign_keys=False, existing=existing
                    )
                    seconds = time.monotonic() - started
                    kept = [c.as_list() for c in chunks] if chunks else None
                    state.mark_done(cursor, self.run.id, plan.table, rows, seconds, kept)
            except ConstraintFailed as exc:
                self._add(
                    [Problem(plan.table, str(exc)), *self._sharing_rows(cursor, raw_source, plan, exc.constraint)]
                )
                continue
            except TARGET_ERRORS as exc:
                if not refuses_data(exc):
                    raise
                self._add([Problem(plan.table, f"PostgreSQL could not re-build its indexes: {error_text(exc)}")])
                continue
            path = "fast" if plan.fast else "general"
            with self.lock:
                self.results.append(TableResult(plan.label, plan.table, rows, seconds, path))
                self.chunks[plan.table] = chunks

    def _sharing_rows(self, cursor, raw, plan, constraint):
        """Problems naming each row (key, column, source value) that shares its value under a failed unique
        constraint: SQLite's unique index held them distinct (a UUID in upper and lower case), PostgreSQL not.

        The rows are still in this worker's transaction (the constraint's savepoint was rolled back)."""
        found = UNIQUE_COLUMNS.match(constraint.get("definition", ""))
        if not found or constraint.get("type") not in ("u", "p"):
            return []
        columns = found.group(1)  # as pg_get_constraintdef prints them: quoted where they need to be
        key = quote(plan.pk.name)
        table = quote(plan.table)
        try:
            with transaction.atomic(using=self.alias):
                cursor.execute(
                    f"SELECT {key} FROM {table} WHERE ({columns}) IN (SELECT {columns} FROM {table} "
                    f"GROUP BY {columns} HAVING count(*) > 1) ORDER BY ({columns}), {key} LIMIT {MAX_SHARING_ROWS}"
                )
                keys = [k for (k,) in cursor.fetchall()]
        except TARGET_ERRORS:  # not a verdict on the rows: the constraint's own message stands
            return []
        names = [c.strip().strip('"').replace('""', '"') for c in columns.split(",")]
        problems = []
        for pk in keys:
            pk = pk.hex if plan.pk.kind == "UUIDField" else pk  # as SQLite holds it: 32 hex digits
            values = raw.execute(
                f"SELECT {', '.join(quote(n) for n in names)} FROM {table} WHERE {key} = ?", [pk]
            ).fetchone()
            problems.append(
                Problem(
                    plan.table,
                    f"has the same value as another row in PostgreSQL's eyes (unique constraint {constraint['name']})",
                    pk,
                    ", ".join(names),
                    (values[0] if len(values) == 1 else values) if values else None,
                )
            )
        return problems

    def _scan(self, text_raw, plan):
        """Every check of the table, exactly (no copy); True if it found a problem."""
        try:
            problems = value_problems(text_raw, plan, self.ops, self.column_types.get(plan.table))
        except sqlite3.DatabaseError as exc:
            self.damaged.set()
            problems = [Problem(plan.table, f"cannot be read from the source ({exc}): restore it from a backup")]
        self._add(problems)
        return bool(problems)

    def _empty(self, cursor, plan):
        """A table the source has no rows for: emptied under TRUNCATE's lock, truncated only if it has rows.

        TRUNCATE gives the table and each of its indexes new files (COPY ... FREEZE needs it), a catalog
        change that cost more than all else a small table's copy did; a table as migrate left it is empty.
        """
        table = quote(plan.table)
        cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        if cursor.fetchone()[0]:
            cursor.execute(f"TRUNCATE {table}")
        if not self.digests:
            return 0, None
        chunks = Digests(plan).finish()  # the digest of no rows, as a COPY of none gives it
        if plan.json_columns:
            json_digests(cursor, plan, chunks)
        return 0, chunks

    def _copy_fast(self, cursor, raw, plan):
        reader = TableReader(raw, plan, self.batch_size, digests=self.digests)
        digests = Digests(plan) if self.digests else None
        columns = ", ".join(quote(c.name) for c in plan.copy_columns)
        rows = 0
        with (
            cursor.cursor.copy(f"COPY {quote(plan.table)} ({columns}) FROM STDIN (FORMAT csv, FREEZE)") as copy,
            _Pipe(copy) as pipe,
        ):
            self.sent[plan.table] = pipe.sent
            share = self._share(raw, reader, pipe, digests)
            try:
                for piece in reader.pieces(bound=share.bound if share else lambda lo: None):
                    self._feed(reader, piece, pipe, digests)
                    rows += piece.rows
                if share:
                    rows += share.finish()
            except BaseException:
                if share:
                    share.finish(abandon=True)
                raise
            finally:
                if share:
                    with self.lock:
                        self.shares.remove(share)
        _check_count(cursor, plan, rows)
        if not digests:
            return rows, None
        chunks = digests.finish()
        if plan.json_columns:
            json_digests(cursor, plan, chunks)
        return rows, chunks

    def _share(self, raw, reader, pipe, digests):
        """Offer a large table read by integer keys or rowids to a worker that runs out of tables (None: not offered).

        Both read by the same integers: a rowid-read table's helper reads by rowid too (see rowid_column).
        """
        plan, batch_size = reader.plan, reader.batch_size
        if self.workers < 2 or not (plan.integer_pk or reader.rowid) or plan.rows < 4 * batch_size:
            return None
        (last_key,) = raw.execute(f"SELECT max({reader.pk}) FROM {quote(plan.table)}").fetchone()
        if not isinstance(last_key, int):
            return None
        share = _Share(plan, pipe, digests, last_key, batch_size)
        with self.lock:
            self.shares.append(share)
        return share

    def _feed(self, reader, piece, pipe, digests):
        """Send a piece's rows to the COPY (those set aside too, once judged fine), and take its digest."""
        if self.cancelled.is_set():
            raise threading.BrokenBarrierError
        if self.problem_found.is_set():
            raise _Switch
        text = piece.text
        if piece.flagged:
            extra = self._closer_look(reader, piece)
            if extra:
                text = text + b"\n" + extra if text else extra
        if text:
            pipe.write(text + b"\n", piece)
        if digests:
            digests.add(piece, clean=not piece.flagged)
        self.progress(reader.plan, piece.rows)

    def _help(self, raw):
        """Out of tables: read a share of a table another worker is still copying, into its COPY."""
        while not (self.problem_found.is_set() or self.cancelled.is_set() or self.damaged.is_set()):
            with self.lock:
                share = next((s for s in self.shares if s.state == "open"), None)
            if share is None:
                return
            given = share.ask()
            if given is None:
                continue
            after, up_to = given
            rows, error = 0, None
            try:
                reader = TableReader(raw, share.plan, self.batch_size, digests=self.digests)
                for piece in reader.pieces(lo=after, bound=lambda lo, up_to=up_to: up_to):
                    if share.abandoned:
                        break
                    self._feed(reader, piece, share.pipe, share.digests)
                    rows += piece.rows
            except BaseException as exc:
                error = exc
            finally:
                share.done(rows, error)

    def _closer_look(self, reader, piece):
        """The lines of the flagged rows of a piece that are fine after all; _Switch if one is not."""
        lines, problems = [], []
        for pk, line, found in reader.flagged_rows(piece.lo, piece.hi):
            verdicts = [(column, column.codec.judge(kind, column, value, None), value) for column, kind, value in found]
            bad = [Problem(reader.plan.table, m, pk, column.name, value) for column, m, value in verdicts if m]
            if line is None and not bad:
                bad = [Problem(reader.plan.table, "holds a value of a type its field does not store", pk)]
            problems += bad
            if not bad:
                lines.append(line)
        if problems:
            self._add(problems)
            raise _Switch
        return b"\n".join(lines)

    def _copy_general(self, cursor, plan):
        """Values through the ORM on both sides: correct for any field type."""
        target = connections[self.alias]
        columns = ", ".join(quote(c) for c in plan.column_names)
        fields = [c.field for c in plan.columns]
        queryset = (
            plan.model._base_manager.using(self.source.alias)
            .order_by(plan.pk.attname)
            .values_list(*[c.attname for c in plan.columns])
        )
        rows = 0
        key = plan.columns.index(plan.pk)
        last = None  # the key of the last row read and prepared: the next one is the one that fails
        with cursor.cursor.copy(f"COPY {quote(plan.table)} ({columns}) FROM STDIN") as copy:
            values_read = queryset.iterator(chunk_size=self.batch_size)
            while True:
                # The fields' own code (from_db_value, get_db_prep_save) runs here, and may raise
                # anything on a value it cannot take: a Problem naming the row, never a traceback
                # that skips putting the target back.
                try:
                    values = next(values_read, None)
                    if values is None:
                        break
                    prepared = [f.get_db_prep_save(v, connection=target) for f, v in zip(fields, values, strict=True)]
                except (DatabaseError, psycopg.Error):
                    raise
                except Exception as exc:  # any field's code: named, with its row, below
                    raise _Unreadable(self._unreadable(plan, last, exc)) from None
                if self.problem_found.is_set():
                    raise _Switch
                copy.write_row(prepared)
                last = values[key]
                rows += 1
                if rows % self.batch_size == 0:
                    self.progress(plan, self.batch_size)
        _check_count(cursor, plan, rows)
        self.progress(plan, rows % self.batch_size)
        return rows

    def _unreadable(self, plan, after, exc):
        """A Problem naming the first row after ``after`` (its key, column and stored value) a field cannot read."""
        said = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc).strip() else "")
        message = f"cannot be read by its field ({said}): fix it in the source"
        manager = plan.model._base_manager.using(self.source.alias)
        rows = manager.order_by(plan.pk.attname)
        if after is not None:
            rows = rows.filter(pk__gt=after)
        try:
            (pk,) = rows.values_list(plan.pk.attname).first() or (None,)
            if pk is None:
                return Problem(plan.table, message)
            for column in plan.columns:
                try:
                    manager.filter(pk=pk).values_list(column.attname).first()
                except (DatabaseError, psycopg.Error):
                    raise
                except Exception:  # the column whose field raised
                    with connections[self.source.alias].cursor() as raw:
                        raw.execute(
                            f"SELECT {quote(column.name)} FROM {quote(plan.table)} WHERE {quote(plan.pk.name)} = %s",
                            [plan.pk.field.get_db_prep_value(pk, connections[self.source.alias])],
                        )
                        return Problem(plan.table, message, pk, column.name, raw.fetchone()[0])
            return Problem(plan.table, message, pk)
        except Exception:  # even a database error here: the key itself cannot be read: the table, without a row
            return Problem(plan.table, message)


class _Miscount(Exception):
    pass


class _Unreadable(Exception):
    """A field's own code raised on a source value; ``args[0]`` is the Problem naming it."""


def _source_rows(raw, plan):
    (count,) = raw.execute(f"SELECT count(*) FROM {quote(plan.table)}").fetchone()
    return count


def _check_count(cursor, plan, rows):
    """The rows PostgreSQL's COPY received (its command tag) must be the rows read, before anything commits."""
    received = cursor.cursor.rowcount
    if received != rows:
        raise _Miscount(
            f"PostgreSQL received {received} rows where {rows} were read from the source: a value was "
            "not carried as it is (nothing of this copy is committed)"
        )


def json_digests(cursor, plan, chunks):
    """Each chunk's digest of its JSON as PostgreSQL prints what it just parsed from the source's text."""
    for chunk in chunks:
        params = []
        where = range_sql(f"t.{quote(plan.pk.name)}", chunk.lo, chunk.hi, params)
        cursor.execute(json_digest_sql(plan).replace("{where}", where.replace("?", "%s")), params)
        chunk.json_digest = bytes(cursor.fetchone()[0]).hex()


# --- the whole copy ----------------------------------------------------------


def copy_database(
    source,
    plans,
    target_alias,
    *,
    batch_size=10_000,
    resume=False,
    workers=2,
    progress=None,
    source_check=None,
    digests=True,
):
    """Copy ``plans`` (a list of TablePlan) from ``source`` into ``target_alias``.

    ``source_check`` is the future of :func:`start_source_check`, if already started.
    ``digests``: take the digests verification needs as the rows are read (for a
    verification right after; a later one reads the source again).
    Raises :class:`PreflightFailed` (nothing written, or, when resuming, nothing
    more) when the source has problems, :class:`CopyError` when the copy fails.
    """
    ours = []  # the run this call started or resumed, once it has one
    try:
        return _copy_database(
            source, plans, target_alias, batch_size, resume, workers, progress, source_check, digests, ours
        )
    except BaseException as exc:
        if not interruption(exc):
            raise
        # Wherever it came (even as a commit went through): the checkpoint says what is left.
        raise CopyError("Interrupted.", settle(target_alias, ours=bool(ours)), interrupted=True) from None


def _copy_database(source, plans, target_alias, batch_size, resume, workers, progress, source_check, digests, ours):
    progress = progress or (lambda plan, rows: None)
    started = time.monotonic()
    report = CopyReport()
    target = connections[target_alias]
    tables = [p.table for p in plans]
    with transaction.atomic(using=target_alias), target.cursor() as cursor:
        run = state.current_run(cursor)
        if run and not resume:
            raise CopyError(
                "A previous copy into this database was interrupted: rerun with --resume to finish it, "
                "or with --truncate to start over.",
                None,
            )
        if run is None and resume:
            raise CopyError(state.NOTHING_TO_RESUME, None)
        if run and not state.same_source(run, source.path):
            raise CopyError(state.foreign_run(run), None)
        if run is None:
            definitions = capture_definitions(cursor, tables, empty=[p.table for p in plans if not p.rows])
            # The definitions are in the checkpoint, committed with the drop: a copy killed at any
            # moment after this leaves them where --resume, --truncate or a failure put them back.
            run = state.start_run(cursor, source_identity(source), definitions)
            drop_definitions(cursor, definitions)
        else:
            report.resumed = True
    ours.append(run)

    todo = [p for p in plans if p.table not in run.done]
    for plan in plans:
        if plan.table in run.done:
            report.tables.append(TableResult(plan.label, plan.table, run.done[plan.table], 0.0, "resumed"))
            report.chunks[plan.table] = [Chunk.from_list(c) for c in run.chunks.get(plan.table) or []] or None
            progress(plan, run.done[plan.table])

    if todo:
        copier = Copier(
            source,
            target_alias,
            run,
            batch_size,
            workers,
            progress,
            source_check or start_source_check(source.path, plans),
            digests,
        )
        try:
            copier.copy(todo)
        except PreflightFailed as failed:
            failed.resumed = settle(target_alias) != AS_BEFORE
            raise
        except TARGET_ERRORS as exc:  # the target went away, or refused what no check foresaw
            raise CopyError(f"PostgreSQL said: {error_text(exc)}.", settle(target_alias)) from None
        report.tables += copier.results
        report.chunks.update(copier.chunks)

    empty = {t.table for t in report.tables if not t.rows}  # their foreign keys are checked as they are added
    try:
        with transaction.atomic(using=target_alias), target.cursor() as cursor:
            recreate_missing(cursor, run.definitions, foreign_keys="later", empty=empty)
            for sql in sequence_reset_sql(plans):
                cursor.execute(sql)
        checked = {
            (c["relname"], c["name"])
            for c in run.definitions["constraints"]
            if c["type"] == "f" and c.get("relname") in empty
        }
        report.validated = validate_foreign_keys(target_alias, run.definitions, workers) | checked
        with transaction.atomic(using=target_alias), target.cursor() as cursor:
            state.finish(cursor)
    except ConstraintFailed as exc:
        # The rows break a constraint of the target: --resume would fail again. Empty the tables
        # and put every definition back, so the target is as it was.
        outcome = undo_copy(target_alias, plans)
        raise CopyError(
            f"Re-creating {exc}. The copied rows were removed"
            + (" and the target is as it was" if outcome == AS_BEFORE else "")
            + ": fix the source (or the target's constraint), then rerun.",
            outcome,
        ) from None
    except TARGET_ERRORS as exc:  # every table is committed: --resume re-creates and validates what is missing
        raise CopyError(
            f"While the constraints were re-created, PostgreSQL said: {error_text(exc)}.", settle(target_alias)
        ) from None
    report.tables.sort(key=lambda t: t.label)
    report.seconds = time.monotonic() - started
    return report


def sequence_reset_sql(plans):
    """Django's sequence reset (past the largest key), except that keys all 0 or below restart it at 1.

    Django's ``setval(seq, max(id), true)`` is refused when the largest key is below
    the sequence's minimum (1): a table whose rows have ids 0 or -5 only would stop
    the copy after its rows were committed, and every --resume the same way.
    """
    for plan in plans:
        for f in plan.model._meta.local_fields:
            if isinstance(f, models.AutoField):  # Big and Small ones too (AutoFieldMeta)
                column = quote(f.column)
                sequence = f"pg_get_serial_sequence({sql_literal(quote(plan.table))}, {sql_literal(f.column)})"
                yield (
                    f"SELECT setval({sequence}, GREATEST(max({column}), 1), coalesce(max({column}) >= 1, false)) "
                    f"FROM {quote(plan.table)}"
                )
                break


def _fresh(target_alias):
    """The target's connection, reopened if a failure left it unusable."""
    target = connections[target_alias]
    if target.connection is not None and (target.in_atomic_block or not target.is_usable()):
        with contextlib.suppress(*TARGET_ERRORS):
            target.close()
    if target.in_atomic_block:  # an atomic block of the caller's is broken: leave it to roll back
        target.needs_rollback = True
    return target


def _on_target(target_alias, work):
    """``work(cursor, run)`` in one transaction of the reopened target, ``run`` the interrupted copy's (or None).

    Its answer, or UNKNOWN if the target could not be reached or a constraint did not hold.
    """
    try:
        _fresh(target_alias)
        with transaction.atomic(using=target_alias), connections[target_alias].cursor() as cursor:
            return work(cursor, state.current_run(cursor))
    except (*TARGET_ERRORS, ConstraintFailed):
        return UNKNOWN


def settle(target_alias, ours=False):
    """After a failure: put the target back as it was if nothing was committed; say what is left.

    AS_BEFORE: every index and constraint the copy dropped is back and no checkpoint is
    left; RESUMABLE: tables are committed and recorded, --resume finishes; UNKNOWN:
    the target could not be reached (its checkpoint is still there, if any); FINISHED:
    ``ours`` (this call had a run) and its checkpoint is gone: the copy completed.
    """

    def put_back(cursor, run):
        if run is None:
            return FINISHED if ours else AS_BEFORE
        if run.done:
            return RESUMABLE
        recreate_missing(cursor, run.definitions)
        state.finish(cursor)
        return AS_BEFORE

    return _on_target(target_alias, put_back)


def undo_copy(target_alias, plans):
    """Empty the copied tables and put every dropped definition back, validated; forget the run."""

    def empty(cursor, run):
        cursor.execute(f"TRUNCATE {', '.join(quote(p.table) for p in plans)}")
        if run:
            # Foreign keys added NOT VALID for the validation: validated now, on empty tables, they
            # are the ones migrate made.
            for table, name in unvalidated_keys(cursor, run.definitions):
                cursor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {quote(name)}")
            recreate_missing(cursor, run.definitions)
            state.finish(cursor)
        return AS_BEFORE

    return _on_target(target_alias, empty)


def truncate_tables(target_alias, plans):
    """Empty every planned table, and forget any interrupted copy."""
    target = connections[target_alias]
    with transaction.atomic(using=target_alias), target.cursor() as cursor:
        run = state.current_run(cursor)
        cursor.execute(f"TRUNCATE {', '.join(quote(p.table) for p in plans)}")
        if run:
            recreate_missing(cursor, run.definitions)
            state.finish(cursor)
