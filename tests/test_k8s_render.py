import base64
import os
from pathlib import Path

import pytest
import yaml

from deploy.conf import DeploySecrets, load_config
from deploy.k8s import render
from deploy.k8s.render import RenderError, dump_yaml, render_manifests, to_yaml, write_manifests, yaml_value
from tests.k8s_helpers import MODES, by_kind, mode_config

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_each_mode_matches_its_golden_file(mode):
    text = to_yaml(render_manifests(mode_config(mode)))
    golden = GOLDEN / f"mode-{mode}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "run UPDATE_GOLDEN=1 pytest tests/test_k8s_render.py to accept a change"


# Strings where libyaml's emitter writes other bytes than PyYAML's (escapes, line breaks in double quotes).
_EMITTER_TRAPS = ["é ü 中文 😀", "\x85", "\x7f", "tab\there", "a \nb", "ends in a space\n ", "x " * 70 + "\ny", 'q"\n']
_DUMPS = [(render._BlockDumper, {"sort_keys": False, "allow_unicode": True, "width": 120}), (yaml.SafeDumper, {})]


@pytest.mark.parametrize("mode", ["default", "cloudnative-pg", "alert-receivers", "aws-secrets-s3-backups"])
def test_libyaml_writes_what_pyyaml_writes_where_dump_yaml_uses_it(mode):
    """dump_yaml (to_yaml, the configuration files, the deploy's diff) takes libyaml's emitter only where it
    writes PyYAML's bytes: every object of the stack, and strings where the two differ, give PyYAML's text;
    most objects go through libyaml."""
    manifests = render_manifests(mode_config(mode))
    trapped = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "data": {"k\ney": "v"}}
    trapped["data"].update({f"k{i}": text for i, text in enumerate(_EMITTER_TRAPS)})
    fast = 0
    for manifest in [*manifests, trapped, *({"k": text} for text in _EMITTER_TRAPS)]:
        for dumper, options in _DUMPS:
            pure = yaml.dump(manifest, Dumper=dumper, **options)
            assert dump_yaml(manifest, dumper, **options) == pure
            if render._libyaml_writes_the_same(manifest, dumper):
                assert yaml.dump(manifest, Dumper=render._C_DUMPERS[dumper], **options) == pure
                fast += dumper is render._BlockDumper
    assert fast >= len(manifests) * 3 // 4 or not render._C_DUMPERS
    if render._C_DUMPERS:  # the traps are traps: libyaml writes other bytes for some (kept on PyYAML above)
        assert any(yaml.dump({"k": t}, Dumper=yaml.CSafeDumper) != yaml.safe_dump({"k": t}) for t in _EMITTER_TRAPS)


# Data libyaml's emitter writes otherwise whatever the strings' characters: an empty key and a key of 123 to 128
# characters (PyYAML makes them "? key" entries, libyaml simple keys), and a kept literal block ("\n", "x\n\n")
# with more after it (libyaml then ends the document with "...", PyYAML only when the block ends it).
_SHAPE_TRAPS = [
    {"": 1},
    {"a" * 60 + " " + "b" * 64: "v"},
    {"k": {"c" * 125: [1]}},
    {"k": "\n", "l": 1},
    {"k": ["x\n\n", None]},
]


@pytest.mark.parametrize("data", _SHAPE_TRAPS)
def test_dump_yaml_writes_pyyamls_bytes_for_odd_keys_and_kept_blocks(data):
    for dumper, options in _DUMPS:
        assert dump_yaml(data, dumper, **options) == yaml.dump(data, Dumper=dumper, **options)
    if render._C_DUMPERS:  # a trap: libyaml writes other bytes for it
        dumper, options = _DUMPS[0]
        assert yaml.dump(data, Dumper=render._C_DUMPERS[dumper], **options) != yaml.dump(data, Dumper=dumper, **options)


@pytest.mark.parametrize(
    "text, remembered",
    [
        ("a: [1, 2.5, true, null, '3']\n---\nb: {c: d}\n", True),
        ("a: &x [1]\nb: *x\n", False),  # an alias: YAML gives one list twice
        ("a: 2024-01-01\n", False),  # a date
        ("1: one\n", False),  # a key JSON would make a string
    ],
)
def test_a_rendered_text_parses_as_yaml_parses_it_remembered_or_not(text, remembered):
    render._PARSED.pop(text, None)
    first = render._documents(text)
    assert first == [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert (text in render._PARSED) is remembered
    first[0]["mutated"] = True
    again = render._documents(text)
    assert again == [doc for doc in yaml.safe_load_all(text) if doc is not None] and again[0] is not first[0]
    assert [type(v) for v in again[0].values()] == [type(v) for v in yaml.safe_load(text.split("---")[0]).values()]


def test_render_is_deterministic_and_in_rank_order():
    first = render_manifests(load_config({}, environ={}))
    assert first == render_manifests(load_config({}, environ={}))
    kinds = [m["kind"] for m in first]
    assert kinds[0] == "Namespace"
    assert (
        kinds.index("ConfigMap")
        < kinds.index("Job")
        < kinds.index("Deployment")
        < kinds.index("HorizontalPodAutoscaler")
    )


def test_nlb_mode_exposes_a_load_balancer_service():
    manifests = render_manifests(mode_config("default"))
    (service,) = by_kind(manifests, "Service", "django-app")
    assert service["spec"]["type"] == "LoadBalancer"
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
    assert not by_kind(manifests, "Ingress")


def test_alb_mode_has_an_ingress_with_certificate_and_redirect():
    manifests = render_manifests(mode_config("alb"))
    (ingress,) = by_kind(manifests, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
    assert annotations["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["app.example.com"]
    (service,) = by_kind(manifests, "Service", "django-app")
    assert service["spec"]["type"] == "ClusterIP"


def test_external_services_remove_their_objects_and_open_egress_to_their_cidr():
    manifests = render_manifests(mode_config("all-external"))
    names = {m["metadata"]["name"] for m in manifests}
    assert not {n for n in names if "postgres" in n or "redis" in n}
    (policy,) = by_kind(manifests, "NetworkPolicy", "django-app")
    peers = [peer for rule in policy["spec"]["egress"] for peer in rule["to"]]
    assert {"ipBlock": {"cidr": "10.1.0.0/16"}} in peers
    assert {"ipBlock": {"cidr": "10.2.0.0/16"}} in peers


def test_deployment_is_hardened_and_owned_by_the_autoscaler():
    manifests = render_manifests(mode_config("storage-classes-priority"))
    (deployment,) = by_kind(manifests, "Deployment", "django-app")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "replicas" not in spec
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["image"] == "django-app@sha256:" + "ab" * 32
    assert "checkov.io/skip1" not in deployment["metadata"].get("annotations", {})
    assert pod["securityContext"]["runAsUser"] > 10000 and pod["securityContext"]["runAsGroup"] > 10000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {p: container[f"{p}Probe"]["httpGet"]["path"] for p in ("startup", "readiness", "liveness")} == {
        "startup": "/startupz", "readiness": "/readyz", "liveness": "/healthz",
    }  # fmt: skip
    assert set(container["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    assert pod["priorityClassName"] == "web-critical"
    assert pod["automountServiceAccountToken"] is False
    static = next(v for v in container["volumeMounts"] if v["name"] == "static")
    assert static["readOnly"] is True
    (sc,) = by_kind(manifests, "StorageClass", "efs-ap")
    assert sc["parameters"]["fileSystemId"] == "fs-0123456789abcdef0"
    assert by_kind(manifests, "PriorityClass", "web-critical")


def test_selectors_do_not_carry_the_version():
    manifests = render_manifests(load_config({"image_tag": "2.0.0"}, environ={}))
    (deployment,) = by_kind(manifests, "Deployment", "django-app")
    assert "app.kubernetes.io/version" not in deployment["spec"]["selector"]["matchLabels"]
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"


def test_long_names_are_cut_to_63_characters_and_stay_distinct():
    app = "a" * 60
    manifests = render_manifests(load_config({"app_name": app[:63]}, environ={}))
    names = [m["metadata"]["name"] for m in manifests]
    assert max(len(n) for n in names) <= 63
    assert len({(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in manifests}) == len(
        manifests
    )
    for m in manifests:
        for value in m["metadata"].get("labels", {}).values():
            assert len(value) <= 63


@pytest.mark.slow
@pytest.mark.parametrize(
    "value",
    [
        "key: value",
        "line one\nline two",
        "{{ config.namespace }} and {% if x %}",
        "- item\n  nested: [1, 2]",
        "'quoted' \"double\" # not a comment",
        "trailing spaces   \n",
        "unicode ✓ \u2028 separator \x85 next-line \U0001f600",
        "*anchor &alias !!tag",
        "",
        "null",
        "123",
        "yes",
    ],
)
def test_values_render_as_that_exact_string(value):
    config = load_config({"extra_env": {"GREETING": value}}, environ={})
    (configmap,) = by_kind(render_manifests(config), "ConfigMap", "django-app")
    assert configmap["data"]["GREETING"] == value
    # And through the YAML text a user would apply (read by libyaml, as fast as the render's own reads, where
    # PyYAML's pure-Python reader took most of this test's time):
    (reparsed,) = [
        d
        for d in yaml.load_all(to_yaml(render_manifests(config)), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "django-app"
    ]
    assert reparsed["data"]["GREETING"] == value


@pytest.mark.parametrize("value", [None, True, 3, 2.5, "s", ["a", {"b": "c: d"}], {"k": ["\n"]}])
def test_yaml_value_round_trips(value):
    assert yaml.safe_load(yaml_value(value)) == value


def test_a_project_template_overrides_the_builtin_one(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pdb.yaml").write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {{ name() }}\n"
        "  namespace: {{ namespace }}\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels: {{ selector('app') }}\n"
    )
    manifests = render_manifests(load_config({"template_dirs": [str(tmp_path)]}, environ={}))
    (pdb,) = by_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": pdb["spec"]["selector"]["matchLabels"]}}


def test_an_unknown_variable_names_the_template_line_and_variable(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pdb.yaml").write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {{ name() }}\n"
        "  namespace: {{ config.namspace }}\n"
    )
    with pytest.raises(RenderError, match=r"app/pdb.yaml, line 5: unknown variable 'namspace'"):
        render_manifests(load_config({"template_dirs": [str(tmp_path)]}, environ={}))


def test_a_template_that_builds_structure_from_a_value_is_refused(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pdb.yaml").write_text("apiVersion: v1\nkind: X\nmetadata:\n  name: {{ name() }}-x\n")
    with pytest.raises(RenderError, match=r"app/pdb\.yaml.*not valid YAML"):
        render_manifests(load_config({"template_dirs": [str(tmp_path)]}, environ={}))


SECRETS = DeploySecrets(
    secret_key="s3cr3t-K3y/with+chars",
    postgres_password="p@ss:w/rd",
    redis_password="r3d!s",
    postgres_superuser_password="su-p@ss",
)


def _secret_data(manifests):
    return {
        (m["metadata"]["name"], key): base64.b64decode(value).decode()
        for m in by_kind(manifests, "Secret")
        for key, value in m["data"].items()
    }


def test_secrets_are_redacted_unless_asked_for():
    config = load_config({}, environ={})
    redacted = _secret_data(render_manifests(config, SECRETS))
    assert set(redacted.values()) == {"<redacted>"}
    real = _secret_data(render_manifests(config, SECRETS, redact=False))
    assert real[("django-app", "SECRET_KEY")] == SECRETS.secret_key
    assert real[("django-app", "DATABASE_URL")] == (
        "postgres://app:p%40ss%3Aw%2Frd@django-app-postgres.django-app.svc:5432/app"
    )
    assert real[("django-app", "REDIS_URL")] == "redis://:r3d%21s@django-app-redis.django-app.svc:6379/0"
    assert 'requirepass "r3d\\x21s"' in real[("django-app-redis", "redis.conf")]
    for configmap in by_kind(render_manifests(config, SECRETS, redact=False), "ConfigMap"):
        assert not any(s in yaml.safe_dump(configmap) for s in ("s3cr3t", "p@ss", "r3d!s"))


def test_missing_secrets_are_named_when_they_are_needed():
    with pytest.raises(
        RenderError,
        match="DEPLOY_SECRET_KEY, DEPLOY_POSTGRES_PASSWORD, DEPLOY_REDIS_PASSWORD, DEPLOY_POSTGRES_SUPERUSER_PASSWORD",
    ):
        render_manifests(load_config({}, environ={}), DeploySecrets(), redact=False)
    # External Redis may have no password (ElastiCache without AUTH).
    render_manifests(
        mode_config("external-redis"), DeploySecrets("k", "p", postgres_superuser_password="su"), redact=False
    )


def test_output_writes_a_kustomization_and_refuses_foreign_folders(tmp_path):
    manifests = render_manifests(load_config({}, environ={}))
    out = tmp_path / "k8s"
    files = write_manifests(manifests, out)
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [f.name for f in files]
    assert len(files) == len(manifests)
    assert [yaml.safe_load(f.read_text()) for f in files] == manifests
    # Rewriting the same folder replaces our files.
    write_manifests(manifests[:3], out)
    assert len(list(out.iterdir())) == 4
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RenderError, match="did not write"):
        write_manifests(manifests, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert len(list(out.iterdir())) == 5
