# ruff: noqa: F811 (the tests take test_restore.py's `local` fixture by its name)
"""Backups to S3: the rendered CronJob's containers run for real (pg_dump of the local PostgreSQL into a FIFO,
the app image's uploader streaming it to moto's S3 served over HTTP on 127.0.0.1), then fetched back verified.

The bucket, role and pod identity of the infrastructure stack are checked on the template (cfn-lint covers it
with the other options in test_aws_provision.py) and with the IAM evaluator of test_delivery_aws.py.
"""

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from deploy.aws import backups
from deploy.aws import cloudformation as cfn
from deploy.conf import load_config
from deploy.k8s import backup, names
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import policy_problems, schema_problems
from tests.k8s_helpers import by_kind
from tests.test_aws_secrets import _statements
from tests.test_delivery_aws import ACCOUNT, REGION, allows
from tests.test_restore import _seed, _url, local  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "shop-backups"


@pytest.fixture(scope="module")
def s3_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    environment = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "AKIATESTING",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", region_name=REGION)
    bucket = f"{BUCKET}-{uuid.uuid4().hex[:12]}"  # one per test, on the server the module shares
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    yield client, bucket, environment


def _config(local, bucket, database=None):
    return load_config({"postgres_user": local["role"], "postgres_database": database or local["source"],
                        "postgres_backup_bucket": bucket, "aws_region": REGION}, environ={})  # fmt: skip


def _pod(config):
    cronjob = by_kind(render_manifests(config), "CronJob")[0]
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def run_backup(config, local, environment):
    """The pod's three containers, as the kubelet runs them: the init container, then both others at once."""
    spec = _pod(config)
    work, host = local["dir"] / "work", names.endpoint(config, "postgres").host

    def here(text):
        return (
            text.replace(backup.WORK, str(work))
            .replace("/run/secrets/postgres", str(local["dir"] / "secrets"))
            .replace(f"-h {host} ", "-h 127.0.0.1 ")
        )

    work.mkdir()
    (init,) = spec["initContainers"]
    subprocess.run([here(part) for part in init["command"]], check=True)
    dump, upload = spec["containers"]
    assert (dump["name"], upload["name"]) == ("pg-dump", "upload")
    command = [here(part) for part in upload["command"]]
    assert command[:3] == ["python", "-m", "deploy.aws.backups"]
    uploader = subprocess.Popen(
        [sys.executable, *command[1:]], cwd=ROOT, env={**os.environ, **environment},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    results = {}
    dumper = threading.Thread(target=lambda: results.update(dump=subprocess.run(
        ["/bin/sh", "-c", here(dump["args"][0])], capture_output=True, text=True, timeout=120)))  # fmt: skip
    dumper.start()
    out, err = uploader.communicate(timeout=120)
    dumper.join(120)
    return results["dump"], subprocess.CompletedProcess(uploader.args, uploader.returncode, out, err)


def test_the_cronjob_streams_the_dump_to_s3_with_its_checksum_and_it_restores(local, s3, tmp_path):
    client, bucket, environment = s3
    config = _config(local, bucket)
    _seed(_url(local, local["source"]))
    dumped, uploaded = run_backup(config, local, environment)
    assert dumped.returncode == 0, dumped.stdout + dumped.stderr
    assert uploaded.returncode == 0, uploaded.stderr
    (found,) = backups.list_backups(bucket, local["source"], s3=client)
    assert f"backup: wrote s3://{bucket}/{found.key}" in uploaded.stdout
    body = client.get_object(Bucket=bucket, Key=found.key)["Body"].read()
    assert backups.checksum_of(bucket, found.key, s3=client) == hashlib.sha256(body).hexdigest()
    assert f"sha256 {hashlib.sha256(body).hexdigest()}" in uploaded.stdout
    # The object is the custom-format dump of the database: pg_restore reads its table of contents.
    path = tmp_path / "fetched.dump"
    assert backups.download(bucket, found.name, path, s3=client) == hashlib.sha256(body).hexdigest()
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True)
    assert listing.returncode == 0 and re.search(r'TABLE DATA public "?Orders"? ', listing.stdout)
    # No upload is left half done.
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_failed_dump_stores_nothing(local, s3):
    client, bucket, environment = s3
    config = _config(local, bucket, database=local["source"] + "-missing")
    dumped, uploaded = run_backup(config, local, environment)
    assert dumped.returncode != 0 and "pg_dump exited with status 1" in dumped.stdout
    assert uploaded.returncode == 2 and "exited with status 1" in uploaded.stderr
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_damaged_backup_is_refused_and_leaves_no_file(s3, tmp_path):
    client, bucket, _ = s3
    import io

    stored = backups.upload(io.BytesIO(b"PGDMP" + b"x" * 1000), bucket, "app-20260101T030000Z.dump", s3=client)
    # A later write of other bytes under the same key, without the uploader's checksum, is not trusted.
    tags = client.get_object_tagging(Bucket=bucket, Key=stored.key)["TagSet"]
    client.put_object(Bucket=bucket, Key=stored.key, Body=b"PGDMP" + b"y" * 1000)
    client.put_object_tagging(Bucket=bucket, Key=stored.key, Tagging={"TagSet": tags})
    target = tmp_path / "fetched.dump"
    with pytest.raises(backups.BackupError, match="does not match its checksum"):
        backups.download(bucket, "app-20260101T030000Z.dump", target, s3=client)
    assert not target.exists()
    with pytest.raises(backups.BackupError, match=r"No backup 'app-x.dump'.*app-20260101T030000Z.dump"):
        backups.download(bucket, "app-x.dump", target, s3=client)


def test_the_s3_backup_render_validates_and_needs_its_region():
    from deploy.conf import ConfigError

    config = load_config({"postgres_backup_bucket": BUCKET, "aws_region": REGION}, environ={})
    manifests = render_manifests(config)
    assert schema_problems(manifests, versions=("1.33",)) == [] and policy_problems(manifests, config) == []
    account = by_kind(manifests, "ServiceAccount", "django-app-postgres-backup")
    assert account and account[0]["automountServiceAccountToken"] is False
    assert by_kind(manifests, "PersistentVolumeClaim", "django-app-postgres-backup") == []
    with pytest.raises(ConfigError, match=r"aws_region.*postgres_backup_bucket"):
        load_config({"postgres_backup_bucket": BUCKET}, environ={})


def test_the_bucket_and_the_role_only_the_backup_pods_get():
    config = load_config({"app_name": "shop", "namespace": "shop"}, environ={})
    template = cfn.render_template(config)
    bucket = template["Resources"]["BackupBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == config.postgres_backup_bucket_keep_days == 30
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    longer = cfn.render_template(load_config({"postgres_backup_bucket_keep_days": 90}, environ={}))
    assert longer["Resources"]["BackupBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0][
        "ExpirationInDays"] == 90  # fmt: skip
    identity = template["Resources"]["BackupIdentity"]["Properties"]
    assert (identity["Namespace"], identity["ServiceAccount"]) == ("shop", "shop-postgres-backup")
    arn = "arn:aws:s3:::backupbucket-1a2b3c"  # as the evaluator's resolver names it

    role = _statements(template, "BackupRole")
    assert allows(role, "s3:PutObject", f"{arn}/postgres/app-20260101T030000Z.dump")
    assert allows(role, "s3:GetObject", f"{arn}/postgres/app-20260101T030000Z.dump")
    assert allows(role, "s3:ListBucket", arn, {"s3:prefix": "postgres/"})
    assert not allows(role, "s3:DeleteObject", f"{arn}/postgres/app-20260101T030000Z.dump")
    assert not allows(role, "s3:PutObject", "arn:aws:s3:::another-bucket/postgres/x.dump")
    assert not allows(role, "secretsmanager:GetSecretValue",
                      f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:shop/postgres-password-AbC123")  # fmt: skip
    for other in ("AppRole", "NodeRole", "SecretsReaderRole", "ExternalSecretsRole"):
        statements = _statements(template, other)
        assert not allows(statements, "s3:GetObject", f"{arn}/postgres/app-20260101T030000Z.dump"), other
