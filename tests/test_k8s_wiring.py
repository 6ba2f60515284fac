"""The rendered stack read as one system: names resolve, selectors select, the network allows what it needs.

The first tests follow each connection by hand through the rendered objects
(a config file's host, to a Service, to the pods it selects, to the port a
container declares), without the wiring module, so that they check it rather
than repeat it. The rest break the render in the ways a project could
(rename a Service, drop a flow, add an allow) and expect the render to fail
naming what broke.
"""

import base64
import copy
import os
import re
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy import docs
from deploy.conf import DeploySecrets, load_config
from deploy.k8s import wiring
from deploy.k8s.render import BUILTIN_TEMPLATES, RenderError, render_manifests
from deploy.k8s.wiring import Flow
from tests.k8s_helpers import MODES, by_kind, mode_config

SECRETS = DeploySecrets(
    "the-secret-key",
    "pg-p@ss/word",
    "redis-p@ss",
    postgres_superuser_password="pg-su-p@ss",
    alert_smtp_password="smtp-p@ss",
    alert_webhook_url="https://hooks.slack.com/services/T0/B0/x",
)


def _render(config):
    return render_manifests(config, SECRETS, redact=False)


# --- following the connections by hand ----------------------------------------------


def _resolve(manifests, host, port):
    """The (Service, [(workload, container port)]) that ``host``:``port`` reaches, read from the objects alone."""
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc", host)
    assert match, f"{host} is not an in-cluster Service host"
    name, namespace = match.groups()
    services = [m for m in by_kind(manifests, "Service", name) if m["metadata"]["namespace"] == namespace]
    assert services, f"{host}: no Service {name} in {namespace}"
    (service,) = services
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    reached = []
    for workload in manifests:
        template = workload.get("spec", {}).get("template")
        if workload["metadata"].get("namespace") != namespace or not template:
            continue
        labels = template["metadata"]["labels"]
        if all(labels.get(k) == v for k, v in service["spec"]["selector"].items()):
            for container in template["spec"]["containers"]:
                for declared in container.get("ports", []):
                    if service_port["targetPort"] in (declared["name"], declared["containerPort"]):
                        reached.append((workload["metadata"]["name"], declared["containerPort"]))
    return service, reached


def _config_map(manifests, name):
    return next(m for m in by_kind(manifests, "ConfigMap", name))["data"]


def test_fluentd_sends_to_a_service_that_selects_the_elasticsearch_pods_on_their_http_port():
    manifests = _render(mode_config("default"))
    conf = _config_map(manifests, "fluentd-config")["fluent.conf"]
    match_block = conf[conf.index("<match kubernetes.**>") :]
    host = re.search(r"^\s*host (\S+)$", match_block, re.MULTILINE).group(1)
    port = int(re.search(r"^\s*port (\d+)$", match_block, re.MULTILINE).group(1))
    service, reached = _resolve(manifests, host, port)
    assert service["metadata"]["name"] == "django-app-elasticsearch"
    assert reached == [("django-app-elasticsearch", 9200)]
    (statefulset,) = by_kind(manifests, "StatefulSet", "django-app-elasticsearch")
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["name"] == "elasticsearch"


def test_prometheus_reaches_kube_state_metrics_and_keeps_the_node_exporter_service():
    manifests = _render(mode_config("default"))
    prometheus = yaml.safe_load(_config_map(manifests, "prometheus-config")["prometheus.yml"])
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    (target,) = jobs["kube-state-metrics"]["static_configs"][0]["targets"]
    host, port = target.rsplit(":", 1)
    _, reached = _resolve(manifests, host, int(port))
    assert reached == [("kube-state-metrics", 8080)]
    # node-exporter is found through the endpoints of the Service the relabelling keeps.
    keep = next(
        r for r in jobs["node-exporter"]["relabel_configs"] if r["source_labels"] == ["__meta_kubernetes_service_name"]
    )
    namespaces = jobs["node-exporter"]["kubernetes_sd_configs"][0]["namespaces"]["names"]
    kept = [
        s["metadata"]["name"]
        for s in by_kind(manifests, "Service")
        if s["metadata"]["namespace"] in namespaces and re.fullmatch(keep["regex"], s["metadata"]["name"])
    ]
    assert kept == ["django-app-node-exporter"]
    (service,) = by_kind(manifests, "Service", "django-app-node-exporter")
    (daemonset,) = by_kind(manifests, "DaemonSet", "node-exporter")
    assert service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("mode", ["default", "elasticsearch-ha"])
def test_kibana_the_setup_job_and_elasticsearch_nodes_name_rendered_services(mode):
    manifests = _render(mode_config(mode))
    (kibana,) = by_kind(manifests, "Deployment", "django-app-kibana")
    env = {e["name"]: e.get("value") for e in kibana["spec"]["template"]["spec"]["containers"][0]["env"]}
    url = urlsplit(env["ELASTICSEARCH_HOSTS"])
    assert _resolve(manifests, url.hostname, url.port)[1] == [("django-app-elasticsearch", 9200)]
    script = _config_map(manifests, "efk-setup")["setup.sh"]
    urls = {urlsplit(u) for u in re.findall(r"https?://[^\s/']+", script)}
    reached = {w for u in urls for w in _resolve(manifests, u.hostname, u.port)[1]}
    assert reached == {("django-app-elasticsearch", 9200), ("django-app-kibana", 5601)}
    if mode == "elasticsearch-ha":
        (es,) = by_kind(manifests, "StatefulSet", "django-app-elasticsearch")
        container = es["spec"]["template"]["spec"]["containers"][0]
        seeds = next(e["value"] for e in container["env"] if e["name"] == "discovery.seed_hosts")
        assert _resolve(manifests, seeds, 9300)[1] == [("django-app-elasticsearch", 9300)]


@pytest.mark.parametrize("mode", ["default", "external-postgres", "external-redis"])
def test_the_apps_database_and_redis_urls_reach_the_data_services(mode):
    config = mode_config(mode)
    manifests = _render(config)
    (secret,) = by_kind(manifests, "Secret", "django-app")
    urls = {key: urlsplit(base64.b64decode(secret["data"][key]).decode()) for key in ("DATABASE_URL", "REDIS_URL")}
    for key, component, port in (("DATABASE_URL", "postgres", 5432), ("REDIS_URL", "redis", 6379)):
        url = urls[key]
        if getattr(config, f"{component}_in_cluster"):
            _, reached = _resolve(manifests, url.hostname, url.port)
            assert reached == [(f"django-app-{component}", port)]
        else:
            assert (url.hostname, url.port) == (getattr(config, f"{component}_host"), port)


def test_the_backup_dumps_the_rendered_postgres_service():
    manifests = _render(mode_config("default"))
    (cronjob,) = by_kind(manifests, "CronJob")
    command = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    host, port = re.search(r"-h (\S+) -p (\d+)", command).groups()
    assert _resolve(manifests, host, int(port))[1] == [("django-app-postgres", 5432)]


def test_every_service_name_host_and_port_comes_from_names_service():
    from deploy.k8s import names

    config = load_config({"app_name": "shop", "namespace": "shop-prod"}, environ={})
    manifests = _render(config)
    rendered = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in by_kind(manifests, "Service")}
    # The operator's Services (CloudNativePG's -rw) are declared there too, but made by the operator.
    ours = [c for c in names.SERVICES if names.operator_service_name(config, c) is None]
    declared = {(names.service(config, c).namespace, names.service(config, c).name) for c in ours}
    assert rendered == declared
    for service in by_kind(manifests, "Service"):
        if service["metadata"]["name"] == "shop":
            continue  # the app's ports follow the exposure mode; the wiring rule checks their targets
        (declared,) = [
            names.service(config, c) for c in ours if names.service(config, c).name == service["metadata"]["name"]
        ]
        ports = [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]]
        assert ports == [(declared.port_name, declared.port, declared.port_name)]
    # An in-cluster data service ignores the external port settings: one address for the URL and the policies.
    odd = load_config({"postgres_port": 6543, "redis_port": 6380}, environ={})
    assert names.endpoint(odd, "postgres").address == "django-app-postgres.django-app.svc:5432"
    assert wiring.wiring_problems(_render(odd), odd) == []
    assert names.service(config, "elasticsearch").host == "shop-elasticsearch.logging.svc"
    assert names.endpoint(config, "postgres").address == "shop-postgres.shop-prod.svc:5432"


# --- the rule on every mode ----------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_has_no_dangling_name_and_exactly_the_needed_flows(mode):
    config = mode_config(mode)
    manifests = _render(config)
    assert wiring.wiring_problems(manifests, config) == []
    allowed = set(wiring.reachability(manifests))
    needed = {need.flow for need in wiring.needed_flows(config, manifests)}
    assert allowed == needed
    # The flows the issue lists, spelled out here rather than taken from needed_flows().
    ns = "django-app"
    # In the cluster: the StatefulSet's pod, or CloudNativePG's instances (the same party).
    postgres_here = config.postgres_in_cluster or config.postgres_operator
    postgres = f"{ns}/postgres" if postgres_here else config.postgres_cidr
    expected = {
        Flow(f"{ns}/app", postgres, f"{config.postgres_port}/TCP"),
        Flow(f"{ns}/migrate", postgres, f"{config.postgres_port}/TCP"),
        Flow(config.vpc_cidr, f"{ns}/app", "8000/TCP"),
        Flow(f"{ns}/app", "kube-system/{k8s-app=kube-dns}", "53/UDP"),
    }
    if postgres_here:
        expected.add(Flow(f"{ns}/postgres-backup", postgres, "5432/TCP"))
    if config.postgres_operator:
        expected |= {
            Flow(postgres, postgres, "5432/TCP"),
            Flow(postgres, postgres, "8000/TCP"),
            Flow("cnpg-system/{app.kubernetes.io/name=cloudnative-pg}", postgres, "8000/TCP"),
        }
    if config.logging:
        expected |= {
            Flow("logging/fluentd", "logging/elasticsearch", "9200/TCP"),
            Flow("logging/kibana", "logging/elasticsearch", "9200/TCP"),
            Flow("logging/efk-setup", "logging/elasticsearch", "9200/TCP"),
        }
    if config.monitoring and config.monitoring_mode == "standalone":
        expected |= {
            Flow("monitoring/prometheus", f"{ns}/app", "8000/TCP"),
            Flow("monitoring/prometheus", "monitoring/kube-state-metrics", "8080/TCP"),
            Flow("monitoring/prometheus", config.vpc_cidr, "9100/TCP"),
        }
    if config.monitoring_mode == "operator":
        expected.add(Flow("monitoring/{app.kubernetes.io/name=prometheus}", f"{ns}/app", "8000/TCP"))
    assert expected <= allowed
    assert not [f for f in allowed if wiring.ANYTHING in (f.source, f.destination)]
    if not config.logging:
        assert not [f for f in allowed if "logging/" in f.source + f.destination]


def test_the_load_balancer_flow_follows_the_exposed_service_whatever_the_mode():
    config = mode_config("alb")
    manifests = copy.deepcopy(_render(config))
    # A balancer sending to another container port: the needed flow follows the Service, not a constant.
    (deployment,) = by_kind(manifests, "Deployment", "django-app")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"].append(
        {"name": "https", "containerPort": 8443, "protocol": "TCP"}
    )
    (service,) = by_kind(manifests, "Service", "django-app")
    service["spec"]["ports"].append({"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"})
    needed = {n.flow for n in wiring.needed_flows(config, manifests)}
    assert Flow(config.vpc_cidr, "django-app/app", "8443/TCP") in needed
    problems = wiring.wiring_problems(manifests, config)
    assert any("do not allow 10.0.0.0/16 → django-app/app on 8443/TCP" in p for p in problems), problems


# --- breaking it -----------------------------------------------------------------------------


def _override(tmp_path, relative, text):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_config({"template_dirs": [str(tmp_path)]}, environ={})


def _builtin(relative):
    return (BUILTIN_TEMPLATES / relative).read_text()


def _refused(config, *args, **kwargs):
    """What the render says when it refuses the manifests of ``config``."""
    with pytest.raises(RenderError) as excinfo:
        render_manifests(config, *args, **kwargs)
    return str(excinfo.value)


def test_renaming_a_service_fails_the_render_naming_each_reference(tmp_path):
    text = _builtin("logging/elasticsearch.yaml").replace("name: {{ svc.name }}", 'name: "elasticsearch"', 1)
    config = _override(tmp_path, "logging/elasticsearch.yaml", text)
    message = _refused(config)
    assert (
        "ConfigMap logging/fluentd-config key fluent.conf names django-app-elasticsearch.logging.svc:9200, but no "
        "Service 'django-app-elasticsearch' is rendered in namespace 'logging'" in message
    )
    assert "Deployment logging/django-app-kibana container 'kibana' env ELASTICSEARCH_HOSTS" in message
    assert "ConfigMap logging/efk-setup key setup.sh" in message


def test_renaming_the_database_service_fails_on_the_apps_database_url(tmp_path):
    text = _builtin("postgres/service.yaml").replace("name: {{ svc.name }}", 'name: {{ svc.name ~ "-db" }}', 1)
    config = _override(tmp_path, "postgres/service.yaml", text)
    message = _refused(config, SECRETS, redact=False)
    assert "Secret django-app/django-app key DATABASE_URL names django-app-postgres.django-app.svc:5432" in message
    assert "CronJob django-app/django-app-postgres-backup container 'pg-dump'" in message
    assert SECRETS.postgres_password not in message and "pg-p%40ss" not in message


def test_only_the_host_of_a_secret_url_is_read_never_its_password():
    # A password that looks like a host must neither be taken for one nor appear in a message.
    secrets = DeploySecrets("key", "db.evil.svc", "cache.evil.svc:1", "su.evil.svc")
    config = mode_config("default")
    manifests = render_manifests(config, secrets, redact=False)
    assert wiring.wiring_problems(manifests, config) == []
    hosts = {(r.name, r.port) for r in wiring.references(manifests) if r.where.startswith("Secret")}
    assert hosts == {("django-app-postgres", 5432), ("django-app-redis", 6379)}

    by_kind(manifests, "Service", "django-app-postgres")[0]["metadata"]["name"] = "pg"
    problems = "\n".join(wiring.wiring_problems(manifests, config))
    assert "Secret django-app/django-app key DATABASE_URL names django-app-postgres.django-app.svc:5432" in problems
    assert "evil" not in problems


def test_dropping_a_flow_fails_the_render_naming_it(tmp_path):
    text = _builtin("redis/service.yaml")
    text = text[: text.index("  ingress:")] + "\n"
    config = _override(tmp_path, "redis/service.yaml", text)
    assert (
        "The NetworkPolicies do not allow django-app/app → django-app/redis on 6379/TCP, which the stack needs "
        "(the app caches in Redis)" in _refused(config)
    )


def egress_to_anywhere_on_443(name, component):
    """A NetworkPolicy template named ``name`` that lets ``component``'s pods reach any address on 443/TCP."""
    return """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: NAME
  namespace: {{ namespace }}
spec:
  podSelector:
    matchLabels: {{ selector("COMPONENT") }}
  policyTypes: ["Egress"]
  egress:
    - to:
        - ipBlock: {cidr: "0.0.0.0/0"}
      ports:
        - {port: 443, protocol: "TCP"}
""".replace("NAME", name).replace("COMPONENT", component)


STRAY = egress_to_anywhere_on_443('"debug-egress"', "app")


def test_a_stray_allow_fails_the_render_naming_the_flow_and_the_policy(tmp_path):
    config = _override(tmp_path, "network/debug.yaml", STRAY)
    assert (
        "The NetworkPolicies allow django-app/app → 0.0.0.0/0 on 443/TCP, which the stack does not need "
        "(allowed by NetworkPolicy django-app/debug-egress)" in _refused(config)
    )


def test_the_command_fails_on_a_stray_allow_and_writes_nothing(settings, tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("DEPLOY_") or n in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST"}]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    templates = tmp_path / "templates"
    (templates / "network").mkdir(parents=True)
    (templates / "network" / "debug.yaml").write_text(STRAY)
    settings.DEPLOY = {"template_dirs": [str(templates)]}
    output = tmp_path / "out"
    with pytest.raises(CommandError) as excinfo:
        call_command("k8s_deploy", "--output", str(output), stdout=StringIO(), stderr=StringIO())
    assert "Cannot render the manifests" in str(excinfo.value)
    assert "django-app/app → 0.0.0.0/0 on 443/TCP" in str(excinfo.value)
    assert not output.exists()


WORKER = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ name("worker") }}
  namespace: {{ namespace }}
  labels: {{ labels("worker") }}
spec:
  selector:
    matchLabels: {{ selector("worker") }}
  template:
    metadata:
      labels: {{ labels("worker") }}
    spec:
      containers:
        - {name: "worker", image: {{ image }}}
---
""" + egress_to_anywhere_on_443('{{ name("worker") }}', "worker")


def test_a_projects_own_component_declares_its_flows_in_extra_flows(tmp_path):
    message = _refused(_override(tmp_path, "app/worker.yaml", WORKER))
    # Its name resolution is the stack's (allow-dns covers the namespace); its own allow is not.
    assert message.count("stack does not need") == 1
    assert "django-app/worker → 0.0.0.0/0 on 443/TCP" in message
    declared = load_config(
        {"template_dirs": [str(tmp_path)], "extra_flows": ["django-app/worker -> 0.0.0.0/0 443/TCP"]}, environ={}
    )
    manifests = render_manifests(declared)
    assert Flow("django-app/worker", "kube-system/{k8s-app=kube-dns}", "53/UDP") in wiring.reachability(manifests)
    # A declared flow that the policies do not allow is missing, like any other.
    missing = load_config({"extra_flows": ["django-app/app -> 0.0.0.0/0 443/TCP"]}, environ={})
    with pytest.raises(RenderError, match=r"do not allow django-app/app → 0.0.0.0/0 on 443/TCP.*extra_flows"):
        render_manifests(missing)


@pytest.mark.parametrize("flows", [["app -> db"], ["a -> b 5432"], ["a -> b 5432/tcp"], "a -> b any"])
def test_a_malformed_extra_flow_is_refused_naming_the_setting(flows):
    from deploy.conf import ConfigError

    with pytest.raises(ConfigError, match="extra_flows"):
        load_config({"extra_flows": flows}, environ={})


def _problems(mutate, mode="default"):
    config = mode_config(mode)
    manifests = copy.deepcopy(_render(config))
    mutate(manifests)
    return wiring.wiring_problems(manifests, config)


def _fluentd_conf(manifests, old, new):
    data = _config_map(manifests, "fluentd-config")
    data["fluent.conf"] = data["fluent.conf"].replace(old, new)


def _prometheus_yml(manifests, old, new):
    data = _config_map(manifests, "prometheus-config")
    data["prometheus.yml"] = data["prometheus.yml"].replace(old, new)


def _container(manifests, kind, name):
    return by_kind(manifests, kind, name)[0]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # The two bugs this rule was written for.
        (
            lambda ms: _fluentd_conf(ms, "host django-app-elasticsearch", "host elasticsearch"),
            "fluent.conf names elasticsearch.logging.svc:9200, but no Service 'elasticsearch'",
        ),
        (
            lambda ms: _prometheus_yml(ms, "django-app-kube-state-metrics.", "kube-state-metrics."),
            "prometheus.yml names kube-state-metrics.monitoring.svc:8080, but no Service 'kube-state-metrics'",
        ),
        (
            lambda ms: _prometheus_yml(ms, ".svc:8080", ".svc:9090"),
            "Service monitoring/django-app-kube-state-metrics listens on 8080",
        ),
        (
            lambda ms: _container(ms, "Deployment", "django-app-kibana")["env"][0].update(
                value="http://elasticsearch:9200"
            ),
            "env ELASTICSEARCH_HOSTS names elasticsearch:9200, but no Service 'elasticsearch' is rendered in "
            "namespace 'logging'",
        ),
        (
            lambda ms: by_kind(ms, "Service", "django-app-redis")[0]["spec"]["ports"][0].update(targetPort="cache"),
            "targets 'cache', which the selected pods (Deployment django-app/django-app-redis) do not declare",
        ),
        (
            lambda ms: by_kind(ms, "Service", "django-app-postgres")[0]["spec"]["ports"][0].update(targetPort=5433),
            "targets 5433",
        ),
        (
            lambda ms: by_kind(ms, "Service", "django-app")[0]["spec"]["selector"].update(
                {"app.kubernetes.io/component": "web"}
            ),
            "its selector",
        ),
        (
            lambda ms: by_kind(ms, "NetworkPolicy", "django-app-redis")[0]["spec"]["podSelector"]["matchLabels"].update(
                {"app.kubernetes.io/component": "cache"}
            ),
            "NetworkPolicy django-app/django-app-redis: its podSelector",
        ),
        (
            lambda ms: by_kind(ms, "StatefulSet", "django-app-postgres")[0]["spec"].update(serviceName="pg"),
            "its serviceName 'pg' is not a rendered Service",
        ),
        (
            # Without the namespace's default deny, anything may connect to the pods no ingress policy selects.
            lambda ms: ms.remove(by_kind(ms, "NetworkPolicy", "django-app-default-deny")[0]),
            "allow anything → django-app/migrate on any, which the stack does not need (allowed by the absence "
            "of a policy isolating the pod)",
        ),
        (
            # Split into two peers, the podSelector alone means "in the policy's namespace": none there.
            lambda ms: by_kind(ms, "NetworkPolicy", "django-app")[0]["spec"]["ingress"][1].update(
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
                        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
                    ]
                }
            ),
            "ingress peer {'app.kubernetes.io/name': 'prometheus'} matches no pod of the stack",
        ),
        (
            lambda ms: by_kind(ms, "NetworkPolicy", "django-app-postgres")[0]["spec"]["ingress"][0]["ports"][0].update(
                port="http"
            ),
            "do not allow django-app/app → django-app/postgres on 5432/TCP",
        ),
    ],
)
def test_each_wiring_rule_can_fail(mutate, expected):
    problems = _problems(mutate)
    assert any(expected in p for p in problems), problems


def _relabel(manifests, job_name, source_label, regex):
    data = _config_map(manifests, "prometheus-config")
    config = yaml.safe_load(data["prometheus.yml"])
    job = next(j for j in config["scrape_configs"] if j["job_name"] == job_name)
    next(r for r in job["relabel_configs"] if r["source_labels"] == [source_label])["regex"] = regex
    data["prometheus.yml"] = yaml.safe_dump(config)


@pytest.mark.parametrize(
    ("job", "label", "regex"),
    [
        # The Service's name before names.service() named it.
        ("node-exporter", "__meta_kubernetes_service_name", "node-exporter"),
        ("django-app", "__meta_kubernetes_pod_container_port_name", "metrics"),
    ],
)
def test_a_scrape_job_that_finds_no_rendered_target_fails(job, label, regex):
    problems = _problems(lambda ms: _relabel(ms, job, label, regex))
    assert any(f"scrape job {job!r} keeps no rendered target" in p for p in problems), problems
    assert wiring.wiring_problems(_render(mode_config("default")), mode_config("default")) == []


def test_a_pod_monitor_must_scrape_a_port_its_pods_declare():
    def mutate(ms):
        by_kind(ms, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]["port"] = "metrics"

    assert any("declares the port 'metrics' it scrapes" in p for p in _problems(mutate, "operator-monitoring"))


def test_an_ingress_backend_must_name_a_rendered_service_and_port():
    def mutate(ms):
        (ingress,) = by_kind(ms, "Ingress")
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "web"}

    assert any("its backend port {'name': 'web'}" in p for p in _problems(mutate, "alb"))


def test_a_declared_external_endpoint_may_be_an_in_cluster_host():
    config = mode_config("external-postgres", postgres_host="pg.shared-db.svc", postgres_cidr="10.0.0.0/16")
    manifests = _render(config)
    assert wiring.wiring_problems(manifests, config) == []


@pytest.mark.parametrize("mode", ["default", "operator-monitoring"])
def test_a_runbook_url_on_a_one_label_host_is_a_link_not_a_dangling_service(mode):
    # Intranet wikis are often reached as http://wiki/...: the alerts link there, no pod dials it.
    config = mode_config(mode, runbook_url="http://wiki/ops/runbooks")
    manifests = _render(config)
    assert "http://wiki/ops/runbooks#" in yaml.safe_dump(manifests)
    assert wiring.wiring_problems(manifests, config) == []
    # The same one-label host anywhere else is still a reference to check.
    bad = copy.deepcopy(manifests)
    app_config = next(m for m in by_kind(bad, "ConfigMap") if "ALLOWED_HOSTS" in m.get("data", {}))
    app_config["data"]["UPSTREAM"] = "http://wiki:8080/api"
    assert any("names wiki:8080" in p for p in wiring.wiring_problems(bad, config))


# --- reachability semantics on a small hand-made stack --------------------------------------------


def _pod(kind, name, namespace, labels, ports=()):
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "c", "ports": [dict(zip(("name", "containerPort"), p)) for p in ports]}]
                },
            }
        },
    }


def _policy(name, namespace, selector, types, ingress=None, egress=None):
    spec = {"podSelector": {"matchLabels": selector}, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_reachability_needs_both_ends_and_resolves_named_ports_on_the_destination():
    web = {"app.kubernetes.io/component": "web"}
    db = {"app.kubernetes.io/component": "db"}
    manifests = [
        _pod("Deployment", "web", "a", web),
        _pod("StatefulSet", "db", "a", db, [("sql", 5432)]),
        _pod("Deployment", "other", "b", {"app.kubernetes.io/component": "other"}),
        _policy("deny", "a", {}, ["Ingress", "Egress"]),
        _policy("deny", "b", {}, ["Ingress", "Egress"]),
        _policy(
            "web",
            "a",
            web,
            ["Egress"],
            egress=[{"to": [{"podSelector": {"matchLabels": db}}], "ports": [{"port": "sql"}]}],
        ),
        _policy(
            "db",
            "a",
            db,
            ["Ingress"],
            ingress=[{"from": [{"podSelector": {"matchLabels": web}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        ),
    ]
    flows = wiring.reachability(manifests)
    assert set(flows) == {Flow("a/web", "a/db", "5432/TCP"), Flow("10.0.0.0/8", "a/db", "any")}
    assert flows[Flow("a/web", "a/db", "5432/TCP")] == ["NetworkPolicy a/db", "NetworkPolicy a/web"]
    # Without the egress allow, the ingress allow alone lets nothing through.
    manifests.pop(5)
    assert set(wiring.reachability(manifests)) == {Flow("10.0.0.0/8", "a/db", "any")}
    # Namespace b has no default deny any more: its pod reaches and is reached by anything.
    manifests.pop(4)
    assert {Flow("b/other", "anything", "any"), Flow("anything", "b/other", "any")} <= set(
        wiring.reachability(manifests)
    )
    assert Flow("b/other", "a/db", "any") not in wiring.reachability(manifests)
    # namespaceSelector and podSelector in one peer: pods of b that are web (none); in two peers: all of b, or web.
    in_b = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}
    manifests[-1]["spec"]["ingress"][0]["from"] = [{**in_b, "podSelector": {"matchLabels": web}}]
    assert Flow("b/other", "a/db", "any") not in wiring.reachability(manifests)
    manifests[-1]["spec"]["ingress"][0]["from"] = [in_b, {"podSelector": {"matchLabels": web}}]
    assert Flow("b/other", "a/db", "any") in wiring.reachability(manifests)


# --- the reference page ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_network_page_lists_every_needed_flow_of_the_default_configuration():
    page = docs.pages()["reference/network.md"]
    config = load_config({}, environ={})
    manifests = render_manifests(config)
    for need in wiring.needed_flows(config, manifests):
        row = f"| `{need.flow.source}` | `{need.flow.destination}` | {need.flow.port} | {need.why} |"
        assert row in page
    assert "NOT NEEDED" not in page
    assert Path(docs.__file__).resolve().parents[1].joinpath("mkdocs.yml").read_text().count("reference/network.md")
