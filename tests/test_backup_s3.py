# ruff: noqa: F811 (the tests take test_restore.py's `local` fixture by its name)
"""Backups to S3: the rendered CronJob's containers run for real (pg_dump of the local PostgreSQL into a FIFO,
the app image's uploader streaming it to moto's S3 served over HTTP on 127.0.0.1), then fetched back verified.

The bucket, role and pod identity of the infrastructure stack are checked on the template (cfn-lint covers it
with the other options in test_aws_provision.py) and with the IAM evaluator of test_delivery_aws.py.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from io import StringIO
from pathlib import Path

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from deploy.aws import backups, cfn
from deploy.conf import load_config
from deploy.k8s import backup, names
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import policy_problems, schema_problems
from tests.forkserver import run_python
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


@pytest.mark.parametrize(
    "bucket", ["my..bucket", "192.168.5.4", "xn--bucket", "a.-b", "shop-s3alias", "Shop-Backups", "b\u00fccket", "ab"]
)
def test_a_bucket_name_s3_refuses_is_refused_by_the_settings(bucket):
    from deploy.conf import ConfigError

    with pytest.raises(ConfigError, match=r"postgres_backup_bucket.*must be empty, or an S3 bucket name"):
        load_config({"postgres_backup_bucket": bucket, "aws_region": REGION}, environ={})
    for good in ("shop-backups", "shop.backups.example", "a1b"):
        assert load_config({"postgres_backup_bucket": good, "aws_region": REGION}, environ={})


def test_the_bucket_and_the_role_only_the_backup_pods_get():
    config = load_config({"app_name": "shop", "namespace": "shop"}, environ={})
    template = cfn.render_template(config)
    bucket = template["Resources"]["BackupBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    rule, archive = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == backups.PREFIX
    assert rule["ExpirationInDays"] == config.postgres_backup_bucket_keep_days == 30
    # CloudNativePG's WAL archive is never expired by age (its recovery window decides), only deleted versions.
    assert archive["Prefix"] == backups.ARCHIVE_PREFIX and "ExpirationInDays" not in archive
    assert archive["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert "CnpgBackupIdentity" not in template["Resources"]  # no Cluster in this mode
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


def test_the_cloudnative_pg_clusters_service_account_gets_the_backup_role_for_its_wal_archive_only():
    from deploy.k8s import cnpg

    config = load_config({"app_name": "shop", "namespace": "shop", "postgres_mode": "cloudnative-pg"}, environ={})
    template = cfn.render_template(config)
    assert "BackupBucket" in template["Resources"] and "BackupBucketName" in template["Outputs"]
    # The operator names the instances' ServiceAccount after the Cluster: that account gets the backup role.
    identity = template["Resources"]["CnpgBackupIdentity"]["Properties"]
    assert (identity["Namespace"], identity["ServiceAccount"]) == ("shop", names.cnpg_cluster_name("shop"))
    assert identity["RoleArn"] == {"Fn::GetAtt": ["BackupRole", "Arn"]}
    # And the Cluster a restore to a point in time recovers into (it reads the same archive).
    recovery = template["Resources"]["CnpgRecoveryIdentity"]["Properties"]
    assert (recovery["ServiceAccount"], recovery["RoleArn"]) == (names.cnpg_recovery_name("shop"), identity["RoleArn"])
    # The role may write, read and delete (the plugin's retention) in the archive; it may not delete a dump.
    arn = "arn:aws:s3:::backupbucket-1a2b3c"
    role = _statements(template, "BackupRole")
    segment = f"{arn}/cnpg/shop-postgres/wals/0000000100000000/000000010000000000000001.gz"
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
        assert allows(role, action, segment), action
    assert allows(role, "s3:ListBucket", arn, {"s3:prefix": "cnpg/shop-postgres/"})
    assert not allows(role, "s3:DeleteObject", f"{arn}/postgres/app-20260101T030000Z.dump")
    assert not allows(role, "s3:ListBucket", arn, {"s3:prefix": "other/"})
    # The ObjectStore the render makes archives to that prefix of the bucket the stack names.
    rendered = load_config({"app_name": "shop", "namespace": "shop", "postgres_mode": "cloudnative-pg",
                            "postgres_backup_bucket": BUCKET, "aws_region": REGION, "node_count_min": 4},
                           environ={})  # fmt: skip
    (store,) = by_kind(render_manifests(rendered), "ObjectStore")
    assert store["spec"]["configuration"]["destinationPath"] == f"s3://{BUCKET}/{backups.ARCHIVE_PREFIX}"
    assert cnpg.destination_path(rendered).endswith("/" + backups.ARCHIVE_PREFIX)
    # Modes without a Cluster or a StatefulSet get no bucket.
    external = {"postgres_mode": "external", "postgres_host": "10.1.2.3", "postgres_cidr": "10.1.0.0/16"}
    assert "BackupBucket" not in cfn.render_template(load_config(external, environ={}))["Resources"]


# --- the restore from S3, and the restore drill ------------------------------------------------


def test_the_restore_job_fetches_the_backup_from_s3_checks_it_and_restores_it(local, s3):
    from deploy.k8s.restore import restore_job, restore_script
    from tests.test_restore import _rows

    client, bucket, environment = s3
    source_config = _config(local, bucket)
    _seed(_url(local, local["source"]))
    dumped, uploaded = run_backup(source_config, local, environment)
    assert dumped.returncode == 0 and uploaded.returncode == 0, uploaded.stderr
    (found,) = backups.list_backups(bucket, s3=client)
    # Restored into the other database: the Job takes backups named after its own database.
    name = found.name.replace(local["source"], local["target"], 1)
    client.copy_object(Bucket=bucket, Key=backups.PREFIX + name, CopySource={"Bucket": bucket, "Key": found.key})
    target_config = _config(local, bucket, database=local["target"])
    job = restore_job(target_config, name)["spec"]["template"]["spec"]
    (fetch,) = job["initContainers"]
    folder = local["dir"] / "backups"
    command = [part.replace("/backups", str(folder)) for part in fetch["command"]]
    fetched = run_python(command[1:], env={**os.environ, **environment}, cwd=ROOT, timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    assert "verified" in fetched.stdout and (folder / name).is_file()
    host = names.endpoint(target_config, "postgres").host
    script = (
        restore_script(target_config, name)
        .replace("/run/secrets/postgres", str(local["dir"] / "secrets"))
        .replace("/backups", str(folder))
        .replace("/tmp/expected", str(local["dir"] / "expected"))
        .replace(f"-h {host} ", "-h 127.0.0.1 ")
    )
    restored = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _rows(_url(local, local["target"])) == _rows(_url(local, local["source"]))


@pytest.mark.django_db(transaction=True)
def test_the_drill_restores_the_latest_backup_reports_no_difference_then_the_rows_written_since(s3, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    from apps.catalog.models import Category

    client, bucket, _ = s3
    settings.DEPLOY = {"postgres_backup_bucket": bucket, "aws_region": REGION}
    for i in range(30):
        Category.objects.create(name=f"Category {i}", slug=f"category-{i}")
    database = connection.settings_dict["NAME"]
    # The nightly dump of the live database, uploaded as the CronJob's uploader does (named as the config says).
    dump = subprocess.Popen(["pg_dump", "--format=custom", "--no-owner", "-h", "127.0.0.1", "-U", "postgres",
                             "-d", database], stdout=subprocess.PIPE)  # fmt: skip
    backups.upload(dump.stdout, bucket, backups.backup_name("app"), s3=client)
    assert dump.wait() == 0

    out = StringIO()
    call_command("restore_drill", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ok"] and report["differences"] == []
    assert report["tables"]["catalog.Category"]["backup_rows"] == 30
    assert report["tables"]["catalog.Category"]["proven_by"] == "digest"
    scratch = report["scratch_database"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [scratch])
        assert cursor.fetchone()[0] == 0  # dropped afterwards

    # Written since the dump: one row added, one changed, one deleted.
    added = Category.objects.create(name="New", slug="new")
    Category.objects.filter(slug="category-3").update(name="Renamed")
    deleted = Category.objects.get(slug="category-7")
    deleted_pk = deleted.pk
    deleted.delete()
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("restore_drill", "--json", stdout=out)
    assert excinfo.value.returncode == 3
    report = json.loads(out.getvalue())
    assert not report["ok"]
    found = "\n".join(report["differences"])
    assert f"catalog_category pk={added.pk}: written since the backup" in found
    assert f"catalog_category pk={deleted_pk}: in the backup, deleted since" in found
    assert "column name: changed since the backup: 'Category 3' -> 'Renamed'" in found
    assert len(report["differences"]) == 3
    assert report["tables"]["catalog.Category"] == {
        "table": "catalog_category", "backup_rows": 30, "live_rows": 30, "proven_by": "differs"}  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_drill_that_cannot_restore_leaves_no_scratch_database(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    broken = tmp_path / "app-20260101T030000Z.dump"
    broken.write_bytes(b"PGDMP not a dump")
    # Only this database's scratch copies (NAME[:40]_drill_TIME): other workers and clones share the server.
    own = connection.settings_dict["NAME"][:40].replace("_", "\\_") + "\\_drill\\_%"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", [own])
        before = cursor.fetchone()[0]
    with pytest.raises(CommandError, match=r"pg_restore could not restore app-20260101T030000Z\.dump"):
        call_command("restore_drill", "--file", str(broken), stdout=StringIO())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", [own])
        assert cursor.fetchone()[0] == before


@pytest.mark.django_db(transaction=True)
def test_the_drill_hands_the_password_to_pg_restore_in_its_environment_never_its_arguments_or_report(
    tmp_path, monkeypatch
):
    from django.db import connection

    from deploy import drill

    canary = "pg-canary-pass-4711"
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", canary)  # trust authentication here: not needed
    seen = []
    real = subprocess.run

    def spy(args, **kwargs):
        seen.append((args, kwargs.get("env", {})))
        return real(args, **kwargs)

    monkeypatch.setattr(drill.subprocess, "run", spy)
    broken = tmp_path / "app-20260101T030000Z.dump"
    broken.write_bytes(b"PGDMP not a dump")
    with pytest.raises(drill.DrillError) as excinfo:
        drill.run_drill(broken, broken.name)
    ((args, env),) = seen
    assert canary not in " ".join(args) and env["PGPASSWORD"] == canary
    assert canary not in str(excinfo.value)


@pytest.mark.django_db(transaction=True)
def test_a_table_created_since_the_dump_is_a_difference_not_a_crash(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    from apps.catalog.models import Category

    Category.objects.create(name="Kept", slug="kept")
    dump = tmp_path / "app-20260101T030000Z.dump"
    # The dump of a database one migration behind: catalog_comment did not exist yet.
    subprocess.run(["pg_dump", "--format=custom", "--no-owner", "-h", "127.0.0.1", "-U", "postgres",
                    "-T", "catalog_comment", "-f", str(dump), "-d", connection.settings_dict["NAME"]],
                   check=True)  # fmt: skip
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("restore_drill", "--file", str(dump), "--json", stdout=out)
    assert excinfo.value.returncode == 3
    report = json.loads(out.getvalue())
    assert report["differences"] == [
        "catalog_comment: table not in the backup (created since); 0 row(s) on the other side"
    ]
    assert report["tables"]["catalog.Comment"]["proven_by"] == "missing"
    assert report["tables"]["catalog.Category"]["proven_by"] == "digest"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [report["scratch_database"]])
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db
def test_a_drill_that_cannot_reach_its_bucket_or_file_says_so_in_one_json_report(s3, settings, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.DEPLOY = {"aws_region": REGION}
    for arguments, said in (
        (["--bucket", "no-such-bucket-here"], r"Could not read s3://no-such-bucket-here/postgres/: .*NoSuchBucket"),
        (["--file", str(tmp_path / "missing.dump")], r"--file .*missing\.dump: no such file"),
        ([], r"No bucket: set DEPLOY\['postgres_backup_bucket'\]"),
    ):
        out = StringIO()
        with pytest.raises(CommandError, match=said) as excinfo:
            call_command("restore_drill", *arguments, "--json", stdout=out)
        assert excinfo.value.returncode == 1
        assert json.loads(out.getvalue()) == {"ok": False, "error": str(excinfo.value)}


def test_the_latest_backup_of_a_database_is_not_one_of_a_database_its_name_begins(s3):
    client, bucket, _ = s3
    for name in ("app-20260101T030000Z.dump", "app-staging-20251231T030000Z.dump", "app-notes.dump"):
        client.put_object(Bucket=bucket, Key=backups.PREFIX + name, Body=b"x")
    assert backups.latest(bucket, "app", s3=client).name == "app-20260101T030000Z.dump"
    assert [b.name for b in backups.list_backups(bucket, "app-staging", s3=client)] == [
        "app-staging-20251231T030000Z.dump"
    ]
    assert len(backups.list_backups(bucket, s3=client)) == 3


def test_the_pods_uploader_says_in_one_line_what_s3_refused(s3, tmp_path, capsys):
    source = tmp_path / "dump"
    source.write_bytes(b"PGDMP")
    for argv in (
        ["list", "--bucket", "no-such-bucket-here"],
        ["upload", "--bucket", "no-such-bucket-here", "--database", "app", "--source", str(source)],
        ["download", "--bucket", "no-such-bucket-here", "--name", "latest:app", "--to", str(tmp_path / "out")],
    ):
        assert backups.main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("backup: S3 refused or could not be reached for s3://no-such-bucket-here: ")
        assert "NoSuchBucket" in error and "Traceback" not in error and "testing" not in error


@pytest.mark.django_db(transaction=True)
def test_a_scratch_database_an_earlier_drill_left_behind_is_named_with_how_to_drop_it(tmp_path):
    from django.core.management import call_command
    from django.db import connection

    dump = tmp_path / "app-20260101T030000Z.dump"
    subprocess.run(["pg_dump", "--format=custom", "--no-owner", "-h", "127.0.0.1", "-U", "postgres",
                    "-f", str(dump), "-d", connection.settings_dict["NAME"]], check=True)  # fmt: skip
    left = f"{connection.settings_dict['NAME'][:40]}_drill_20200101000000"  # a drill killed before its clean-up
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{left}"')
    try:
        out, err = StringIO(), StringIO()
        call_command("restore_drill", "--file", str(dump), "--json", stdout=out, stderr=err)
        assert json.loads(out.getvalue())["left_behind"] == [left]
        assert f'drop it with DROP DATABASE "{left}" WITH (FORCE)' in err.getvalue()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{left}"')


def test_a_drill_against_an_alias_settings_do_not_declare_says_which_there_are(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    dump = tmp_path / "app-20260101T030000Z.dump"
    dump.write_bytes(b"PGDMP")
    out = StringIO()
    with pytest.raises(CommandError, match=r"No database 'nope' in settings\.DATABASES .*default"):
        call_command("restore_drill", "--file", str(dump), "--database", "nope", "--json", stdout=out)
    assert json.loads(out.getvalue())["ok"] is False


@pytest.mark.django_db(transaction=True)
def test_two_drills_in_the_same_second_are_told_apart_from_a_role_that_may_not_create_databases(tmp_path):
    from datetime import UTC, datetime

    from django.db import connection

    from deploy import drill

    now = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    running = f"{connection.settings_dict['NAME'][:40]}_drill_20200102030405"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{running}"')
    try:
        with pytest.raises(drill.DrillError, match="another drill started in the same second") as excinfo:
            drill.run_drill(tmp_path / "app-20260101T030000Z.dump", "app-20260101T030000Z.dump", now=now)
        assert "superuser" not in str(excinfo.value)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [running])
            assert cursor.fetchone()[0] == 1  # the other drill's database is not dropped under it
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{running}"')


@pytest.mark.django_db(transaction=True)
def test_a_drill_that_cannot_reach_the_database_says_so_and_not_that_it_needs_a_superuser(tmp_path, monkeypatch):
    from django.db import connection

    from deploy import drill

    canary = "pg-canary-pass-0815"
    with socket.socket() as sock:  # a port nothing listens on: the port-forward is not running
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setitem(connection.settings_dict, "PORT", str(port))
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", canary)
    connection.close()
    try:
        with pytest.raises(
            drill.DrillError, match=rf"Could not connect to the live database .* at 127\.0\.0\.1:{port}"
        ) as info:
            drill.run_drill(tmp_path / "x.dump", "x.dump")
        assert "Connection refused" in str(info.value) and "superuser (" not in str(info.value)
        assert canary not in str(info.value)
    finally:
        connection.close()
    monkeypatch.undo()


@pytest.fixture
def owner_database(django_db_setup):
    """A live database as CloudNativePG's initdb makes it: owned by the app's role, a login with no other right.

    The test fills it from a dump of the test database restored as that role, so that it owns every table (the
    migrations run as it in the cluster).
    """
    from django.db import connection

    base = connection.settings_dict["NAME"]
    role, live = f"{base}_owner", f"{base}_live"
    admin = psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{live}" WITH (FORCE)')
    admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    admin.execute(f'CREATE DATABASE "{live}" OWNER "{role}"')
    try:
        yield {"role": role, "live": live, "admin": admin}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{live}" WITH (FORCE)')
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                     [f"{live[:40]}_drill_"]).fetchall():  # fmt: skip
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


@pytest.mark.django_db(transaction=True)
def test_the_drill_in_the_cloudnative_pg_mode_names_the_grant_then_runs_as_the_owner_it_was_given_to(
    owner_database, tmp_path, monkeypatch
):
    from django.db import connection

    from apps.catalog.models import Category
    from deploy import drill

    role, live, admin = owner_database["role"], owner_database["live"], owner_database["admin"]
    for i in range(12):
        Category.objects.create(name=f"Category {i}", slug=f"category-{i}")
    dump = tmp_path / "app-20260101T030000Z.dump"
    subprocess.run(["pg_dump", "--format=custom", "--no-owner", "-h", "127.0.0.1", "-U", "postgres",
                    "-f", str(dump), "-d", connection.settings_dict["NAME"]], check=True)  # fmt: skip
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-h", "127.0.0.1", "-U", role, "-d", live,
                    str(dump)], check=True)  # fmt: skip
    config = load_config({"postgres_mode": "cloudnative-pg", "namespace": "shop"}, environ={})

    def scratch_databases():
        return admin.execute("SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)",
                             [f"{live[:40]}_drill_"]).fetchone()[0]  # fmt: skip

    # The drill's connection, as the port-forward to the -rw Service gives it: the live database, as its owner.
    monkeypatch.setitem(connection.settings_dict, "NAME", live)
    monkeypatch.setitem(connection.settings_dict, "USER", role)
    connection.close()
    try:
        with pytest.raises(drill.DrillError) as refused:
            drill.run_drill(dump, dump.name, config=config)
        said = str(refused.value)
        assert "permission denied to create database" in said and "superuser (" not in said
        primary = f"kubectl -n shop get cluster {names.cnpg_cluster_name(config.app_name)} -o jsonpath="
        assert f"exec $({primary}" in said and f'psql -c "ALTER ROLE {role} CREATEDB"' in said
        assert f'"ALTER ROLE {role} NOCREATEDB"' in said
        assert scratch_databases() == 0

        admin.execute(f'ALTER ROLE "{role}" CREATEDB')  # what the message's kubectl exec … psql runs on the primary
        report = drill.run_drill(dump, dump.name, config=config)
        assert report.ok and report.differences == []
        assert report.tables["catalog.Category"] == {"table": "catalog_category", "backup_rows": 12,
                                                     "live_rows": 12, "proven_by": "digest"}  # fmt: skip
        assert scratch_databases() == 0
    finally:
        connection.close()
        monkeypatch.undo()


@pytest.mark.parametrize("role", ["rtdrillowner", "rt-drill-owner"])
def test_the_grant_the_cloudnative_pg_drill_prints_runs_as_printed_whatever_the_role_name(role):
    """postgres_user is a DNS label, so it may hold a '-': the printed psql -c must still be SQL PostgreSQL takes.

    Unquoted, ALTER ROLE rt-drill-owner CREATEDB is a syntax error, and the operator is left to find out why. The
    command after '--' is what the primary's container runs; here the local PostgreSQL's superuser runs it.
    """
    import shlex

    from deploy import drill

    config = load_config({"postgres_mode": "cloudnative-pg", "postgres_user": role}, environ={})
    hint = drill.scratch_role_hint(config, config.postgres_user)
    grant = re.search(r" -c postgres -- (psql -c (?:'[^']*'|\"[^\"]*\"))", hint)[1]
    undo = re.search(r"with the same command and ('[^']*'|\"[^\"]*\")", hint)[1]
    admin = psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True)
    admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')

    def may_create_databases():
        return admin.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0]

    try:
        local = ["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"]
        subprocess.run([*shlex.split(grant), *local], check=True, capture_output=True)
        assert may_create_databases()
        subprocess.run(["psql", "-c", *shlex.split(undo), *local], check=True, capture_output=True)
        assert not may_create_databases()
    finally:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


@pytest.mark.django_db(transaction=True)
def test_the_drill_in_the_cloudnative_pg_mode_without_a_bucket_names_the_dump_to_drill_not_a_setting_refused_there(
    settings, tmp_path
):
    """Without a bucket the dumps of this mode are on the backup volume: the message names a dump to drill now.

    The dump it names, made as it says through the same connection, is drilled with exit 0; the bucket it offers
    for the nightly dumps is one the settings accept in this mode.
    """
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    accepted = load_config(
        {"postgres_mode": "cloudnative-pg", "postgres_backup_bucket": "app-backups", "aws_region": REGION}, environ={}
    )
    assert accepted.postgres_backup_bucket == "app-backups"
    settings.DEPLOY = {"postgres_mode": "cloudnative-pg"}
    out = StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("restore_drill", "--json", stdout=out)
    said = str(refused.value)
    assert refused.value.returncode == 1 and json.loads(out.getvalue()) == {"ok": False, "error": said}
    assert "set DEPLOY['postgres_backup_bucket']" in said and "backup volume" in said
    command = re.search(r"pg_dump --format=custom --file=(\S+) \"\$DATABASE_URL\"", said)
    assert command and f"restore_drill --file {command[1]}" in said

    s = connection.settings_dict
    url = f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    subprocess.run(["pg_dump", "--format=custom", f"--file={command[1]}", url], cwd=tmp_path, check=True)
    out = StringIO()
    call_command("restore_drill", "--file", str(tmp_path / command[1]), "--json", stdout=out)
    assert json.loads(out.getvalue())["ok"] is True


@pytest.mark.django_db
def test_the_drill_in_the_rds_mode_refuses_the_bucket_before_reading_it_and_names_rds_own_procedure(
    settings, monkeypatch, tmp_path
):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from deploy.management.commands import restore_drill

    read = []
    # The names the command calls (it imports them from backups): patched in backups, they stayed in the command
    # for good when this test was the first to import it, and the next drill's "latest" returned None.
    monkeypatch.setattr(restore_drill, "latest", lambda *a, **k: read.append("latest"))
    monkeypatch.setattr(restore_drill, "download", lambda *a, **k: read.append("download"))
    settings.DEPLOY = {"postgres_mode": "rds", "aws_region": REGION}  # a bucket setting is refused in this mode
    for arguments in ([], ["--backup", "app-20260101T030000Z.dump"], ["--bucket", "other"]):
        out = StringIO()
        with pytest.raises(CommandError, match=r"postgres_mode 'rds' has no nightly dumps to drill") as refused:
            call_command("restore_drill", *arguments, "--json", stdout=out)
        assert refused.value.returncode == 1
        assert "#drilling-the-rds-backups" in str(refused.value) and "--file" in str(refused.value)
        assert json.loads(out.getvalue()) == {"ok": False, "error": str(refused.value)}
    assert read == []


@pytest.mark.django_db(transaction=True)
def test_the_drill_in_the_rds_mode_restores_a_dump_file_it_is_given(settings, tmp_path):
    from django.core.management import call_command
    from django.db import connection

    settings.DEPLOY = {"postgres_mode": "rds", "aws_region": REGION}
    dump = tmp_path / "app-rds.dump"
    subprocess.run(["pg_dump", "--format=custom", "--no-owner", "-h", "127.0.0.1", "-U", "postgres",
                    "-f", str(dump), "-d", connection.settings_dict["NAME"]], check=True)  # fmt: skip
    out = StringIO()
    call_command("restore_drill", "--file", str(dump), "--json", stdout=out)
    assert json.loads(out.getvalue())["ok"] is True
