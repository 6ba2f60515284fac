"""Carrying the SQLite file into the cluster for the cut-over: an S3 object with its SHA-256 checked on arrival.

Why S3 and not a stream through the Kubernetes API (``kubectl cp``, an exec's stdin): the API server is not
made to carry gigabytes (exec streams break on idle or long transfers and cannot resume), the operator's
machine would have to stay connected for the whole copy, and the Job would need a shell open to an exec. The
object is written once from the operator's machine, read by the Job through its pod identity (no key in the
cluster), survives a retried Job, and S3 checks its own transfer; the Job still checks the SHA-256 the
operator took of the file it meant to send, so a wrong or replaced object is refused before anything is
written to PostgreSQL.
"""

import hashlib
import os
from pathlib import Path

from deploy.aws.session import explain

CHUNK = 1 << 20
SHA256_METADATA = "sha256"


class TransferError(Exception):
    """The file could not be sent or fetched, or did not arrive as it was sent."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


PREFIX = "cutover/"  # the only keys the cut-over Job's role may read (deploy/aws/cfn/cutover.py)


def object_key(app_name, sha256):
    return f"{PREFIX}{app_name}/{sha256}.sqlite3"


def upload(s3, path, bucket, key, sha256):
    """Write ``path`` to ``s3://bucket/key`` with its SHA-256 in the object's metadata."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_METADATA: sha256}})
    except (BotoCoreError, ClientError) as exc:
        raise TransferError(str(explain(exc, f"Writing s3://{bucket}/{key}"))) from None


def fetch(s3, bucket, key, sha256, destination):
    """Stream ``s3://bucket/key`` to ``destination``, hashing as it arrives; keep it only if the SHA-256 matches.

    The bytes go to ``destination.partial`` first and are renamed only after the check, so a refused or broken
    transfer leaves no file at ``destination`` (and no partial one).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    destination = Path(destination)
    partial = destination.with_name(destination.name + ".partial")
    digest = hashlib.sha256()
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with open(partial, "wb") as handle:
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                handle.write(chunk)
    except (BotoCoreError, ClientError) as exc:
        partial.unlink(missing_ok=True)
        raise TransferError(str(explain(exc, f"Reading s3://{bucket}/{key}"))) from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise TransferError(f"Cannot write {destination}: {exc.strerror}.") from None
    got = digest.hexdigest()
    if got != sha256:
        partial.unlink(missing_ok=True)
        raise TransferError(
            f"s3://{bucket}/{key} does not have the SHA-256 the cut-over sent ({got} instead of {sha256}): "
            "refused, nothing was written. Start the cut-over again (it uploads the file again)."
        )
    os.replace(partial, destination)
    return destination
