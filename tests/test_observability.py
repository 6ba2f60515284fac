"""Prometheus rules and configuration against Debian's real Prometheus; the Fluentd rules on real app lines."""

import copy
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from deploy.conf import load_config
from deploy.k8s import observability
from deploy.k8s.render import render_manifests
from tests.conftest import free_port, stop_process
from tests.k8s_helpers import by_kind

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    not (PROMTOOL and PROMETHEUS), reason="Debian's prometheus package is not installed (.ci/run installs it)"
)


def rendered_prometheus(config=None):
    config = config or load_config({}, environ={})
    manifests = render_manifests(config)
    (configmap,) = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"] == "prometheus-config"]
    return yaml.safe_load(configmap["data"]["prometheus.yml"]), yaml.safe_load(configmap["data"]["alerts.yml"])


def without_kubernetes_sd(prometheus_yml, folder):
    """Debian builds Prometheus without Kubernetes discovery: check the rest with file discovery instead.

    The service account's files, which exist in the pod, are made in ``folder``.
    """
    converted = copy.deepcopy(prometheus_yml)
    (folder / "token").write_text("token")
    (folder / "ca.crt").write_text("")
    for job in converted["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": ["targets/*.json"]}]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(folder / "token")
            job["tls_config"]["ca_file"] = str(folder / "ca.crt")
    return converted


@needs_prometheus
def test_promtool_checks_the_rendered_config_and_rules(tmp_path):
    prometheus_yml, alerts = rendered_prometheus()
    assert [j["job_name"] for j in prometheus_yml["scrape_configs"]] == [
        "django-app", "kube-state-metrics", "node-exporter", "prometheus", "alertmanager", "kubelet", "cadvisor",
    ]  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(without_kubernetes_sd(prometheus_yml, tmp_path)))
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(alerts))
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_operator_mode_has_the_same_rules_as_a_prometheusrule():
    config = load_config({"monitoring_mode": "operator"}, environ={})
    manifests = render_manifests(config)
    (rule,) = by_kind(manifests, "PrometheusRule")
    assert rule["spec"]["groups"] == observability.alert_rules(config)
    (monitor,) = by_kind(manifests, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert not [m for m in manifests if m["metadata"].get("namespace") == "monitoring"]


@needs_prometheus
def test_prometheus_notifications_failing_fires_when_no_alertmanager_is_discovered(tmp_path):
    _, alerts = rendered_prometheus()
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(alerts))
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m",
             "input_series": [{"series": "prometheus_notifications_alertmanagers_discovered", "values": "0x60"}],
             "alert_rule_test": [{"eval_time": "40m", "alertname": "PrometheusNotificationsFailing",
                                  "exp_alerts": [{"exp_labels": next(
                                      r["labels"] for r in alerts["groups"][0]["rules"]
                                      if r["alert"] == "PrometheusNotificationsFailing"),
                                      "exp_annotations": next(
                                      r["annotations"] for r in alerts["groups"][0]["rules"]
                                      if r["alert"] == "PrometheusNotificationsFailing")}]}]},
        ],
    }  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_monitoring_alerts_are_standalone_only():
    groups = observability.alert_rules(load_config({"monitoring_mode": "operator"}, environ={}))
    operator = {r["alert"] for g in groups for r in g["rules"]}
    assert not operator & set(observability.MONITORING_ALERTS)
    prometheus_yml, _ = rendered_prometheus()
    jobs = {j["job_name"]: j for j in prometheus_yml["scrape_configs"]}
    assert jobs["alertmanager"]["static_configs"][0]["targets"] == ["django-app-alertmanager.monitoring.svc:9093"]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:9090"]


def test_every_alert_links_to_its_runbook():
    _, alerts = rendered_prometheus()
    names = [r["alert"] for r in alerts["groups"][0]["rules"]]
    assert set(names) == set(observability.RUNBOOKS)
    for rule in alerts["groups"][0]["rules"]:
        assert rule["annotations"]["runbook_url"].endswith("#" + observability.RUNBOOKS[rule["alert"]][0])


# Each alert: series that fire it (with the labels expected), and series that must not.
NS = 'namespace="django-app"'
FIRING = {
    "DjangoAppDown": ('up{job="django-app", pod="web-1"}', "0x60", "1x60", {}),
    "DjangoHigh5xxRatio": (None, None, None, {}),
    "DjangoHighLatencyP95": (None, None, None, {}),
    "DjangoPodRestarts": (
        f'kube_pod_container_status_restarts_total{{{NS}, container="web", pod="web-1"}}',
        "0+1x60",
        "0x60",
        {"pod": "web-1"},
    ),
    "DjangoPodCrashLooping": (
        f'kube_pod_container_status_waiting_reason{{{NS}, reason="CrashLoopBackOff", pod="web-1"}}',
        "1x60",
        "0x60",
        {"pod": "web-1"},
    ),
    "DjangoAutoscalerAtMaximum": (
        None,
        None,
        None,
        {"namespace": "django-app", "horizontalpodautoscaler": "django-app"},
    ),
    "PostgresDown": (
        f'kube_statefulset_status_replicas_ready{{{NS}, statefulset="django-app-postgres"}}',
        "0x60",
        "1x60",
        {"namespace": "django-app", "statefulset": "django-app-postgres"},
    ),
    "RedisDown": (
        f'kube_deployment_status_replicas_available{{{NS}, deployment="django-app-redis"}}',
        "0x60",
        "1x60",
        {"namespace": "django-app", "deployment": "django-app-redis"},
    ),
    "DjangoCacheUnavailable": ('deploy_cache_up{job="django-app", pod="web-1"}', "0x60", "1x60", {}),
    "VolumeNearlyFull": (None, None, None, {"namespace": "django-app", "persistentvolumeclaim": "data"}),
    "AlertmanagerDown": (
        'up{job="alertmanager", instance="am:9093"}',
        "0x60",
        "1x60",
        {"instance": "am:9093", "job": "alertmanager"},
    ),
    "AlertmanagerNotificationsFailing": (
        'alertmanager_notifications_failed_total{job="alertmanager", integration="email"}',
        "0+1x60",
        "3x60",
        {"integration": "email"},
    ),
    "PrometheusNotificationsFailing": (None, None, None, {}),
    "PrometheusRuleFailures": (
        'prometheus_rule_evaluation_failures_total{job="prometheus", rule_group="g"}',
        "0+2x60",
        "5x60",
        {},
    ),
    "Watchdog": (None, None, None, {}),
}


def _series(alert, firing):
    """input_series for one alert, firing or quiet, over 60 minutes at 1m."""
    responses = "django_http_responses_total_by_status_total"
    latency = "django_http_requests_latency_seconds_by_view_method_bucket"
    hpa = f'horizontalpodautoscaler="django-app", {NS}'
    volume = f'{NS}, persistentvolumeclaim="data"'
    special = {
        "DjangoHigh5xxRatio": [
            (f'{responses}{{status="500"}}', "0+10x60" if firing else "0+0x60"),
            (f'{responses}{{status="200"}}', "0+90x60"),
        ],
        "DjangoHighLatencyP95": [
            (f'{latency}{{le="0.5"}}', "0+10x60" if firing else "0+100x60"),
            (f'{latency}{{le="2.5"}}', "0+100x60"),
            (f'{latency}{{le="+Inf"}}', "0+100x60"),
        ],
        "DjangoAutoscalerAtMaximum": [
            (f"kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}", "6x60" if firing else "3x60"),
            (f"kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}}", "6x60"),
        ],
        "VolumeNearlyFull": [
            (f"kubelet_volume_stats_available_bytes{{{volume}}}", "5x60" if firing else "50x60"),
            (f"kubelet_volume_stats_capacity_bytes{{{volume}}}", "100x60"),
        ],
        # Errors sending to Alertmanager, or none discovered: either fires it.
        "PrometheusNotificationsFailing": [
            ('prometheus_notifications_errors_total{alertmanager="am"}', "0+1x60" if firing else "4x60"),
            ("prometheus_notifications_alertmanagers_discovered", "1x60"),
        ],
        "Watchdog": [("unrelated", "1x60")],  # it needs no series
    }
    if alert in special:
        return [{"series": s, "values": v} for s, v in special[alert]]
    series, on, off, _ = FIRING[alert]
    return [{"series": series, "values": on if firing else off}]


@needs_prometheus
@pytest.mark.parametrize("alert", sorted(FIRING))
def test_each_alert_fires_on_its_series_and_stays_silent_otherwise(tmp_path, alert):
    _, alerts = rendered_prometheus()
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(alerts))
    rule = next(r for r in alerts["groups"][0]["rules"] if r["alert"] == alert)
    labels = {**rule["labels"], **FIRING[alert][3]}
    expected = [{"exp_labels": labels, "exp_annotations": rule["annotations"]}]
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": _series(alert, True),
             "alert_rule_test": [{"eval_time": "40m", "alertname": alert, "exp_alerts": expected}]},
            {"interval": "1m", "input_series": _series(alert, False),
             # The Watchdog is never silent: that is its point.
             "alert_rule_test": [{"eval_time": "40m", "alertname": alert,
                                  "exp_alerts": expected if alert == "Watchdog" else []}]},
        ],
    }  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_prometheus
def test_postgres_down_in_the_cloudnative_pg_mode_watches_the_instances_pods(tmp_path):
    from tests.k8s_helpers import mode_config

    _, alerts = rendered_prometheus(mode_config("cloudnative-pg"))
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(alerts))
    rule = next(r for r in alerts["groups"][0]["rules"] if r["alert"] == "PostgresDown")
    assert "statefulset" not in rule["expr"]
    expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]

    def ready(pod, values):
        return {"series": f'kube_pod_status_ready{{{NS}, condition="true", pod="{pod}"}}', "values": values}

    def case(series, alerts):
        test = {"eval_time": "40m", "alertname": "PostgresDown", "exp_alerts": alerts}
        return {"interval": "1m", "input_series": series, "alert_rule_test": [test]}

    cluster = "django-app-postgres"
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            # Every instance not ready: fires. A join Job's pod being ready is not an instance.
            case(
                [
                    ready(f"{cluster}-1", "0x60"),
                    ready(f"{cluster}-2", "0x60"),
                    ready(f"{cluster}-3", "0x60"),
                    ready(f"{cluster}-4-join-abcde", "1x60"),
                ],
                expected,
            ),
            # One instance ready (the operator promotes it): silent.
            case([ready(f"{cluster}-1", "0x60"), ready(f"{cluster}-2", "1x60")], []),
            # No instance pod at all (the series of another app's cluster only): fires.
            case([ready("other-postgres-1", "1x60")], expected),
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _query(url, expr):
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5) as r:
        return json.load(r)["data"]["result"]


@needs_prometheus
@pytest.mark.slow  # waits for a real Prometheus's scrapes
@pytest.mark.django_db(transaction=True)
def test_a_real_prometheus_scrapes_the_app_under_gunicorn(gunicorn_factory, tmp_path):
    prometheus_yml, _ = rendered_prometheus()
    requests = 25
    with gunicorn_factory(workers=3) as app:
        target = app.url.removeprefix("http://")
        job = next(j for j in prometheus_yml["scrape_configs"] if j["job_name"] == "django-app")
        job.pop("kubernetes_sd_configs")
        job.pop("relabel_configs")
        job["static_configs"] = [{"targets": [target]}]
        job["scrape_interval"] = "1s"
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(requests):
                assert app.get("/", {"Connection": "close"})[0] == 200
            counter = 'sum(django_http_requests_total_by_view_transport_method_total{view="catalog:home"})'
            deadline = time.monotonic() + 40
            up = value = None
            while time.monotonic() < deadline:
                try:
                    up = _query(url, 'up{job="django-app"}')
                    value = _query(url, counter)
                except OSError:
                    up = value = None
                if up and value and float(value[0]["value"][1]) == requests:
                    break
                time.sleep(0.5)
            assert up and up[0]["value"][1] == "1"
            assert value and float(value[0]["value"][1]) == requests
        finally:
            stop_process(process, timeout=20)


# --- logs -----------------------------------------------------------------------


def _cri(lines, stream="stdout", limit=16384):
    """Wrap app output the way containerd writes it: partial (P) records past the size limit."""
    out = []
    for i, line in enumerate(lines):
        stamp = f"2026-11-26T10:00:{i:02d}.123456789Z"
        chunks = [line[j : j + limit] for j in range(0, len(line), limit)] or [""]
        for k, chunk in enumerate(chunks):
            out.append(f"{stamp} {stream} {'F' if k == len(chunks) - 1 else 'P'} {chunk}\n")
    return out


@pytest.mark.django_db(transaction=True)
def test_log_rules_turn_real_app_lines_into_typed_records(gunicorn_factory):
    with gunicorn_factory(CATALOG_ENABLE_BOOM="true") as app:
        assert app.get("/boom/")[0] == 500
        assert app.get("/")[0] == 200
    lines = app.log_lines()
    # A long traceback, split by the runtime into partial lines, must stay one record.
    records = observability.parse_container_log(_cri(lines, limit=200))
    assert len(records) == len(lines)
    errors = [r for r in records if "Traceback" in r.get("exc_info", "")]
    assert len(errors) == 1
    assert errors[0]["level"] == "ERROR" and "RuntimeError: boom" in errors[0]["exc_info"]
    access = [r for r in records if r.get("logger") == "gunicorn.access"]
    assert {r["http"]["status"] for r in access} >= {200, 500}
    assert all(isinstance(r["http"]["status"], int) and isinstance(r["http"]["duration_ms"], float) for r in access)
    assert all(r["stream"] == "stdout" for r in records)


def test_log_rules_keep_a_line_that_is_not_json():
    records = observability.parse_container_log(_cri(["plain text from a shell script"], stream="stderr"))
    assert records == [{"time": "2026-11-26T10:00:00.123456789Z", "stream": "stderr",
                        "log": "plain text from a shell script"}]  # fmt: skip


def test_fluentd_config_uses_the_same_rules():
    conf = observability.fluentd_config(load_config({}, environ={}))
    assert f"expression /{observability.CRI_REGEX}/" in conf
    assert "@type concat" in conf and "partial_value P" in conf
    assert "@type json" in conf and "reserve_data true" in conf
    assert "@type file" in conf and "retry_forever true" in conf
    assert "@type kubernetes_metadata" in conf


def test_elasticsearch_three_nodes_talk_on_9300():
    manifests = render_manifests(load_config({"elasticsearch_replicas": 3}, environ={}))
    (es,) = by_kind(manifests, "StatefulSet", "django-app-elasticsearch")
    env = {e["name"]: e.get("value") for e in es["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["cluster.initial_master_nodes"] == ",".join(f"django-app-elasticsearch-{i}" for i in range(3))
    (policy,) = by_kind(manifests, "NetworkPolicy", "django-app-elasticsearch")
    assert any(p["port"] == 9300 for rule in policy["spec"]["ingress"] for p in rule["ports"])
    assert not any(
        c.get("securityContext", {}).get("privileged") for c in es["spec"]["template"]["spec"].get("initContainers", [])
    )
