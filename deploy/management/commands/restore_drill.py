"""Restore a backup into a scratch database and prove it against the live one (deploy/drill.py)."""

import tempfile
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError

from deploy.aws.backups import PREFIX, BackupError, download, latest
from deploy.conf import ConfigError, get_config
from deploy.drill import DrillError, check_mode, no_bucket_message, run_drill
from deploy.management.exit_codes import DIFFERENCES_FOUND
from deploy.management.output import JsonDocument


class Command(BaseCommand):
    help = (
        "Restore the latest (or a chosen) PostgreSQL backup into a scratch database and compare it with the live "
        "database, table by table, with the migration verification's digests; report the rows that differ (written, "
        "changed or deleted since the dump). Exit 0: identical; 3: differences found; 1: the drill could not run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--backup", default="latest", help="Backup name in the bucket (default: the latest).")
        parser.add_argument("--file", help="A dump file to restore instead of one from the bucket.")
        parser.add_argument("--bucket", help="S3 bucket of the backups (default: DEPLOY['postgres_backup_bucket']).")
        parser.add_argument("--database", default="default", help="Alias of the live database (default: default).")
        parser.add_argument("--environment", metavar="NAME", help="Take the bucket from this environment's settings.")
        parser.add_argument("--keep", action="store_true", help="Keep the scratch database afterwards.")
        parser.add_argument("--json", action="store_true", help="Print one JSON report on stdout.")

    def handle(self, *args, **options):
        if not options["json"]:
            return self._handle(options, None)
        # One JSON document on stdout whatever happens: the report, or {"ok": false, "error": ...} (exit 1).
        document = JsonDocument(self.stdout)
        with document.run():
            self._handle(options, document)
        return None

    def _handle(self, options, document):
        try:
            report = self._drill(options)
        except (BackupError, DrillError, ConfigError) as exc:
            raise CommandError(str(exc)) from None
        for name in report.left_behind:
            self.stderr.write(
                f"The scratch database {name} of an earlier drill is still there, using room on the database's "
                f'volume: drop it with DROP DATABASE "{name}" WITH (FORCE), unless you kept it on purpose.'
            )
        if document is not None:
            document.set(report.as_dict())
        else:
            for label, table in report.tables.items():
                if options["verbosity"] >= 2 or table["proven_by"] in ("differs", "missing"):
                    backup_rows, live_rows = (
                        "no such table" if rows is None else f"{rows} rows"
                        for rows in (table["backup_rows"], table["live_rows"])
                    )
                    self.stdout.write(f"{label}: backup {backup_rows}, live {live_rows}")
            for difference in report.differences:
                self.stdout.write(f"  {difference}")
        if not report.ok:
            raise CommandError(
                f"The backup {report.backup} restored, and {len(report.differences)} row difference(s) from the live "
                "database were found (listed above): rows written, changed or deleted since the dump.",
                returncode=DIFFERENCES_FOUND,
            )
        if document is None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"The backup {report.backup} restored into {report.scratch_database} and matches the live "
                    f"database ({len(report.tables)} table(s))."
                )
            )

    def _drill(self, options):
        def progress(message):
            if options["verbosity"] >= 2:
                self.stderr.write(message)

        config = get_config(options["environment"])
        check_mode(config, dump_given=bool(options["file"]))
        if options["file"]:
            path = Path(options["file"])
            if not path.is_file():
                raise CommandError(f"--file {path}: no such file.")
            return run_drill(path, path.name, options["database"], options["keep"], progress, config=config)
        bucket = options["bucket"] or config.postgres_backup_bucket
        if not bucket:
            raise CommandError(no_bucket_message(config))
        name = options["backup"]
        with tempfile.TemporaryDirectory(prefix="restore-drill-") as folder:
            try:
                if name == "latest":
                    name = latest(bucket, config.postgres_database).name
                path = Path(folder) / "backup.dump"
                download(bucket, name, path)
            except (BotoCoreError, ClientError) as exc:
                raise BackupError(
                    f"Could not read s3://{bucket}/{PREFIX}{'' if name == 'latest' else name}: {exc}. Check the "
                    "bucket's name (DEPLOY['postgres_backup_bucket'], --bucket), your AWS credentials and region."
                ) from None
            progress(f"fetched {name} from s3://{bucket} (checksum verified)")
            return run_drill(path, name, options["database"], options["keep"], progress, config=config)
