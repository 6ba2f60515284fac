"""Render the Kubernetes manifests of a :class:`~deploy.conf.DeployConfig`.

Templates are Jinja files under ``k8s_templates/<component>/``. Rendering is
pure: it reads templates and returns a list of dicts, with no other I/O.

Safety of values: every ``{{ expression }}`` is emitted as one YAML value,
quoted by PyYAML's own emitter (strings double-quoted and escaped, lists and
mappings in flow style), so no value, whatever it contains (``: ``, a newline,
``{{``), can change the structure of the document. An undefined variable is
an error naming the template, its line and the variable.

Wiring: the rendered set is read as one system before it is returned
(``wiring.py``): a name that resolves to no Service, a selector that selects
nothing, or a NetworkPolicy that allows more or less than the stack needs is
a :class:`RenderError` naming the object and the flow.

Overrides: the search path is ``DEPLOY['template_dirs']`` then the built-in
``k8s_templates/``; a template is found by its relative name in the first
folder that has it, so a project replaces ``app/deployment.yaml`` by putting
its own file at that relative path.
"""

import base64
import functools
import hashlib
import json
import re
import traceback
from pathlib import Path
from urllib.parse import quote

import jinja2
import yaml

from deploy.conf import DeploySecrets
from deploy.k8s import backup, cnpg, external_secrets, kinds, names, observability, wiring
from deploy.k8s.exposure import exposure


def _builtin_templates():
    """The templates that come with the deploy app.

    In this repository they are its top-level ``k8s_templates/``; ``pip install``
    ships them inside the app, as ``deploy/k8s_templates/`` (see pyproject.toml).
    """
    installed = Path(__file__).resolve().parents[1] / "k8s_templates"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "k8s_templates"


BUILTIN_TEMPLATES = _builtin_templates()
REDACTED = "<redacted>"
POSTGRES_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "128Mi"},
    "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "512Mi"},
}


class RenderError(Exception):
    """A template could not be rendered; the message names the template."""


# --- quoting ---------------------------------------------------------------


def yaml_value(value):
    """One YAML value, in flow style, that parses back to exactly ``value``."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return _quoted(value) if type(value) is str else _quote(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_value(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    raise RenderError(f"cannot put a {type(value).__name__} into a manifest: {value!r}")


def _quote(text):
    text = yaml.dump(text, Dumper=yaml.SafeDumper, default_style='"', width=2**31, allow_unicode=True)
    return text.rstrip("\n").removesuffix("\n...")


# A string as one double-quoted YAML scalar, remembered: a stack's values recur in every render.
_quoted = functools.lru_cache(maxsize=2**14)(_quote)


# --- the context templates see -------------------------------------------

APP_UID = 10001
NOBODY = 65534
# The image whose tag is each component's version label: a new app release
# then does not restart PostgreSQL or Redis through a changed pod label.
COMPONENT_IMAGES = {
    "postgres": lambda c: c.postgres_image,
    "postgres-backup": lambda c: c.postgres_image,
    "redis": lambda c: c.redis_image,
    "prometheus": lambda c: c.prometheus_image,
    "alertmanager": lambda c: c.alertmanager_image,
    "grafana": lambda c: c.grafana_image,
    "kube-state-metrics": lambda c: c.kube_state_metrics_image,
    "node-exporter": lambda c: c.node_exporter_image,
    "elasticsearch": lambda c: c.elasticsearch_image,
    "kibana": lambda c: c.kibana_image,
    "fluentd": lambda c: c.fluentd_image,
    "efk-setup": lambda c: c.curl_image,
}
# Components that are other software: their name label is the software's.
THIRD_PARTY = {
    "prometheus",
    "alertmanager",
    "grafana",
    "kube-state-metrics",
    "node-exporter",
    "elasticsearch",
    "kibana",
    "fluentd",
    "efk-setup",
}


def pod_security_context(uid):
    """Pod Security "restricted", with a UID and GID above 10000."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(uid):
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "capabilities": {"drop": ["ALL"]},
    }


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def _dialable(url):
    """An http(s) URL Alertmanager accepts, with a port it can dial (the egress policy opens that port)."""
    return bool(re.fullmatch(r"https?://[^\s/]+\S*", url)) and observability.url_port(url) is not None


def _secret_data(values, redact):
    return {key: _b64(REDACTED if redact else value) for key, value in values.items()}


def stack_env(config):
    """The app's environment as the stack sets it (ConfigMap), before DEPLOY['extra_env']."""
    return {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "ALLOWED_HOSTS": ",".join(config.hosts),
        "CSRF_TRUSTED_ORIGINS": ",".join(f"https://{h}" for h in config.hosts),
        "STATIC_ROOT": "/var/www/static",
        "LOG_LEVEL": config.log_level,
        "WEB_CONCURRENCY": str(config.web_concurrency),
        "GUNICORN_THREADS": str(config.gunicorn_threads),
        "GUNICORN_GRACEFUL_TIMEOUT": str(max(config.termination_grace_seconds - 10, 5)),
        "PROMETHEUS_MULTIPROC_DIR": "/run/metrics",
        "SECRET_KEY_FILE": "/run/secrets/app/SECRET_KEY",
        "DATABASE_URL_FILE": "/run/secrets/app/DATABASE_URL",
        "REDIS_URL_FILE": "/run/secrets/app/REDIS_URL",
        **exposure(config).app_env(),
    }


# Variables the app reads that the stack decides even though it does not set them.
_ALSO_OWNED = ("DEBUG", "DJANGO_READ_DOT_ENV_FILE")


def owned_env_names(config):
    """Names DEPLOY['extra_env'] may not set: what the stack sets, and what its ``*_FILE`` variables stand for."""
    stack = stack_env(config)
    return sorted({*stack, *(name.removesuffix("_FILE") for name in stack), *_ALSO_OWNED})


def _check_extra_env(config):
    owned = owned_env_names(config)
    clash = sorted(set(config.extra_env) & set(owned))
    if clash:
        raise RenderError(
            f"DEPLOY['extra_env'] (environment variable DEPLOY_EXTRA_ENV) must not set {', '.join(clash)}: "
            f"the stack owns {'it' if len(clash) == 1 else 'them'} (it sets or decides {', '.join(owned)}). "
            "Remove it from DEPLOY['extra_env'] and use the setting that owns it (docs/reference/configuration.md)."
        )


def redis_conf_string(value):
    """``value`` as one redis.conf argument: double-quoted, every byte outside [A-Za-z0-9] as \\xHH.

    Redis reads a double-quoted argument with these escapes back to exactly
    ``value``, so no character (a newline, a quote, a space, '#') can end the
    argument, add a directive or start a comment.
    """
    return '"' + "".join(chr(b) if chr(b).isalnum() and b < 128 else f"\\x{b:02x}" for b in value.encode()) + '"'


def app_database_url(config, password):
    """The app's DATABASE_URL with ``password`` (already URL-quoted, or a template expression) in it."""
    postgres = names.endpoint(config, "postgres")
    query = "" if postgres.in_cluster else "?sslmode=require"
    return f"postgres://{config.postgres_user}:{password}@{postgres.address}/{config.postgres_database}{query}"


def app_redis_url(config, password):
    """The app's REDIS_URL; ``password`` already URL-quoted (or a template expression), empty for none."""
    auth = f":{password}@" if password else ""
    return f"{'rediss' if config.redis_tls else 'redis'}://{auth}{names.endpoint(config, 'redis').address}/0"


def redis_conf_text(config, requirepass):
    """The in-cluster Redis's whole redis.conf; ``requirepass`` is its one argument, already quoted."""
    return "\n".join(
        [
            f"requirepass {requirepass}",
            f"maxmemory {config.redis_max_memory}",
            "maxmemory-policy allkeys-lru",
            'save ""',
            "appendonly no",
            "protected-mode yes",
            "port 6379",
            "",
        ]
    )


def build_context(config, secrets, redact, env=None):
    app = config.app_name

    def name(component=None):
        return names.resource_name(app, component)

    def labels(component):
        image = COMPONENT_IMAGES.get(component)
        found = names.labels(app, component, image(config).rpartition(":")[2] if image else config.image_tag)
        if component in THIRD_PARTY:
            found["app.kubernetes.io/name"] = component
        return found

    def selector(component):
        found = names.selector_labels(app, component)
        if component in THIRD_PARTY:
            found["app.kubernetes.io/name"] = component
        return found

    postgres, redis = names.endpoint(config, "postgres"), names.endpoint(config, "redis")
    database_url = app_database_url(config, quote(secrets.postgres_password, safe=""))
    redis_url = app_redis_url(config, quote(secrets.redis_password, safe="") if secrets.redis_password else "")

    app_env = stack_env(config)
    _check_extra_env(config)
    app_env.update(
        {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in config.extra_env.items()}
    )

    redis_conf = redis_conf_text(config, redis_conf_string(secrets.redis_password))
    config_checksum = hashlib.sha256(json.dumps(app_env, sort_keys=True).encode()).hexdigest()
    migrate_hash = hashlib.sha256(f"{config.image}|{config_checksum}".encode()).hexdigest()[:8]

    return {
        "config": config,
        "exposure": exposure(config),
        "managed_by": names.MANAGED_BY,
        "pod_security_context": pod_security_context(APP_UID),
        "container_security_context": container_security_context(APP_UID),
        "pod_security_context_nobody": pod_security_context(NOBODY),
        # The PostgreSQL server's container, whichever runs it (the StatefulSet or CloudNativePG's instances).
        "postgres_resources": POSTGRES_RESOURCES,
        "container_security_context_nobody": container_security_context(NOBODY),
        "name": name,
        "labels": labels,
        "selector": selector,
        "namespace": config.namespace,
        "image": config.image,
        "app_env": app_env,
        "config_checksum": config_checksum,
        "migrate_job_name": names.truncate(f"{name('migrate')}-{migrate_hash}"),
        # Every Service's name, host and ports, and where the app finds PostgreSQL and Redis (names.py).
        "service": lambda component: names.service(config, component),
        "postgres": postgres,
        "redis": redis,
        "postgres_host": postgres.host,
        "redis_host": redis.host,
        "redacted": redact,
        "backup": backup,
        # secrets_source 'aws-secrets-manager': ExternalSecrets in place of the Secrets (external_secrets.py).
        "external_secrets": config.secrets_source == "aws-secrets-manager",
        "external_secret_spec": lambda component: external_secrets.external_secret_spec(config, component),
        "secret_store_spec": lambda: external_secrets.secret_store_spec(config),
        "secret_store_name": external_secrets.store_name(config),
        "external_secrets_api": external_secrets.API_VERSION,
        "app_secret": _secret_data(
            {"SECRET_KEY": secrets.secret_key, "DATABASE_URL": database_url, "REDIS_URL": redis_url}, redact
        ),
        "postgres_secret": _secret_data(
            {"password": secrets.postgres_password, "superuser-password": secrets.postgres_superuser_password}, redact
        ),
        # CloudNativePG's bootstrap reads the owner's name and password from a basic-auth Secret.
        "postgres_app_secret": _secret_data(
            {"username": config.postgres_user, "password": secrets.postgres_password}, redact
        ),
        # The labels that select the PostgreSQL pods (every CloudNativePG instance, whichever is primary);
        # None when PostgreSQL is outside the cluster.
        "postgres_pods": (
            {cnpg.CLUSTER_LABEL: names.cnpg_cluster_name(config.app_name)}
            if config.postgres_operator
            else selector("postgres")
            if config.postgres_in_cluster
            else None
        ),
        "cnpg": cnpg,
        "cnpg_cluster": names.cnpg_cluster_name(config.app_name),
        "kube_apiserver_port": wiring.KUBE_APISERVER_PORT,
        "redis_secret": _secret_data({"password": secrets.redis_password, "redis.conf": redis_conf}, redact),
        **observability_context(config, env, name),
        "alert_receivers_secret": _secret_data(
            {
                observability.RECEIVER_SECRET_KEYS["webhook"]: secrets.alert_webhook_url,
                observability.RECEIVER_SECRET_KEYS["email"]: secrets.alert_smtp_password,
            },
            redact,
        ),
        "alertmanager_config_spec": observability.alertmanager_config_spec(config, name("alert-receivers")),
        # From the same file as the Secret (redacted URLs keep their port): a webhook on :8080 gets :8080.
        "alertmanager_egress_ports": observability.notification_ports(
            observability.alertmanager_config(config, secrets, redact)
        ),
        "notification_ports_annotation": observability.NOTIFICATION_PORTS_ANNOTATION,
        "alertmanager_secret": _secret_data(
            {"alertmanager.yml": dump_yaml(observability.alertmanager_config(config, secrets, redact))}, redact
        ),
        # Alertmanager reads its file at start only: a settings change (routes, receivers) restarts it. Taken
        # from the redacted file, so that no secret is hashed into a readable annotation; a rotated secret
        # needs the restart docs/runbooks.md says.
        "alertmanager_checksum": hashlib.sha256(
            dump_yaml(observability.alertmanager_config(config, secrets, True)).encode()
        ).hexdigest(),
    }


def observability_context(config, env, name):
    groups = observability.alert_rules(config)
    setup = observability.efk_setup_script(config)
    dashboard = env.loader.get_source(env, "monitoring/dashboard.json")[0] if env is not None else "{}"
    return {
        "prometheus_yml": dump_yaml(observability.prometheus_config(config), sort_keys=False),
        "alert_rule_groups": groups,
        "alert_rules_yml": dump_yaml({"groups": groups}, sort_keys=False),
        "dashboard_json": dashboard,
        "grafana_datasources_yml": dump_yaml(observability.grafana_datasources(config), sort_keys=False),
        "grafana_dashboards_yml": dump_yaml(observability.grafana_dashboard_providers(config), sort_keys=False),
        "grafana_dashboards_path": observability.GRAFANA_DASHBOARDS,
        "fluent_conf": observability.fluentd_config(config),
        "efk_setup_sh": setup,
        "efk_setup_job_name": names.truncate(f"efk-setup-{hashlib.sha256(setup.encode()).hexdigest()[:8]}"),
        "es_master_nodes": ",".join(f"{name('elasticsearch')}-{i}" for i in range(config.elasticsearch_replicas)),
    }


# --- rendering -------------------------------------------------------------


def components(config):
    """The template folders this configuration renders, in order."""
    enabled = [("base", True), ("storage", config.create_storage_classes), ("app", True)]
    enabled += [("postgres", config.postgres_in_cluster), ("cnpg", config.postgres_operator)]
    enabled += [("redis", config.redis_in_cluster), ("network", True)]
    enabled += [("monitoring", config.monitoring), ("logging", config.logging)]
    return [component for component, on in enabled if on]


def search_path(config):
    return [Path(d) for d in config.template_dirs] + [BUILTIN_TEMPLATES]


def template_names(config):
    """Relative names of the templates to render: the union over the search path."""
    found = set()
    for component in components(config):
        for folder in search_path(config):
            base = folder / component
            if base.is_dir():
                found.update(str(p.relative_to(folder)) for p in base.glob("*.yaml") if not p.name.startswith("_"))
    return sorted(found)


def _environment(config):
    missing = [str(d) for d in config.template_dirs if not Path(d).is_dir()]
    if missing:
        raise RenderError(
            f"DEPLOY['template_dirs'] names folder(s) that do not exist: {', '.join(missing)}. "
            "Create them or remove them from the setting."
        )
    return _environment_for(tuple(str(p) for p in search_path(config)))


# One environment per search path, kept: Jinja caches each compiled template in it (and recompiles a template whose
# file changed, auto_reload), so a second render in the same process does not compile the ~40 templates again.
@functools.lru_cache(maxsize=8)
def _environment_for(folders):
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(folders)),
        undefined=jinja2.StrictUndefined,
        finalize=yaml_value,
        # Not HTML: every value is quoted for YAML by finalize=yaml_value instead.
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["combine"] = lambda first, second: {**first, **second}
    return env


def _template_line(exc, template):
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(template):
            return frame.lineno
    return getattr(exc, "lineno", None)


# libyaml's safe loader when PyYAML has it: the same documents, parsed several times faster.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Rendered text -> its documents as JSON, for texts whose documents JSON gives back equal (no date, no
# non-string key) and that have no alias (whose nodes YAML shares): a stack's templates render to the same
# texts again and again, and JSON's parser is many times faster than YAML's constructor. Bounded: the oldest
# half goes when it is full.
_PARSED = {}
_PARSED_MAX = 1024
_ALIAS = re.compile(r"(?:^|[\s\[{,])\*[^\s,\[\]{}\"']", re.MULTILINE)


def _documents(text):
    if (known := _PARSED.get(text)) is not None:
        return json.loads(known)
    documents = [doc for doc in yaml.load_all(text, Loader=_SAFE_LOADER) if doc is not None]
    try:
        known = json.dumps(documents, allow_nan=False)
    except (TypeError, ValueError):
        return documents
    if json.loads(known) == documents and not _ALIAS.search(text):
        _PARSED[text] = known
        if len(_PARSED) > _PARSED_MAX:
            for old in list(_PARSED)[: _PARSED_MAX // 2]:
                _PARSED.pop(old, None)
    return documents


def render_template(env, template, context):
    """Render one template into its documents (dicts)."""
    try:
        text = env.get_template(template).render(context)
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, template)
        match = re.search(r"'([^']+)' (?:is undefined|has no attribute '([^']+)')", str(exc))
        variable = (match.group(2) or match.group(1)) if match else str(exc)
        where = f"{template}, line {line}" if line else template
        raise RenderError(f"{where}: unknown variable {variable!r} ({exc}).") from None
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{template}, line {exc.lineno}: template syntax error: {exc.message}.") from None
    try:
        documents = _documents(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{template}, rendered line {mark.line + 1}" if mark else template
        raise RenderError(
            f"{where}: the rendered text is not valid YAML ({getattr(exc, 'problem', exc)}). "
            "Each {{ expression }} must stand for one whole YAML value."
        ) from None
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
            raise RenderError(
                f"{template}: every document must be a Kubernetes object with apiVersion, kind, metadata."
            )
        doc.setdefault("metadata", {})
    return documents


def render_manifests(config, secrets=None, redact=True):
    """Render every manifest of ``config``, in apply order.

    With ``redact`` (the default), Secret values are replaced by a placeholder.
    Without it, every secret must be set: a missing one is a :class:`RenderError`
    naming its environment variable.
    """
    secrets = secrets or DeploySecrets()
    if config.postgres_mode == "rds" and not (config.postgres_host and config.postgres_cidr):
        raise RenderError(
            "DEPLOY['postgres_mode'] is 'rds' but the RDS instance's address is not known: it comes from the "
            "infrastructure stack's outputs, which k8s_deploy reads (deploy/aws/rds.py). Render through "
            "k8s_deploy, with AWS credentials, after 'manage.py aws_provision'."
        )
    if config.secrets_source == "aws-secrets-manager" and not config.secrets_reader_role_arn:
        raise RenderError(
            "DEPLOY['secrets_reader_role_arn'] (environment variable DEPLOY_SECRETS_READER_ROLE_ARN) is required "
            "when DEPLOY['secrets_source'] is 'aws-secrets-manager': set it to the SecretsReaderRoleArn output "
            "that aws_provision prints (docs/security.md#secrets-from-aws-secrets-manager)."
        )
    if not redact:
        missing = _missing_secrets(config, secrets)
        if missing:
            raise RenderError(
                f"Secret value(s) missing: set {', '.join(missing)} in the environment "
                "(they are never read from settings)."
            )
        if (
            config.postgres_in_cluster
            and config.secrets_source == "environment"
            and secrets.postgres_superuser_password == secrets.postgres_password
        ):
            raise RenderError(
                "DEPLOY_POSTGRES_SUPERUSER_PASSWORD is the same as DEPLOY_POSTGRES_PASSWORD: the app's user would "
                "hold the superuser's password. Generate a different one (docs/security.md#secrets)."
            )
        if config.monitoring and config.alert_webhook and not _dialable(secrets.alert_webhook_url):
            # Alertmanager would refuse its whole file at its next start; the value itself is never shown.
            raise RenderError(
                "DEPLOY_ALERT_WEBHOOK_URL is not an http(s) URL with a port from 1 to 65535 "
                "(https://hooks.slack.com/services/..., or your webhook's address): set it to the URL the receiver "
                "gives you."
            )
        if (
            config.monitoring
            and config.monitoring_mode == "standalone"
            and config.alert_watchdog
            and not _dialable(secrets.alert_watchdog_url)
        ):
            raise RenderError(
                "DEPLOY_ALERT_WATCHDOG_URL is not an http(s) URL with a port from 1 to 65535: set it to the ping "
                "URL your dead man's switch service gives you (docs/runbooks.md#watchdog)."
            )
    env = _environment(config)
    context = build_context(config, secrets, redact, env)
    manifests = []
    for template in template_names(config):
        manifests.extend(render_template(env, template, context))
    seen = {}
    for manifest in manifests:
        key = (manifest["kind"], manifest["metadata"].get("namespace"), manifest["metadata"].get("name"))
        if key in seen:
            raise RenderError(f"{key[0]} {key[2]!r} is rendered twice (by {seen[key]} and another template).")
        seen[key] = manifest["metadata"].get("name")
    manifests = sorted(manifests, key=kinds.sort_key)
    problems = wiring.wiring_problems(manifests, config)
    if problems:
        raise RenderError(
            f"the rendered objects do not work together ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
    return manifests


def redacted(manifests):
    """``manifests`` as a render with ``redact`` gives them: every Secret value replaced by the placeholder.

    So that one run renders once: the real values it applies, the redacted ones it writes.
    """
    return [
        {
            **m,
            **{
                part: dict.fromkeys(m[part], _b64(REDACTED) if part == "data" else REDACTED)
                for part in ("data", "stringData")
                if m.get(part)
            },
        }
        if m["kind"] == "Secret"
        else m
        for m in manifests
    ]


def _missing_secrets(config, secrets):
    needed = []
    if config.secrets_source == "environment":  # otherwise they stay in AWS Secrets Manager
        needed += ["DEPLOY_SECRET_KEY", "DEPLOY_POSTGRES_PASSWORD"]
        if config.redis_in_cluster:
            needed.append("DEPLOY_REDIS_PASSWORD")
        if config.postgres_in_cluster:
            needed.append("DEPLOY_POSTGRES_SUPERUSER_PASSWORD")
    if config.monitoring and config.alert_webhook:
        needed.append("DEPLOY_ALERT_WEBHOOK_URL")
    if config.monitoring and config.alert_email_to and config.alert_smtp_username:
        needed.append("DEPLOY_ALERT_SMTP_PASSWORD")
    if config.monitoring and config.monitoring_mode == "standalone" and config.alert_watchdog:
        needed.append("DEPLOY_ALERT_WATCHDOG_URL")
    return [name for name in secrets.missing() if name in needed]


# --- writing ---------------------------------------------------------------


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so ConfigMaps stay readable."""


def _str_representer(dumper, data):
    if "\n" in data and not re.search(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]| \n|\n\s*\Z.", data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_BlockDumper.add_representer(str, _str_representer)
_C_DUMPERS = {}
if getattr(yaml, "__with_libyaml__", False):

    class _CBlockDumper(yaml.CSafeDumper):
        """_BlockDumper on libyaml's emitter."""

    _CBlockDumper.add_representer(str, _str_representer)
    _C_DUMPERS = {_BlockDumper: _CBlockDumper, yaml.SafeDumper: yaml.CSafeDumper}

# In the data's compact JSON, what may make libyaml's emitter write other bytes than PyYAML's: a character
# outside printable ASCII (libyaml escapes some that PyYAML writes as they are), a string ending in a space,
# strings PyYAML would double-quote over several lines (the two break those lines in other places): with
# literal blocks, a line break after a space or in a key; without, any line break; with literal blocks, a string
# kept with its final line breaks ("\n", "x\n\n": libyaml ends the document with "..." when anything follows
# it); and an empty key or one of 100 characters or more (PyYAML writes those of 123 to 128 as "? key" entries).
_KEYS_DIFFER = r'|[{,]"[^"]{100,}":|[{,]"(?=[^"]*\\")(?:[^"\\]|\\.){100,}":|[{,]"":'
_EMITTERS_DIFFER = re.compile(r'\\[utrbf]|[^\x20-\x7e]| "| \\n|\\n\\n"|"\\n"' + _KEYS_DIFFER)
_EMITTERS_DIFFER_FLOW = re.compile(r'\\[utrbfn]|[^\x20-\x7e]| "' + _KEYS_DIFFER)


def _multi_line_key(data):
    if isinstance(data, dict):
        return any("\n" in str(key) or _multi_line_key(value) for key, value in data.items())
    return isinstance(data, list) and any(_multi_line_key(item) for item in data)


def _libyaml_writes_the_same(data, dumper):
    if dumper not in _C_DUMPERS:
        return False
    try:
        text = json.dumps(data, separators=(",", ":"))
    except (TypeError, ValueError):
        return False
    if dumper is not _BlockDumper:
        return not _EMITTERS_DIFFER_FLOW.search(text)
    return not _EMITTERS_DIFFER.search(text) and not ("\\n" in text and _multi_line_key(data))


def dump_yaml(data, dumper=yaml.SafeDumper, **options):
    """``yaml.dump``, on libyaml's emitter (ten times faster) where it writes the same bytes as PyYAML's
    (tests/test_k8s_render.py compares the two on several modes' stacks), else on PyYAML's."""
    if _libyaml_writes_the_same(data, dumper):
        dumper = _C_DUMPERS[dumper]
    return yaml.dump(data, Dumper=dumper, **options)


def to_yaml(manifests):
    """One multi-document YAML text."""
    return "".join(
        "---\n" + dump_yaml(m, _BlockDumper, sort_keys=False, allow_unicode=True, width=120) for m in manifests
    )


def file_name(manifest):
    meta = manifest["metadata"]
    rank = kinds.rank(manifest["kind"])
    namespace = meta.get("namespace", "cluster")
    return f"{rank:02d}-{namespace}-{manifest['kind'].lower()}-{meta['name']}.yaml"


_OUR_FILE = re.compile(r"^\d\d-[a-z0-9-]+\.yaml$")


def _ours(path):
    return path.is_file() and (path.name == "kustomization.yaml" or bool(_OUR_FILE.match(path.name)))


def write_manifests(manifests, directory):
    """One file per object plus a kustomization.yaml; stale files of ours removed.

    Files are written to a temporary folder beside ``directory`` and swapped in,
    so a failure never leaves a half-written set.
    """
    import shutil
    import tempfile

    directory = Path(directory)
    if directory.exists():
        foreign = [p.name for p in directory.iterdir() if not _ours(p)]
        if foreign:
            raise RenderError(
                f"{directory} holds files this tool did not write ({', '.join(sorted(foreign)[:5])}): "
                "choose an empty or new folder for --output."
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        files = []
        for manifest in manifests:
            name = file_name(manifest)
            (staging / name).write_text(to_yaml([manifest]))
            files.append(name)
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": files}
        (staging / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [directory / name for name in files]
