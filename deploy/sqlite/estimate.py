"""How long a copy will take, for ``--plan``: a cost model with figures measured on one machine.

A fixed rate of rows per second under-estimated small copies eightfold (0.1 s
announced for a 0.8 s copy): a copy's time is mostly fixed costs when it is
small (the checkpoint, dropping and re-creating definitions, one COPY, one
savepoint and one commit per table), and grows with rows, with the bytes of
text and JSON they carry, and with the indexes and foreign keys rebuilt and
checked over them when it is large. The model adds these up; the copy runs on
``workers`` transactions, which share the per-row and per-byte work.

The figures are :data:`MEASURED`, the only place they are kept: re-measure
them with ``bench/migration.py`` (which prints, for each shape, the estimate
next to the measured copy) when the copy or the machine changes.

The work that grows with the data is CPU work (SQLite printing rows, PostgreSQL
parsing them and building indexes), and it is the part a slower or busier
machine slows: :func:`cpu_slowdown` times SQLite printing a few thousand rows
now, against the same probe on the benchmark machine, and the estimate scales
those terms by it. The fixed costs (catalog changes, commits) are latency, not
CPU, and are kept as measured. Under a test suite's load on 2 cores the rows
cost five times their idle figure while the fixed costs barely moved: without
the probe the estimate of a 150,000-row copy was 2.5 times short.
"""

import sqlite3
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CopyCost:
    """Seconds per unit of work of a copy, as measured on ``machine`` (``--workers 2``)."""

    machine: str
    overhead: float  # per copy: the checkpoint, the sequences, the commit, the validation's set-up
    table: float  # per table: TRUNCATE, COPY set-up, savepoint, marking it done
    definition: float  # per index, unique or foreign-key constraint dropped and re-created (catalog work)
    row: float  # per row: SQLite printing it, PostgreSQL parsing it (wall seconds with 2 workers)
    byte: float  # per byte of the source's rows (long text and JSON)
    index_row: float  # per row and per index or foreign key of its table: building, validating
    probe: float  # seconds of PROBE_SQL on that machine, idle (the fastest of many runs)


MEASURED = CopyCost(
    # Re-measured on 1 December 2026 on the benchmark machine (the probe, the fastest of 60, 3.3 ms: this host
    # runs it 2.8 times faster than November's, which is what the probe is for), after a table with no rows
    # stopped costing catalog work (its definitions are kept) and text and UUID keyed tables began to be read
    # by rowid. Fixed costs from the suite's sources (tests.settings, 26 tables): empty, 0.12 to 0.17 s; 3,063
    # rows in 10 tables carrying 32 definitions, 0.39 to 0.44 s. Rates set on the safe side of the benchmark's
    # four shapes at 100,000 rows, idle (bench/migration.py): the wide shape's long rows (bytes) and the keys
    # shape's random text and UUID keys (index rows) cost most; the sample app is over-estimated about 2x.
    machine="the project's 2-core benchmark machine (PostgreSQL and SQLite on the same host), December 2026",
    overhead=0.08,
    table=0.002,
    definition=0.008,
    row=3.0e-6,
    byte=8.0e-9,
    index_row=1.5e-6,
    probe=0.0033,
)

# SQLite printing rows as the copy's source side does (numbers, hex, non-ASCII text), in memory: CPU only.
PROBE_SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) "
    "SELECT max(length(printf('%d,%s,%s', x, hex(x * 7919), 'é' || x))) FROM c"
)


def cpu_slowdown(cost=MEASURED, runs=5):
    """How many times longer this machine takes now than ``cost.machine`` did idle for the same CPU work.

    The median of ``runs`` probes of a few milliseconds each: a machine shared with other work is slower for
    the copy too, and the estimate says so, where a fixed rate would not. Below 1 on a faster machine.
    """
    raw = sqlite3.connect(":memory:")
    try:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            raw.execute(PROBE_SQL).fetchone()
            times.append(time.perf_counter() - start)
    finally:
        raw.close()
    return statistics.median(times) / cost.probe


@dataclass(frozen=True)
class TableSize:
    """What a table costs besides its rows: its bytes in the source, its indexes and its foreign keys."""

    bytes: int = 0
    indexes: int = 0
    foreign_keys: int = 0


def table_sizes(raw, tables):
    """{table: TableSize} from the SQLite source (read-only; no table is scanned).

    Bytes are the pages SQLite's ``dbstat`` counts for the table (its overflow pages
    included); where SQLite is built without it, the file's size shared out by rows.
    Indexes are the source's (made by the same migrations as the target's).
    """
    existing = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    try:
        pages = dict(raw.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    except sqlite3.OperationalError:  # no such table: dbstat (SQLite built without it)
        pages = None
    if pages is None:
        (size,) = raw.execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").fetchone()
        counts = {t: raw.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables if t in existing}
        total = sum(counts.values()) or 1
        pages = {t: size * n / total for t, n in counts.items()}
    sizes = {}
    for table in tables:
        if table not in existing:
            sizes[table] = TableSize()
            continue
        (indexes,) = raw.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", [table]
        ).fetchone()
        (keys,) = raw.execute("SELECT count(DISTINCT id) FROM pragma_foreign_key_list(?)", [table]).fetchone()
        sizes[table] = TableSize(int(pages.get(table) or 0), indexes, keys)
    return sizes


def estimate_seconds(plans, sizes, cost=MEASURED, slowdown=1.0):
    """Seconds the copy of ``plans`` (rows counted) should take, as the copy's report counts them; the work that
    grows with the data ``slowdown`` times its figure on ``cost.machine`` (:func:`cpu_slowdown`)."""
    seconds = cost.overhead
    for plan in plans:
        size = sizes.get(plan.table, TableSize())
        definitions = size.indexes + size.foreign_keys
        # A table the source has no rows for keeps its definitions (the copy neither drops nor rebuilds them).
        seconds += cost.table + (cost.definition * definitions if plan.rows else 0.0)
        seconds += slowdown * (plan.rows * (cost.row + cost.index_row * definitions) + size.bytes * cost.byte)
    return seconds
