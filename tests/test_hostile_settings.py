"""Settings that could inject structure or override the stack are refused, each with one message naming it."""

import base64
import os
import subprocess
import time
from io import StringIO

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.conf import ConfigError, DeploySecrets, load_config
from deploy.k8s.render import owned_env_names, render_manifests
from tests.conftest import ROOT, free_port, own_redis_client
from tests.forkserver import run_python

pytestmark = pytest.mark.usefixtures("no_cluster")


HOSTILE = [
    ({"app_name": "django-app\n"}, "app_name"),
    ({"namespace": "shop\n"}, "namespace"),
    ({"image_repository": "django-app\n"}, "image_repository"),
    ({"image_tag": "0.1.0\n"}, "image_tag"),
    ({"image_tag": "0.1.0 "}, "image_tag"),
    ({"image_digest": "sha256:" + "ab" * 32 + "\n"}, "image_digest"),
    ({"postgres_image": "postgres:16.4\n"}, "postgres_image"),
    ({"hosts": ["app.example.com\n"]}, "hosts"),
    ({"certificate_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc\n"}, "certificate_arn"),
    ({"cpu_request": "250m\n"}, "cpu_request"),
    ({"eks_cluster": "shop\nprod"}, "eks_cluster"),
    ({"runbook_url": "https://docs.example.com/x\nevil"}, "runbook_url"),
    ({"extra_env": {"GREETING\n": "x"}}, "extra_env"),
    ({"postgres_backup_schedule": "0 3 * *\n*"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "61 3 * * *"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "0 3 * *"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "0 3 * * * *"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "0  3 * * *"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "0 3 * * 8"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "*/0 * * * *"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "5-1 * * * *"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "@reboot"}, "postgres_backup_schedule"),
    ({"postgres_backup_schedule": "TZ=UTC 0 3 * * *"}, "postgres_backup_schedule"),
    # One namespace for two parts of the stack rendered its Namespace twice ("rendered twice (by django-app and
    # another template)"); a system namespace gave 22 wiring problems, or labelled 'default' restricted.
    ({"monitoring_namespace": "django-app"}, "monitoring_namespace"),
    ({"logging_namespace": "django-app", "monitoring": False}, "logging_namespace"),
    ({"monitoring_namespace": "ops", "logging_namespace": "ops"}, "logging_namespace"),
    ({"monitoring_namespace": "django-app", "monitoring_mode": "operator"}, "monitoring_namespace"),
    ({"namespace": "kube-system"}, "namespace"),
    ({"namespace": "default"}, "namespace"),
    ({"logging_namespace": "kube-system"}, "logging_namespace"),
]


@pytest.mark.parametrize(("deploy", "setting"), HOSTILE, ids=[f"{s}-{i}" for i, (_, s) in enumerate(HOSTILE)])
def test_a_hostile_value_is_one_command_error_naming_the_setting(settings, tmp_path, deploy, setting):
    settings.DEPLOY = deploy
    with pytest.raises(CommandError) as excinfo:
        call_command("k8s_deploy", stdout=StringIO(), stderr=StringIO())
    message = str(excinfo.value)
    assert f"DEPLOY['{setting}']" in message
    assert "\n" not in message, "one line, the bad value shown escaped"
    assert not (tmp_path / "build").exists(), "nothing is written"


@pytest.mark.parametrize(
    "name",
    ["DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "REDIS_URL", "SECURE_SSL_REDIRECT",
     "SECURE_PROXY_SSL_HEADER", "GUNICORN_BIND", "STATIC_ROOT", "CSRF_TRUSTED_ORIGINS", "SESSION_COOKIE_SECURE"],
)  # fmt: skip
def test_extra_env_may_not_set_what_the_stack_owns(settings, tmp_path, name):
    settings.DEPLOY = {"extra_env": {name: "x"}}
    with pytest.raises(CommandError) as excinfo:
        call_command("k8s_deploy", stdout=StringIO(), stderr=StringIO())
    message = str(excinfo.value)
    assert "DEPLOY['extra_env']" in message and f"must not set {name}:" in message
    assert "\n" not in message
    assert not (tmp_path / "build").exists()


def test_the_owned_names_are_the_ones_the_configmap_sets():
    """Derived from the render, not a list kept beside it: every ConfigMap key of the app is owned."""
    for mode in ({}, {"exposure": "alb", "certificate_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/a"}):
        config = load_config(mode, environ={})
        (configmap,) = [
            m for m in render_manifests(config) if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "django-app"
        ]
        assert set(configmap["data"]) <= set(owned_env_names(config))
        assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DEBUG"} <= set(owned_env_names(config))
    allowed = load_config({"extra_env": {"FEATURE_FLAGS": "a,b", "GREETING": "line one\nline two"}}, environ={})
    assert render_manifests(allowed)


@pytest.mark.parametrize("value", ["line\x00two", float("nan"), float("inf")], ids=["nul", "nan", "inf"])
def test_extra_env_values_are_what_a_process_environment_can_hold(value):
    # A NUL reached the ConfigMap and the container runtime refused to start the pods at rollout; NaN was
    # rendered as the string 'nan'.
    with pytest.raises(ConfigError, match=r"DEPLOY\['extra_env'\].* 'GREETING' holds a NUL or is not finite"):
        load_config({"extra_env": {"GREETING": value}}, environ={})
    with pytest.raises(ConfigError, match="'GREETING' holds a NUL or is not finite"):
        load_config({}, environ={"DEPLOY_EXTRA_ENV": '{"GREETING": NaN}'})


@pytest.mark.parametrize(
    "schedule", ["0 3 * * *", "*/15 2-4 1,15 jan-mar mon-fri", "@daily", "0 0 * * 7", "5/10 * ? * *"]
)
def test_valid_cron_schedules_pass(schedule):
    assert load_config({"postgres_backup_schedule": schedule}, environ={}).postgres_backup_schedule == schedule


def test_a_trailing_newline_from_the_environment_is_refused_without_a_traceback(tmp_path):
    """The real command line: one 'CommandError:' line on stderr, exit 1, nothing written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_") and k != "KUBECONFIG"}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", HOME=str(tmp_path), DEPLOY_IMAGE_TAG="1.2.3\n")
    done = run_python(
        [str(ROOT / "manage.py"), "k8s_deploy", "--output", str(tmp_path / "out")], env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == [
        "CommandError: Invalid deploy configuration: DEPLOY['image_tag'] (environment variable DEPLOY_IMAGE_TAG) "
        "must be free of newlines and other control characters; got '1.2.3\\n'."
    ]
    assert not (tmp_path / "out").exists()


def _redis_conf(password):
    secrets = DeploySecrets(
        secret_key="k", postgres_password="p", redis_password=password, postgres_superuser_password="su"
    )
    manifests = render_manifests(load_config({}, environ={}), secrets, redact=False)
    (secret,) = [m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == "django-app-redis"]
    return base64.b64decode(secret["data"]["redis.conf"]).decode()


HOSTILE_PASSWORDS = [
    "pw\nprotected-mode no",
    'pw" \nrename-command CONFIG ""',
    "pw # comment\r\nport 1",
    "sp ace\\back\ttab'quote\"dq\x00nul\u00e9\n",
]


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_a_redis_password_never_changes_redis_conf(tmp_path, password):
    conf = _redis_conf(password)
    plain = _redis_conf("plain")
    assert len(conf.splitlines()) == len(plain.splitlines()), "the password added no line"
    assert conf.splitlines()[1:] == plain.splitlines()[1:]
    # The real Redis reads the file: the password is exactly the one set, and no directive was added.
    (tmp_path / "redis.conf").write_text(conf)
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            str(tmp_path / "redis.conf"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = own_redis_client(port, password=password, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert client.config_get("requirepass") == {"requirepass": password}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        with pytest.raises(redis.AuthenticationError):
            own_redis_client(port, password=password.split("\n")[0] + "x").ping()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_config_errors_name_the_environment_variable_too():
    with pytest.raises(ConfigError, match=r"DEPLOY\['app_name'\] \(environment variable DEPLOY_APP_NAME\)"):
        load_config({}, environ={"DEPLOY_APP_NAME": "django-app\n"})


@pytest.mark.parametrize(
    ("deploy", "environ", "named"),
    [
        ({"extra_env": {"STRIPE_API_KEY": "sk_live_hunter2"}}, {}, "STRIPE_API_KEY"),
        ({}, {"DEPLOY_EXTRA_ENV": '{"STRIPE_API_KEY": "sk_live_hunter2"}'}, "STRIPE_API_KEY"),
        ({}, {"DEPLOY_EXTRA_ENV": '{"STRIPE_API_KEY": "sk_live_hunter2"'}, None),
        ({"extra_env": {"GREETING": ["sk_live_hunter2"]}}, {}, "GREETING"),
        ({"extra_env": "sk_live_hunter2"}, {}, None),
    ],
    ids=["secret-name", "secret-name-env", "broken-json-env", "not-plain", "not-a-mapping"],
)
def test_a_refused_extra_env_names_the_variables_but_never_shows_their_values(deploy, environ, named):
    # A secret pasted into extra_env is refused: the message said so, then quoted it ("got {'STRIPE_API_KEY':
    # 'sk_live_hunter2'}") into the terminal, the CI log and k8s_deploy --json.
    with pytest.raises(ConfigError) as excinfo:
        load_config(deploy, environ=environ)
    message = str(excinfo.value)
    assert "DEPLOY['extra_env']" in message
    assert "hunter2" not in message
    if named:
        assert repr(named) in message


def wide(text):
    """``text`` with its digits full-width ('12' -> U+FF11 U+FF12): digits to Python's \\d, not to Kubernetes."""
    return "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in text)


@pytest.mark.parametrize(
    ("deploy", "environ", "setting"),
    [
        ({}, {"DEPLOY_REPLICAS_MAX": wide("12")}, "replicas_max"),
        ({"cpu_limit": wide("2")}, {}, "cpu_limit"),
        ({"memory_request": wide("384Mi")}, {}, "memory_request"),
        ({"alert_group_wait": wide("30s")}, {}, "alert_group_wait"),
        ({"prometheus_retention": wide("15d")}, {}, "prometheus_retention"),
        ({"redis_max_memory": wide("256mb")}, {}, "redis_max_memory"),
        ({"rds_engine_version": wide("16.4")}, {}, "rds_engine_version"),
        ({"alert_sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:alértes"}, {}, "alert_sns_topic_arn"),
        ({"staff_access": {"arn:aws:iam::123456789012:role/suppört": "read-only"}}, {}, "staff_access"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_digits_and_names_are_ascii_as_kubernetes_and_aws_read_them(deploy, environ, setting):
    # Python's \d and \w take any script's digits and letters: a full-width '2' passed as a CPU quantity, rendered, and
    # only the API server refused it at apply.
    with pytest.raises(ConfigError, match=rf"DEPLOY\['{setting}'\]"):
        load_config(deploy, environ=environ)


@pytest.mark.parametrize(
    ("deploy", "environ", "setting"),
    [
        ({}, {"DEPLOY_TERMINATION_GRACE_SECONDS": "99999999999999999999"}, "termination_grace_seconds"),
        ({"replicas_max": 2**31}, {}, "replicas_max"),
        ({"environments": {"stg": {"quota_pods": 10**30}}}, {}, "quota_pods"),
        ({}, {"DEPLOY_POSTGRES_PORT": "-99999999999999999999"}, "postgres_port"),
    ],
    ids=["env", "settings", "environment", "negative"],
)
def test_a_number_beyond_32_bits_is_refused_at_load(deploy, environ, setting):
    # The manifests' numbers are 32-bit: 10**20 seconds of grace rendered and validated, and only the
    # API server refused it at apply.
    with pytest.raises(ConfigError, match=rf"\['{setting}'\].* must be a whole number from -2147483648 to 2147483647"):
        load_config(deploy, environ=environ, environment="stg" if "environments" in deploy else None)
    assert load_config({"replicas_max": 2**31 - 1}, environ={}).replicas_max == 2**31 - 1
