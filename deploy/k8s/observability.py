"""Prometheus and Fluentd configuration, built in one place.

The alert rules serve both monitoring modes (a ConfigMap for the standalone
Prometheus, a PrometheusRule for the Prometheus Operator); each links to its
runbook section in ``docs/runbooks.md``. The log-parsing rules are written
once here: the Fluentd configuration is generated from them, and the tests
run the same rules over real log lines of the app (no Fluentd runs here).
"""

import json
import re
from urllib.parse import urlsplit

from deploy.k8s import names

REDACTED = "<redacted>"
# On the Secret alertmanager-config: the TCP ports its receivers dial, which its URLs (secret) alone would say.
NOTIFICATION_PORTS_ANNOTATION = "django-k8s-deploy/notification-ports"

APP_JOB = "django-app"

# --- alert rules -------------------------------------------------------------

# name -> (runbook anchor, severity, summary)
RUNBOOKS = {
    "DjangoAppDown": ("app-down", "critical", "No pod of the app is answering /metrics"),
    "DjangoHigh5xxRatio": ("high-5xx-ratio", "critical", "More than 5% of responses are server errors"),
    "DjangoHighLatencyP95": ("high-latency", "warning", "95th percentile latency above 1 second"),
    "DjangoPodRestarts": ("pod-restarts", "warning", "App containers restarted more than 3 times in an hour"),
    "DjangoPodCrashLooping": ("crash-looping", "critical", "An app container is in CrashLoopBackOff"),
    "DjangoAutoscalerAtMaximum": ("autoscaler-at-maximum", "warning", "The autoscaler has been at its maximum"),
    "PostgresDown": ("postgres-down", "critical", "The in-cluster PostgreSQL has no ready pod"),
    "RedisDown": ("redis-down", "critical", "The in-cluster Redis has no available pod"),
    "DjangoCacheUnavailable": (
        "cache-unavailable",
        "warning",
        "App pods cannot reach the cache: the site runs degraded (pages computed, sessions from the database)",
    ),
    "VolumeNearlyFull": ("volume-nearly-full", "warning", "A persistent volume has less than 10% free"),
    # The monitoring itself (standalone mode; the Prometheus Operator's stacks ship their own).
    "AlertmanagerDown": ("alertmanager-down", "critical", "Prometheus cannot scrape Alertmanager"),
    "AlertmanagerNotificationsFailing": (
        "alertmanager-notifications-failing",
        "critical",
        "Alertmanager fails to deliver notifications to a receiver",
    ),
    "PrometheusNotificationsFailing": (
        "prometheus-notifications-failing",
        "critical",
        "Prometheus cannot send alerts to Alertmanager",
    ),
    "PrometheusRuleFailures": ("prometheus-rule-failures", "warning", "Prometheus fails to evaluate alert rules"),
    "Watchdog": ("watchdog", "none", "Always firing: proves that alerts flow from Prometheus to the receivers"),
}
# Alerts about the monitoring itself: only the standalone Prometheus and Alertmanager are scraped for them.
MONITORING_ALERTS = ("AlertmanagerDown", "AlertmanagerNotificationsFailing", "PrometheusNotificationsFailing",
                     "PrometheusRuleFailures", "Watchdog")  # fmt: skip


def alert_rules(config):
    """Prometheus rule groups (the ``groups`` of a rule file)."""
    ns = config.namespace
    app = names.resource_name(config.app_name)
    pg = names.resource_name(config.app_name, "postgres")
    redis = names.resource_name(config.app_name, "redis")
    responses = "django_http_responses_total_by_status_total"
    exprs = {
        "DjangoAppDown": (
            f'sum(up{{job="{APP_JOB}"}}) == 0 or absent(up{{job="{APP_JOB}"}})',
            config.app_down_after,
        ),
        "DjangoHigh5xxRatio": (
            f'sum(rate({responses}{{status=~"5.."}}[5m])) / sum(rate({responses}[5m])) > 0.05',
            "10m",
        ),
        "DjangoHighLatencyP95": (
            "histogram_quantile(0.95, sum by (le) "
            "(rate(django_http_requests_latency_seconds_by_view_method_bucket[5m]))) > 1",
            "10m",
        ),
        "DjangoPodRestarts": (
            f'sum by (pod) (increase(kube_pod_container_status_restarts_total{{namespace="{ns}",'
            f'container="web"}}[1h])) > 3',
            "0m",
        ),
        "DjangoPodCrashLooping": (
            f'max by (pod) (kube_pod_container_status_waiting_reason{{namespace="{ns}",'
            f'reason="CrashLoopBackOff"}}) >= 1',
            "5m",
        ),
        "DjangoAutoscalerAtMaximum": (
            f'kube_horizontalpodautoscaler_status_current_replicas{{namespace="{ns}",horizontalpodautoscaler="{app}"}}'
            f' >= kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{ns}",horizontalpodautoscaler="{app}"}}',
            "15m",
        ),
        "PostgresDown": (
            f'kube_statefulset_status_replicas_ready{{namespace="{ns}",statefulset="{pg}"}} < 1',
            "5m",
        ),
        "RedisDown": (
            f'kube_deployment_status_replicas_available{{namespace="{ns}",deployment="{redis}"}} < 1',
            "5m",
        ),
        # Set by every readiness probe (deploy/health/views.py): holds for in-cluster and external caches alike.
        "DjangoCacheUnavailable": (f'min(deploy_cache_up{{job="{APP_JOB}"}}) == 0', "5m"),
        "VolumeNearlyFull": (
            f'kubelet_volume_stats_available_bytes{{namespace="{ns}"}} '
            f'/ kubelet_volume_stats_capacity_bytes{{namespace="{ns}"}} < 0.10',
            "10m",
        ),
    }
    if config.monitoring_mode == "standalone":
        exprs.update(
            {
                "AlertmanagerDown": ('up{job="alertmanager"} == 0 or absent(up{job="alertmanager"})', "5m"),
                "AlertmanagerNotificationsFailing": (
                    "sum by (integration) (rate(alertmanager_notifications_failed_total[5m])) > 0",
                    "10m",
                ),
                "PrometheusNotificationsFailing": (
                    "sum(rate(prometheus_notifications_errors_total[5m])) > 0 "
                    "or max(prometheus_notifications_alertmanagers_discovered) < 1",
                    "10m",
                ),
                "PrometheusRuleFailures": ("sum(increase(prometheus_rule_evaluation_failures_total[5m])) > 0", "5m"),
                "Watchdog": ("vector(1)", "0m"),
            }
        )
    if config.postgres_operator:
        # CloudNativePG's instance pods (APP-postgres-N; its Jobs' pods have longer names): none ready is the
        # StatefulSet's "no ready replica". One ready instance is enough: the operator promotes it.
        ready = (f'kube_pod_status_ready{{namespace="{ns}",condition="true",'
                 f'pod=~"{_regex_literal(names.cnpg_cluster_name(config.app_name))}-[0-9]+"}}')  # fmt: skip
        exprs["PostgresDown"] = (f"(sum({ready}) or vector(0)) < 1", "5m")
    elif not config.postgres_in_cluster:
        exprs.pop("PostgresDown")
    if not config.redis_in_cluster:
        exprs.pop("RedisDown")
    rules = []
    for name, (expr, duration) in exprs.items():
        anchor, severity, summary = RUNBOOKS[name]
        rule = {
            "alert": name,
            "expr": expr,
            "labels": {"severity": severity, "app": config.app_name, "namespace": ns},
            "annotations": {"summary": summary, "runbook_url": f"{config.runbook_url.split('#', 1)[0]}#{anchor}"},
        }
        if duration != "0m":
            rule["for"] = duration
        rules.append(rule)
    return [{"name": f"{config.app_name}.rules", "rules": rules}]


# --- Alertmanager ----------------------------------------------------------

# Alerts that are symptoms of the app being down: held back while DjangoAppDown fires.
SYMPTOMS_OF_APP_DOWN = ("DjangoHigh5xxRatio", "DjangoHighLatencyP95", "DjangoCacheUnavailable",
                        "DjangoAutoscalerAtMaximum")  # fmt: skip
# cause -> the alerts it brings about, held back while it fires (same app): one page for one incident.
# Without its database, requests fail (5xx) or wait for it; without Redis, the cache is unavailable and
# every page is computed (slower, more pods).
INHIBITIONS = {
    "DjangoAppDown": SYMPTOMS_OF_APP_DOWN,
    "PostgresDown": ("DjangoHigh5xxRatio", "DjangoHighLatencyP95", "DjangoAutoscalerAtMaximum"),
    "RedisDown": ("DjangoCacheUnavailable", "DjangoHighLatencyP95", "DjangoAutoscalerAtMaximum"),
}
WATCHDOG_ROUTE = {"group_wait": "0s", "group_interval": "1m", "repeat_interval": "5m"}


def receiver_kinds(config):
    """The receivers the settings configure: a subset of email, webhook, sns."""
    kinds = []
    if config.alert_email_to:
        kinds.append("email")
    if config.alert_webhook:
        kinds.append("webhook")
    if config.alert_sns_topic_arn:
        kinds.append("sns")
    return kinds


def url_port(url):
    """The TCP port an http(s) URL dials (its own, or the scheme's); None when the URL names no valid one."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        return None
    if port is None:
        return {"https": 443, "http": 80}.get(parts.scheme)
    return port if 1 <= port <= 65535 else None


def redacted_url(url):
    """A placeholder for a secret URL that keeps its scheme and port: the egress policy is built from them."""
    parts = urlsplit(url)
    scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
    port = url_port(url)
    return f"{scheme}://redacted.invalid{'' if port in (None, 443 if scheme == 'https' else 80) else f':{port}'}/"


def notification_ports(alertmanager_yml):
    """TCP ports Alertmanager dials outside the cluster, read from its configuration (a dict): each webhook's
    and Slack URL's (443 unless the URL names another), the SMTP server's, and HTTPS for SNS.

    The render opens exactly these in Alertmanager's egress policy, and the wiring rule reads them back from
    the rendered Secret (redacted URLs keep their port), so a webhook on :8080 or plain http is not silently
    blocked.
    """
    ports = set()
    for receiver in alertmanager_yml.get("receivers", []):
        for email in receiver.get("email_configs", []):
            ports.add(int(email["smarthost"].rsplit(":", 1)[1]))
        for kind, key in (("webhook_configs", "url"), ("slack_configs", "api_url")):
            for integration in receiver.get(kind, []):
                ports.add(url_port(integration[key]))
        if receiver.get("sns_configs"):
            ports.add(443)
    ports.discard(None)
    return sorted(ports)


def _integrations(config, secrets, redact, kinds):
    webhook_url = redacted_url(secrets.alert_webhook_url) if redact else secrets.alert_webhook_url
    integrations = {}
    if "email" in kinds:
        email = {"to": ", ".join(config.alert_email_to), "from": config.alert_email_from,
                 "smarthost": config.alert_smtp_smarthost, "require_tls": True, "send_resolved": True}  # fmt: skip
        if config.alert_smtp_username:
            email["auth_username"] = config.alert_smtp_username
            email["auth_password"] = REDACTED if redact else secrets.alert_smtp_password
        integrations["email_configs"] = [email]
    if "webhook" in kinds and config.alert_webhook == "slack":
        integrations["slack_configs"] = [{
            "api_url": webhook_url, "channel": config.alert_slack_channel, "send_resolved": True,
            "title": '{{ .Status | toUpper }}: {{ .CommonLabels.alertname }}',
            "text": '{{ range .Alerts }}{{ .Annotations.summary }} {{ .Annotations.runbook_url }}\n{{ end }}',
        }]  # fmt: skip
    elif "webhook" in kinds:
        integrations["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    if "sns" in kinds:
        integrations["sns_configs"] = [{
            "topic_arn": config.alert_sns_topic_arn, "sigv4": {"region": config.alert_sns_region},
            "send_resolved": True,
            "subject": "{{ .Status | toUpper }}: {{ .CommonLabels.alertname }}",
            "message": "{{ range .Alerts }}{{ .Annotations.summary }} {{ .Annotations.runbook_url }}\n{{ end }}",
        }]  # fmt: skip
    return integrations


def alertmanager_config(config, secrets, redact=True):
    """alertmanager.yml: routes by severity, the app-down inhibition, receivers from the settings.

    It holds the receivers' secrets (the SMTP password, the webhook URL), so it
    lives in a Secret; with ``redact`` they are placeholders.
    """
    configured = receiver_kinds(config)
    # An alert no severity route takes goes to every configured receiver, never to an empty one.
    receivers = [{"name": "default", **_integrations(config, secrets, redact, configured)}]
    # The Watchdog first, to its own receiver only: it fires always, and must not page anyone.
    watchdog = {"name": "watchdog"}
    if config.alert_watchdog:
        url = redacted_url(secrets.alert_watchdog_url) if redact else secrets.alert_watchdog_url
        watchdog["webhook_configs"] = [{"url": url, "send_resolved": False}]
    receivers.append(watchdog)
    routes = [{"receiver": "watchdog", "matchers": ['alertname="Watchdog"'], **WATCHDOG_ROUTE}]
    for severity in ("critical", "warning"):
        via = [k for k in configured if k in getattr(config, f"alert_{severity}_via")]
        receivers.append({"name": severity, **_integrations(config, secrets, redact, via)})
        routes.append({"receiver": severity, "matchers": [f'severity="{severity}"']})
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "app"],
            "group_wait": config.alert_group_wait,
            "group_interval": config.alert_group_interval,
            "repeat_interval": config.alert_repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{cause}"'],
                "target_matchers": [f'alertname=~"{"|".join(symptoms)}"'],
                "equal": ["app"],
            }
            for cause, symptoms in INHIBITIONS.items()
        ],
        "receivers": receivers,
    }


def alert_warnings(config):
    """Sentences for the operator when alerts would reach nobody; empty when they are delivered."""
    if not config.monitoring:
        return []
    configured = receiver_kinds(config)
    if not configured:
        return [
            "Alerts are not delivered: no alert receiver is configured, so Alertmanager keeps them and pages "
            "nobody. Set DEPLOY['alert_email_to'] (with alert_email_from and alert_smtp_smarthost), "
            "DEPLOY['alert_webhook'] (with the secret DEPLOY_ALERT_WEBHOOK_URL) or DEPLOY['alert_sns_topic_arn'] "
            "(docs/runbooks.md#how-alerts-reach-people)."
        ]
    found = []
    if "sns" in configured and config.monitoring_mode == "standalone" and not config.alert_sns_role_arn:
        # Alertmanager's pod has no AWS credentials of its own: without a role, every SNS publish fails.
        found.append(
            "SNS alerts are not delivered unless Alertmanager has AWS credentials: DEPLOY['alert_sns_topic_arn'] is "
            "set but DEPLOY['alert_sns_role_arn'] (DEPLOY_ALERT_SNS_ROLE_ARN) is empty. Set it to an IAM role "
            f"allowed sns:Publish on the topic (IRSA), or give the ServiceAccount {config.monitoring_namespace}/"
            "alertmanager an EKS Pod Identity association with such a role (docs/runbooks.md#how-alerts-reach-people)."
        )
    for severity in ("critical", "warning"):
        via = getattr(config, f"alert_{severity}_via")
        if not [k for k in configured if k in via]:
            found.append(
                f"{severity.capitalize()} alerts are not delivered: DEPLOY['alert_{severity}_via'] "
                f"({', '.join(via) or 'empty'}) names none of the configured receivers ({', '.join(configured)}). "
                f"Add one of them to alert_{severity}_via."
            )
    return found


RECEIVER_SECRET_KEYS = {"webhook": "webhook-url", "email": "smtp-password"}


def _operator_integrations(config, kinds, secret_name):
    def key(kind):
        return {"name": secret_name, "key": RECEIVER_SECRET_KEYS[kind]}

    integrations = {}
    if "email" in kinds:
        email = {"to": ", ".join(config.alert_email_to), "from": config.alert_email_from,
                 "smarthost": config.alert_smtp_smarthost, "requireTLS": True, "sendResolved": True}  # fmt: skip
        if config.alert_smtp_username:
            email["authUsername"] = config.alert_smtp_username
            email["authPassword"] = key("email")
        integrations["emailConfigs"] = [email]
    if "webhook" in kinds and config.alert_webhook == "slack":
        integrations["slackConfigs"] = [{"apiURL": key("webhook"), "channel": config.alert_slack_channel,
                                         "sendResolved": True}]  # fmt: skip
    elif "webhook" in kinds:
        integrations["webhookConfigs"] = [{"urlSecret": key("webhook"), "sendResolved": True}]
    if "sns" in kinds:
        integrations["snsConfigs"] = [{"topicARN": config.alert_sns_topic_arn,
                                       "sigv4": {"region": config.alert_sns_region}, "sendResolved": True}]  # fmt: skip
    return integrations


def alertmanager_config_spec(config, secret_name):
    """The same routes, receivers and inhibition as :func:`alertmanager_config`, as an AlertmanagerConfig's spec
    (the Prometheus Operator's CRD, for the operator mode); secrets are references to ``secret_name``."""
    configured = receiver_kinds(config)
    receivers, routes = [{"name": "default", **_operator_integrations(config, configured, secret_name)}], []
    for severity in ("critical", "warning"):
        via = [k for k in configured if k in getattr(config, f"alert_{severity}_via")]
        receivers.append({"name": severity, **_operator_integrations(config, via, secret_name)})
        routes.append({"receiver": severity, "matchers": [{"name": "severity", "value": severity, "matchType": "="}]})
    return {
        "route": {
            "receiver": "default",
            "groupBy": ["alertname", "app"],
            "groupWait": config.alert_group_wait,
            "groupInterval": config.alert_group_interval,
            "repeatInterval": config.alert_repeat_interval,
            "routes": routes,
        },
        "inhibitRules": [
            {
                "sourceMatch": [{"name": "alertname", "value": cause, "matchType": "="}],
                "targetMatch": [{"name": "alertname", "value": "|".join(symptoms), "matchType": "=~"}],
                "equal": ["app"],
            }
            for cause, symptoms in INHIBITIONS.items()
        ],
        "receivers": receivers,
    }


# --- Grafana ---------------------------------------------------------------

GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards"


def grafana_datasources(config):
    """Grafana's datasource provisioning file: the standalone Prometheus."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "type": "prometheus",
                "uid": "prometheus",
                "access": "proxy",
                "url": names.service(config, "prometheus").url(),
                "isDefault": True,
                "editable": False,
            }
        ],
    }


def grafana_dashboard_providers(config):
    """Grafana's dashboard provisioning file: the folder where the dashboard ConfigMap is mounted."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": config.app_name,
                "orgId": 1,
                "folder": "",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": GRAFANA_DASHBOARDS, "foldersFromFilesStructure": False},
            }
        ],
    }


# --- scrape configuration --------------------------------------------------


def prometheus_config(config):
    """prometheus.yml of the standalone Prometheus."""
    ns = config.namespace
    selector = names.selector_labels(config.app_name, "app")
    keep = [
        {
            "source_labels": [f"__meta_kubernetes_pod_label_{_label_name(k)}" for k in selector],
            "regex": ";".join(re.escape(v) for v in selector.values()),
            "action": "keep",
        },
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    ]
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    node_sd = {
        "kubernetes_sd_configs": [{"role": "node"}],
        "scheme": "https",
        "tls_config": {"ca_file": f"{account}/ca.crt"},
        "authorization": {"credentials_file": f"{account}/token"},
    }
    node_exporter = names.service(config, "node-exporter")
    return {
        "global": {
            "scrape_interval": config.prometheus_scrape_interval,
            "evaluation_interval": config.prometheus_evaluation_interval,
        },
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [names.service(config, "alertmanager").address]}]}]
        },
        "rule_files": ["/etc/prometheus/rules/*.yml"],
        "scrape_configs": [
            {
                "job_name": APP_JOB,
                "metrics_path": "/metrics",
                "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [ns]}}],
                "relabel_configs": keep,
            },
            {
                "job_name": "kube-state-metrics",
                "static_configs": [{"targets": [names.service(config, "kube-state-metrics").address]}],
            },
            {
                "job_name": "node-exporter",
                "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": [node_exporter.namespace]}}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_service_name"],
                        "regex": _regex_literal(node_exporter.name),
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                ],
            },
            # The monitoring itself: the alerts on Alertmanager and on Prometheus's notifications and rules.
            {"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:9090"]}]},
            {
                "job_name": "alertmanager",
                "static_configs": [{"targets": [names.service(config, "alertmanager").address]}],
            },
            {"job_name": "kubelet", **node_sd},
            {"job_name": "cadvisor", "metrics_path": "/metrics/cadvisor", **node_sd},
        ],
    }


def _regex_literal(text):
    """``text`` as a regular expression matching only itself (a hyphen needs no escape outside a class)."""
    return re.escape(text).replace("\\-", "-")


def _label_name(label):
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


# --- log parsing -----------------------------------------------------------

# The container runtime's log line (CRI, as containerd writes on EKS):
# "2024-05-01T10:00:00.123456789Z stdout F {...}". P marks a partial line that
# the next record continues; F ends it.
CRI_REGEX = r"^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[FP]) (?<log>.*)$"


def fluentd_config(config):
    """fluent.conf: tail, join partial lines, parse the app's JSON, add Kubernetes metadata, buffer to disk."""
    elasticsearch = names.service(config, "elasticsearch")
    app_selector = names.selector_labels(config.app_name, "app")
    app_name = app_selector["app.kubernetes.io/name"]
    return f"""# Generated from deploy/k8s/observability.py: edit the rules there.
<system>
  log_level info
</system>

# Health for the kubelet's probes.
<source>
  @type monitor_agent
  bind 0.0.0.0
  port 24220
</source>

<source>
  @type tail
  @id containers
  path /var/log/containers/*.log
  exclude_path ["/var/log/containers/fluentd-*.log"]
  pos_file /var/log/fluentd-buffers/containers.log.pos
  tag kubernetes.*
  read_from_head true
  <parse>
    @type regexp
    expression /{CRI_REGEX}/
    time_key time
    time_format %Y-%m-%dT%H:%M:%S.%N%:z
  </parse>
</source>

# Join the runtime's partial lines (P) with the line that ends them (F).
<filter kubernetes.**>
  @type concat
  key log
  partial_key logtag
  partial_value P
  separator ""
</filter>

<filter kubernetes.**>
  @type kubernetes_metadata
  @id kubernetes_metadata
</filter>

# The app writes one JSON object per line: its fields become fields.
<filter kubernetes.**>
  @type parser
  key_name log
  reserve_data true
  remove_key_name_field true
  emit_invalid_record_to_error false
  <parse>
    @type json
  </parse>
</filter>

<match kubernetes.**>
  @type elasticsearch
  @id elasticsearch
  host {elasticsearch.host}
  port {elasticsearch.port}
  scheme http
  logstash_format true
  logstash_prefix logs-{app_name}
  include_tag_key true
  # Survive an Elasticsearch outage without losing logs: a file buffer, retried forever.
  <buffer>
    @type file
    path /var/log/fluentd-buffers/elasticsearch.buffer
    flush_mode interval
    flush_interval 5s
    flush_thread_count 2
    retry_type exponential_backoff
    retry_max_interval 60s
    retry_forever true
    chunk_limit_size 8MB
    total_limit_size 2GB
    overflow_action block
  </buffer>
</match>
"""


def _python_regex(ruby_regex):
    return ruby_regex.replace("(?<", "(?P<")


def parse_container_log(lines):
    """The same rules as fluent.conf, in Python: runtime lines in, records out."""
    pattern = re.compile(_python_regex(CRI_REGEX))
    records, pending = [], ""
    for line in lines:
        match = pattern.match(line.rstrip("\n"))
        if not match:
            continue
        pending += match["log"]
        if match["logtag"] == "P":
            continue
        record = {"time": match["time"], "stream": match["stream"]}
        try:
            parsed = json.loads(pending)
        except ValueError:
            record["log"] = pending
        else:
            record.update(parsed if isinstance(parsed, dict) else {"log": pending})
        records.append(record)
        pending = ""
    return records


def efk_setup_script(config):
    """The setup Job's script: index lifecycle (retention), index template, Kibana data view and saved search."""
    es = names.service(config, "elasticsearch").url()
    kibana = names.service(config, "kibana").url()
    app_name = names.selector_labels(config.app_name, "app")["app.kubernetes.io/name"]
    policy = {"policy": {"phases": {
        "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "10gb"}}},
        "delete": {"min_age": f"{config.log_retention_days}d", "actions": {"delete": {}}},
    }}}  # fmt: skip
    template = {
        "index_patterns": [f"logs-{app_name}-*"],
        "template": {"settings": {"index.lifecycle.name": "app-logs-retention", "number_of_replicas":
                                  0 if config.elasticsearch_replicas == 1 else 1}},
    }  # fmt: skip
    data_view = {"data_view": {"id": "app-logs", "title": f"logs-{app_name}-*", "timeFieldName": "@timestamp"}}
    search = {"attributes": {
        "title": "App errors",
        "columns": ["level", "logger", "message", "request_id", "kubernetes.pod_name"],
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({
            "query": {"query": "level:ERROR or level:CRITICAL", "language": "kuery"},
            "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"})},
    }, "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
                       "id": "app-logs"}]}  # fmt: skip
    json_header = "-H 'Content-Type: application/json'"
    return "\n".join([
        "set -eu",
        f"until curl -fsS {es}/_cluster/health?wait_for_status=yellow; do sleep 5; done",
        f"curl -fsS -X PUT {es}/_ilm/policy/app-logs-retention {json_header} -d '{json.dumps(policy)}'",
        f"curl -fsS -X PUT {es}/_index_template/app-logs {json_header} -d '{json.dumps(template)}'",
        f"until curl -fsS {kibana}/api/status; do sleep 5; done",
        f"curl -sS -X POST {kibana}/api/data_views/data_view -H 'kbn-xsrf: true' -H 'Content-Type: application/json' "
        f"-d '{json.dumps(data_view)}' || true",
        f"curl -fsS -X POST '{kibana}/api/saved_objects/search/app-errors?overwrite=true' -H 'kbn-xsrf: true' "
        f"-H 'Content-Type: application/json' -d '{json.dumps(search)}'",
        "",
    ])  # fmt: skip
