"""Shared helpers for the Kubernetes tests."""

import json
import os
from contextlib import contextmanager
from io import StringIO

from django.core.management import call_command

from deploy.conf import load_config
from deploy.k8s import rollout
from tests.fake_apiserver import FakeApiServer

# The secrets a deploy needs, as the tests set them (canaries: a test can look for them where they must not be).
DEPLOY_SECRETS = {
    "DEPLOY_SECRET_KEY": "k" * 40,
    "DEPLOY_POSTGRES_PASSWORD": "pg-secret-pw",
    "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "pg-superuser-pw",
    "DEPLOY_REDIS_PASSWORD": "redis-secret-pw",
}

MODES = {
    "default": {},
    "alb": {"exposure": "alb", "certificate_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"},
    "nlb-internal-tls": {
        "load_balancer_scheme": "internal",
        "certificate_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123",
    },
    "external-postgres": {
        "postgres_mode": "external", "postgres_host": "db.abc.eu-west-1.rds.amazonaws.com",
        "postgres_cidr": "10.0.0.0/16",
    },
    "external-redis": {
        "redis_mode": "external", "redis_host": "10.0.8.9", "redis_cidr": "10.0.8.0/24", "redis_tls": True,
    },
    "all-external": {
        "postgres_mode": "external", "postgres_host": "10.1.2.3", "postgres_cidr": "10.1.0.0/16",
        "redis_mode": "external", "redis_host": "cache.example.internal", "redis_cidr": "10.2.0.0/16",
    },
    "cloudnative-pg": {"postgres_mode": "cloudnative-pg"},
    "storage-classes-priority": {
        "create_storage_classes": True, "efs_file_system_id": "fs-0123456789abcdef0",
        "priority_class": "web-critical", "image_digest": "sha256:" + "ab" * 32,
    },
    "no-observability": {"monitoring": False, "logging": False},
    "operator-monitoring": {"monitoring_mode": "operator"},
    "elasticsearch-ha": {"elasticsearch_replicas": 3, "log_retention_days": 30, "node_count_min": 4},
    "alert-receivers": {
        "alert_email_to": ["ops@example.com"], "alert_email_from": "alerts@example.com",
        "alert_smtp_smarthost": "smtp.example.com:587", "alert_smtp_username": "alerts", "alert_webhook": "slack",
        "alert_sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:pager", "aws_region": "eu-west-1",
        "alert_sns_role_arn": "arn:aws:iam::123456789012:role/alertmanager-sns",
    },
    "aws-secrets-s3-backups": {
        "secrets_source": "aws-secrets-manager", "aws_region": "eu-west-1",
        "secrets_reader_role_arn": "arn:aws:iam::123456789012:role/django-app-infra-SecretsReaderRole-ABC",
        "postgres_backup_bucket": "django-app-infra-backupbucket-abc123",
    },
}  # fmt: skip


def mode_config(mode, **extra):
    return load_config({**MODES[mode], **extra}, environ={})


def by_kind(manifests, kind, name=None):
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


@contextmanager
def fake_cluster(tmp_path, monkeypatch, **settings):
    """The fake API server, with KUBECONFIG pointing at it, and a deploy's environment around it.

    No ``DEPLOY_`` variable from outside the test; the secrets of :data:`DEPLOY_SECRETS` and ``settings``
    (``postgres_mode="cloudnative-pg"`` sets ``DEPLOY_POSTGRES_MODE``); HOME and the working folder in
    ``tmp_path``; the deploy's rollout polled every 50 ms instead of every second.
    """
    for name in list(os.environ):
        if name.startswith("DEPLOY_"):
            monkeypatch.delenv(name)
    for name, value in {**DEPLOY_SECRETS, **{f"DEPLOY_{k.upper()}": v for k, v in settings.items()}}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.05)
    with FakeApiServer(token="t0ken") as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        yield fake


def deploy(*args):
    """``k8s_deploy --json`` with a 30 s timeout, no prompt: its report."""
    out = StringIO()
    call_command("k8s_deploy", "--json", "--timeout", "30", *args, interactive=False, stdout=out)
    return json.loads(out.getvalue())
