"""PostgreSQL backups in S3: streamed up with their checksum, listed, and fetched back verified.

The backup CronJob's ``pg_dump`` writes into a FIFO that ``upload`` reads: the dump goes to S3 in parts as
it is made (no copy on a disk), its SHA-256 computed on the way and stored with the object as its tag
``sha256``. The upload is one multipart upload: until it completes nothing is visible, and a failed
``pg_dump`` (its exit status, written to a file beside the FIFO) aborts it, so a listed backup is always
whole. ``download`` writes a backup to a file and refuses it, leaving no file, when the bytes do not match
the stored checksum. Credentials are the standard chain: in the cluster, the CronJob's EKS Pod Identity.

Run in the container as ``python -m deploy.aws.backups upload|download|list`` (no Django settings needed).
"""

import argparse
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "postgres/"
# CloudNativePG's WAL archive and base backups (Barman Cloud, under ARCHIVE_PREFIX/CLUSTER/): apart from the dumps,
# because the plugin's recovery window, not the bucket's expiry, decides what the archive can drop.
ARCHIVE_PREFIX = "cnpg/"
PART_SIZE = 8 * 1024 * 1024  # S3's parts are at least 5 MiB, except the last
CHECKSUM_TAG = "sha256"
_NAME = re.compile(r"\d{8}T\d{6}Z\.dump")  # what backup_name puts after DATABASE-


class BackupError(Exception):
    """A backup that could not be written, found or verified; the message says which and why."""


@dataclass(frozen=True)
class Backup:
    key: str
    size: int
    modified: datetime
    sha256: str = ""

    @property
    def name(self):
        return self.key.removeprefix(PREFIX)


def backup_name(database, now=None):
    """The name a backup of ``database`` made ``now`` gets: DATABASE-YYYYMMDDTHHMMSSZ.dump (sorts by time)."""
    return f"{database}-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}.dump"


def _client(s3=None):
    import boto3

    return s3 or boto3.client("s3")


def _wait_for_status(status_path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = Path(status_path).read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            return int(text) if text.isdigit() else 1
        time.sleep(0.2)
    return None


def upload(stream, bucket, name, s3=None, status_path=None, status_timeout=60):
    """Stream ``stream`` (a binary file) to ``s3://bucket/postgres/name``; return (Backup, bytes, sha256).

    With ``status_path``, the writer's exit status must read 0 after the end of the stream, else the upload
    is aborted and nothing is left in the bucket.
    """
    s3 = _client(s3)
    key = PREFIX + name
    digest, size, parts = hashlib.sha256(), 0, []
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/octet-stream")["UploadId"]
    try:
        while True:
            chunk = _read_part(stream)
            if not chunk and parts:
                break
            digest.update(chunk)
            size += len(chunk)
            answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=chunk)
            parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
            if not chunk:
                break
        if status_path is not None:
            status = _wait_for_status(status_path, status_timeout)
            if status != 0:
                raise BackupError(
                    f"pg_dump {'did not report its end' if status is None else f'exited with status {status}'}: "
                    f"the upload of {key} is abandoned, nothing is stored."
                )
        if size == 0:
            raise BackupError(f"The dump for {key} is empty: nothing is stored.")
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    checksum = digest.hexdigest()
    s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": CHECKSUM_TAG, "Value": checksum}]})
    return Backup(key=key, size=size, modified=datetime.now(UTC), sha256=checksum)


def _read_part(stream):
    chunks, wanted = [], PART_SIZE
    while wanted:
        chunk = stream.read(wanted)
        if not chunk:
            break
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)


def checksum_of(bucket, key, s3=None):
    tags = _client(s3).get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return next((t["Value"] for t in tags if t["Key"] == CHECKSUM_TAG), "")


def list_backups(bucket, database=None, s3=None):
    """The backups in the bucket, oldest first (of ``database`` only, when given)."""
    s3 = _client(s3)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Contents", []):
            backup = Backup(key=item["Key"], size=item["Size"], modified=item["LastModified"])
            # Of ``database`` exactly: a prefix would also take DATABASE-staging-…'s backups, whose names sort
            # after DATABASE-2026…'s, so "the latest" of app would be one of app-staging.
            head, _, tail = backup.name.rpartition("-")
            if backup.name.endswith(".dump") and (database is None or (head == database and _NAME.fullmatch(tail))):
                found.append(backup)
    return sorted(found, key=lambda b: b.name)


def latest(bucket, database, s3=None):
    found = list_backups(bucket, database, s3)
    if not found:
        raise BackupError(f"No backup of database {database!r} in s3://{bucket}/{PREFIX}.")
    return found[-1]


def download(bucket, name, path, s3=None):
    """Write backup ``name`` to ``path`` and check it against its stored checksum; return the checksum."""
    s3 = _client(s3)
    key = PREFIX + name
    try:
        expected = checksum_of(bucket, key, s3)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except s3.exceptions.NoSuchKey:
        names = ", ".join(b.name for b in list_backups(bucket, s3=s3)[-10:]) or "none"
        raise BackupError(f"No backup {name!r} in s3://{bucket}/{PREFIX}; the latest are: {names}.") from None
    if not expected:
        raise BackupError(f"s3://{bucket}/{key} has no {CHECKSUM_TAG} tag: it was not written by the backup job.")
    digest, path = hashlib.sha256(), Path(path)
    try:
        with path.open("wb") as out:
            for chunk in body.iter_chunks(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise BackupError(
                f"s3://{bucket}/{key} does not match its checksum (sha256 {digest.hexdigest()} != stored {expected}): "
                "the backup is damaged; restore another one."
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return expected


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.aws.backups", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="Stream a dump to S3 with its checksum.")
    up.add_argument("--bucket", required=True)
    up.add_argument("--database", required=True, help="Database name: the backup is DATABASE-<UTC time>.dump.")
    up.add_argument("--source", required=True, help="File or FIFO the dump is read from.")
    up.add_argument("--status", help="File where the dump's writer leaves its exit status.")
    down = commands.add_parser("download", help="Fetch a backup and verify its checksum.")
    down.add_argument("--bucket", required=True)
    down.add_argument("--name", required=True, help="A backup name, or 'latest:DATABASE'.")
    down.add_argument("--to", required=True)
    listing = commands.add_parser("list", help="List the backups.")
    listing.add_argument("--bucket", required=True)
    listing.add_argument("--database")
    options = parser.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if options.command == "upload":
            name = backup_name(options.database)
            with open(options.source, "rb") as stream:
                backup = upload(stream, options.bucket, name, status_path=options.status)
            print(f"backup: wrote s3://{options.bucket}/{backup.key} ({backup.size} bytes, sha256 {backup.sha256})")
        elif options.command == "download":
            name = options.name
            if name.startswith("latest:"):
                name = latest(options.bucket, name.removeprefix("latest:")).name
            checksum = download(options.bucket, name, options.to)
            print(f"restore: fetched {name} (sha256 {checksum} verified)")
        else:
            # The listing Job's format (deploy/k8s/restore.py reads it back).
            for backup in list_backups(options.bucket, options.database):
                print(f"backup: {backup.name} {backup.size}")
            print("backups: listed")
    except BackupError as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        # The Job's log is what the operator reads: one line saying what S3 refused, not a traceback.
        print(f"backup: S3 refused or could not be reached for s3://{options.bucket}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(os.sys.argv[1:]))
