"""k8s_deploy --cutover against the fake API server (tests/fake_apiserver.py) and moto's S3.

The Job itself does not run here (the fake server completes or fails it); what it runs is tested in
test_cutover_fetch (the fetch and its checksum) and by the copy's own tests.
"""

import hashlib
import json
import os
import sqlite3
from io import StringIO
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from moto import mock_aws

from deploy.conf import load_config
from deploy.k8s import cutover, rollout
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import policy_problems, schema_problems
from deploy.k8s.wiring import wiring_problems
from tests.fake_apiserver import FakeApiServer

NS = "django-app"
BUCKET = "shop-cutover"


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sqlite_file(tmp_path):
    path = tmp_path / "old" / "db.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE author (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute("CREATE TABLE book (id integer PRIMARY KEY, author_id integer REFERENCES author (id), title text)")
        conn.executemany("INSERT INTO author VALUES (?, ?)", [(i, f"a{i}") for i in range(1, 51)])
        conn.executemany("INSERT INTO book VALUES (?, ?, ?)", [(i, 1 + i % 50, f"t{i}") for i in range(1, 201)])
    conn.close()
    return path


@pytest.fixture
def world(tmp_path, monkeypatch, sqlite_file):
    """The fake cluster, moto's S3 with the bucket, the old deployment's maintenance file; cwd is tmp_path."""
    for name in list(os.environ):
        if name.startswith(("DEPLOY_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEPLOY_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("DEPLOY_POSTGRES_PASSWORD", "pg-secret-pw")
    monkeypatch.setenv("DEPLOY_POSTGRES_SUPERUSER_PASSWORD", "pg-superuser-pw")
    monkeypatch.setenv("DEPLOY_REDIS_PASSWORD", "redis-secret-pw")
    monkeypatch.setenv("DEPLOY_CUTOVER_BUCKET", BUCKET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-not-shown")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.05)
    flag = tmp_path / "old" / "maintenance.json"
    with (
        FakeApiServer(token="t0ken") as fake,
        mock_aws(),
        override_settings(MAINTENANCE_FILE=str(flag), MAINTENANCE_CACHE=""),
    ):
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        fake.flag, fake.s3, fake.source = flag, s3, sqlite_file
        yield fake


def run(*args):
    out = StringIO()
    call_command("k8s_deploy", "--json", "--timeout", "30", *args, interactive=False, stdout=out)
    return json.loads(out.getvalue())


def failing(*args):
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("k8s_deploy", "--json", "--timeout", "30", *args, interactive=False, stdout=out)
    return str(excinfo.value), json.loads(out.getvalue())


def jobs(server):
    return [j for j in server.list("jobs", NS) if "cutover" in j["metadata"]["name"]]


def test_the_cutover_runs_every_step_in_order_and_reports_the_downtime(world):
    before = sha256(world.source)
    report = run("--cutover", str(world.source))["cutover"]

    assert [s["step"] for s in report["steps"]] == list(cutover.STEPS)
    assert all(s["outcome"] == "ok" for s in report["steps"])
    for step in report["steps"]:
        assert step["ended_at"] >= step["started_at"] and step["seconds"] >= 0
    first, last = report["steps"][1], report["steps"][-1]
    assert report["downtime_seconds"] == pytest.approx(last["ended_at"] - first["started_at"], abs=0.01)
    assert report["complete"] is True
    shown = json.dumps(report)
    for secret in ("pg-secret-pw", "pg-superuser-pw", "redis-secret-pw", "k" * 40, "aws-secret-not-shown"):
        assert secret not in shown
    # The state file holds the same record.
    assert json.loads(Path("build/cutover/django-app.json").read_text())["steps"]["smoke"]["outcome"] == "ok"

    # The object is the snapshot, with the digest the Job checks.
    key = report["object"].removeprefix(f"s3://{BUCKET}/")
    head = world.s3.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"]["sha256"] == report["sha256"]
    assert hashlib.sha256(world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest() == report["sha256"]

    # Data services, then the cut-over Job, then the app: never the app before the copy.
    applied = [p.split("/")[-2] for p in world.applied_order() if "/leases/" not in p and "release-v" not in p]
    job_created = next(i for i, (m, p, _, _) in enumerate(world.requests) if m == "POST" and p.endswith("/jobs"))
    app_applied = next(
        i for i, (m, p, _, _) in enumerate(world.requests) if m == "PATCH" and p.endswith("/deployments/django-app")
    )
    statefulset = next(i for i, (m, p, _, _) in enumerate(world.requests) if m == "PATCH" and "/statefulsets/" in p)
    assert statefulset < job_created < app_applied
    assert "networkpolicies" in applied

    # The release prunes the cut-over's Job and policies (S3 stays closed to the namespace); the Job's log tail
    # is kept in the report.
    assert report["job"] and not jobs(world)
    assert not [p for p in world.list("networkpolicies", NS) if "cutover" in p["metadata"]["name"]]
    assert "complete; its log ends with" in report["steps"][5]["detail"]
    # The old deployment stays frozen (the traffic moves to the new one), its file as it was.
    assert json.loads(world.flag.read_text())["on"] is True
    assert sha256(world.source) == before


def test_the_job_and_its_policies_are_restricted_and_allowed_by_the_wiring_rule():
    from deploy.conf import DeploySecrets

    for extra in ({}, {"postgres_mode": "external", "postgres_host": "10.1.2.3", "postgres_cidr": "10.1.0.0/16"}):
        config = load_config({"cutover_bucket": BUCKET, **extra}, environ={})
        stack = render_manifests(config, DeploySecrets(), redact=True)
        job, policies = cutover.cutover_manifests(config, BUCKET, "cutover/x.sqlite3", "a" * 64, 3 * 2**30)
        assert schema_problems([job, *policies]) == []
        assert policy_problems([*stack, job, *policies], config) == []
        assert wiring_problems([*stack, job, *policies], config) == []
        # Without its policies the Job could reach neither S3 nor (from its own identity) PostgreSQL.
        missing = wiring_problems([*stack, job], config)
        assert any("cutover → 0.0.0.0/0 on 443/TCP" in p for p in missing)
        volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"]["emptyDir"]["sizeLimit"] == cutover.storage_for(3 * 2**30) == "3636Mi"


@pytest.mark.slow
def test_a_failing_job_stops_the_cutover_with_the_old_deployment_in_maintenance_then_resume_finishes(world):
    before = sha256(world.source)
    world.scenarios["job/cutover"] = "fail"
    message, document = failing("--cutover", str(world.source))
    assert "stopped at step 'copy'" in message
    assert "still in maintenance" in message and "maintenance off" in message and "--resume" in message
    assert document["ok"] is False
    steps = {s["step"]: s for s in document["cutover"]["steps"]}
    assert steps["copy"]["outcome"] == "failed"
    assert "cannot be cast automatically" in steps["copy"]["detail"]  # the Job's log tail
    assert "deploy" not in steps and document["cutover"]["downtime_seconds"] is None
    # Left behind: the freeze, the untouched file, no app in the cluster.
    assert json.loads(world.flag.read_text())["on"] is True
    assert sha256(world.source) == before
    assert world.get("deployments", "django-app", NS) is None
    assert world.get("statefulsets", "django-app-postgres", NS) is not None
    # The Job that ran: the release's image, restricted, fed the object and its digest.
    (job,) = jobs(world)
    config = load_config({"cutover_bucket": BUCKET}, environ={})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == config.image
    key = document["cutover"]["object"].removeprefix(f"s3://{BUCKET}/")
    assert f"--bucket {BUCKET} --key {key} --sha256 {document['cutover']['sha256']}" in container["args"][0]
    assert "migrate_from_sqlite --source /data/source.sqlite3 --verify" in container["args"][0]
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "django-app"
    assert len([p for p in world.list("networkpolicies", NS) if "cutover" in p["metadata"]["name"]]) == 2

    # A new run refuses to start over an unfinished one.
    message, _ = failing("--cutover", str(world.source))
    assert "continue it with --resume" in message

    world.scenarios.pop("job/cutover")
    report = run("--cutover", str(world.source), "--resume")["cutover"]
    resumed = {s["step"]: s for s in report["steps"]}
    for name in ("preflight", "maintenance_on", "snapshot", "data_services", "upload"):
        assert resumed[name]["started"] == steps[name]["started"]  # not run again
    assert resumed["copy"]["outcome"] == "ok" and resumed["copy"]["started"] != steps["copy"]["started"]
    assert report["complete"] and report["downtime_seconds"] > 0
    assert world.get("deployments", "django-app", NS) is not None
    assert not jobs(world)  # both pruned by the release; the failed one's log is in the state file


@pytest.mark.slow
def test_an_interrupted_cutover_resumes_after_the_last_finished_step(world, monkeypatch):
    """Killed between two steps (the state file written, the next step not started): --resume goes on."""

    def killed():
        raise KeyboardInterrupt

    real_upload = cutover.Cutover._upload
    monkeypatch.setattr(cutover.Cutover, "_upload", lambda self: killed())
    with pytest.raises(KeyboardInterrupt):
        run("--cutover", str(world.source))
    state = json.loads(Path("build/cutover/django-app.json").read_text())
    assert state["steps"]["data_services"]["outcome"] == "ok"
    assert state["steps"]["upload"]["outcome"] == "running"
    assert not jobs(world)
    monkeypatch.setattr(cutover.Cutover, "_upload", real_upload)
    report = run("--cutover", str(world.source), "--resume")["cutover"]
    assert report["complete"]
    assert [s["step"] for s in report["steps"]] == list(cutover.STEPS)


def test_a_bad_file_stops_before_anything_changes(world, tmp_path):
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(world.source.read_bytes()[:4096] + b"\0" * 4096)
    message, _ = failing("--cutover", str(damaged))
    assert "stopped at step 'preflight'" in message and "Nothing was changed" in message
    assert not world.flag.exists()
    assert not world.applied_order()
    assert world.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
