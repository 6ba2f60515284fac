"""Named environments: one option selects staging or production, and only their settings differ."""

import re
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.conf import ConfigError, DeploySecrets, load_config
from deploy.k8s.render import render_manifests
from deploy.k8s.validate import validate_manifests

ENVIRONMENTS = {
    "staging": {
        "namespace": "shop-staging",
        "hosts": ["staging.shop.example.com"],
        "replicas_max": 3,
        "eks_cluster": "shop-staging-cluster",
        "secrets_name": "shop/staging",
    },
    "production": {
        "namespace": "shop-production",
        "hosts": ["shop.example.com", "www.shop.example.com"],
        "replicas_min": 3,
        "replicas_max": 10,
        "memory_limit": "1Gi",
        "node_count_min": 4,  # ten app pods at their largest need a fourth t3.large (docs/policy.md)
        "eks_cluster": "shop-production-cluster",
        "secrets_name": "shop/production",
    },
}
DEPLOY = {
    "app_name": "shop",
    "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop",
    "aws_region": "eu-west-1",
    "github_repository": "example/shop",
    "environments": ENVIRONMENTS,
}
# Settings that reach the manifests; secrets_name and eks_cluster only tell the tool where to go.
RENDERED = {"namespace", "hosts", "replicas_min", "replicas_max", "memory_limit"}
# Fingerprints of other values: they differ whenever anything they hash differs.
DERIVED = [
    (("spec", "template", "metadata", "annotations", "checksum/config"), re.compile(r"^[0-9a-f]{64}$")),
    (("metadata", "name"), re.compile(r"^shop-migrate-[0-9a-f]{8}$")),
]
SECRETS = DeploySecrets("a-secret-key", "a-postgres-password", "a-redis-password", "a-superuser-password")


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _stack(environment):
    config = load_config(DEPLOY, environ={}, environment=environment)
    manifests = render_manifests(config, SECRETS, redact=True)
    # Objects are matched by kind and name, with the namespace's own name and the Job's hash suffix set aside.
    keyed = {
        (m["kind"], re.sub(r"-[0-9a-f]{8}$", "", m["metadata"]["name"].replace(config.namespace, "NAMESPACE"))): dict(
            _leaves(m)
        )
        for m in manifests
    }
    return config, manifests, keyed


def _explains(setting, ours, theirs, staging, production):
    """Whether the two settings' values account for the two leaves."""
    a, b = getattr(staging, setting), getattr(production, setting)
    if isinstance(a, int):
        return ours == a and theirs == b
    a_forms = a if isinstance(a, list) else [a]
    b_forms = b if isinstance(b, list) else [b]
    return any(f in str(ours) for f in a_forms) and any(f in str(theirs) for f in b_forms)


def test_staging_and_production_differ_only_where_their_settings_say():
    staging, staging_manifests, ours = _stack("staging")
    production, production_manifests, theirs = _stack("production")
    assert (staging.environment, production.environment) == ("staging", "production")
    assert set(ours) == set(theirs), "the two environments render different sets of objects"

    unexplained, shown = [], set()
    for key in ours:
        for path in set(ours[key]) | set(theirs[key]):
            a, b = ours[key].get(path), theirs[key].get(path)
            if a == b:
                continue
            if any(path[-len(p) :] == p and rule.match(str(a)) and rule.match(str(b)) for p, rule in DERIVED):
                continue
            reasons = [s for s in RENDERED if _explains(s, a, b, staging, production)]
            if not reasons:
                unexplained.append((key, path, a, b))
            shown.update(reasons)
    assert unexplained == []
    # Every setting the environments change shows in the objects (the overrides took effect).
    assert shown == RENDERED
    for name, config, manifests in (
        ("staging", staging, staging_manifests),
        ("production", production, production_manifests),
    ):
        assert validate_manifests(manifests, config) == [], name
        namespaced = [m for m in manifests if m["metadata"].get("namespace") not in (None, "monitoring", "logging")]
        assert {m["metadata"]["namespace"] for m in namespaced} == {config.namespace}


def test_the_shared_settings_are_the_same_in_both():
    staging = load_config(DEPLOY, environ={}, environment="staging")
    production = load_config(DEPLOY, environ={}, environment="production")
    assert staging.image_repository == production.image_repository == DEPLOY["image_repository"]
    assert (staging.replicas_min, production.replicas_min) == (2, 3)
    assert (staging.secrets_name, production.secrets_name) == ("shop/staging", "shop/production")
    # Without --environment, the base settings, as before environments existed.
    base = load_config(DEPLOY, environ={})
    assert (base.environment, base.namespace, base.secrets_name) == ("", "django-app", "")


def test_an_environment_variable_still_wins_over_the_environment():
    config = load_config(DEPLOY, environ={"DEPLOY_REPLICAS_MAX": "4"}, environment="production")
    assert config.replicas_max == 4 and config.namespace == "shop-production"


@pytest.mark.parametrize(
    "deploy, environment, message",
    [
        (
            DEPLOY,
            "qa",
            r"Unknown environment 'qa': the known ones are production, staging \(DEPLOY\['environments'\]\)",
        ),
        ({}, "staging", r"Unknown environment 'staging': DEPLOY\['environments'\] declares none"),
        (
            {"environments": {"staging": {"replicas_min": 1}}},
            "staging",
            r"DEPLOY\['environments'\]\['staging'\]\['replicas_min'\] \(environment variable DEPLOY_REPLICAS_MIN\) "
            r"must be at least 2",
        ),
        (
            {"environments": {"staging": {"github_repository": "a/b"}}},
            None,
            r"environment 'staging' has unknown or not per-environment setting\(s\) 'github_repository'",
        ),
        ({"environments": {"staging": {"replica_max": 3}}}, None, r"unknown or not per-environment.*'replica_max'"),
        ({"environments": {"Staging": {}}}, None, r"environment names .*'Staging' is not one"),
        ({"environments": {"staging": ["namespace"]}}, None, r"'staging' maps to a list"),
        ({"environment": "staging"}, None, r"DEPLOY\['environment'\] is set by --environment"),
    ],
)
def test_bad_environments_are_one_clear_error(deploy, environment, message):
    with pytest.raises(ConfigError, match=message):
        load_config(deploy, environ={}, environment=environment)


def test_k8s_deploy_renders_the_selected_environment(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    # No EKS cluster named: the command renders, validates and writes, and applies nothing.
    environments = {
        name: {k: v for k, v in values.items() if k != "eks_cluster"} for name, values in ENVIRONMENTS.items()
    }
    settings.DEPLOY = {**DEPLOY, "environments": environments}
    out = StringIO()
    call_command("k8s_deploy", "--environment", "production", "--output", str(tmp_path / "prod"), stdout=out)
    namespace = yaml.safe_load((tmp_path / "prod" / "00-cluster-namespace-shop-production.yaml").read_text())
    assert namespace["metadata"]["name"] == "shop-production"
    rendered = StringIO()
    call_command("k8s_deploy", "--environment", "staging", "--render", stdout=rendered)
    documents = list(yaml.safe_load_all(rendered.getvalue()))
    hpa = next(d for d in documents if d["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["metadata"]["namespace"], hpa["spec"]["maxReplicas"]) == ("shop-staging", 3)


def test_an_unknown_environment_stops_every_command_before_anything_is_written(settings, tmp_path):
    settings.DEPLOY = DEPLOY
    output = tmp_path / "out"
    for command, args in (
        ("k8s_deploy", ["--output", str(output)]),
        ("aws_provision", ["--render", "--output", str(output / "stack.json")]),
        ("eks_kubeconfig", ["--output", str(output / "kubeconfig")]),
    ):
        with pytest.raises(CommandError, match=r"Unknown environment 'prod': the known ones are production, staging"):
            call_command(command, "--environment", "prod", *args, stdout=StringIO())
        assert not output.exists(), command
