"""Alerting end to end: the rendered rules in Debian's real Prometheus, the rendered alertmanager.yml in its real
Alertmanager, delivering to a webhook server of the test on 127.0.0.1."""

import base64
import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from deploy.conf import DeploySecrets, load_config
from deploy.k8s import observability
from deploy.k8s.render import render_manifests
from tests.conftest import free_port, stop_process
from tests.k8s_helpers import by_kind

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")
needs_alertmanager = pytest.mark.skipif(
    not (PROMETHEUS and ALERTMANAGER and AMTOOL),
    reason="Debian's prometheus and prometheus-alertmanager packages are not installed (.ci/run installs them)",
)
SMTP_PASSWORD = "smtp-pa55word-not-for-logs"
# Every knob the test shortens is a setting of the render: nothing is edited in the rendered files but addresses.
FAST = {
    "prometheus_scrape_interval": "1s",
    "prometheus_evaluation_interval": "1s",
    "app_down_after": "3s",
    "alert_group_wait": "1s",
    "alert_group_interval": "2s",
    "alert_repeat_interval": "1h",
    "alert_webhook": "webhook",
}


def secrets(webhook_url="https://hooks.example.com/abc", smtp_password=SMTP_PASSWORD, watchdog_url=""):
    return DeploySecrets(
        "key", "pg-pass", "redis-pass", "su-pass", alert_smtp_password=smtp_password, alert_webhook_url=webhook_url,
        alert_watchdog_url=watchdog_url,
    )  # fmt: skip


def rendered(settings, webhook_url="https://hooks.example.com/abc", redact=False, watchdog_url=""):
    manifests = render_manifests(
        load_config(settings, environ={}), secrets(webhook_url, watchdog_url=watchdog_url), redact=redact
    )
    (secret,) = [m for m in by_kind(manifests, "Secret") if m["metadata"]["name"] == "alertmanager-config"]
    (configmap,) = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"] == "prometheus-config"]
    alertmanager_yml = base64.b64decode(secret["data"]["alertmanager.yml"]).decode()
    return manifests, alertmanager_yml, configmap["data"]


def amtool_check(tmp_path, text):
    (tmp_path / "alertmanager.yml").write_text(text)
    return subprocess.run(
        [AMTOOL, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True, timeout=30
    )


class Webhook:
    """A small HTTP server that records what Alertmanager posts to it."""

    def __init__(self):
        self.received = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in list(self.received) if predicate(m)]
            if found:
                return found[0]
            time.sleep(0.2)
        return None


def start(args, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    process.log = log
    return process


def stop(process):
    stop_process(process, timeout=20)
    process.log.close()


def wait_scraped_up(url, timeout=30):
    """Until Prometheus at ``url`` has scraped its target successfully once (``up`` is 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query=up", timeout=2) as response:
                if any(r["value"][1] == "1" for r in json.load(response)["data"]["result"]):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"Prometheus at {url} did not scrape its target up in {timeout} s")


def wait_ready(url, process, tmp_path, name, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{(tmp_path / f'{name}.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{name} not ready in {timeout} s:\n{(tmp_path / f'{name}.log').read_text()}")


@contextlib.contextmanager
def alertmanager(tmp_path, text):
    """A real Alertmanager on the configuration ``text``, ready: its URL. Stopped on leaving, or if never ready."""
    port = free_port()
    (tmp_path / "alertmanager.yml").write_text(text)
    process = start(
        [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        tmp_path, "alertmanager",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, tmp_path, "alertmanager")
        yield url
    finally:
        stop(process)


def post_alerts(url, alerts):
    now = datetime.now(UTC)
    body = [
        {"labels": labels, "annotations": {"summary": "test"}, "startsAt": now.isoformat(),
         "endsAt": (now + timedelta(minutes=5)).isoformat()}
        for labels in alerts
    ]  # fmt: skip
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def firing(name, status="firing"):
    return lambda m: m["status"] == status and any(a["labels"]["alertname"] == name for a in m["alerts"])


# --- the rendered configuration -------------------------------------------------------


@needs_alertmanager
def test_amtool_accepts_every_receiver(tmp_path):
    settings = {
        "alert_email_to": ["ops@example.com", "oncall@example.com"],
        "alert_email_from": "alerts@example.com",
        "alert_smtp_smarthost": "smtp.example.com:587",
        "alert_smtp_username": "alerts",
        "alert_webhook": "slack",
        "alert_sns_topic_arn": "arn:aws:sns:eu-west-3:123456789012:pager",
        "aws_region": "eu-west-3",
    }
    _, text, _ = rendered(settings)
    result = amtool_check(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(text)
    critical, warning = (next(r for r in config["receivers"] if r["name"] == n) for n in ("critical", "warning"))
    assert {k for k in critical if k.endswith("_configs")} == {"email_configs", "slack_configs", "sns_configs"}
    assert {k for k in warning if k.endswith("_configs")} == {"email_configs", "slack_configs"}
    assert critical["email_configs"][0]["auth_password"] == SMTP_PASSWORD
    assert critical["sns_configs"][0]["sigv4"] == {"region": "eu-west-3"}


@needs_alertmanager
def test_amtool_accepts_the_default_configuration_without_receivers(tmp_path):
    _, text, _ = rendered({})
    result = amtool_check(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["name"] for r in yaml.safe_load(text)["receivers"]] == ["default", "watchdog", "critical", "warning"]


def test_receiver_secrets_stay_out_of_configmaps_and_redacted_renders():
    settings = {**FAST, "alert_email_to": ["ops@example.com"], "alert_email_from": "a@example.com",
                "alert_smtp_smarthost": "smtp.example.com:587", "alert_smtp_username": "alerts"}  # fmt: skip
    settings["alert_watchdog"] = True
    webhook = "https://hooks.example.com/T000/B000/very-secret-path"
    watchdog = "https://hc-ping.example.com/watchdog-secret-uuid"
    manifests, text, _ = rendered(settings, webhook, watchdog_url=watchdog)
    assert webhook in text and SMTP_PASSWORD in text and watchdog in text
    for configmap in by_kind(manifests, "ConfigMap"):
        dumped = json.dumps(configmap)
        assert webhook not in dumped and SMTP_PASSWORD not in dumped and watchdog not in dumped
    redacted, redacted_text, _ = rendered(settings, webhook, redact=True, watchdog_url=watchdog)
    dumped = json.dumps(redacted) + redacted_text
    assert webhook not in dumped and SMTP_PASSWORD not in dumped
    assert "very-secret-path" not in dumped and "watchdog-secret-uuid" not in dumped


def test_email_without_its_smtp_server_is_refused():
    from deploy.conf import ConfigError

    with pytest.raises(ConfigError, match="alert_smtp_smarthost"):
        load_config({"alert_email_to": ["ops@example.com"]}, environ={})


@pytest.mark.parametrize(
    "environ, bad",
    [
        ({"DEPLOY_ALERT_EMAIL_TO": '["ops@example.com"]'}, "comma-separated"),
        ({"DEPLOY_ALERT_EMAIL_TO": "ops@example.com;oncall@example.com"}, "'ops@example.com;oncall@example.com'"),
        ({"DEPLOY_ALERT_EMAIL_TO": "ops@example.com,Ops <ops@example.com>"}, "'Ops <ops@example.com>' is not one"),
        ({"DEPLOY_ALERT_EMAIL_TO": "ops@localhost"}, "'ops@localhost' is not one"),
        ({"DEPLOY_ALERT_EMAIL_TO": "ops@example.com", "DEPLOY_ALERT_EMAIL_FROM": "alerts"}, "'alerts' is not one"),
    ],
)
def test_each_alert_address_is_checked_and_names_the_setting_and_the_bad_value(environ, bad):
    from deploy.conf import ConfigError

    settings = {"alert_email_from": "alerts@example.com", "alert_smtp_smarthost": "smtp.example.com:587"}
    with pytest.raises(ConfigError) as excinfo:
        load_config(settings, environ=environ)
    assert bad in str(excinfo.value) and "DEPLOY_ALERT_EMAIL_" in str(excinfo.value)
    good = load_config(settings, environ={"DEPLOY_ALERT_EMAIL_TO": " ops@example.com, on.call+x@mail.example.org "})
    assert good.alert_email_to == ["ops@example.com", "on.call+x@mail.example.org"]


def test_sns_takes_its_region_from_the_topic_and_refuses_a_conflicting_aws_region():
    from deploy.conf import ConfigError

    topic = {"alert_sns_topic_arn": "arn:aws:sns:ap-southeast-2:123456789012:pager", "alert_critical_via": ["sns"]}
    config = load_config(topic, environ={})  # no aws_region needed
    assert config.alert_sns_region == "ap-southeast-2"
    alertmanager = observability.alertmanager_config(config, secrets(), redact=True)
    (critical,) = [r for r in alertmanager["receivers"] if r["name"] == "critical"]
    assert critical["sns_configs"][0]["sigv4"] == {"region": "ap-southeast-2"}
    assert load_config({**topic, "aws_region": "ap-southeast-2"}, environ={}).alert_sns_region == "ap-southeast-2"
    with pytest.raises(ConfigError, match=r"topic of region ap-southeast-2, but DEPLOY\['aws_region'\].*eu-west-3"):
        load_config({**topic, "aws_region": "eu-west-3"}, environ={})


def test_every_alert_keeps_its_runbook_and_a_routed_severity():
    _, text, data = rendered({})
    routed = {r["matchers"][0] for r in yaml.safe_load(text)["route"]["routes"]}
    for rule in yaml.safe_load(data["alerts.yml"])["groups"][0]["rules"]:
        assert rule["annotations"]["runbook_url"].endswith("#" + observability.RUNBOOKS[rule["alert"]][0])
        assert f'severity="{rule["labels"]["severity"]}"' in routed or f'alertname="{rule["alert"]}"' in routed


@needs_alertmanager
@pytest.mark.parametrize(
    "settings, labels, receiver",
    [
        ({}, ["alertname=Watchdog", "severity=none", "app=django-app"], "watchdog"),
        ({"alert_watchdog": True}, ["alertname=Watchdog", "severity=none", "app=django-app"], "watchdog"),
        ({}, ["alertname=PostgresDown", "severity=critical", "app=django-app"], "critical"),
        ({}, ["alertname=DjangoHighLatencyP95", "severity=warning", "app=django-app"], "warning"),
        ({}, ["alertname=ProjectOwnAlert", "app=django-app"], "default"),
    ],
)
def test_amtool_routes_each_alert_to_its_receiver(tmp_path, settings, labels, receiver):
    _, text, _ = rendered({**FAST, **settings}, watchdog_url="https://hc-ping.example.com/x")
    (tmp_path / "alertmanager.yml").write_text(text)
    done = subprocess.run(
        [AMTOOL, "config", "routes", "test", f"--config.file={tmp_path / 'alertmanager.yml'}",
         f"--verify.receivers={receiver}", *labels],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_default_receiver_is_every_configured_one_and_a_missing_receiver_is_warned_about():
    nothing = load_config({}, environ={})
    (warning,) = observability.alert_warnings(nothing)
    assert "Alerts are not delivered" in warning
    assert all(name in warning for name in ("alert_email_to", "alert_webhook", "alert_sns_topic_arn"))
    assert observability.alertmanager_config(nothing, secrets(), redact=True)["receivers"][0] == {"name": "default"}
    configured = load_config({**FAST, "alert_warning_via": ["sns"]}, environ={})
    (warning,) = observability.alert_warnings(configured)
    assert warning.startswith("Warning alerts are not delivered: DEPLOY['alert_warning_via'] (sns)")
    default = observability.alertmanager_config(configured, secrets(), redact=True)["receivers"][0]
    assert default["name"] == "default" and default["webhook_configs"]
    assert observability.alert_warnings(load_config(FAST, environ={})) == []
    assert observability.alert_warnings(load_config({"monitoring": False}, environ={})) == []


def test_k8s_deploy_warns_that_alerts_are_not_delivered_in_render_json(monkeypatch, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    out, err = StringIO(), StringIO()
    call_command("k8s_deploy", "--render", "--json", stdout=out, stderr=err)
    report = json.loads(out.getvalue())
    assert any(w.startswith("Alerts are not delivered") for w in report["warnings"])
    assert "Warning: Alerts are not delivered" in err.getvalue()


def test_a_watchdog_without_its_url_is_refused_at_deploy():
    from deploy.k8s.render import RenderError

    with pytest.raises(RenderError, match="DEPLOY_ALERT_WATCHDOG_URL"):
        render_manifests(load_config({**FAST, "alert_watchdog": True}, environ={}), secrets(), redact=False)
    with pytest.raises(RenderError, match="not an http"):
        render_manifests(
            load_config({**FAST, "alert_watchdog": True}, environ={}), secrets(watchdog_url="hc-ping"), redact=False
        )


def test_prometheus_sends_its_alerts_to_the_rendered_alertmanager_service():
    manifests, _, data = rendered({})
    (service,) = [m for m in by_kind(manifests, "Service") if m["metadata"]["name"].endswith("alertmanager")]
    targets = yaml.safe_load(data["prometheus.yml"])["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    meta = service["metadata"]
    assert targets == [f"{meta['name']}.{meta['namespace']}.svc:{service['spec']['ports'][0]['port']}"]


# --- real Alertmanager ----------------------------------------------------------------


@needs_alertmanager
@pytest.mark.slow  # Alertmanager's group waits
def test_warning_and_critical_take_their_own_routes_and_app_down_inhibits_symptoms(tmp_path):
    with Webhook() as hook:
        _, text, _ = rendered(FAST, hook.url)
        with alertmanager(tmp_path, text) as url:
            post_alerts(url, [
                {"alertname": "DjangoAppDown", "severity": "critical", "app": "shop"},
                {"alertname": "DjangoHighLatencyP95", "severity": "warning", "app": "shop"},
                {"alertname": "VolumeNearlyFull", "severity": "warning", "app": "shop"},
            ])  # fmt: skip
            critical = hook.wait_for(firing("DjangoAppDown"), 20)
            warning = hook.wait_for(firing("VolumeNearlyFull"), 20)
            time.sleep(3)  # one more group interval: an inhibited alert would have arrived by now
    assert critical and critical["receiver"] == "critical"
    assert warning and warning["receiver"] == "warning"
    delivered = {a["labels"]["alertname"] for m in hook.received for a in m["alerts"]}
    assert "DjangoHighLatencyP95" not in delivered, "a symptom of the app being down was not inhibited"


@needs_alertmanager
def test_postgres_and_redis_down_inhibit_their_consequences_and_the_watchdog_takes_its_own_route(tmp_path):
    with Webhook() as hook:
        settings = {**FAST, "alert_watchdog": True}
        _, text, _ = rendered(settings, hook.url, watchdog_url=hook.url.replace("/hook", "/watchdog"))
        with alertmanager(tmp_path, text) as url:
            post_alerts(url, [
                {"alertname": "PostgresDown", "severity": "critical", "app": "shop"},
                {"alertname": "DjangoHigh5xxRatio", "severity": "critical", "app": "shop"},
                {"alertname": "RedisDown", "severity": "critical", "app": "shop"},
                {"alertname": "DjangoCacheUnavailable", "severity": "warning", "app": "shop"},
                {"alertname": "DjangoHighLatencyP95", "severity": "warning", "app": "other"},  # another app's
                {"alertname": "Watchdog", "severity": "none", "app": "shop"},
            ])  # fmt: skip
            assert hook.wait_for(firing("PostgresDown"), 20) and hook.wait_for(firing("RedisDown"), 20)
            watchdog = hook.wait_for(firing("Watchdog"), 20)
            other = hook.wait_for(firing("DjangoHighLatencyP95"), 20)
            time.sleep(3)  # one more group interval: an inhibited alert would have arrived by now
    assert watchdog and watchdog["receiver"] == "watchdog" and other["receiver"] == "warning"
    delivered = {a["labels"]["alertname"] for m in hook.received for a in m["alerts"]}
    assert "DjangoHigh5xxRatio" not in delivered, "5xx while PostgreSQL is down was not inhibited"
    assert "DjangoCacheUnavailable" not in delivered, "the cache alert while Redis is down was not inhibited"
    paged = {a["labels"]["alertname"] for m in hook.received if m["receiver"] != "watchdog" for a in m["alerts"]}
    assert "Watchdog" not in paged


@needs_alertmanager
@pytest.mark.slow  # scrapes, rule evaluations and group waits of a real Prometheus and Alertmanager
@pytest.mark.django_db(transaction=True)
def test_app_down_is_delivered_when_gunicorn_stops_and_resolved_when_it_is_back(gunicorn_factory, tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    with Webhook() as hook:
        _, text, data = rendered(FAST, hook.url)
        with alertmanager(tmp_path, text) as am_url:
            prometheus_yml = yaml.safe_load(data["prometheus.yml"])
            (tmp_path / "alerts.yml").write_text(data["alerts.yml"])
            job = next(j for j in prometheus_yml["scrape_configs"] if j["job_name"] == observability.APP_JOB)
            # Debian's Prometheus has no Kubernetes discovery: the app's target and Alertmanager's address are static.
            job.pop("kubernetes_sd_configs")
            job.pop("relabel_configs")
            job["static_configs"] = [{"targets": [bind]}]
            prometheus_yml["scrape_configs"] = [job]
            prometheus_yml["rule_files"] = [str(tmp_path / "alerts.yml")]
            prometheus_yml["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [am_url[len("http://") :]]
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus_yml))
            port = free_port()
            prometheus = None
            try:
                # The app serves before Prometheus starts: a gunicorn slow to start on a loaded machine must not read
                # as the app being down (that would fire DjangoAppDown before the test looks).
                with gunicorn_factory(GUNICORN_BIND=bind):
                    prometheus = start(
                        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                        tmp_path, "prometheus",
                    )  # fmt: skip
                    wait_ready(f"http://127.0.0.1:{port}", prometheus, tmp_path, "prometheus")
                    wait_scraped_up(f"http://127.0.0.1:{port}")
                    time.sleep(4)  # scraped up, for longer than app_down_after: nothing may fire
                    assert not hook.wait_for(firing("DjangoAppDown"), 1)
                down = hook.wait_for(firing("DjangoAppDown"), 25)
                assert down, f"no DjangoAppDown delivered; received {hook.received}"
                with gunicorn_factory(GUNICORN_BIND=bind):
                    resolved = hook.wait_for(firing("DjangoAppDown", "resolved"), 25)
            finally:
                if prometheus is not None:
                    stop(prometheus)
    assert down["receiver"] == "critical"
    (alert,) = [a for a in down["alerts"] if a["labels"]["alertname"] == "DjangoAppDown"]
    assert alert["annotations"]["runbook_url"].endswith("#app-down")
    assert resolved, f"DjangoAppDown was not resolved; received {hook.received}"


# --- operator mode ----------------------------------------------------------------------

ALL_RECEIVERS = {
    "alert_email_to": ["ops@example.com"],
    "alert_email_from": "alerts@example.com",
    "alert_smtp_smarthost": "smtp.example.com:587",
    "alert_smtp_username": "alerts",
    "alert_webhook": "webhook",
    "alert_sns_topic_arn": "arn:aws:sns:eu-west-3:123456789012:pager",
    "aws_region": "eu-west-3",
}


def test_operator_mode_routes_like_the_standalone_alertmanager_with_secrets_by_reference():
    webhook = "https://hooks.example.com/only-in-the-secret"
    standalone = yaml.safe_load(rendered(ALL_RECEIVERS, webhook)[1])
    settings = {**ALL_RECEIVERS, "monitoring_mode": "operator"}
    manifests = render_manifests(load_config(settings, environ={}), secrets(webhook), redact=False)
    (resource,) = by_kind(manifests, "AlertmanagerConfig")
    spec = resource["spec"]
    assert webhook not in json.dumps(resource) and SMTP_PASSWORD not in json.dumps(resource)
    # The same routes but the Watchdog's: the operator's stacks have their own Watchdog and monitoring alerts.
    routes = [r["receiver"] for r in standalone["route"]["routes"] if r["receiver"] != "watchdog"]
    assert [r["receiver"] for r in spec["route"]["routes"]] == routes
    receivers = [r for r in standalone["receivers"] if r["name"] != "watchdog"]
    for ours, theirs in zip(spec["receivers"], receivers, strict=True):
        assert ours["name"] == theirs["name"]
        assert len([k for k in ours if k.endswith("Configs")]) == len([k for k in theirs if k.endswith("_configs")])
    (critical,) = [r for r in spec["receivers"] if r["name"] == "critical"]
    reference = critical["webhookConfigs"][0]["urlSecret"]
    (secret,) = [m for m in by_kind(manifests, "Secret") if m["metadata"]["name"] == reference["name"]]
    assert secret["metadata"]["namespace"] == resource["metadata"]["namespace"]
    assert base64.b64decode(secret["data"][reference["key"]]).decode() == webhook
    password = critical["emailConfigs"][0]["authPassword"]
    assert base64.b64decode(secret["data"][password["key"]]).decode() == SMTP_PASSWORD
    # The operator routes an AlertmanagerConfig only the alerts of its namespace: every rule carries it.
    (rule,) = by_kind(manifests, "PrometheusRule")
    for alert in rule["spec"]["groups"][0]["rules"]:
        assert alert["labels"]["namespace"] == resource["metadata"]["namespace"]


def test_a_configured_webhook_without_its_url_is_refused_at_deploy():
    from deploy.k8s.render import RenderError

    with pytest.raises(RenderError, match="DEPLOY_ALERT_WEBHOOK_URL"):
        render_manifests(load_config(FAST, environ={}), secrets(webhook_url=""), redact=False)


@pytest.mark.parametrize("url", ["not-a-url", "hooks.slack.com/services/x", "https://", "https://a b"])
def test_a_webhook_url_alertmanager_would_refuse_is_refused_without_showing_it(url):
    from deploy.k8s.render import RenderError

    with pytest.raises(RenderError, match="DEPLOY_ALERT_WEBHOOK_URL is not an http") as refused:
        render_manifests(load_config(FAST, environ={}), secrets(webhook_url=url), redact=False)
    assert url == "https://" or url not in str(refused.value)  # (the message's example starts with https://)


def test_a_settings_change_restarts_alertmanager_and_no_secret_is_hashed():
    def checksum(settings, webhook_url, redact=False):
        manifests, _, _ = rendered(settings, webhook_url, redact=redact)
        (deployment,) = [m for m in by_kind(manifests, "Deployment") if m["metadata"]["name"] == "alertmanager"]
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    first = checksum(FAST, "https://hooks.example.com/one")
    assert checksum(FAST, "https://hooks.example.com/two") == first  # a rotated secret: the runbook's restart
    assert checksum(FAST, "https://hooks.example.com/one", redact=True) == first  # --render shows what deploys
    assert checksum({**FAST, "alert_group_wait": "45s"}, "https://hooks.example.com/one") != first


def test_sns_signs_with_the_irsa_role_and_alertmanager_stays_restricted():
    from deploy.k8s.validate import validate_manifests

    settings = {**ALL_RECEIVERS, "alert_sns_role_arn": "arn:aws:iam::123456789012:role/alertmanager-sns"}
    config = load_config(settings, environ={})
    manifests = render_manifests(config)
    (account,) = [m for m in by_kind(manifests, "ServiceAccount") if m["metadata"]["name"] == "alertmanager"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/alertmanager-sns")
    assert validate_manifests(manifests, config) == []


def test_preflight_json_carries_the_warning_that_alerts_are_not_delivered(tmp_path, monkeypatch):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from tests.fake_apiserver import FakeApiServer

    with FakeApiServer() as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        out = StringIO()
        # The fake cluster lacks nodes and add-ons, so the preflight fails: its report is written all the same.
        with contextlib.suppress(CommandError):
            call_command("k8s_deploy", "--preflight", "--json", stdout=out, stderr=StringIO())
    report = json.loads(out.getvalue())
    assert "checks" in report
    assert any(w.startswith("Alerts are not delivered") for w in report["warnings"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "webhook_url, watchdog_url, ports",
    [
        ("https://hooks.example.com/abc", "", [443]),
        ("http://alert-sink.ops.svc.cluster.local:8080/hook", "", [8080]),
        ("https://hooks.example.com:8443/abc", "http://hc-ping.example.com/x", [80, 8443]),
    ],
)
def test_alertmanager_egress_opens_the_port_each_receiver_url_dials(webhook_url, watchdog_url, ports):
    """A webhook on another port than 443 (or plain http) was rendered with egress on 443 only: blocked."""
    from deploy.k8s.validate import validate_manifests

    settings = {**FAST, "alert_watchdog": bool(watchdog_url)}
    config = load_config(settings, environ={})
    for redact in (False, True):  # --render shows the policy that deploys, and the redacted URLs keep the port
        manifests, _, _ = rendered(settings, webhook_url, redact=redact, watchdog_url=watchdog_url)
        (policy,) = [m for m in by_kind(manifests, "NetworkPolicy") if m["metadata"]["name"] == "alertmanager"]
        assert [p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]] == ports
        assert validate_manifests(manifests, config) == []


@pytest.mark.parametrize("url", ["https://hooks.example.com:99999/abc", "https://hooks.example.com:0/abc"])
def test_a_webhook_url_with_a_port_nobody_can_dial_is_refused(url):
    from deploy.k8s.render import RenderError

    with pytest.raises(RenderError, match="DEPLOY_ALERT_WEBHOOK_URL is not an http"):
        render_manifests(load_config(FAST, environ={}), secrets(webhook_url=url), redact=False)


@pytest.mark.parametrize("smarthost", ["smtp.example.com:99999", "smtp.example.com:0", "smtp.example.com:65536"])
def test_an_smtp_port_out_of_range_is_refused_before_it_reaches_the_egress_policy(smarthost):
    from deploy.conf import ConfigError

    settings = {"alert_email_to": ["ops@example.com"], "alert_email_from": "alerts@example.com"}
    with pytest.raises(ConfigError, match=r"alert_smtp_smarthost.*port from 1 to 65535"):
        load_config({**settings, "alert_smtp_smarthost": smarthost}, environ={})
    assert load_config({**settings, "alert_smtp_smarthost": "smtp.example.com:65535"}, environ={})


def test_sns_without_a_role_is_warned_about_in_standalone_mode():
    """Alertmanager's pod has no AWS credentials: an SNS receiver without a role published nothing, silently."""
    topic = {"alert_sns_topic_arn": "arn:aws:sns:eu-west-3:123456789012:pager", "alert_warning_via": ["sns"]}
    (warning,) = observability.alert_warnings(load_config(topic, environ={}))
    assert warning.startswith("SNS alerts are not delivered") and "DEPLOY_ALERT_SNS_ROLE_ARN" in warning
    assert "monitoring/alertmanager" in warning
    role = {"alert_sns_role_arn": "arn:aws:iam::123456789012:role/alertmanager-sns"}
    assert observability.alert_warnings(load_config({**topic, **role}, environ={})) == []
    # The operator's Alertmanager has credentials of its own making.
    assert observability.alert_warnings(load_config({**topic, "monitoring_mode": "operator"}, environ={})) == []
