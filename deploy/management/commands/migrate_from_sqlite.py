"""Copy every row from the SQLite database into PostgreSQL, and prove the copy.

Exit status: 0 when done (and, with --verify, proven identical); 3 when
verification finds differences; 1 when the copy could not run (the message
says what it left in the target); 4 when another copy into the same
database is running.
"""

import sys
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from deploy.management.exit_codes import ALREADY_RUNNING, DIFFERENCES_FOUND
from deploy.management.output import JsonDocument
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
    start_source_check,
    truncate_tables,
)
from deploy.sqlite.estimate import cpu_slowdown, estimate_seconds, table_sizes
from deploy.sqlite.plan import source_plans, unknown_excludes
from deploy.sqlite.preflight import data_problems, structure_problems, target_problems
from deploy.sqlite.source import SourceError, open_source
from deploy.sqlite.verify import MAX_DIFFERENCES, verify_copy


class Progress:
    """A bar per table on a terminal (tqdm); one plain line per finished table otherwise."""

    def __init__(self, verb, stream, tty, enabled):
        self.verb, self.stream, self.tty, self.enabled = verb, stream, tty, enabled
        self.done, self.bars, self.started, self.finished = {}, {}, {}, set()
        self.lock = threading.Lock()

    def __call__(self, plan, rows):
        if not self.enabled:
            return
        with self.lock:
            self.started.setdefault(plan.label, time.monotonic())
            self.done[plan.label] = self.done.get(plan.label, 0) + rows
            if self.tty:
                self._bar(plan).update(rows)
            complete = self.done[plan.label] >= plan.rows and (rows or plan.rows == 0)
            if complete and plan.label not in self.finished:
                self.finished.add(plan.label)
                self._finish(plan)

    def _bar(self, plan):
        from tqdm import tqdm

        if plan.label not in self.bars:
            self.bars[plan.label] = tqdm(
                total=plan.rows, desc=plan.label, unit=" rows", file=self.stream, position=len(self.bars), leave=True
            )
        return self.bars[plan.label]

    def _finish(self, plan):
        seconds = max(time.monotonic() - self.started[plan.label], 1e-6)
        if self.tty:
            self._bar(plan).close()
        else:
            rate = self.done[plan.label] / seconds
            self.stream.write(f"{self.verb} {plan.label}: {self.done[plan.label]} rows ({rate:,.0f} rows/s)\n")
            self.stream.flush()


class Command(BaseCommand):
    help = (
        "Copy every row of every installed model from the SQLite database (--source, or SQLITE_SOURCE) into "
        "PostgreSQL, in bounded memory with COPY, and with --verify prove that the copy is identical."
    )
    # The system checks run in handle(), as migrate's do: there, while the source's own checks have started.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--source", metavar="PATH", help="SQLite file to copy from (default: SQLITE_SOURCE).")
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help="Alias of the PostgreSQL target (default 'default')."
        )
        parser.add_argument("--verify", action="store_true", help="After the copy, prove it identical.")
        parser.add_argument(
            "--verify-only", action="store_true", help="Compare source and target without copying anything."
        )
        parser.add_argument("--resume", action="store_true", help="Finish a copy that was interrupted.")
        parser.add_argument(
            "--truncate",
            action="store_true",
            help="Empty the copied tables of the target first (asks for confirmation without --no-input).",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="APP_LABEL[.MODEL]",
            help="Leave out an app or a model; may be given several times.",
        )
        parser.add_argument("--batch-size", type=int, default=10_000, help="Rows per chunk (default 10000).")
        parser.add_argument(
            "--workers", type=int, default=2, help="Transactions copying (and chunks verified) at once (default 2)."
        )
        parser.add_argument("--plan", action="store_true", help="Show what would be copied, and write nothing.")
        parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
        parser.add_argument(
            "--no-input", "--noinput", action="store_false", dest="interactive", help="Never ask for confirmation."
        )
        parser.add_argument("--skip-checks", action="store_true", help="Skip system checks.")

    def handle(self, *args, **options):
        self.json = JsonDocument(self.stdout)
        if not options["json"]:
            return self._handle(options)
        with self.json.run():  # one JSON document on stdout, errors included; logs on stderr
            self._handle(options)
        return None

    def _handle(self, options):
        self.options = options
        self._check_options(options)
        try:
            source = open_source(options["source"])
        except SourceError as exc:
            raise CommandError(str(exc)) from None
        try:
            if options["plan"] or not self._is_postgresql(options["database"]):
                return self._run(source, options)  # writes nothing (or the preflight says why it cannot)
            try:
                with state.exclusive(options["database"]):
                    return self._run(source, options)
            except state.Busy as exc:
                raise CommandError(
                    f"A copy into this database is already running ({exc}): nothing was changed. Wait for it "
                    "to finish; if it stops, its message says how to go on.",
                    returncode=ALREADY_RUNNING,
                ) from None
        finally:
            source.close()

    def _is_postgresql(self, alias):
        """Whether the lock can be taken: a PostgreSQL target that answers (otherwise the preflight says why)."""
        connection = connections[alias]
        if connection.vendor != "postgresql":
            return False
        try:
            connection.ensure_connection()
        except DatabaseError:  # target_problems names the failure, with its message
            return False
        return True

    def _check_options(self, options):
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1, not {options['batch_size']}.")
        if options["workers"] < 1:
            raise CommandError(f"--workers must be at least 1, not {options['workers']}.")
        if options["verify_only"] and (options["resume"] or options["truncate"]):
            raise CommandError("--verify-only compares and writes nothing: it cannot go with --resume or --truncate.")
        if options["resume"] and options["truncate"]:
            raise CommandError("--resume finishes an interrupted copy and --truncate starts over: choose one.")
        bad = unknown_excludes(options["exclude"])
        if bad:
            raise CommandError(f"--exclude names no installed app or model: {', '.join(bad)}.")
        if options["database"] not in connections:
            raise CommandError(f"--database: there is no database alias {options['database']!r} in settings.DATABASES.")

    def _run(self, source, options):
        plans, skipped = source_plans(source.raw, options["exclude"])
        target = options["database"]
        source_check = None
        if not (options["plan"] or options["verify_only"]):
            source_check = start_source_check(source.path, plans)  # the longest check: it runs meanwhile
        if not options["skip_checks"]:
            self.check(databases=[target])
        if options["plan"]:
            # The preflight's read-only part: a plan that looks fine must not be followed by a refusal.
            problems = structure_problems(source, plans) + target_problems(
                target, plans, truncate=options["truncate"], resume=options["resume"]
            )
            slowdown = cpu_slowdown()
            estimate = estimate_seconds(plans, table_sizes(source.raw, [p.table for p in plans]), slowdown=slowdown)
            self._show_plan(plans, skipped, options, target, problems, estimate, slowdown)
            if problems:
                self._fail_with(problems, "The preflight found problems", "the plan wrote nothing")
            return None
        if options["verify_only"]:
            problems = target_problems(target, plans, truncate=True)
            if problems:
                self._fail_with(problems, "Cannot verify")
            return self._verify(plans, source, target, options, copy_report=None)

        problems = structure_problems(source, plans) + target_problems(
            target, plans, truncate=options["truncate"], resume=options["resume"], source=source
        )
        if problems:
            # The copy cannot start: still name every problem of the data, so all are fixed in one pass.
            problems = data_problems(source, plans, target, source_check.result()) + problems
            self._fail_with(problems, "The preflight found problems")
        if options["truncate"]:
            self._confirm_truncate(plans, target, options)
            if self._interrupted(target):
                truncate_tables(target, plans)  # start over from a clean slate
            # Otherwise each table is emptied in the transaction that copies it:
            # a problem found during the copy leaves the target as it was.
        progress = self._progress("copied", options)
        try:
            report = copy_database(
                source,
                plans,
                target,
                batch_size=options["batch_size"],
                resume=options["resume"],
                workers=options["workers"],
                progress=progress,
                source_check=source_check,
                digests=options["verify"],  # taken as the rows are read, for the verification that follows
            )
        except PreflightFailed as failed:
            if failed.resumed:
                self._fail_with(
                    failed.problems,
                    "The preflight found problems",
                    "the tables an earlier run copied are kept, nothing more was written",
                )
            self._fail_with(failed.problems, "The preflight found problems")
        except CopyError as exc:
            raise CommandError(self._stopped(exc, options)) from None
        except KeyboardInterrupt:  # between two steps of copy_database: the checkpoint says what is left
            raise CommandError(
                "Interrupted. If tables were committed, they are recorded in the target: rerun with --resume to "
                "finish; otherwise rerun with --truncate to start over."
            ) from None
        if options["verify"]:
            return self._verify(plans, source, target, options, copy_report=report)
        self._report(report, None, options)
        return None

    def _stopped(self, exc, options):
        """One message: what stopped the copy, and the truth about what it left in the target."""
        said = "Interrupted." if exc.interrupted else f"The copy stopped: {exc}"
        if exc.outcome == AS_BEFORE:
            again = "rerun with --truncate" if options["truncate"] else "rerun the same command"
            again = again[0].upper() + again[1:] if exc.interrupted else f"Once the cause is fixed, {again}"
            left = (
                "Nothing of this run was kept: the target is as it was before it (every index and constraint "
                f"back, no checkpoint). {again} to copy."
            )
            if options["resume"]:
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

    def _progress(self, verb, options):
        stream = sys.stderr if options["json"] else self.stdout
        tty = hasattr(stream, "isatty") and stream.isatty()
        return Progress(verb, stream, tty, enabled=options["verbosity"] >= 1)

    def _interrupted(self, target):
        with connections[target].cursor() as cursor:
            return state.current_run(cursor) is not None

    def _verify(self, plans, source, target, options, copy_report):
        try:
            verification = verify_copy(
                plans,
                source,
                target,
                chunks=copy_report.chunks if copy_report else None,
                validated=copy_report.validated if copy_report else None,
                batch_size=options["batch_size"],
                workers=options["workers"],
                progress=self._progress("verified", options),
            )
        except KeyboardInterrupt:
            done = "The copy is complete and committed; " if copy_report else ""
            raise CommandError(
                f"Interrupted during the verification: nothing was changed by it. {done}rerun with --verify-only "
                "to prove the copy."
            ) from None
        except TARGET_ERRORS as exc:  # the target went away: the verification proves nothing either way
            done = "The copy is complete and committed; " if copy_report else ""
            raise CommandError(
                f"The verification could not finish: PostgreSQL said: {error_text(exc)}. {done}rerun with "
                "--verify-only to prove the copy."
            ) from None
        self._report(copy_report, verification, options)
        if not verification.ok:
            shown = "\n".join(f"  - {d}" for d in verification.differences[:30])
            count = len(verification.differences)
            count = f"{count}" if count < MAX_DIFFERENCES else f"at least {count}"
            raise CommandError(
                f"Verification found {count} difference(s) between the source and the target:\n{shown}",
                returncode=DIFFERENCES_FOUND,
            )
        return

    def _fail_with(self, problems, heading, written="nothing was written to the target"):
        shown = "\n".join(f"  - {p}" for p in problems[:200])
        more = f"\n  … and {len(problems) - 200} more" if len(problems) > 200 else ""
        raise CommandError(f"{heading} ({len(problems)}); {written}:\n{shown}{more}")

    def _confirm_truncate(self, plans, target, options):
        if not options["interactive"]:
            return
        name = connections[target].settings_dict.get("NAME")
        answer = input(
            f"This empties {len(plans)} table(s) of database {name!r} ({target}) before copying.\n"
            "Type 'yes' to continue, or 'no' to cancel: "
        )
        if answer.strip().lower() != "yes":
            raise CommandError("Cancelled: nothing was changed.")

    def _show_plan(self, plans, skipped, options, target, problems, estimate, slowdown):
        total = sum(p.rows for p in plans)
        settings_dict = connections[target].settings_dict
        where = {
            "alias": target,
            "name": settings_dict.get("NAME"),
            "host": settings_dict.get("HOST") or "(local socket)",
            "port": settings_dict.get("PORT") or None,
        }
        if options["json"]:
            data = {
                "target": where,
                "preflight": [str(p) for p in problems],
                "tables": [
                    {"model": p.label, "table": p.table, "rows": p.rows, "path": "fast" if p.fast else "general"}
                    for p in plans
                ],
                "skipped": [{"model": label, "reason": reason} for label, reason in skipped],
                "rows": total,
                "estimated_seconds": round(estimate, 1),
                "cpu_slowdown": round(slowdown, 2),
            }
            self.json.set(data)
            return
        width = max((len(p.label) for p in plans), default=10)
        port = f":{where['port']}" if where["port"] else ""
        self.stdout.write(f"Target: database {where['name']!r} on {where['host']}{port} (alias {target!r}).")
        self.stdout.write(f"{'model':<{width}}  {'table':<32} {'rows':>10}  path")
        for p in plans:
            self.stdout.write(f"{p.label:<{width}}  {p.table:<32} {p.rows:>10}  {'fast' if p.fast else 'general'}")
        for label, reason in skipped:
            self.stdout.write(f"skipped {label}: {reason}")
        self.stdout.write(
            f"{len(plans)} tables, {total} rows; estimated copy time {estimate:.1f} s (the benchmark machine's "
            f"figures, the work per row scaled by this machine's CPU now: {slowdown:.1f}x slower; see "
            "docs/migration.md). Nothing was written."
        )
        if not problems:
            self.stdout.write("Preflight: nothing stops the copy.")

    def _report(self, copy_report, verification, options):
        if options["json"]:
            tables = {}
            if copy_report:
                for t in copy_report.tables:
                    tables[t.label] = {"table": t.table, "rows": t.rows, "seconds": round(t.seconds, 3), "path": t.path}
            if verification:
                for label, v in verification.tables.items():
                    entry = tables.setdefault(label, {"table": v["table"], "rows": v["rows"]})
                    entry["verified"] = v["verified"]
                    entry["compared_by_value"] = v["compared_by_value"]
            data = {
                "tables": tables,
                "rows": sum(t["rows"] for t in tables.values()),
                "copy_seconds": round(copy_report.seconds, 3) if copy_report else None,
                "resumed": copy_report.resumed if copy_report else False,
                "verified": verification.ok if verification else None,
                "verify_seconds": round(verification.seconds, 3) if verification else None,
                "differences": [str(d) for d in verification.differences] if verification else [],
                "foreign_keys": verification.foreign_keys if verification else None,
            }
            self.json.set(data)
            return
        if options["verbosity"] < 1:
            return
        if copy_report:
            rate = copy_report.rows / max(copy_report.seconds, 1e-6)
            self.stdout.write(
                f"Copied {copy_report.rows} rows in {len(copy_report.tables)} tables in {copy_report.seconds:.1f} s "
                f"({rate:,.0f} rows/s){' (resumed)' if copy_report.resumed else ''}."
            )
        if verification and verification.ok:
            keys = verification.foreign_keys
            validated = keys["validated_by_the_copy"]
            by_copy = f", {validated} validated by the copy" if validated else ""
            self.stdout.write(
                self.style.SUCCESS(
                    f"Verified: {len(verification.tables)} tables identical, row by row, sequences and foreign "
                    f"keys checked ({keys['queried']} queried{by_copy}; {verification.seconds:.1f} s)."
                )
            )
