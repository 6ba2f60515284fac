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
from django.db import DEFAULT_DB_ALIAS

from deploy.management.output import JsonDocument
from deploy.sqlite import migrate


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
        try:
            report = migrate.run(self._request(options))
        except migrate.MigrationFailed as exc:
            if exc.report:
                self._print(exc.report, options)
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        self._print(report, options)

    def _request(self, options):
        return migrate.Request(
            source=options["source"],
            database=options["database"],
            plan=options["plan"],
            verify=options["verify"],
            verify_only=options["verify_only"],
            resume=options["resume"],
            truncate=options["truncate"],
            exclude=options["exclude"],
            batch_size=options["batch_size"],
            workers=options["workers"],
            system_checks=None if options["skip_checks"] else lambda alias: self.check(databases=[alias]),
            confirm=self._confirm if options["interactive"] else None,
            progress=lambda verb: self._progress(verb, options),
        )

    def _confirm(self, question):
        return input(question).strip().lower() == "yes"

    def _progress(self, verb, options):
        stream = sys.stderr if options["json"] else self.stdout
        tty = hasattr(stream, "isatty") and stream.isatty()
        return Progress(verb, stream, tty, enabled=options["verbosity"] >= 1)

    def _print(self, report, options):
        if options["json"]:
            self.json.set(report.document)
            return
        for line in report.output:
            self.stdout.write(line)
        if options["verbosity"] < 1:
            return
        for sentence in report.sentences:
            self.stdout.write(sentence)
        if report.verified:
            self.stdout.write(self.style.SUCCESS(report.verified))
