"""The k8s_deploy command surface, without a cluster."""

import base64
import json
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.usefixtures("no_cluster")


def run(*args, **options):
    out, err = StringIO(), StringIO()
    call_command("k8s_deploy", *args, stdout=out, stderr=err, **options)
    return out.getvalue()


BAD_CONFIGS = [
    ({"namespace": "Bad_Name"}, "namespace"),
    ({"app_name": "-app"}, "app_name"),
    ({"app_name": "a" * 64}, "app_name"),
    ({"replicas_min": 1}, "replicas_min"),
    ({"replicas_min": 4, "replicas_max": 3}, "replicas_max"),
    ({"replicas_max": "six"}, "replicas_max"),
    ({"replicas_max": True}, "replicas_max"),
    ({"cpu_request": "lots"}, "cpu_request"),
    ({"memory_limit": "512MB"}, "memory_limit"),
    ({"cpu_request": "2", "cpu_limit": "1"}, "cpu_request"),
    ({"image_tag": "latest"}, "image_tag"),
    ({"image_repository": "Not A Repo"}, "image_repository"),
    ({"image_digest": "sha256:short"}, "image_digest"),
    ({"exposure": "elb"}, "exposure"),
    ({"exposure": "alb"}, "certificate_arn"),
    ({"certificate_arn": "arn:aws:iam::123:cert"}, "certificate_arn"),
    ({"hosts": []}, "hosts"),
    ({"hosts": ["bad host"]}, "hosts"),
    ({"hosts": "app.example.com"}, "hosts"),
    ({"vpc_cidr": "10.0.0.1/16"}, "vpc_cidr"),
    ({"postgres_mode": "external"}, "postgres_host"),
    ({"postgres_mode": "external", "postgres_host": "10.9.0.1", "postgres_cidr": "10.0.0.0/16"}, "postgres_host"),
    ({"redis_mode": "managed"}, "redis_mode"),
    ({"kubernetes_version": "1.29"}, "kubernetes_version"),
    ({"create_storage_classes": True}, "efs_file_system_id"),
    ({"efs_file_system_id": "efs-123"}, "efs_file_system_id"),
    ({"extra_env": {"DB_PASSWORD": "x"}}, "extra_env"),
    ({"extra_env": {"bad-name": "x"}}, "extra_env"),
    ({"extra_env": {"NESTED": {"a": 1}}}, "extra_env"),
    ({"postgres_backup_schedule": "nightly"}, "postgres_backup_schedule"),
    ({"postgres_user": "postgres"}, "postgres_user"),
    ({"postgres_image": "postgres"}, "postgres_image"),
    ({"log_level": "verbose"}, "log_level"),
    ({"replica_max": 3}, "replica_max"),
]


@pytest.mark.parametrize(("deploy", "setting"), BAD_CONFIGS, ids=[s for _, s in BAD_CONFIGS])
def test_a_bad_setting_is_one_command_error_naming_it(settings, tmp_path, deploy, setting):
    settings.DEPLOY = deploy
    with pytest.raises(CommandError) as excinfo:
        run()
    message = str(excinfo.value)
    assert f"'{setting}'" in message
    assert "\n" not in message
    assert not (tmp_path / "build").exists(), "nothing is written when the configuration is wrong"


def test_environment_variables_override_settings(settings, monkeypatch):
    settings.DEPLOY = {"replicas_max": 4}
    monkeypatch.setenv("DEPLOY_REPLICAS_MAX", "5")
    manifests = list(yaml.load_all(run("--render"), Loader=yaml.CSafeLoader))
    (hpa,) = [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["maxReplicas"] == 5
    monkeypatch.setenv("DEPLOY_REPLICAS_MAX", "5.5")
    with pytest.raises(CommandError, match=r"DEPLOY_REPLICAS_MAX\) must be a whole number; got '5.5'"):
        run("--render")


def test_without_a_cluster_it_writes_build_k8s_and_applies_nothing(tmp_path):
    out = run()
    assert "nothing was applied" in out
    files = sorted((tmp_path / "build" / "k8s").iterdir())
    assert "kustomization.yaml" in [f.name for f in files]
    assert len(files) > 20


def test_json_report(tmp_path):
    report = json.loads(run("--json"))
    assert report["applied"] is False
    assert report["cluster"] is None
    assert report["output"] == "build/k8s"
    # The same shape as a deploy's objects: what happened to each (here: written to the folder).
    assert {"object": "Deployment django-app/django-app", "result": "written"} in report["objects"]
    assert report["validated_for"] == ["1.31", "1.32", "1.33", "1.34"]


CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("deploy", "warned"),
    [
        ({}, True),  # the defaults: an internet-facing NLB with no certificate
        ({"certificate_arn": CERTIFICATE}, False),
        ({"exposure": "alb", "certificate_arn": CERTIFICATE}, False),
        ({"load_balancer_scheme": "internal"}, False),
    ],
)
def test_plain_http_to_the_internet_is_said_not_silently_rendered(settings, deploy, warned):
    # The default exposure serves the admin login over plain HTTP to the internet: valid, but never silent.
    settings.DEPLOY = deploy
    for args in (("--render",), ()):
        out, err = StringIO(), StringIO()
        call_command("k8s_deploy", *args, stdout=out, stderr=err)
        assert ("plain HTTP" in err.getvalue()) is warned, err.getvalue()
        assert "plain HTTP" not in out.getvalue(), "stdout holds the manifests or the report only"
    report = json.loads(run("--json"))
    # Besides this one, only the alert receivers' warning (these settings configure none: test_alerting.py).
    exposure = [w for w in report["warnings"] if not w.startswith("Alerts are not delivered")]
    assert bool(exposure) is warned
    assert all("DEPLOY_CERTIFICATE_ARN" in w for w in exposure)


SECRET_ENV = {
    "DEPLOY_SECRET_KEY": "top-secret-key-value-123",
    "DEPLOY_POSTGRES_PASSWORD": "pg-pass-word-456",
    "DEPLOY_REDIS_PASSWORD": "redis-pass-789",
    "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "pg-superuser-pass-012",
}


def _leaks(text):
    found = []
    for value in SECRET_ENV.values():
        for form in (value, base64.b64encode(value.encode()).decode()):
            if form in text:
                found.append(form)
    # Secrets inside URLs are base64'd as part of the URL: decode every Secret value.
    for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if text.lstrip().startswith("---") else []:
        if doc and doc.get("kind") == "Secret":
            for encoded in doc.get("data", {}).values():
                decoded = base64.b64decode(encoded).decode()
                found += [v for v in SECRET_ENV.values() if v in decoded]
    return found


@pytest.mark.slow
def test_no_secret_in_render_or_output_without_include_secrets(monkeypatch, tmp_path):
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    assert _leaks(run("--render")) == []
    run("--output", "out")
    for path in (tmp_path / "out").iterdir():
        assert _leaks("---\n" + path.read_text()) == [], path.name
    assert _leaks(run("--json")) == []
    assert len(_leaks(run("--render", "--include-secrets"))) >= 3


def test_include_secrets_names_the_missing_ones():
    with pytest.raises(
        CommandError,
        match="set DEPLOY_SECRET_KEY, DEPLOY_POSTGRES_PASSWORD, DEPLOY_REDIS_PASSWORD, DEPLOY_POSTGRES_SUPERUSER",
    ):
        run("--render", "--include-secrets")


def test_output_into_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(CommandError, match="did not write"):
        run("--output", "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.txt"]


def test_an_unusable_kubeconfig_is_named_not_silently_ignored(tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(CommandError, match=r"Cannot use the kubeconfig \(.*kubeconfig\)"):
        run()


def test_help_lists_the_options():
    from django.core.management import load_command_class

    parser = load_command_class("deploy", "k8s_deploy").create_parser("manage.py", "k8s_deploy")
    text = parser.format_help()
    for option in ("--render", "--output", "--include-secrets", "--json", "--verbosity"):
        assert option in text


@pytest.mark.parametrize(
    "args",
    [("--diff",), ("--dry-run",), ("--rollback",), ("--rollback", "3"), ("--history",), ("--preflight",)],
)
def test_options_that_need_a_cluster_stop_clearly_without_one(tmp_path, args):
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    message = str(excinfo.value)
    assert message.startswith(f"No cluster configured: {args[0]}")
    assert "KUBECONFIG" in message and "make sandbox" in message
    # Not the silent "written to build/k8s/" of a plain run: nothing at all.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, refused",
    [
        (("--diff", "--dry-run"), "--diff and --dry-run are separate modes"),
        (("--history", "--rollback", "2"), "--history and --rollback are separate modes"),
        (("--preflight", "--cutover", "db.sqlite3"), "--cutover cannot be combined with --preflight"),
    ],
)
def test_the_modes_exclude_each_other_before_anything_is_rendered(tmp_path, args, refused):
    with pytest.raises(CommandError, match=refused) as excinfo:
        run(*args)
    assert "Nothing was done" in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, refused",
    [
        (("--history", "--dry-run"), "--history and --dry-run are separate modes"),
        (("--restore", "app-20240701T030000Z.dump", "--output", "x"), "--restore cannot be combined with --output"),
        (("--timeout", "soon"), "argument --timeout: invalid int value: 'soon'"),
    ],
)
def test_a_usage_error_with_json_is_one_document_and_exit_status_2(tmp_path, args, refused):
    # CI reads stdout as one JSON document whatever happens (docs/deploying.md), a usage error included.
    import os

    from tests.conftest import ROOT
    from tests.forkserver import run_python

    env = {**os.environ, "DEPLOY_SECRET_KEY": "k" * 40, "DEBUG": "true"}
    done = run_python([str(ROOT / "manage.py"), "k8s_deploy", "--json", *args], env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is False and refused in document["error"]
    assert list(tmp_path.iterdir()) == []


def test_an_operation_refusing_an_option_is_a_usage_error_too():
    with pytest.raises(CommandError, match="--backups cannot be combined with --prune-volumes") as excinfo:
        run("--backups", "--prune-volumes")
    assert excinfo.value.returncode == 2


@pytest.mark.parametrize(
    "args, refused",
    [
        (("--history", "--output", "x"), "--history cannot be combined with --output: it lists the revisions"),
        (("--history", "--render"), "--history cannot be combined with --render"),
        (("--rollback", "--output", "x"), "--rollback cannot be combined with --output: it applies a recorded"),
        (("--rollback", "3", "--render"), "--rollback cannot be combined with --render"),
        (("--diff", "--render"), "--diff cannot be combined with --render: --render prints today's manifests"),
        (("--dry-run", "--render"), "--dry-run cannot be combined with --render"),
    ],
)
def test_a_mode_refuses_what_it_would_silently_ignore(tmp_path, args, refused):
    # --history --output wrote nothing, --diff --render printed the render and diffed nothing: both without a word.
    with pytest.raises(CommandError, match=refused) as excinfo:
        run(*args)
    assert excinfo.value.returncode == 2 and "Nothing was done" in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []
