"""The cut-over Job's first step: fetch the SQLite file from S3 and check its SHA-256 (deploy/aws/transfer.py)."""

import re

from django.core.management.base import BaseCommand, CommandError

from deploy.aws import transfer


class Command(BaseCommand):
    help = (
        "Fetch the S3 object --bucket/--key to a file and keep it only if its SHA-256 is the one given (the "
        "cut-over Job runs it with the pod's own AWS identity). A mismatch leaves no file and exits 1."
    )

    def add_arguments(self, parser):
        parser.add_argument("--bucket", required=True, help="The S3 bucket (DEPLOY['cutover_bucket']).")
        parser.add_argument("--key", required=True, help="The object's key.")
        parser.add_argument("--sha256", required=True, help="The SHA-256 (hex) the file must have.")
        parser.add_argument("--to", required=True, metavar="PATH", help="Where to write it.")

    def handle(self, *args, bucket, key, sha256, to, verbosity, **options):
        import boto3

        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise CommandError("--sha256 must be 64 lower-case hex digits.")
        url = f"s3://{bucket}/{key}"
        try:
            path = transfer.fetch(boto3.client("s3"), bucket, key, sha256, to)
        except transfer.TransferError as exc:
            raise CommandError(str(exc)) from None
        if verbosity:
            self.stdout.write(f"Fetched {url} to {path}: SHA-256 {sha256} as sent.")
