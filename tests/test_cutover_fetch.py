"""The cut-over Job's first step for real: `manage.py fetch_sqlite` in its own process, reading moto's S3 server
on 127.0.0.1 with the standard credential chain (as the pod's identity would give it), checking the SHA-256."""

import contextlib
import hashlib
import os

import boto3
import pytest
from moto.server import ThreadedMotoServer

from deploy.aws import transfer
from tests.conftest import ROOT, free_port
from tests.forkserver import run_python

BUCKET = "shop-cutover"


@pytest.fixture(scope="module")
def s3_server():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "AKIATESTING",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-not-shown",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="eu-west-1",
        aws_access_key_id="AKIATESTING",
        aws_secret_access_key="aws-secret-not-shown",
    )
    # moto's servers share one in-process backend: after tests/test_cutover.py in the same process, the bucket
    # of the same name is already there (BucketAlreadyOwnedByYou), which is fine.
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    try:
        yield s3, env
    finally:
        server.stop()


def fetch(env, key, sha256, to):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return run_python(
        ["manage.py", "fetch_sqlite", "--bucket", BUCKET, "--key", key, "--sha256", sha256, "--to", str(to)],
        env={**base, **env, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.slow
def test_the_file_arrives_checked_and_a_wrong_digest_is_refused_leaving_nothing(s3_server, tmp_path):
    s3, env = s3_server
    source = tmp_path / "final.sqlite3"
    source.write_bytes(os.urandom(3 * transfer.CHUNK + 123))  # several chunks
    digest = transfer.sha256_of(source)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    key = transfer.object_key("django-app", digest)
    transfer.upload(s3, source, BUCKET, key, digest)

    arrived = tmp_path / "pod" / "source.sqlite3"
    arrived.parent.mkdir()
    done = fetch(env, key, digest, arrived)
    assert done.returncode == 0, done.stderr
    assert arrived.read_bytes() == source.read_bytes()

    # The object replaced by other bytes (or the wrong digest sent): refused, no file, no partial one.
    other = tmp_path / "pod2" / "source.sqlite3"
    other.parent.mkdir()
    s3.put_object(Bucket=BUCKET, Key=key, Body=source.read_bytes()[:-1] + b"x")
    refused = fetch(env, key, digest, other)
    assert refused.returncode == 1
    assert "does not have the SHA-256 the cut-over sent" in refused.stderr and "nothing was written" in refused.stderr
    assert list(other.parent.iterdir()) == []
    assert "aws-secret-not-shown" not in refused.stderr + refused.stdout

    missing = fetch(env, "cutover/django-app/none.sqlite3", digest, other)
    assert missing.returncode == 1 and "s3://shop-cutover/cutover/django-app/none.sqlite3" in missing.stderr
    assert list(other.parent.iterdir()) == []
