"""Reading the source in chunks of rows, each with the digest that proves it.

SQLite builds each chunk's text itself: one CSV line per row (the canonical
text of :mod:`deploy.sqlite.plan`), joined in primary-key order, so Python
handles one string per chunk rather than one object per value. The same
text feeds PostgreSQL's COPY and, hashed, is what verification compares with
PostgreSQL's own rendering of the stored rows.

Rows whose values need a closer look (see :func:`~deploy.sqlite.plan.fast_checks`)
are left out of the chunk's text and returned apart; a chunk that had any
carries no digest, so verification compares it value by value.

JSON is stored parsed (jsonb): its source text cannot be rendered back. Each
line therefore ends with the JSON fields, and the digest covers the part
before them; the JSON has a digest of its own, of PostgreSQL's hashes of
what it parsed, taken in the copy's transaction (or, with ``--verify-only``,
from the source's JSON text parsed again).
"""

import hashlib
import sqlite3
import threading
from dataclasses import dataclass

from deploy.sqlite.fields import float8_text, pg_json_hash
from deploy.sqlite.plan import fast_checks
from deploy.sqlite.source import read_only_uri
from deploy.sqlite.sql import quote, range_sql


def _float8(value):
    if isinstance(value, int):  # a column without REAL affinity may hold integers
        value = float(value)
    return float8_text(value) if type(value) is float else None


def line_hash(line):
    """A line's two 64-bit hashes: the first 16 bytes of its SHA-256 as two signed big-endian integers.

    PostgreSQL computes the same from the text it renders (see :func:`digest_sql`).
    """
    digest = hashlib.sha256(line).digest()
    return int.from_bytes(digest[:8], "big", signed=True), int.from_bytes(digest[8:16], "big", signed=True)


class _LineHashes:
    """SQLite aggregate: the sums of :func:`line_hash` of a chunk's lines, ``"a:b"`` (NULL lines left out).

    A digest that does not depend on the order of the lines: see :func:`rowid_column`.
    """

    def __init__(self):
        self.a = self.b = 0

    def step(self, line):
        if line is not None:
            a, b = line_hash(line)
            self.a += a
            self.b += b

    def finalize(self):
        return f"{self.a}:{self.b}"


def open_reader(path, text=False):
    """A read-only connection to the source; values as bytes unless ``text``."""
    raw = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False)
    if not text:
        raw.text_factory = bytes
    raw.create_function("deploy_float8", 1, _float8, deterministic=True)
    raw.create_aggregate("deploy_line_hashes", 1, _LineHashes)
    return raw


def rowid_column(raw, plan):
    """The name of the table's rowid if its rows are read in rowid order, else None (read in key order).

    A text or UUID key is not the rowid: read in key order, each row is a look-up
    through the key's index (at random in the table), and that index must then be
    checked in full against the table, which reads the table a second time. Read in
    rowid order, the table is read once, in its own order, and SQLite's indexes are
    never read (``PRAGMA quick_check`` covers the table's b-tree). Such a table's rows
    are proven by a digest that does not depend on their order (sums of each line's
    hash, :class:`_LineHashes`): their keys sort differently on both sides anyway
    (see :class:`Digests`). Integer keys keep their order (chunks are key ranges on
    both sides); a ``WITHOUT ROWID`` table has no rowid.
    """
    if plan.integer_pk:
        return None
    names = {c.name.lower() for c in plan.columns}
    name = next((n for n in ("_rowid_", "rowid", "oid") if n not in names), None)
    if name is None:
        return None
    try:
        raw.execute(f"SELECT {name} FROM {quote(plan.table)} LIMIT 0").fetchall()
    except sqlite3.OperationalError:  # WITHOUT ROWID
        return None
    return name


@dataclass
class Chunk:
    """Rows with keys in (lo, hi] (None: unbounded), their count, and the hex digests that prove them.

    ``digest``: of the rows' text without JSON (None: compare by value);
    ``json_digest``: of PostgreSQL's hashes of their JSON as parsed (None: no JSON, or not taken).
    """

    lo: object
    hi: object
    rows: int
    digest: str | None
    json_digest: str | None = None

    def as_list(self):
        return [self.lo, self.hi, self.rows, self.digest, self.json_digest]

    @classmethod
    def from_list(cls, values):
        return cls(*values)


@dataclass
class Piece:
    """One read of the source: the COPY text of its plain rows, the part digests cover, the flagged count."""

    lo: object
    hi: object
    rows: int
    text: bytes
    digest_text: bytes
    flagged: int
    line_hashes: str | None = None  # read in rowid order: the sums of its lines' hashes (see rowid_column)


# The text of one chunk, at most about this long: a chunk of --batch-size rows of long text and JSON
# would be tens of megabytes, held several times over (SQLite's result, the pipe's queue, the digest).
CHUNK_BYTES = 4 << 20
SAMPLE_ROWS = 256  # rows whose printed length sizes a table's chunks


def rows_per_chunk(raw, plan, batch_size, plain, json):
    """``batch_size`` rows, or fewer when the table's rows are long: a chunk's text stays near CHUNK_BYTES.

    The length is the average of the first rows as the copy prints them; it is the same for every
    reader of the table, so the copy's owner and helper, and a later --verify-only, cut alike.
    """
    (average,) = raw.execute(
        f"SELECT avg(length(CAST(p AS BLOB)) + coalesce(length(CAST(j AS BLOB)), 0)) "
        f"FROM (SELECT {plain} AS p, {json or 'NULL'} AS j FROM {quote(plan.table)} LIMIT {SAMPLE_ROWS})"
    ).fetchone()
    if not average:
        return batch_size
    return max(1, min(batch_size, int(CHUNK_BYTES / average)))


class TableReader:
    """The source's rows of one table, in primary-key order, a chunk at a time (see :func:`rows_per_chunk`)."""

    def __init__(self, raw, plan, batch_size, digests=True):
        """``digests``: also give each piece what its digest covers (without it, only the COPY text)."""
        plain, json = plan.line_sql()
        self.raw, self.plan = raw, plan
        self.batch_size = batch_size = rows_per_chunk(raw, plan, batch_size, plain, json)
        # The column the pieces are cut and ordered by: the key, or the rowid (see rowid_column).
        self.rowid = rowid_column(raw, plan)
        self.pk = self.rowid or quote(plan.pk.name)
        self.checks = [(c, kind, sql) for c in plan.columns for kind, sql in fast_checks(c)]
        bad = plan.check_sql()
        # The rows set aside are printed strictly: NULL if a value cannot be (see plan.sqlite_text).
        self.line = plan.strict_line_sql()
        inner = f"SELECT {plain} AS p, {json or 'NULL'} AS j, ({bad}) AS bad, {self.pk} AS k FROM {quote(plan.table)}"
        # The LIMIT keeps SQLite from folding the inner query into the outer one: p is built once per row.
        texts = "group_concat(CASE WHEN bad THEN NULL ELSE p END, char(10))"
        if json is not None:
            line = "group_concat(CASE WHEN bad THEN NULL ELSE p || ',' || j END, char(10))"
            texts = f"{line}, {texts}" if digests and not self.rowid else line
        if self.rowid:
            hashes = "deploy_line_hashes(CAST(CASE WHEN bad THEN NULL ELSE p END AS BLOB))" if digests else "NULL"
            texts = f"{texts}, {hashes}"
        outer = f"SELECT {texts}, max(k), count(*), total(bad)"
        limit = f"ORDER BY {self.pk} LIMIT {int(batch_size)}"
        self.first_sql = f"{outer} FROM ({inner} {limit})"
        # Keys come back as this connection reads them: a text key as bytes (see _key).
        key = "?" if plan.integer_pk or self.rowid else "CAST(? AS TEXT)"
        self.next_sql = f"{outer} FROM ({inner} WHERE {self.pk} > {key} {limit})"
        self.bounded_sql = f"{outer} FROM ({inner} WHERE {self.pk} > {key} AND {self.pk} <= {key} {limit})"
        self.separate = json is not None and digests and not self.rowid
        self.inner, self.outer = inner, outer

    def text_between(self, lo, hi):
        """The COPY text of the plain rows with keys in (lo, hi], as :meth:`pieces` gave it."""
        params = []
        where = range_sql(self.pk, lo, hi, params)
        row = self.raw.execute(f"{self.outer} FROM ({self.inner} WHERE {where} ORDER BY {self.pk})", params).fetchone()
        return row[0] or b""

    def pieces(self, lo=None, bound=lambda lo: None):
        """Yield a :class:`Piece` per chunk of rows with keys above ``lo``, in key order.

        ``bound(lo)``, asked before each chunk, gives the largest key still to read
        (None: to the end). The pieces cover the key range without a gap: the last
        one ends at the bound, even with no rows, or with an unbounded key.
        """
        while True:
            hi_bound = bound(lo)
            if hi_bound is not None:
                row = self.raw.execute(self.bounded_sql, [lo, hi_bound]).fetchone()
            elif lo is None:
                row = self.raw.execute(self.first_sql).fetchone()
            else:
                row = self.raw.execute(self.next_sql, [lo]).fetchone()
            hashes = None
            if self.separate:
                text, digest_text, hi, rows, flagged = row
            elif self.rowid:
                text, hashes, hi, rows, flagged = row
                digest_text = b""  # the digest is the hashes'
            else:
                text, hi, rows, flagged = row
                digest_text = text
            if hi_bound is not None and rows < self.batch_size:
                if rows or lo != hi_bound:
                    yield Piece(lo, hi_bound, rows, text or b"", digest_text or b"", int(flagged), _str(hashes))
                return
            if not rows:
                return
            yield Piece(lo, hi, rows, text or b"", digest_text or b"", int(flagged), _str(hashes))
            lo = hi

    def flagged_rows(self, lo, hi):
        """(pk, line or None, [(column, kind, value)...]) for each row of (lo, hi] set aside."""
        params = []
        where = range_sql(self.pk, lo, hi, params)
        columns = [f"({sql})" for _, _, sql in self.checks] + [quote(c.name) for c, _, _ in self.checks]
        # Exactly the rows the read set aside: any other is in the piece's text already.
        bad = self.plan.check_sql()
        query = (
            f"SELECT {', '.join([quote(self.plan.pk.name), self.line, *columns])} FROM {quote(self.plan.table)} "
            f"WHERE {where} AND ({bad}) ORDER BY {self.pk}"
        )
        n = len(self.checks)
        for row in self.raw.execute(query, params):
            pk = row[0].decode("utf-8", errors="replace") if isinstance(row[0], bytes) else row[0]
            found = [(c, kind, row[2 + n + i]) for i, (c, kind, _) in enumerate(self.checks) if row[2 + i]]
            yield pk, row[1], found


class Digests:
    """Chunk digests for a table: one per piece when keys are integers, one for the whole table otherwise.

    Text keys sort alike in SQLite and PostgreSQL only under the "C" collation,
    which their indexes do not use: such tables are checked in one pass, ordered,
    or, when read in rowid order (see :func:`rowid_column`), by the sums of their
    lines' hashes, ``"a:b"``, which no order changes.
    """

    def __init__(self, plan):
        self.per_piece = plan.integer_pk
        self.chunks = []
        self._whole = hashlib.sha256()
        self._whole_rows = 0
        self._whole_ok = True
        self._sums = None  # [a, b] once a piece brought its lines' hashes
        self._lock = threading.Lock()

    def add(self, piece, clean):
        """Take a piece's digest; per piece, pieces may come from several threads in any order."""
        text = piece.digest_text
        if self.per_piece:
            digest = hashlib.sha256(text).hexdigest() if clean else None
            self.chunks.append(Chunk(piece.lo, piece.hi, piece.rows, digest))  # list.append is atomic
            return
        with self._lock:  # pieces read by rowid may come from two threads (a shared table)
            if piece.line_hashes is not None:
                a, b = map(int, piece.line_hashes.split(":"))
                self._sums = [a + (self._sums or [0, 0])[0], b + (self._sums or [0, 0])[1]]
            elif self._whole_rows and text:
                self._whole.update(b"\n")
            self._whole.update(text)
            self._whole_rows += piece.rows
            self._whole_ok = self._whole_ok and clean

    def finish(self):
        if not self.per_piece:
            digest = self._whole.hexdigest() if self._sums is None else "{}:{}".format(*self._sums)
            return [Chunk(None, None, self._whole_rows, digest if self._whole_ok else None)]
        if not self.chunks:
            return [Chunk(None, None, 0, hashlib.sha256(b"").hexdigest())]
        self.chunks.sort(key=lambda c: (c.lo is not None, c.lo))
        self.chunks[-1].hi = None  # the last chunk also holds any larger key of the target
        return self.chunks


def _str(value):
    return value.decode() if isinstance(value, bytes) else value


def _order(plan, ref="t"):
    """The target's key order, as SQLite's: text keys by bytes ("C"); a uuid by its bytes, which is the
    order of the 32 hex digits SQLite stores (and a uuid takes no collation)."""
    pk = f"{ref}.{quote(plan.pk.name)}"
    return pk if plan.integer_pk or plan.pk.kind == "UUIDField" else f'{pk} COLLATE "C"'


# The rows reach string_agg in key order: if PostgreSQL ever fed them otherwise, the
# digests would differ and the chunk be compared value by value, never passed wrongly.
_DIGEST = "sha256(convert_to(coalesce(string_agg({column}, E'\\n'), ''), 'UTF8'))"


def json_digest_sql(plan):
    """PostgreSQL: the JSON digest of the stored rows with keys in ``{where}``."""
    return (
        f"SELECT {_DIGEST.format(column='line')} FROM (SELECT {plan.pg_json_sql()} AS line "
        f"FROM {quote(plan.table)} t WHERE {{where}} ORDER BY {_order(plan)}) x"
    )


# The sums of each line's hash, as :func:`line_hash` takes them: no order changes them.
_HALF = "('x' || encode(substring(h FROM {start} FOR 8), 'hex'))::bit(64)::bigint"
_LINE_HASHES = (
    f"coalesce(sum({_HALF.format(start=1)}), 0)::text || ':' || coalesce(sum({_HALF.format(start=9)}), 0)::text"
)


def digest_sql(plan, time_zone, unordered=False):
    """PostgreSQL: count, digest, and JSON digest (or NULL) of the stored rows with keys in ``{where}``.

    ``unordered``: the digest is the sums of the lines' hashes (text, ``"a:b"``; see :class:`Digests`).
    """
    json, json_digest = "NULL::text", "NULL::bytea"
    if plan.json_columns:
        json, json_digest = plan.pg_json_sql(), _DIGEST.format(column="jline")
    if unordered:
        order = f" ORDER BY {_order(plan)}" if plan.json_columns else ""  # the JSON digest's order
        return (
            f"SELECT count(*), {_LINE_HASHES}, {json_digest} "
            f"FROM (SELECT sha256(convert_to({plan.pg_line_sql(time_zone)}, 'UTF8')) AS h, {json} AS jline "
            f"FROM {quote(plan.table)} t WHERE {{where}}{order}) x"
        )
    return (
        f"SELECT count(*), {_DIGEST.format(column='line')}, {json_digest} "
        f"FROM (SELECT {plan.pg_line_sql(time_zone)} AS line, {json} AS jline "
        f"FROM {quote(plan.table)} t WHERE {{where}} ORDER BY {_order(plan)}) x"
    )


def source_json_digest_sql(plan, table):
    """PostgreSQL: the JSON digest of the source's JSON texts loaded into ``table``, parsed again."""
    line = " || E'\\t' || ".join(pg_json_hash(f"s.j{i}") for i in range(len(plan.json_columns)))
    order = "s.pk" if plan.integer_pk else 's.pk COLLATE "C"'
    return (
        f"SELECT bool_and(ok), {_DIGEST.format(column='line')} FROM "
        f"(SELECT ok, CASE WHEN ok THEN {line} ELSE '?' END AS line FROM {table} s ORDER BY {order}) x"
    )
