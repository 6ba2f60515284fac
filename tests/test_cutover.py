"""k8s_deploy --cutover against the fake API server (tests/fake_apiserver.py) and moto's S3.

The Job itself does not run here (the fake server completes or fails it); what it runs is tested in
test_cutover_fetch (the fetch and its checksum) and by the copy's own tests. The smoke test's requests go
through the fake's service proxy to a real HTTP server on 127.0.0.1 standing for the app's pods.
"""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import urllib.request
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from moto import mock_aws
from moto.server import ThreadedMotoServer

from deploy.conf import DeploySecrets, load_config
from deploy.k8s import cutover, rollout
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import policy_problems, schema_problems
from deploy.k8s.wiring import wiring_problems
from tests.conftest import PYTHON, ROOT, free_port
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


class AppPods(ThreadingHTTPServer):
    """What the app's Service reaches: answers ``answers[path]`` (200 and a page by default), records each request."""

    daemon_threads = True

    def __init__(self):
        self.answers, self.seen = {}, []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(handler):
                self.seen.append((handler.path, dict(handler.headers)))
                code, body = self.answers.get(handler.path, (200, "<html><title>Shop</title>ok</html>"))
                data = body.encode()
                handler.send_response(code)
                handler.send_header("Content-Type", "text/html; charset=utf-8")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def _world(tmp_path, monkeypatch, sqlite_file, s3_endpoint=None):
    """The fake cluster, S3 with the bucket (moto in-process, or moto's server at ``s3_endpoint`` for another
    process), the old deployment's maintenance file; cwd is tmp_path."""
    for name in list(os.environ):
        if name.startswith(("DEPLOY_", "AWS_", "MAINTENANCE_")):
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
    # Where the old deployment's settings find it, in this process and in a child one.
    monkeypatch.setenv("MAINTENANCE_FILE", str(flag))
    monkeypatch.setenv("MAINTENANCE_CACHE", "")
    if s3_endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    pods = AppPods()
    threading.Thread(target=pods.serve_forever, daemon=True).start()
    with (
        FakeApiServer(token="t0ken") as fake,
        nullcontext() if s3_endpoint else mock_aws(),
        override_settings(MAINTENANCE_FILE=str(flag), MAINTENANCE_CACHE=""),
    ):
        fake.service_backends[(NS, "django-app")] = pods.url
        fake.pods = pods
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=s3_endpoint)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        fake.flag, fake.s3, fake.source = flag, s3, sqlite_file
        yield fake
    pods.shutdown()
    pods.server_close()


@pytest.fixture
def world(tmp_path, monkeypatch, sqlite_file):
    with _world(tmp_path, monkeypatch, sqlite_file) as fake:
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


@pytest.mark.slow
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
    assert world.get("serviceaccounts", "django-app-cutover", NS) is None
    assert "complete; its log ends with" in report["steps"][5]["detail"]
    # The old deployment stays frozen (the traffic moves to the new one), its file as it was.
    assert json.loads(world.flag.read_text())["on"] is True
    assert sha256(world.source) == before

    # The smoke test went through the API's service proxy to the pods: the rendered readiness path, then the
    # page, as a visitor of the site would (its Host), after the rollout.
    assert [path for path, _ in world.pods.seen] == ["/readyz", "/"]
    assert {headers["Host"] for _, headers in world.pods.seen} == {"app.example.com"}
    proxied = [i for i, (m, p, _, _) in enumerate(world.requests) if "/services/django-app:http/proxy/" in p]
    assert len(proxied) == 2 and proxied[0] > app_applied
    assert "/readyz 200, / 200" in report["steps"][-1]["detail"]


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
    # Its own ServiceAccount, the one aws_provision gives the bucket's read permission (test_aws_provision).
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "django-app-cutover"
    account = world.get("serviceaccounts", "django-app-cutover", NS)
    assert account is not None and account["automountServiceAccountToken"] is False
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


# The cut-over as the operator runs it, in its own process, held after one step so that the kill lands between
# two steps (the hold is the only thing added; the kill is a real SIGKILL: no handler, no finally, no atexit).
HELD_CUTOVER = """
import os, sys, time
import django
django.setup()
from django.core.management import call_command
from deploy.k8s import cutover
step = cutover.Cutover._step
def held(self, name, action):
    step(self, name, action)
    if name == os.environ["HOLD_AFTER"]:
        sys.stderr.write("HELD\\n"); sys.stderr.flush()
        time.sleep(600)
cutover.Cutover._step = held
call_command("k8s_deploy", "--json", "--timeout", "60", *sys.argv[1:], interactive=False)
"""


def _cutover_process(args, hold_after=""):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT), "HOLD_AFTER": hold_after}
    return subprocess.Popen(
        [PYTHON, "-c", HELD_CUTOVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def s3_server():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps one store per process, shared by every server and mock in it: the bucket another test of this
    # worker left there (tests/test_cutover_fetch.py uses the same name) would make CreateBucket fail.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    yield url
    server.stop()


@pytest.mark.slow
def test_a_cutover_killed_between_two_steps_resumes_after_the_last_finished_one(
    tmp_path, monkeypatch, sqlite_file, s3_server
):
    """SIGKILL of the process running the cut-over, after ``data_services`` and before ``upload``."""
    with _world(tmp_path, monkeypatch, sqlite_file, s3_endpoint=s3_server) as world:
        before = sha256(world.source)
        process = _cutover_process(["--cutover", str(world.source)], hold_after="data_services")
        try:
            lines = []  # its log records, then the word that it is held
            while not lines or lines[-1] not in ("HELD\n", ""):
                lines.append(process.stderr.readline())
            assert lines[-1] == "HELD\n", "".join(lines)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL

        # Left behind: a whole state file (written by rename: no half-written JSON, no temporary beside it)
        # saying where it stopped; the freeze on; nothing uploaded, no Job, no app; the file as it was.
        state_file = Path("build/cutover/django-app.json")
        assert sorted(p.name for p in state_file.parent.iterdir()) == ["django-app-final.sqlite3", "django-app.json"]
        state = json.loads(state_file.read_text())
        assert [name for name in cutover.STEPS if name in state["steps"]] == list(cutover.STEPS[:4])
        assert {record["outcome"] for record in state["steps"].values()} == {"ok"}
        assert json.loads(world.flag.read_text())["on"] is True
        assert world.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
        assert not jobs(world) and world.get("deployments", "django-app", NS) is None
        assert sha256(world.source) == before

        # --resume, in a new process, goes on from the upload.
        process = _cutover_process(["--cutover", str(world.source), "--resume"])
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        report = json.loads(out)["cutover"]
        assert report["complete"] and [s["step"] for s in report["steps"]] == list(cutover.STEPS)
        for name in cutover.STEPS[:4]:
            assert report["steps"][cutover.STEPS.index(name)]["started"] == state["steps"][name]["started"]
        assert world.s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 1
        assert world.get("deployments", "django-app", NS) is not None
        assert [path for path, _ in world.pods.seen] == ["/readyz", "/"]


@pytest.mark.slow
def test_a_bad_file_stops_before_anything_changes(world, tmp_path):
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(world.source.read_bytes()[:4096] + b"\0" * 4096)
    message, _ = failing("--cutover", str(damaged))
    assert "stopped at step 'preflight'" in message and "Nothing was changed" in message
    assert not world.flag.exists()
    assert not world.applied_order()
    assert world.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0

    # "Run the cut-over again", the message says: with the file fixed (or another one), it does, not refused as
    # an unfinished cut-over to resume.
    report = run("--cutover", str(world.source))["cutover"]
    assert report["complete"] and report["source"] == str(world.source)


def _smoke_fails(world):
    """The cut-over, with the smoke test made to fail: it stops there, in maintenance; the failure's detail."""
    before = sha256(world.source)
    message, document = failing("--cutover", str(world.source))
    assert "stopped at step 'smoke'" in message
    assert "still in maintenance" in message and "--resume" in message
    steps = {s["step"]: s for s in document["cutover"]["steps"]}
    assert steps["deploy"]["outcome"] == "ok" and steps["smoke"]["outcome"] == "failed"
    assert document["cutover"]["downtime_seconds"] is None and document["cutover"]["complete"] is False
    # Left behind: the freeze on the old deployment, its file untouched, the state file saying where it stopped.
    assert json.loads(world.flag.read_text())["on"] is True
    assert sha256(world.source) == before
    state = json.loads(Path("build/cutover/django-app.json").read_text())
    assert state["steps"]["smoke"]["outcome"] == "failed"
    return steps["smoke"]["detail"]


@pytest.mark.slow
def test_a_failing_page_stops_the_cutover_at_the_smoke_test_with_maintenance_left_on(world):
    world.pods.answers["/"] = (500, "<h1>Server Error (500)</h1>")
    detail = _smoke_fails(world)
    assert "GET / through the API's service proxy" in detail and "answered 500, not 200" in detail
    assert "Server Error (500)" in detail
    assert [path for path, _ in world.pods.seen] == ["/readyz", "/"]  # readiness passed, the page did not

    # Fixed (here: the page answers again), --resume runs the smoke test only.
    del world.pods.answers["/"]
    report = run("--cutover", str(world.source), "--resume")["cutover"]
    assert report["complete"] and report["downtime_seconds"] > 0
    assert [path for path, _ in world.pods.seen] == ["/readyz", "/", "/readyz", "/"]


@pytest.mark.slow
def test_a_failing_readiness_stops_before_the_page(world):
    world.pods.answers["/readyz"] = (503, '{"status": "fail", "checks": {"database": "fail"}}')
    detail = _smoke_fails(world)
    assert "GET /readyz" in detail and "answered 503" in detail
    assert [path for path, _ in world.pods.seen] == ["/readyz"]


@pytest.mark.slow
def test_a_deployer_without_services_proxy_is_told_which_permission_is_missing(world):
    world.forbidden.add(("get", "services/proxy"))
    detail = _smoke_fails(world)
    assert "the API server answered 403" in detail and 'resource "services/proxy"' in detail
    assert "Grant get on services/proxy" in detail
    assert world.pods.seen == []


def test_the_smoke_request_is_a_visitors_over_https_where_the_site_has_it():
    certificate = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
    for extra, port, headers in (
        ({}, "http", {"Host": "shop.example.com"}),
        ({"certificate_arn": certificate}, "https", {"Host": "shop.example.com"}),
        ({"exposure": "alb", "certificate_arn": certificate}, "http",
         {"Host": "shop.example.com", "X-Forwarded-Proto": "https"}),
    ):  # fmt: skip
        config = load_config({"hosts": ["shop.example.com", "www.example.com"], **extra}, environ={})
        assert cutover.smoke_request(config) == (port, headers)
        stack = render_manifests(config, DeploySecrets(), redact=True)
        (service,) = [m for m in stack if m["kind"] == "Service" and m["metadata"]["name"] == "django-app"]
        assert port in {p["name"] for p in service["spec"]["ports"]}  # the proxy names a port the Service has
        assert cutover.readiness_path(stack, "django-app") == "/readyz"


@pytest.mark.slow
def test_a_resume_after_the_file_changed_is_refused_not_carried_from_the_old_snapshot(world, monkeypatch):
    """A write to the SQLite file after its snapshot (the freeze not holding, or an edit to fix a row) would be
    lost by a --resume that carries the old snapshot: refused, saying why and how to start again.

    Started again within the same second (the clock held still here), the new attempt's Job takes the next
    second's name: the failed attempt's Job keeps its own (and its log), where the create met a 409."""
    from datetime import UTC, datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 5, 17, 58, tzinfo=UTC)

    monkeypatch.setattr(cutover, "datetime", Frozen)
    world.scenarios["job/cutover"] = "fail"
    failing("--cutover", str(world.source))
    with sqlite3.connect(world.source) as conn:
        conn.execute("INSERT INTO author VALUES (51, 'written during the freeze')")
    conn.close()
    world.scenarios.pop("job/cutover")
    applied = len(world.applied_order())
    message, document = failing("--cutover", str(world.source), "--resume")
    assert "changed after its snapshot was taken" in message and "Nothing was done" in message
    assert "remove build/cutover/django-app.json" in message
    assert {s["step"]: s["outcome"] for s in document["cutover"]["steps"]}["copy"] == "failed"
    assert len(world.applied_order()) == applied
    assert json.loads(world.flag.read_text())["on"] is True

    # Started again, the new snapshot carries the row.
    (world.source.parent.parent / "build" / "cutover" / "django-app.json").unlink()
    report = run("--cutover", str(world.source))["cutover"]
    assert report["complete"]
    assert report["job"] == "django-app-cutover-20261201051759"  # ...58 was the failed attempt's


def test_a_job_of_that_name_still_running_is_another_cutover_and_stops_this_one(world, monkeypatch):
    """A 409 on the Job's name skips to the next second's only for a past attempt's Job (finished): one still
    running is another cut-over copying now, and two copies must never run at once."""
    from datetime import UTC, datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 5, 17, 58, tzinfo=UTC)

    monkeypatch.setattr(cutover, "datetime", Frozen)
    name = "django-app-cutover-20261201051758"
    world.scenarios["job/other-cutover"] = "hang"  # the fake keeps it active
    world.objects[("batch", "jobs", NS, name)] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": "u-1", "resourceVersion": "1",
                     "labels": {"app.kubernetes.io/component": "other-cutover"}},
        "spec": {"template": {"spec": {"containers": []}}},
        "status": {"active": 1},
    }  # fmt: skip
    message, document = failing("--cutover", str(world.source))
    assert "stopped at step 'copy'" in message and "another cut-over is copying now" in message
    assert {s["step"]: s["outcome"] for s in document["cutover"]["steps"]}["copy"] == "failed"
    assert [j["metadata"]["name"] for j in jobs(world)] == [name], "no second copy was started"
    assert json.loads(world.flag.read_text())["on"] is True  # the way back is the usual one

    # Once that one has ended (here: failed), it is a past attempt's: the next second's name is taken.
    world.objects[("batch", "jobs", NS, name)]["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    report = run("--cutover", str(world.source), "--resume")["cutover"]
    assert report["complete"] and report["job"] == "django-app-cutover-20261201051759"


def test_a_maintenance_switch_that_fails_half_way_is_not_reported_as_nothing_changed(world, monkeypatch):
    """maintenance_on failing after the file was written (the cache not): the site is frozen, so the way back
    (maintenance off) is given, not "Nothing was changed"."""
    from deploy import maintenance

    def half(flag, retry_after=600, reason=""):
        Path(flag.file).write_text("{}")
        raise maintenance.MaintenanceError("The cache 'default' did not keep the maintenance key.")

    monkeypatch.setattr(maintenance, "switch_on", half)
    message, _ = failing("--cutover", str(world.source))
    assert "stopped at step 'maintenance_on'" in message
    assert "Nothing was changed" not in message
    assert "perhaps in maintenance" in message and "maintenance off" in message
    assert world.flag.exists()
