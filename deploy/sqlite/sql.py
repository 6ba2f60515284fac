"""SQL text shared by both sides of a copy: quoting, literals, key ranges, lines of fields.

Every identifier the copy writes into SQL (SQLite's or PostgreSQL's) is quoted
by :func:`quote`; every key range by :func:`range_sql`.
"""


def quote(name):
    """An identifier, double-quoted (a quote inside doubled): the same rule in SQLite and PostgreSQL."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text):
    """A string literal, single-quoted (a quote inside doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def _key(bound):
    """The placeholder for a key bound. A text key read as bytes would bind as a BLOB, which SQLite sorts
    after every text: ``key > blob`` is never true. Cast back, it compares as the text it was read from."""
    return "CAST(? AS TEXT)" if isinstance(bound, bytes) else "?"


def range_sql(column, lo, hi, params):
    """A WHERE condition for keys in (lo, hi]; appends the bounds to ``params``."""
    conditions = []
    if lo is not None:
        conditions.append(f"{column} > {_key(lo)}")
        params.append(lo)
    if hi is not None:
        conditions.append(f"{column} <= {_key(hi)}")
        params.append(hi)
    return " AND ".join(conditions) or "1 = 1"


def joined(parts):
    """``a || ',' || b || ...`` nested as a balanced tree: each byte is copied log(n) times, not n/2."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"({joined(parts[:middle])} || ',' || {joined(parts[middle:])})"
