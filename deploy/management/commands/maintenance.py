"""Switch maintenance mode on or off, or say whether it is on (deploy/maintenance.py)."""

from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from deploy import maintenance
from deploy.management.output import JsonDocument


class Command(BaseCommand):
    help = (
        "Switch maintenance mode on or off, or show it: while on, every page answers 503 with Retry-After "
        "(probes and /metrics still answer) and nothing is written. The flag is MAINTENANCE_FILE (one machine) "
        "and/or the MAINTENANCE_CACHE key (every pod sharing that Redis)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=("on", "off", "status"), help="on, off, or status.")
        parser.add_argument(
            "--retry-after",
            type=int,
            default=maintenance.DEFAULT_RETRY_AFTER,
            metavar="SECONDS",
            help=(
                f"With on: the Retry-After the 503 answers carry, 1 to {maintenance.MAX_RETRY_AFTER} "
                f"(default {maintenance.DEFAULT_RETRY_AFTER})."
            ),
        )
        parser.add_argument("--reason", default="", help="With on: a note kept with the flag (shown by status).")
        parser.add_argument("--json", action="store_true", help="Print one JSON document on stdout.")

    def handle(self, *args, action, retry_after, reason, json, verbosity, **options):
        document = JsonDocument(self.stdout)
        with document.run() if json else nullcontext():
            report = self._run(action, retry_after, reason)
            if json:
                document.set(report)
            else:
                self._say(report, verbosity)

    def _run(self, action, retry_after, reason):
        try:
            return maintenance.switch(action, retry_after, reason)
        except maintenance.MaintenanceError as exc:
            raise CommandError(str(exc)) from None

    def _say(self, report, verbosity):
        where = " and ".join(report["flags"]) or "no flag configured"
        if report["on"]:
            state = report["state"]
            since = f" since {state['since']}" if state.get("since") else ""
            self.stdout.write(f"Maintenance is on{since} (Retry-After {state.get('retry_after')} s; {where}).")
            if verbosity >= 2 and state.get("reason"):
                self.stdout.write(f"Reason: {state['reason']}")
        else:
            self.stdout.write(f"Maintenance is off ({where}).")
