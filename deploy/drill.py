"""The restore drill: a backup restored into a scratch database, proven against the live one.

``run_drill`` creates a scratch database beside the live one (``NAME_drill_TIME``), restores the dump into it
with ``pg_restore`` (``--exit-on-error``: a dump that does not restore is a failed drill), and compares every
table of the project's models with the live database by the migration verification's own means
(``deploy.sqlite``): a table whose digest of all rows (``digest_sql``: PostgreSQL's canonical text of each row,
hashed in key order, JSON by its parsed value) is the same on both sides is proven; another is compared row by
row in key order (``compare_table``), which names each row written, changed or deleted since the dump. The
scratch database is dropped afterwards unless ``keep``.

It needs a role that may create databases (the in-cluster PostgreSQL's superuser through a port-forward; in the
cloudnative-pg mode, which has no superuser to log in as, the app's owner role given CREATEDB for the drill's
time: :func:`scratch_role_hint`, docs/runbooks.md#restore-drill); the password comes from the connection settings,
handed to ``pg_restore`` in its environment, never on its command line. The dumps it restores are those of the
nightly CronJob, which runs beside the cluster's PostgreSQL only: :func:`check_mode` refuses the other modes
unless a dump file is given.
"""

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import connections
from django.db.utils import load_backend

from deploy.sqlite.chunks import digest_sql
from deploy.sqlite.plan import copied_models, table_plan
from deploy.sqlite.sql import quote
from deploy.sqlite.verify import MAX_DIFFERENCES, VerifyReport, _count, compare_table

SCRATCH_ALIAS = "deploy_restore_drill"
# compare_table's words (source: the backup, target: the live database) in the drill's terms.
_MEANING = {
    "missing in the target": "in the backup, deleted since",
    "extra row in the target": "written since the backup",
}


class DrillError(Exception):
    """The drill could not run (no scratch database, a dump that does not restore); the message says why."""


def check_mode(config, dump_given):
    """DrillError when ``config``'s PostgreSQL has no nightly dumps in the bucket and no dump file was given."""
    if dump_given or config.postgres_in_cluster or config.postgres_operator:
        return
    if config.postgres_mode == "rds":
        own = (
            "RDS keeps its own backups (automated snapshots and point-in-time restore, kept "
            f"{config.rds_backup_retention_days} day(s)): drill them by restoring one to a new instance "
            "(docs/high-availability.md#drilling-the-rds-backups)"
        )
    else:
        own = "restore the managed database's own backups with its provider's tools"
    raise DrillError(
        f"postgres_mode {config.postgres_mode!r} has no nightly dumps to drill: the pg_dump CronJob runs only beside "
        f"the cluster's PostgreSQL ('in-cluster', 'cloudnative-pg'). {own}; or drill a dump you made "
        "(pg_dump --format=custom) with --file. Nothing was read."
    )


def no_bucket_message(config):
    """Why the drill has no bucket to read, and what to drill instead, in ``config``'s mode."""
    if config.postgres_operator:
        # Without the bucket the dumps stay on the backup volume in the cluster: "pass --bucket" alone would send the
        # operator looking for a bucket nothing writes to.
        return (
            "No bucket: in the cloudnative-pg mode without DEPLOY['postgres_backup_bucket'] the nightly dumps stay on "
            "the backup volume in the cluster, out of this command's reach. Drill a dump made now through the same "
            'port-forward, as the same role: pg_dump --format=custom --file=app-now.dump "$DATABASE_URL", then '
            "restore_drill --file app-now.dump (docs/runbooks.md#restore-drill); or set "
            "DEPLOY['postgres_backup_bucket'] (the infrastructure stack's BackupBucketName output: the dumps and the "
            "Cluster's WAL archive then go there) and drill the next nightly dump. Nothing was read."
        )
    return (
        "No bucket: set DEPLOY['postgres_backup_bucket'] (the infrastructure stack's BackupBucketName output), pass "
        "--bucket, or restore a dump with --file."
    )


def scratch_role_hint(config, user):
    """How to connect as a role that may create the scratch database, in ``config``'s mode."""
    if config is not None and config.postgres_operator:
        from deploy.k8s import names

        cluster, namespace = names.cnpg_cluster_name(config.app_name), config.namespace
        primary = f"$(kubectl -n {namespace} get cluster {cluster} -o jsonpath='{{.status.currentPrimary}}')"
        # postgres_user may hold a '-' (a DNS label): PostgreSQL then needs the name double-quoted, and the shell
        # the SQL single-quoted around it.
        if re.fullmatch(r"[a-z_][a-z0-9_]*", user):
            grant, undo = f'"ALTER ROLE {user} CREATEDB"', f'"ALTER ROLE {user} NOCREATEDB"'
        else:
            grant, undo = f"'ALTER ROLE \"{user}\" CREATEDB'", f"'ALTER ROLE \"{user}\" NOCREATEDB'"
        return (
            "The cloudnative-pg mode has no superuser to log in as (enableSuperuserAccess: false): let the app's "
            f"owner role create databases for the drill's time, through the primary's local socket, with "
            f"kubectl -n {namespace} exec {primary} -c postgres -- psql -c {grant}, and take it back afterwards "
            f"with the same command and {undo} (docs/runbooks.md#restore-drill)."
        )
    return "The drill needs a role that may create databases: connect as the PostgreSQL superuser " + (
        "(docs/runbooks.md#restore-drill)."
    )


@dataclass
class DrillReport:
    backup: str
    scratch_database: str
    tables: dict = field(default_factory=dict)  # label -> {"backup_rows", "live_rows", "proven_by"}
    differences: list = field(default_factory=list)
    seconds: float = 0.0
    kept: bool = False
    left_behind: list = field(default_factory=list)  # scratch databases of earlier drills, still there

    @property
    def ok(self):
        return not self.differences

    def as_dict(self):
        return {
            "ok": self.ok,
            "backup": self.backup,
            "scratch_database": self.scratch_database,
            "kept": self.kept,
            "tables": self.tables,
            "differences": self.differences,
            "seconds": round(self.seconds, 3),
            "left_behind": self.left_behind,
        }


def _describe(difference):
    problem = _MEANING.get(difference.problem, difference.problem)
    if problem.startswith("source ") and " != target " in problem:
        before, after = problem.removeprefix("source ").split(" != target ", 1)
        problem = f"changed since the backup: {before} -> {after}"
    where = f"{difference.table} pk={difference.pk!r}" if difference.pk is not None else difference.table
    return f"{where}{' column ' + difference.column if difference.column else ''}: {problem}"


def _libpq_environment(settings_dict, database):
    environment = {**os.environ, "PGDATABASE": database}
    for key, variable in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if settings_dict.get(key):
            environment[variable] = str(settings_dict[key])
    return environment


def _digest(alias, plan):
    with connections[alias].cursor() as cursor:
        cursor.execute("SET DateStyle TO ISO, YMD")
        cursor.execute("SET extra_float_digits TO 1")
        cursor.execute(digest_sql(plan, connections[alias].timezone_name).replace("{where}", "true"))
        rows, digest, json_digest = cursor.fetchone()
    return rows, bytes(digest or b"").hex(), bytes(json_digest or b"").hex()


def compare(scratch_alias, live_alias, report, progress=None):
    """Every model's table of the backup (``scratch_alias``) against the live database; fills ``report``."""
    verify = VerifyReport()
    models, _ = copied_models()
    tables = {alias: set(_table_names(alias)) for alias in (scratch_alias, live_alias)}
    absent = []
    for model in sorted(models, key=lambda m: m._meta.label):
        plan = table_plan(model)
        if not all(plan.table in names for names in tables.values()):
            # A model whose table one side lacks (a migration applied since the dump, or not yet on the live
            # database): nothing to compare row by row, but a difference, not a crash of the drill.
            backup_rows, live_rows = (_count(a, plan.table) if plan.table in tables[a] else None
                                      for a in (scratch_alias, live_alias))  # fmt: skip
            side = "not in the backup (created since)" if backup_rows is None else "not in the live database"
            rows = live_rows if backup_rows is None else backup_rows
            absent.append(f"{plan.table}: table {side}; {rows if rows is not None else 0} row(s) on the other side")
            report.tables[plan.label] = {"table": plan.table, "backup_rows": backup_rows, "live_rows": live_rows,
                                         "proven_by": "missing"}  # fmt: skip
            if progress:
                progress(f"{plan.label}: table {side}")
            continue
        backup_rows, live_rows = _count(scratch_alias, plan.table), _count(live_alias, plan.table)
        proven_by = "digest"
        if not plan.fast or _digest(scratch_alias, plan) != _digest(live_alias, plan):
            before = len(verify.differences)
            compare_table(plan, scratch_alias, live_alias, verify)
            proven_by = "rows" if len(verify.differences) == before else "differs"
        report.tables[plan.label] = {"table": plan.table, "backup_rows": backup_rows, "live_rows": live_rows,
                                     "proven_by": proven_by}  # fmt: skip
        if progress:
            progress(f"{plan.label}: backup {backup_rows} rows, live {live_rows} ({proven_by})")
    report.differences = absent + [_describe(d) for d in verify.differences[:MAX_DIFFERENCES]]


def _table_names(alias):
    with connections[alias].cursor() as cursor:
        return connections[alias].introspection.table_names(cursor)


def run_drill(dump_path, backup_name, live_alias="default", keep=False, progress=None, now=None, config=None):
    started = time.monotonic()
    if live_alias not in connections:
        raise DrillError(
            f"No database {live_alias!r} in settings.DATABASES (--database takes one of its aliases: "
            f"{', '.join(connections)})."
        )
    live = connections[live_alias]
    if live.vendor != "postgresql":
        raise DrillError(f"The database {live_alias!r} is {live.vendor}; the drill restores PostgreSQL dumps.")
    settings_dict = dict(live.settings_dict)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    scratch = f"{settings_dict['NAME'][:40]}_drill_{stamp}"
    report = DrillReport(backup=backup_name, scratch_database=scratch, kept=keep)
    try:
        live.ensure_connection()
    except Exception as exc:
        where = f"{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 5432}"
        raise DrillError(
            f"Could not connect to the live database {settings_dict['NAME']!r} at {where} ({type(exc).__name__}: "
            f"{str(exc).strip()}). Is the port-forward running, and is DATABASE_URL's password the "
            f"{'owner role' if config is not None and config.postgres_operator else 'superuser'}'s "
            "(docs/runbooks.md#restore-drill)?"
        ) from None
    try:
        with live.cursor() as cursor:
            # An earlier drill's copy (--keep, or a drill killed before it could drop it) takes as much room
            # on the database's volume as the live data: name it, so it is not forgotten there.
            cursor.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY datname",
                [f"{settings_dict['NAME'][:40]}_drill_"],
            )
            report.left_behind = [name for (name,) in cursor.fetchall()]
            if scratch in report.left_behind:
                raise DrillError(
                    f"The scratch database {scratch!r} exists already: another drill started in the same second "
                    "(or its clock is behind). Run the drill again once that one has finished."
                )
            cursor.execute(f"CREATE DATABASE {quote(scratch)}")
    except DrillError:
        raise
    except Exception as exc:
        raise DrillError(
            f"Could not create the scratch database {scratch!r} ({type(exc).__name__}: {str(exc).strip()}). "
            + scratch_role_hint(config, settings_dict.get("USER") or "app")
        ) from None
    try:
        restored = subprocess.run(
            ["pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "--single-transaction", "-d", scratch,
             str(dump_path)],
            env=_libpq_environment(settings_dict, scratch), capture_output=True, text=True,
        )  # fmt: skip
        if restored.returncode != 0:
            raise DrillError(f"pg_restore could not restore {backup_name}: {restored.stderr.strip()[-500:]}")
        if progress:
            progress(f"restored {backup_name} into {scratch}")
        # A connection of this thread only, not a configured database: nothing else (routers, tests) sees it.
        wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(
            {**settings_dict, "NAME": scratch}, SCRATCH_ALIAS
        )
        connections[SCRATCH_ALIAS] = wrapper
        try:
            compare(SCRATCH_ALIAS, live_alias, report, progress)
        finally:
            wrapper.close()
            del connections[SCRATCH_ALIAS]
    finally:
        if not keep:
            with live.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {quote(scratch)} WITH (FORCE)")
    report.seconds = time.monotonic() - started
    return report
