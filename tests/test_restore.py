"""The restore path: the rendered backup CronJob's pg_dump, then the restore Job's script, on a real PostgreSQL.

The two scripts are taken from the rendered objects and run by /bin/sh here, against databases of the local
PostgreSQL 15 named after this run's test database (so parallel runs do not collide), as a role that is not a
superuser and owns the databases: the same role the app uses in the cluster.
"""

import subprocess
import threading
import time

import psycopg
import pytest
from django.db import connection

from deploy.conf import load_config
from deploy.k8s import names
from deploy.k8s.render import render_manifests
from deploy.k8s.restore import (
    RestoreError,
    list_job,
    list_script,
    parse_backups,
    restore_job,
    restore_script,
)
from deploy.k8s.validate import policy_problems, schema_problems
from deploy.k8s.wiring import wiring_problems
from tests.k8s_helpers import by_kind

ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def local(db, tmp_path):
    base = connection.settings_dict["NAME"].replace("_", "-")
    role, source, target = f"{base}-restore", f"{base}-rsrc", f"{base}-rdst"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        for name in (source, target):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
        for name in (source, target):
            admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "password").write_text("unused (trust authentication)")
        (tmp_path / "backups").mkdir()
        yield {"role": role, "source": source, "target": target, "dir": tmp_path}
        for name in (source, target):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _url(local, database):
    return f"postgres://{local['role']}@127.0.0.1:5432/{database}"


def _here(script, config, local):
    """The pod's paths and Service name, pointed at this machine."""
    host = names.endpoint(config, "postgres").host
    tmp = local["dir"]
    return (
        script.replace("/run/secrets/postgres", str(tmp / "secrets"))
        .replace("/backups", str(tmp / "backups"))
        .replace("/tmp/expected", str(tmp / "expected"))
        .replace(f"-h {host} ", "-h 127.0.0.1 ")
    )


def _run(script):
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120)


def _rows(url):
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}


def _seed(url):
    with psycopg.connect(url) as conn:
        conn.execute('CREATE TABLE "Orders" (id int PRIMARY KEY, note text, total numeric(10, 2), placed timestamptz)')
        conn.execute("CREATE TABLE customer (id serial PRIMARY KEY, name text NOT NULL, data jsonb)")
        conn.execute("CREATE TABLE empty_one (id int PRIMARY KEY)")
        with conn.cursor().copy('COPY "Orders" FROM STDIN') as copy:
            for i in range(1, 1201):
                note = None if i % 7 == 0 else f"line one\nline\ttwo \\ back {i} é€"
                copy.write_row((i, note, f"{i}.25", "2024-07-01 12:00:00+00"))
        conn.execute("INSERT INTO customer (name, data) VALUES ('Ann', '{\"a\": [1, 2]}'), ('Bob', NULL)")


def _configs(local):
    return load_config({"postgres_user": local["role"], "postgres_database": local["source"]}, environ={}), load_config(
        {"postgres_user": local["role"], "postgres_database": local["target"]}, environ={}
    )


def test_a_backup_of_the_cronjob_restored_by_the_restore_job_gives_the_same_rows(local):
    source_config, target_config = _configs(local)
    _seed(_url(local, local["source"]))
    cronjob = by_kind(render_manifests(source_config), "CronJob")[0]
    dump_script = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    dumped = _run(_here(dump_script, source_config, local))
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout.startswith(f"backup: wrote {local['dir']}/backups/{local['source']}-")
    (backup,) = [p.name for p in (local["dir"] / "backups").iterdir()]
    assert backup.startswith(f"{local['source']}-") and backup.endswith("Z.dump")
    # The CronJob names files after the source database; the restore Job takes the file by name.
    renamed = backup.replace(local["source"], local["target"], 1)
    (local["dir"] / "backups" / backup).rename(local["dir"] / "backups" / renamed)

    restored = _run(_here(restore_script(target_config, renamed), target_config, local))

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert 'restore: public."Orders" dump=1200 database=1200' in restored.stdout
    assert "restore: public.empty_one dump=0 database=0" in restored.stdout
    assert "restore: verified 3 table(s)" in restored.stdout
    source_rows, target_rows = _rows(_url(local, local["source"])), _rows(_url(local, local["target"]))
    assert list(target_rows) == ['public."Orders"', "public.customer", "public.empty_one"]
    assert target_rows == source_rows
    # Restoring again over the restored data (--clean) gives the same rows, not twice as many.
    again = _run(_here(restore_script(target_config, renamed), target_config, local))
    assert again.returncode == 0 and _rows(_url(local, local["target"])) == source_rows


def test_a_missing_or_damaged_backup_leaves_the_database_as_it_was(local):
    _, target_config = _configs(local)
    target = _url(local, local["target"])
    with psycopg.connect(target) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (1), (2)")
    before = _rows(target)
    name = f"{local['target']}-20240101T000000Z.dump"
    missing = _run(_here(restore_script(target_config, name), target_config, local))
    assert missing.returncode == 2 and f"no backup {local['dir']}/backups/{name}" in missing.stdout
    assert "the backups are:" in missing.stdout
    (local["dir"] / "backups" / name).write_bytes(b"PGDMP" + b"\x00" * 50)  # a truncated dump
    damaged = _run(_here(restore_script(target_config, name), target_config, local))
    assert damaged.returncode != 0 and "pg_restore" in damaged.stderr
    assert "verified" not in damaged.stdout
    assert _rows(target) == before


def test_the_restore_job_is_restricted_and_allowed_by_the_network_policies():
    config = load_config({}, environ={})
    manifests = render_manifests(config)
    job = restore_job(config, "app-20240701T120000Z.dump")
    listing = list_job(config)
    assert schema_problems([job, listing]) == []
    # Pod security "restricted", resources, the quota (one more pod) and the wiring rule, with the stack.
    for operation in (job, listing):
        assert policy_problems([*manifests, operation], config) == []
        assert wiring_problems([*manifests, operation], config) == []
    # Listing needs no password: the listing Job mounts none.
    assert [v["name"] for v in listing["spec"]["template"]["spec"]["volumes"]] == ["backups", "tmp"]
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["securityContext"]["runAsNonRoot"] is True
    assert "app-20240701T120000Z.dump" in spec["containers"][0]["args"][0]
    policy = by_kind(manifests, "NetworkPolicy", "django-app-postgres")[0]
    allowed = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert any(all(labels.get(k) == v for k, v in selector.items()) for selector in allowed)


@pytest.mark.parametrize(
    "name", ["app-latest.dump", "../app-20240701T120000Z.dump", "other-20240701T120000Z.dump", "app-1; rm -rf /"]
)
def test_a_name_that_is_not_a_backup_is_refused(name):
    with pytest.raises(RestoreError, match="is not a backup name"):
        restore_job(load_config({}, environ={}), name)


# --- the command: k8s_deploy --restore, against the fake API server ----------------------------------------------


def _restore_command(*args):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("k8s_deploy", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    from deploy.k8s import rollout
    from tests.fake_apiserver import FakeApiServer

    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.05)
    with FakeApiServer(job_ticks=1) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        server.create("", "v1", "Namespace", "namespaces", None,
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "django-app"}}, False)  # fmt: skip
        yield server


def _jobs(server):
    return [o for o in server.list("jobs", "django-app")]


def _failing_command(*args):
    """(CommandError, stdout) of a k8s_deploy run that must fail."""
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("k8s_deploy", *args, stdout=out, stderr=StringIO())
    return excinfo.value, out.getvalue()


def test_k8s_deploy_restore_runs_the_job_and_reports(fake):
    out = _restore_command("--restore", "app-20240701T120000Z.dump", "--yes", "--timeout", "30")
    (job,) = _jobs(fake)
    assert job["metadata"]["labels"]["app.kubernetes.io/operation"] == "restore"
    assert "/backups/app-20240701T120000Z.dump" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "Restored app-20240701T120000Z.dump into database 'app' in namespace django-app" in out


def test_k8s_deploy_restore_failure_names_the_job_and_its_log(fake):
    from django.core.management.base import CommandError

    fake.scenarios["job/postgres-backup"] = "fail"
    with pytest.raises(CommandError) as excinfo:
        _restore_command("--restore", "app-20240701T120000Z.dump", "--yes", "--timeout", "30")
    message = str(excinfo.value)
    assert "The restore Job django-app-restore-" in message and "failed; its log ends with" in message
    assert "one transaction" in message and "Traceback" not in message
    assert len(_jobs(fake)) == 1


def test_k8s_deploy_restore_asks_for_yes_and_checks_the_name_before_touching_the_cluster(fake):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="pass --yes"):
        _restore_command("--restore", "app-20240701T120000Z.dump")
    with pytest.raises(CommandError, match=r"is not a backup name.*Nothing was restored"):
        _restore_command("--restore", "app.sql", "--yes")
    assert _jobs(fake) == []


def test_a_restore_outliving_its_timeout_is_still_running_and_a_rerun_waits_for_it_or_refuses(fake):
    import json

    from deploy.k8s.operations import RESTORE_ANOTHER_ACTIVE, RESTORE_STILL_RUNNING

    fake.scenarios["job/postgres-backup"] = "hang"
    error, out = _failing_command("--restore", "app-20240701T120000Z.dump", "--yes", "--timeout", "0", "--json")
    (job,) = _jobs(fake)
    name = job["metadata"]["name"]
    assert error.returncode == RESTORE_STILL_RUNNING
    report = json.loads(out)
    assert report["status"] == "running" and report["job"] == name and report["ok"] is False
    assert "still running" in report["error"] and f"kubectl -n django-app logs -f job/{name}" in report["error"]
    assert "failed" not in report["error"]

    # Another backup while it runs: refused, naming the Job and how to follow and wait for it; nothing started.
    error, out = _failing_command("--restore", "app-20240702T120000Z.dump", "--yes", "--timeout", "0")
    assert error.returncode == RESTORE_ANOTHER_ACTIVE
    assert f"The restore Job {name} (backup app-20240701T120000Z.dump) is still running" in str(error)
    assert f"kubectl -n django-app wait --for=condition=complete --timeout=1h job/{name}" in str(error)
    assert "Nothing was started" in str(error)
    assert [j["metadata"]["name"] for j in _jobs(fake)] == [name]

    # The same backup again: it waits for the running Job and reports its result, with no second Job.
    def end_the_hang_once_waited_for():
        path = f"/apis/batch/v1/namespaces/django-app/jobs/{name}"
        while not any(method == "GET" and p == path for method, p, *_ in fake.requests[seen:]):
            time.sleep(0.02)
        del fake.scenarios["job/postgres-backup"]

    seen = len(fake.requests)
    ender = threading.Thread(target=end_the_hang_once_waited_for, daemon=True)
    ender.start()
    out = _restore_command("--restore", "app-20240701T120000Z.dump", "--yes", "--timeout", "30")
    ender.join(5)
    assert f"(Job {name}, which was already running)" in out
    assert [j["metadata"]["name"] for j in _jobs(fake)] == [name]


def test_a_deploy_does_not_prune_a_running_restore_job(fake):
    from deploy.k8s.client import Cluster
    from deploy.k8s.connect import api_client, find_cluster
    from deploy.k8s.deploy import Deployer

    config = load_config({}, environ={})
    fake.scenarios["job/postgres-backup"] = "hang"
    cluster = Cluster(api_client(find_cluster()))
    restoring = restore_job(config, "app-20240701T120000Z.dump")
    cluster.create(restoring)
    stale = restore_job(config, "app-20240701T120000Z.dump")  # a Job of the release that is not an operation
    stale["metadata"]["name"] = "django-app-migrate-old"
    del stale["metadata"]["labels"]["app.kubernetes.io/operation"]
    cluster.create(stale)
    deployer = Deployer(cluster, config)
    deployer.prune(render_manifests(config))
    assert "Job django-app/django-app-migrate-old" in " ".join(deployer.report.pruned)
    assert [j["metadata"]["name"] for j in _jobs(fake)] == [restoring["metadata"]["name"]]


@pytest.mark.parametrize(
    "args, refused",
    [
        (["--restore", "app-20240701T120000Z.dump", "--dry-run"], "--restore cannot be combined with --dry-run"),
        (["--restore", "app-20240701T120000Z.dump", "--output", "x"], "--restore cannot be combined with --output"),
        (["--restore", "app-20240701T120000Z.dump", "--history"], "--restore cannot be combined with --history"),
        (["--backups", "--render"], "--backups cannot be combined with --render"),
        (["--backups", "--restore", "app-20240701T120000Z.dump"], "separate actions"),
    ],
)
def test_restore_and_backups_refuse_options_they_would_ignore(args, refused, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error, out = _failing_command(*args)
    assert refused in str(error) and "Nothing was done" in str(error)
    assert out == "" and list(tmp_path.iterdir()) == []  # no build/k8s, no x/


def test_restore_with_render_prints_the_restore_job_without_a_cluster(monkeypatch, tmp_path):
    import yaml

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    (job,) = yaml.safe_load_all(_restore_command("--restore", "app-20240701T120000Z.dump", "--render"))
    assert job["kind"] == "Job" and job["metadata"]["labels"]["app.kubernetes.io/operation"] == "restore"
    assert "/backups/app-20240701T120000Z.dump" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    with pytest.raises(Exception, match="is not a backup name"):
        _restore_command("--restore", "latest", "--render")


# --- listing the backups -----------------------------------------------------------------------------------------


def test_the_listing_script_names_this_databases_dumps_with_their_sizes(tmp_path):
    config = load_config({}, environ={})
    backups = tmp_path / "backups"
    backups.mkdir()
    empty = _run(list_script(config).replace("/backups", str(backups)))
    assert empty.returncode == 0 and parse_backups(config, empty.stdout) == []
    (backups / "app-20240702T010000Z.dump").write_bytes(b"x" * 2048)
    (backups / "app-20240701T010000Z.dump").write_bytes(b"x" * 10)
    (backups / "other-20240701T010000Z.dump").write_bytes(b"x")  # another database's
    (backups / "app-20240703T010000Z.dump").mkdir()  # not a file
    (backups / "app-notes.txt").write_text("x")
    done = _run(list_script(config).replace("/backups", str(backups)))
    assert done.returncode == 0, done.stderr
    assert parse_backups(config, done.stdout) == [
        {"name": "app-20240701T010000Z.dump", "bytes": 10, "time": "2024-07-01T01:00:00+00:00"},
        {"name": "app-20240702T010000Z.dump", "bytes": 2048, "time": "2024-07-02T01:00:00+00:00"},
    ]


def test_k8s_deploy_backups_lists_them_with_a_job_it_then_deletes(fake):
    import json

    fake.job_logs["operation/list-backups"] = (
        "backup: app-20240702T010000Z.dump 2048\nbackup: app-20240701T010000Z.dump 10\nbackups: listed\n"
    )
    report = json.loads(_restore_command("--backups", "--json", "--timeout", "30"))
    assert report["ok"] is True and report["job"].startswith("django-app-backups-")
    assert [b["name"] for b in report["backups"]] == ["app-20240701T010000Z.dump", "app-20240702T010000Z.dump"]
    assert report["backups"][1]["bytes"] == 2048
    assert _jobs(fake) == []  # the listing Job is gone
    table = _restore_command("--backups", "--timeout", "30")
    assert "app-20240702T010000Z.dump" in table and "2024-07-02T01:00:00+00:00" in table


def test_k8s_deploy_backups_that_cannot_list_says_so_and_leaves_no_job(fake):
    fake.job_logs["operation/list-backups"] = "ls: /backups: Permission denied\n"
    error, _ = _failing_command("--backups", "--timeout", "30")
    assert "Cannot list the backups" in str(error) and "Permission denied" in str(error)
    assert _jobs(fake) == []


# --- the app's user is not a superuser ---------------------------------------------------------------------------


def test_the_postgres_init_script_makes_an_app_user_that_owns_its_schema_and_is_not_a_superuser(db, tmp_path):
    config = load_config({}, environ={})
    manifests = render_manifests(config)
    statefulset = by_kind(manifests, "StatefulSet", "django-app-postgres")[0]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in statefulset["containers"][0]["env"]}
    assert env["POSTGRES_USER"] == "postgres" and env["APP_USER"] == "app"
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres/superuser-password"
    (script,) = by_kind(manifests, "ConfigMap", "django-app-postgres-init")[0]["data"].values()
    base = connection.settings_dict["NAME"].replace("_", "-")
    role, database = f"{base}-init-app", f"{base}-init"
    (tmp_path / "password").write_text("app pass'word; DROP")
    script = script.replace("/run/secrets/postgres/password", str(tmp_path / "password"))
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.execute(f'CREATE DATABASE "{database}"')  # as the image does for POSTGRES_DB, owned by the superuser
        try:
            run_env = {"PATH": "/usr/bin:/bin", "PGHOST": "127.0.0.1", "POSTGRES_USER": "postgres",
                       "POSTGRES_DB": database, "APP_USER": role}  # fmt: skip
            done = subprocess.run(["/bin/sh", "-c", script], env=run_env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            flags = admin.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = %s", [role]
            ).fetchone()
            assert flags == (False, False, False, True)
            owner = admin.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database]
            ).fetchone()
            assert owner == (role,)
            with psycopg.connect(f"postgres://{role}@127.0.0.1:5432/{database}", autocommit=True) as app:
                assert app.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
                                   ).fetchone() == (role,)  # fmt: skip
                app.execute("CREATE TABLE migrated (id int)")  # migrations work
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute("CREATE ROLE intruder SUPERUSER")
            stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()[0]
            assert stored.startswith("SCRAM-SHA-256$")  # the password file's text was set as the password
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_superuser_password_must_differ_from_the_apps():
    from deploy.conf import DeploySecrets
    from deploy.k8s.render import RenderError

    same = DeploySecrets("k" * 40, "same-password", "r", "same-password")
    with pytest.raises(RenderError, match="SUPERUSER_PASSWORD is the same as DEPLOY_POSTGRES_PASSWORD") as excinfo:
        render_manifests(load_config({}, environ={}), same, redact=False)
    assert "same-password" not in str(excinfo.value)
    backup = by_kind(render_manifests(load_config({}, environ={})), "CronJob")[0]
    volumes = backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "secrets")["secret"]["items"] == [
        {"key": "password", "path": "password"}
    ]


def test_k8s_deploy_backups_whose_job_finished_without_a_listing_does_not_call_it_failed(fake):
    """A Job that completed but whose log could not be read was reported as 'failed', sending people after a
    failure that did not happen."""
    fake.job_logs["operation/list-backups"] = ""
    error, _ = _failing_command("--backups", "--timeout", "30")
    assert "finished, but its log could not be read" in str(error) and "failed" not in str(error)
    assert _jobs(fake) == []


@pytest.mark.slow
def test_the_training_sandbox_lists_and_restores_backups_as_the_runbook_shows(tmp_path, monkeypatch):
    import json
    from io import StringIO

    from django.core.management import call_command

    from tests.fake_apiserver import sandbox, write_sandbox_files

    with sandbox(tick=0.02) as server:
        kubeconfig, _ = write_sandbox_files(server, tmp_path)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        secrets = {"SECRET_KEY": "k" * 50, "POSTGRES_PASSWORD": "pg", "REDIS_PASSWORD": "redis"}
        for key, value in {**secrets, "POSTGRES_SUPERUSER_PASSWORD": "su"}.items():
            monkeypatch.setenv(f"DEPLOY_{key}", value)
        call_command("k8s_deploy", "--yes", "--no-wait", stdout=StringIO(), stderr=StringIO())  # the course's deploy
        out = StringIO()
        call_command("k8s_deploy", "--backups", "--json", "--timeout", "30", stdout=out, stderr=StringIO())
        backups = [b["name"] for b in json.loads(out.getvalue())["backups"]]
        assert backups == ["app-20240701T030000Z.dump", "app-20240702T030000Z.dump"]
        out = StringIO()
        call_command("k8s_deploy", "--restore", backups[-1], "--yes", "--timeout", "30", stdout=out, stderr=StringIO())
        assert "restore: public.catalog_product dump=1200 database=1200" in out.getvalue()
        assert f"Restored {backups[-1]}" in out.getvalue()


def test_a_negative_timeout_is_refused_before_any_job_starts(fake):
    """--timeout -5 started the restore Job and reported it 'still running after -5 s'."""
    error, _ = _failing_command("--restore", "app-20240702T010000Z.dump", "--yes", "--timeout", "-5")
    assert "--timeout must be 0 seconds or more, not -5" in str(error)
    assert _jobs(fake) == []


def test_the_cloudnative_pg_mode_lists_the_backups_it_restores_from():
    # The docs restore the nightly dump in this mode with --restore NAME; --backups is how the operator finds NAME.
    config = load_config({"postgres_mode": "cloudnative-pg"}, environ={})
    manifests = render_manifests(config)
    listing = list_job(config)
    assert schema_problems([listing]) == []
    assert wiring_problems([*manifests, listing], config) == []


def test_restore_with_render_in_the_cloudnative_pg_mode_validates_the_stack_as_a_restore_leaves_it(
    monkeypatch, tmp_path
):
    # The docs' recovery command for this mode. At its largest (ten app pods, surge) the stack and three instances
    # leave no 100m for the restore Job on the default nodes; the runbook scales the app to 0 first, so it fits.
    import yaml

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("DEPLOY_POSTGRES_MODE", "cloudnative-pg")
    (job,) = yaml.safe_load_all(_restore_command("--restore", "app-20240701T120000Z.dump", "--render"))
    assert "-h django-app-postgres-rw.django-app.svc" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]


@pytest.mark.parametrize("operation", [list_job, lambda config: restore_job(config, "app-20240701T120000Z.dump")])
def test_the_managed_modes_are_refused_naming_the_mode_in_use(operation):
    config = load_config({"postgres_mode": "rds"}, environ={})
    with pytest.raises(RestoreError, match="postgres_mode 'rds'"):
        operation(config)


@pytest.mark.parametrize("operation", [["--restore", "app-20240701T120000Z.dump"], ["--backups"]])
def test_the_rds_mode_refuses_restore_and_backups_before_reading_aws(operation, monkeypatch, tmp_path):
    # The refusal needs nothing from AWS: it used to read the stack's outputs first, and so failed on missing
    # credentials or a missing stack with a message about those instead of the mode.
    from django.core.management.base import CommandError

    from deploy.aws import rds, session

    read = []
    monkeypatch.setattr(rds, "wire", lambda *a, **k: read.append("stack outputs"))
    monkeypatch.setattr(session, "session", lambda *a, **k: read.append("aws session"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("DEPLOY_POSTGRES_MODE", "rds")
    with pytest.raises(CommandError, match=r"postgres_mode 'rds'.*Nothing was done\.") as refused:
        _restore_command(*operation, "--yes")
    assert "high-availability.md#recovery-procedures" in str(refused.value)
    assert read == []
