"""What ``migrate_from_sqlite`` does: ``run(request)`` plans, verifies only, or copies (and verifies), and returns a
:class:`Report`.

Every way a run stops is a :class:`MigrationFailed`: what happened, what it left in the target and how to go on;
the report so far (the ``--json`` document and the text printed before the stop) and the exit code. The command
parses its options into a :class:`Request` (with the operator's confirmation, the system checks and the progress
display as callables), calls :func:`run` and prints the report; nothing here writes to stdout or reads stdin.

Who owns what below this layer: the plan (``plan.py``), the preflight (``preflight.py``), the copy and what a
stopped copy leaves (``copy.py``), the checkpoints and the one-copy-per-target lock (``state.py``), the
verification (``verify.py``), the ``--plan`` estimate (``estimate.py``).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from deploy.management.exit_codes import ALREADY_RUNNING, DIFFERENCES_FOUND
from deploy.sqlite import state
from deploy.sqlite.copy import (
    AS_BEFORE,
    FINISHED,
    RESUMABLE,
    TARGET_ERRORS,
    CopyError,
    PreflightFailed,
    copy_database,
    error_text,
    interruption,
    start_source_check,
    truncate_tables,
)
from deploy.sqlite.estimate import cpu_slowdown, estimate_seconds, table_sizes
from deploy.sqlite.plan import source_plans, uncopied_tables, unknown_excludes
from deploy.sqlite.preflight import data_problems, structure_problems, target_problems
from deploy.sqlite.source import SourceError, open_source
from deploy.sqlite.verify import MAX_DIFFERENCES, verify_copy

# The problems a refusal lists before it says how many more there are.
SHOWN_PROBLEMS = 200
# The differences a failed verification lists (the --json document has them all, up to MAX_DIFFERENCES).
SHOWN_DIFFERENCES = 30


@dataclass
class Request:
    """A migrate_from_sqlite run, as its options give it."""

    source: str | None = None  # the SQLite file; None: SQLITE_SOURCE
    database: str = DEFAULT_DB_ALIAS
    plan: bool = False
    verify: bool = False
    verify_only: bool = False
    resume: bool = False
    truncate: bool = False
    exclude: list = field(default_factory=list)
    batch_size: int = 10_000
    workers: int = 2
    # Called with the target alias once the source's own check has started (the command's system checks).
    system_checks: Callable[[str], None] | None = None
    # Asked before --truncate empties tables; True goes on. None: never ask (--no-input).
    confirm: Callable[[str], bool] | None = None
    # Given "copied" or "verified", returns the progress(plan, rows) callable of that step (or None).
    progress: Callable[[str], Callable | None] | None = None


@dataclass
class Report:
    """What one run did: ``document`` is the --json report; without --json, ``output`` is printed whatever the
    verbosity (the plan), ``sentences`` at verbosity 1 and more, then ``verified`` (the success line)."""

    document: dict
    output: list = field(default_factory=list)
    sentences: list = field(default_factory=list)
    verified: str = ""


class MigrationFailed(Exception):
    """The run stopped: the message says what, what it left in the target and how to go on; ``report`` is what
    the run reported before the stop (or None), ``exit_code`` the command's exit status."""

    def __init__(self, message, report=None, exit_code=1):
        super().__init__(message)
        self.report, self.exit_code = report, exit_code

    @property
    def document(self):
        return self.report.document if self.report else None


def run(request):
    """Check the request, open the source, and plan, verify or copy; the target is locked for a copy."""
    _check_request(request)
    try:
        source = open_source(request.source)
    except SourceError as exc:
        raise MigrationFailed(str(exc)) from None
    try:
        if request.plan or not _is_postgresql(request.database):
            return _run(source, request)  # writes nothing (or the preflight says why it cannot)
        try:
            with state.exclusive(request.database):
                return _run(source, request)
        except state.Busy as exc:
            raise MigrationFailed(
                f"A copy into this database is already running ({exc}): nothing was changed. Wait for it "
                "to finish; if it stops, its message says how to go on.",
                exit_code=ALREADY_RUNNING,
            ) from None
    finally:
        source.close()


def _check_request(request):
    if request.batch_size < 1:
        raise MigrationFailed(f"--batch-size must be at least 1, not {request.batch_size}.")
    if request.workers < 1:
        raise MigrationFailed(f"--workers must be at least 1, not {request.workers}.")
    if request.verify_only and (request.resume or request.truncate):
        raise MigrationFailed("--verify-only compares and writes nothing: it cannot go with --resume or --truncate.")
    if request.resume and request.truncate:
        raise MigrationFailed("--resume finishes an interrupted copy and --truncate starts over: choose one.")
    bad = unknown_excludes(request.exclude)
    if bad:
        raise MigrationFailed(f"--exclude names no installed app or model: {', '.join(bad)}.")
    if request.database not in connections:
        raise MigrationFailed(f"--database: there is no database alias {request.database!r} in settings.DATABASES.")


def _is_postgresql(alias):
    """Whether the lock can be taken: a PostgreSQL target that answers (otherwise the preflight says why)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return False
    try:
        connection.ensure_connection()
    except DatabaseError:  # target_problems names the failure, with its message
        return False
    return True


def _progress(request, verb):
    return request.progress(verb) if request.progress else None


def _run(source, request):
    plans, skipped = source_plans(source.raw, request.exclude)
    target = request.database
    source_check = None
    if not (request.plan or request.verify_only):
        source_check = start_source_check(source.path, plans)  # the longest check: it runs meanwhile
    if request.system_checks:
        request.system_checks(target)
    if request.plan:
        return _plan(source, plans, skipped, request)
    if request.verify_only:
        problems = target_problems(target, plans, truncate=True)
        if problems:
            _fail_with(problems, "Cannot verify")
        return _verify(plans, source, request, copy_report=None)

    problems = structure_problems(source, plans) + target_problems(
        target, plans, truncate=request.truncate, resume=request.resume, source=source
    )
    if problems:
        # The copy cannot start: still name every problem of the data, so all are fixed in one pass.
        problems = data_problems(source, plans, target, source_check.result()) + problems
        _fail_with(problems, "The preflight found problems")
    if request.truncate:
        _confirm_truncate(plans, request)
        if _interrupted(target):
            truncate_tables(target, plans)  # start over from a clean slate
        # Otherwise each table is emptied in the transaction that copies it:
        # a problem found during the copy leaves the target as it was.
    try:
        copy_report = copy_database(
            source,
            plans,
            target,
            batch_size=request.batch_size,
            resume=request.resume,
            workers=request.workers,
            progress=_progress(request, "copied"),
            source_check=source_check,
            digests=request.verify,  # taken as the rows are read, for the verification that follows
        )
    except PreflightFailed as failed:
        if failed.resumed:
            _fail_with(
                failed.problems,
                "The preflight found problems",
                "the tables an earlier run copied are kept, nothing more was written",
            )
        _fail_with(failed.problems, "The preflight found problems")
    except CopyError as exc:
        raise MigrationFailed(stopped(exc, resume=request.resume, truncate=request.truncate)) from None
    except BaseException as exc:  # between two steps of copy_database: the checkpoint says what is left
        if not interruption(exc):
            raise
        raise MigrationFailed(
            "Interrupted. If tables were committed, they are recorded in the target: rerun with --resume to "
            "finish; otherwise rerun with --truncate to start over."
        ) from None
    if request.verify:
        return _verify(plans, source, request, copy_report=copy_report)
    return _report(copy_report, None)


def stopped(exc, *, resume=False, truncate=False):
    """One message: what stopped the copy (a :class:`CopyError`), and the truth about what it left in the target."""
    said = "Interrupted." if exc.interrupted else f"The copy stopped: {exc}"
    if exc.outcome == AS_BEFORE:
        again = "rerun with --truncate" if truncate else "rerun the same command"
        again = again[0].upper() + again[1:] if exc.interrupted else f"Once the cause is fixed, {again}"
        left = (
            "Nothing of this run was kept: the target is as it was before it (every index and constraint "
            f"back, no checkpoint). {again} to copy."
        )
        if resume:
            left = "Nothing of this run was kept, and no unfinished copy is left: rerun with --truncate."
    elif exc.outcome == FINISHED:
        left = (
            "The copy had finished: every table is copied and committed, and no checkpoint is left. "
            "Run with --verify-only to prove it."
        )
    elif exc.outcome == RESUMABLE:
        left = (
            "The tables copied so far are committed and recorded in the target: rerun with --resume to "
            "finish (or with --truncate to start over)."
        )
    else:
        left = (
            "The target could not be checked afterwards: its checkpoint (if the copy got that far) says what "
            "is left. Rerun with --resume to finish, or with --truncate to start over."
        )
    if exc.outcome is None:  # refused before changing anything: the message says it all
        return str(exc)
    return f"{said} {left}"


def _interrupted(target):
    with connections[target].cursor() as cursor:
        return state.current_run(cursor) is not None


def _verify(plans, source, request, copy_report):
    try:
        verification = verify_copy(
            plans,
            source,
            request.database,
            chunks=copy_report.chunks if copy_report else None,
            validated=copy_report.validated if copy_report else None,
            batch_size=request.batch_size,
            workers=request.workers,
            progress=_progress(request, "verified"),
        )
    except BaseException as exc:
        done = "The copy is complete and committed; " if copy_report else ""
        if interruption(exc):
            raise MigrationFailed(
                f"Interrupted during the verification: nothing was changed by it. {done}rerun with --verify-only "
                "to prove the copy."
            ) from None
        if isinstance(exc, TARGET_ERRORS):  # the target went away: the verification proves nothing either way
            raise MigrationFailed(
                f"The verification could not finish: PostgreSQL said: {error_text(exc)}. {done}rerun with "
                "--verify-only to prove the copy."
            ) from None
        raise
    report = _report(copy_report, verification)
    if not verification.ok:
        shown = "\n".join(f"  - {d}" for d in verification.differences[:SHOWN_DIFFERENCES])
        count = len(verification.differences)
        count = f"{count}" if count < MAX_DIFFERENCES else f"at least {count}"
        raise MigrationFailed(
            f"Verification found {count} difference(s) between the source and the target:\n{shown}",
            report,
            exit_code=DIFFERENCES_FOUND,
        )
    return report


def _fail_with(problems, heading, written="nothing was written to the target", report=None):
    shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
    more = f"\n  … and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    raise MigrationFailed(f"{heading} ({len(problems)}); {written}:\n{shown}{more}", report)


def _confirm_truncate(plans, request):
    if request.confirm is None:
        return
    name = connections[request.database].settings_dict.get("NAME")
    question = (
        f"This empties {len(plans)} table(s) of database {name!r} ({request.database}) before copying.\n"
        "Type 'yes' to continue, or 'no' to cancel: "
    )
    if not request.confirm(question):
        raise MigrationFailed("Cancelled: nothing was changed.")


def _plan(source, plans, skipped, request):
    """--plan: what would be copied, the estimate, and the preflight's read-only part (a plan that looks fine must
    not be followed by a refusal); problems fail the run with the plan as its report."""
    target = request.database
    problems = structure_problems(source, plans) + target_problems(
        target, plans, truncate=request.truncate, resume=request.resume
    )
    slowdown = cpu_slowdown()
    estimate = estimate_seconds(plans, table_sizes(source.raw, [p.table for p in plans]), slowdown=slowdown)
    total = sum(p.rows for p in plans)
    left = uncopied_tables(source.raw)
    settings_dict = connections[target].settings_dict
    where = {
        "alias": target,
        "name": settings_dict.get("NAME"),
        "host": settings_dict.get("HOST") or "(local socket)",
        "port": settings_dict.get("PORT") or None,
    }
    document = {
        "target": where,
        "preflight": [str(p) for p in problems],
        "tables": [
            {"model": p.label, "table": p.table, "rows": p.rows, "path": "fast" if p.fast else "general"} for p in plans
        ],
        "skipped": [{"model": label, "reason": reason} for label, reason in skipped],
        "not_copied": [{"table": table, "rows": rows} for table, rows in left],
        "rows": total,
        "estimated_seconds": round(estimate, 1),
        "cpu_slowdown": round(slowdown, 2),
    }
    width = max((len(p.label) for p in plans), default=10)
    port = f":{where['port']}" if where["port"] else ""
    output = [
        f"Target: database {where['name']!r} on {where['host']}{port} (alias {target!r}).",
        f"{'model':<{width}}  {'table':<32} {'rows':>10}  path",
        *(f"{p.label:<{width}}  {p.table:<32} {p.rows:>10}  {'fast' if p.fast else 'general'}" for p in plans),
        *(f"skipped {label}: {reason}" for label, reason in skipped),
        *(f"not copied: table {table!r} ({rows} rows): no model of this code has it" for table, rows in left),
        f"{len(plans)} tables, {total} rows; estimated copy time {estimate:.1f} s (the benchmark machine's "
        f"figures, the work per row scaled by this machine's CPU now: {slowdown:.1f}x slower; see "
        "docs/migration.md). Nothing was written.",
    ]
    if not problems:
        output.append("Preflight: nothing stops the copy.")
    report = Report(document, output=output)
    if problems:
        _fail_with(problems, "The preflight found problems", "the plan wrote nothing", report)
    return report


def _report(copy_report, verification):
    """The report of a copy, a verification, or both."""
    tables = {}
    if copy_report:
        for t in copy_report.tables:
            tables[t.label] = {"table": t.table, "rows": t.rows, "seconds": round(t.seconds, 3), "path": t.path}
    if verification:
        for label, v in verification.tables.items():
            entry = tables.setdefault(label, {"table": v["table"], "rows": v["rows"]})
            entry["verified"] = v["verified"]
            entry["compared_by_value"] = v["compared_by_value"]
    document = {
        "tables": tables,
        "rows": sum(t["rows"] for t in tables.values()),
        "copy_seconds": round(copy_report.seconds, 3) if copy_report else None,
        "resumed": copy_report.resumed if copy_report else False,
        "verified": verification.ok if verification else None,
        "verify_seconds": round(verification.seconds, 3) if verification else None,
        "differences": [str(d) for d in verification.differences] if verification else [],
        "foreign_keys": verification.foreign_keys if verification else None,
    }
    report = Report(document)
    if copy_report:
        rate = copy_report.rows / max(copy_report.seconds, 1e-6)
        report.sentences.append(
            f"Copied {copy_report.rows} rows in {len(copy_report.tables)} tables in {copy_report.seconds:.1f} s "
            f"({rate:,.0f} rows/s){' (resumed)' if copy_report.resumed else ''}."
        )
    if verification and verification.ok:
        keys = verification.foreign_keys
        validated = keys["validated_by_the_copy"]
        by_copy = f", {validated} validated by the copy" if validated else ""
        report.verified = (
            f"Verified: {len(verification.tables)} tables identical, row by row, sequences and foreign "
            f"keys checked ({keys['queried']} queried{by_copy}; {verification.seconds:.1f} s)."
        )
    return report
