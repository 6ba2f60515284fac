"""Grafana: provisioning files in the shape Grafana documents, the dashboard it serves, the panels the runbooks cite."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploy.conf import load_config
from deploy.k8s import names, observability
from deploy.k8s.render import render_manifests
from tests.k8s_helpers import by_kind

ROOT = Path(__file__).resolve().parent.parent

# The provisioning files as Grafana documents them
# (https://grafana.com/docs/grafana/latest/administration/provisioning/): the documented keys only, so a
# misspelt key (which Grafana silently ignores) fails here.
DATASOURCES_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "datasources"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "deleteDatasources": {"type": "array"},
        "prune": {"type": "boolean"},
        "datasources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "access", "url"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "access": {"enum": ["proxy", "direct"]},
                    "orgId": {"type": "integer"},
                    "uid": {"type": "string"},
                    "url": {"type": "string", "pattern": "^https?://"},
                    "user": {"type": "string"},
                    "database": {"type": "string"},
                    "basicAuth": {"type": "boolean"},
                    "basicAuthUser": {"type": "string"},
                    "withCredentials": {"type": "boolean"},
                    "isDefault": {"type": "boolean"},
                    "jsonData": {"type": "object"},
                    "secureJsonData": {"type": "object"},
                    "version": {"type": "integer"},
                    "editable": {"type": "boolean"},
                },
            },
        },
    },
}
PROVIDERS_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "providers"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "providers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "options"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "orgId": {"type": "integer"},
                    "folder": {"type": "string"},
                    "folderUid": {"type": "string"},
                    "type": {"const": "file"},
                    "disableDeletion": {"type": "boolean"},
                    "updateIntervalSeconds": {"type": "integer"},
                    "allowUiUpdates": {"type": "boolean"},
                    "options": {
                        "type": "object",
                        "required": ["path"],
                        "additionalProperties": False,
                        "properties": {
                            "path": {"type": "string", "pattern": "^/"},
                            "foldersFromFilesStructure": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


def rendered():
    config = load_config({}, environ={})
    return config, render_manifests(config)


def one(manifests, kind, name):
    (found,) = [m for m in by_kind(manifests, kind) if m["metadata"]["name"] == name]
    return found


def grafana_container(manifests):
    (container,) = one(manifests, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"]
    return container


def test_provisioning_files_have_the_documented_shape():
    _, manifests = rendered()
    data = one(manifests, "ConfigMap", "grafana-provisioning")["data"]
    jsonschema.validate(yaml.safe_load(data["datasources.yml"]), DATASOURCES_SCHEMA)
    jsonschema.validate(yaml.safe_load(data["dashboards.yml"]), PROVIDERS_SCHEMA)


def test_the_schemas_refuse_a_misspelt_key():
    broken = observability.grafana_datasources(load_config({}, environ={}))
    broken["datasources"][0]["isdefault"] = broken["datasources"][0].pop("isDefault")
    with pytest.raises(jsonschema.ValidationError, match="isdefault"):
        jsonschema.validate(broken, DATASOURCES_SCHEMA)


def test_prometheus_is_the_datasource_and_the_dashboard_is_mounted_where_the_provider_reads():
    config, manifests = rendered()
    data = one(manifests, "ConfigMap", "grafana-provisioning")["data"]
    (datasource,) = yaml.safe_load(data["datasources.yml"])["datasources"]
    prometheus = one(manifests, "Service", names.service(config, "prometheus").name)
    meta = prometheus["metadata"]
    assert (
        datasource["url"] == f"http://{meta['name']}.{meta['namespace']}.svc:{prometheus['spec']['ports'][0]['port']}"
    )
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True

    (provider,) = yaml.safe_load(data["dashboards.yml"])["providers"]
    deployment = one(manifests, "Deployment", "grafana")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in grafana_container(manifests)["volumeMounts"]}
    dashboard_mount = mounts[provider["options"]["path"]]
    dashboard_configmap = volumes[dashboard_mount["name"]]["configMap"]["name"]
    dashboard = one(manifests, "ConfigMap", dashboard_configmap)
    assert dashboard["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert json.loads(dashboard["data"]["django-app.json"])["panels"]
    # Grafana reads provisioning from GF_PATHS_PROVISIONING/{datasources,dashboards}.
    env = {e["name"]: e["value"] for e in grafana_container(manifests)["env"]}
    for kind, key in (("datasources", "datasources.yml"), ("dashboards", "dashboards.yml")):
        assert mounts[f"{env['GF_PATHS_PROVISIONING']}/{kind}/{key}"]["subPath"] == key


def test_grafana_has_no_default_admin_login_and_no_ingress():
    _, manifests = rendered()
    env = {e["name"]: e["value"] for e in grafana_container(manifests)["env"]}
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    policy = one(manifests, "NetworkPolicy", "grafana")
    assert policy["spec"]["ingress"] == [] and "Ingress" in policy["spec"]["policyTypes"]


def runbook_panels(text):
    """Panel titles the runbooks cite: the italic names before "panel" or "panels"."""
    found = set()
    for match in re.finditer(r"((?:\*[^*\n]+\*(?:,\s*|\s+and\s+|\s+or\s+)?)+)\s*panels?\b", text):
        found.update(re.findall(r"\*([^*\n]+)\*", match.group(1)))
    return found


def test_every_panel_the_runbooks_name_is_in_the_dashboard():
    titles = {p["title"] for p in json.loads((ROOT / "k8s_templates/monitoring/dashboard.json").read_text())["panels"]}
    cited = set()
    for page in [ROOT / "docs/runbooks.md", *sorted((ROOT / "docs/training").glob("*.md"))]:
        cited |= runbook_panels(page.read_text())
    assert {"Latency", "Database"} <= cited, "the runbooks cite these panels: the citation pattern must find them"
    assert cited <= titles, f"the runbooks name panels the dashboard does not have: {sorted(cited - titles)}"


def test_the_panel_reader_finds_a_missing_panel():
    assert runbook_panels("see the dashboard's *Latency* and *Queue depth* panels") == {"Latency", "Queue depth"}
