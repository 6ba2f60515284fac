"""Secrets from AWS Secrets Manager through the External Secrets Operator (DEPLOY['secrets_source']).

The rendered SecretStore and ExternalSecrets are validated against the operator's vendored CRDs; what the
operator would write (its Go templates filled with the values moto's Secrets Manager holds after aws_provision)
is compared with the Secrets the environment mode renders for the same values; the IAM statements are read
with the evaluator of test_delivery_aws.py; k8s_deploy applies the set with no secret in its environment.
"""

import base64
import json
import os
import re
from io import StringIO
from urllib.parse import quote, quote_plus

import boto3
import pytest
from django.core.management import call_command
from moto import mock_aws

from deploy.aws import cfn
from deploy.conf import DeploySecrets, load_config
from deploy.k8s import crds, names, rollout, validate
from deploy.k8s.render import render_manifests
from tests.aws_helpers import fake_aws_environment, without_cluster_output
from tests.fake_apiserver import FakeApiServer
from tests.test_delivery_aws import ACCOUNT, REGION, allows
from tests.test_k8s_deploy_command import SECRET_ENV, _leaks

READER = f"arn:aws:iam::{ACCOUNT}:role/shop-secrets-reader"
ESO = {"secrets_source": "aws-secrets-manager", "aws_region": REGION, "secrets_reader_role_arn": READER}


def eso_config(**extra):
    return load_config({**ESO, **extra}, environ={})


def custom_resources(manifests):
    return [m for m in manifests if m["apiVersion"].startswith("external-secrets.io/")]


# --- the rendered objects ----------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"postgres_mode": "external", "postgres_host": "db.example.com",
                                        "postgres_cidr": "10.1.0.0/16", "redis_mode": "external",
                                        "redis_host": "cache.example.com", "redis_cidr": "10.2.0.0/16"}])  # fmt: skip
def test_the_custom_resources_validate_against_the_vendored_crds(extra):
    manifests = render_manifests(eso_config(**extra))
    found = custom_resources(manifests)
    kinds = sorted(m["kind"] for m in found)
    expected = ["ExternalSecret"] * (3 if not extra else 1) + ["SecretStore"]
    assert kinds == expected
    assert ("external-secrets.io", "v1", "ExternalSecret") in crds._definitions()
    assert validate.schema_problems(manifests) == []
    # No Secret of the stack is rendered with values: only Alertmanager's (which holds none here) remains.
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"] == ["alertmanager-config"]


def test_a_field_the_crd_does_not_declare_or_a_wrong_value_is_refused():
    manifests = render_manifests(eso_config())
    external = next(m for m in manifests if m["kind"] == "ExternalSecret")
    external["spec"]["refreshIntervl"] = "1h"
    external["spec"]["target"]["creationPolicy"] = "Sometimes"
    store = next(m for m in manifests if m["kind"] == "SecretStore")
    store["spec"]["provider"]["aws"]["service"] = "KeyVault"
    problems = validate.schema_problems([external, store], versions=("1.33",))
    assert any("'refreshIntervl' was unexpected" in p for p in problems), problems
    assert any("spec.target.creationPolicy: 'Sometimes' is not one of" in p for p in problems), problems
    assert any("spec.provider.aws.service: 'KeyVault'" in p for p in problems), problems


def test_the_vendored_crds_are_the_recorded_upstream_files():
    import hashlib

    readme = (crds.CRD_DIR / "README.md").read_text()
    for path in sorted(crds.CRD_DIR.glob("*.yaml")):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in readme, path.name
    assert "v2.9.0" in readme


def test_the_reader_role_is_required_to_render_and_the_region_to_configure():
    from deploy.conf import ConfigError
    from deploy.k8s.render import RenderError

    with pytest.raises(RenderError, match=r"DEPLOY\['secrets_reader_role_arn'\].*SecretsReaderRoleArn"):
        render_manifests(load_config({**ESO, "secrets_reader_role_arn": ""}, environ={}))
    with pytest.raises(ConfigError, match=r"DEPLOY\['aws_region'\].*is required"):
        load_config({**ESO, "aws_region": ""}, environ={})


def _go_template(text, values):
    """The two forms of External Secrets' template (Go text/template) the render uses: {{ .k }}, {{.k|urlquery}}."""

    def fill(match):
        value = values[match.group(1)]
        return quote_plus(value) if match.group(2) else value  # Go's urlquery is url.QueryEscape

    result = re.sub(r"\{\{ ?\.(\w+)(\|urlquery)? ?\}\}", fill, text)
    assert "{{" not in result, result
    return result


def _operator_writes(manifest, store):
    """The Secret data the operator writes for ``manifest``, reading ``store`` (secret name -> value)."""
    spec = manifest["spec"]
    values = {item["secretKey"]: store[item["remoteRef"]["key"]] for item in spec["data"]}
    return {key: _go_template(text, values) for key, text in spec["target"]["template"]["data"].items()}


# --- the infrastructure -----------------------------------------------------------------


def tmp_path_of_build():
    from pathlib import Path

    return Path("build/cloudformation")


def _template(config=None):
    return cfn.render_template(config or load_config({"app_name": "shop"}, environ={}))


def _resolved(value, template):
    """Refs and GetAtts of the statements as AWS resolves them (a secret's ARN ends in six random characters)."""
    if isinstance(value, list):
        return [_resolved(v, template) for v in value]
    if isinstance(value, dict) and "Ref" in value:
        name = template["Resources"][value["Ref"]]["Properties"]["Name"]
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbC123"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical = value["Fn::GetAtt"][0]
        kind = template["Resources"][logical]["Type"]
        if kind == "AWS::KMS::Key":
            return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{logical}"
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{logical.lower()}-1a2b3c"
        return f"arn:aws:iam::{ACCOUNT}:role/{logical}"
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"].replace("${AWS::Region}", REGION)
        return re.sub(r"\$\{(\w+)\.Arn\}", lambda m: _resolved({"Fn::GetAtt": [m[1], "Arn"]}, template), text)
    if isinstance(value, dict):
        return {k: _resolved(v, template) for k, v in value.items()}
    return value


def _statements(template, logical):
    """Every Allow a role holds: its inline policies and the AWS::IAM::Policy resources attached to it."""
    properties = template["Resources"][logical]["Properties"]
    found = [s for p in properties.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": logical} in resource["Properties"]["Roles"]:
            found += resource["Properties"]["PolicyDocument"]["Statement"]
    return _resolved(found, template)


def test_only_the_reader_role_reads_the_secrets_and_only_the_operator_assumes_it():
    template = _template()
    secrets = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::SecretsManager::Secret"}
    arns = [_resolved({"Ref": logical}, template) for logical in secrets]
    assert sorted(r["Properties"]["Name"] for r in secrets.values()) == sorted(
        names.aws_secrets(load_config({"app_name": "shop"}, environ={})).values()
    )
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/AppSecretsKey"
    via = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    reader = _statements(template, "SecretsReaderRole")
    for arn in arns:
        assert allows(reader, "secretsmanager:GetSecretValue", arn)
        assert not allows(reader, "secretsmanager:PutSecretValue", arn)
    assert allows(reader, "kms:Decrypt", key, via)
    assert not allows(reader, "kms:Decrypt", key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"})
    other = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:shop-production/secret-key-XyZ789"
    assert not allows(reader, "secretsmanager:GetSecretValue", other)
    # Every other role of the stack: no secret, no key.
    roles = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::Role" and k != "SecretsReaderRole"]
    assert {"AppRole", "NodeRole", "ExternalSecretsRole"} <= set(roles)
    for role in roles:
        statements = _statements(template, role)
        assert not any(allows(statements, "secretsmanager:GetSecretValue", arn) for arn in arns), role
        assert not allows(statements, "kms:Decrypt", key, via), role
    # Managed policies could grant it too: none of these roles has one that reads Secrets Manager.
    for role in roles:
        managed = json.dumps(template["Resources"][role]["Properties"].get("ManagedPolicyArns", []))
        assert "SecretsManager" not in managed and "Administrator" not in managed, role
    # The operator's pod identity may assume the reader, nothing else may.
    operator = _statements(template, "ExternalSecretsRole")
    assert allows(operator, "sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/SecretsReaderRole")
    assert not allows(operator, "sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/AppRole")
    trust = _resolved(template["Resources"]["SecretsReaderRole"]["Properties"]["AssumeRolePolicyDocument"], template)
    assert [s["Principal"] for s in trust["Statement"]] == [{"AWS": f"arn:aws:iam::{ACCOUNT}:role/ExternalSecretsRole"}]
    association = template["Resources"]["ExternalSecretsIdentity"]["Properties"]
    assert (association["Namespace"], association["ServiceAccount"]) == ("external-secrets", "external-secrets")
    # Encrypted with the stack's own key, generated without punctuation (it sits unquoted in URLs, redis.conf).
    for resource in secrets.values():
        assert resource["Properties"]["KmsKeyId"] == {"Ref": "AppSecretsKey"}
        assert resource["Properties"]["GenerateSecretString"]["ExcludePunctuation"] is True
    assert template["Resources"]["AppSecretsKey"]["Properties"]["EnableKeyRotation"] is True


def test_each_environment_has_its_own_secrets():
    from tests.test_environments import DEPLOY

    staging = _template(load_config(DEPLOY, environ={}, environment="staging"))
    production = _template(load_config(DEPLOY, environ={}, environment="production"))

    def secret_names(template):
        return {r["Properties"]["Name"] for r in template["Resources"].values()
                if r["Type"] == "AWS::SecretsManager::Secret"}  # fmt: skip

    assert secret_names(staging) & secret_names(production) == set()
    assert all(name.startswith("shop-staging/") for name in secret_names(staging))


@pytest.fixture
def aws(monkeypatch, tmp_path):
    fake_aws_environment(monkeypatch, REGION)
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        yield


@pytest.mark.slow  # moto creates the whole infrastructure stack (~30 s on a loaded machine)
def test_aws_provision_generates_the_secrets_and_the_operator_writes_what_the_environment_mode_would(
    aws, monkeypatch, settings
):
    settings.DEPLOY = {"app_name": "shop", "namespace": "shop"}
    monkeypatch.setattr(cfn, "render_template", without_cluster_output(cfn.render_template))
    out = StringIO()
    call_command("aws_provision", "--no-input", stdout=out)
    match = re.search(r"DEPLOY\['secrets_reader_role_arn'\] = '(arn:aws:iam::\d{12}:role/[^']+)'", out.getvalue())
    assert match, out.getvalue()
    client = boto3.client("secretsmanager", region_name=REGION)
    # moto's CloudFormation skips AWS::SecretsManager::Secret: create each as CloudFormation does, through the
    # Secrets Manager API with the template's own generation rules and key.
    template = json.loads((tmp_path_of_build() / "shop-infra.json").read_text())
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::SecretsManager::Secret":
            rules = resource["Properties"]["GenerateSecretString"]
            generated = client.get_random_password(**rules)["RandomPassword"]
            client.create_secret(Name=resource["Properties"]["Name"], KmsKeyId=key_id, SecretString=generated)
    reader = boto3.client("iam", region_name=REGION).get_role(RoleName=match[1].rsplit("/", 1)[1])["Role"]
    assert (
        reader["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"]
        .rsplit("/")[-1]
        .startswith("shop-infra-ExternalSecretsRole-")
    )
    stored = {}
    config = load_config({**ESO, "app_name": "shop", "namespace": "shop", "secrets_reader_role_arn": match[1]},
                         environ={})  # fmt: skip
    for key, name in names.aws_secrets(config).items():
        value = client.get_secret_value(SecretId=name)["SecretString"]
        assert re.fullmatch(r"[A-Za-z0-9]{32,50}", value), key  # generated, letters and digits
        stored[name] = value
    assert len(set(stored.values())) == len(stored)
    assert all(v not in out.getvalue() for v in stored.values())
    # What the operator writes from these values equals what the environment mode renders with them.
    values = {key: stored[name] for key, name in names.aws_secrets(config).items()}
    environment = load_config({"app_name": "shop", "namespace": "shop"}, environ={})
    plain = {m["metadata"]["name"]: m for m in render_manifests(environment, DeploySecrets(**values), redact=False)
             if m["kind"] == "Secret"}  # fmt: skip
    for external in (m for m in render_manifests(config) if m["kind"] == "ExternalSecret"):
        written = _operator_writes(external, stored)
        expected = {
            k: base64.b64decode(v).decode() for k, v in plain[external["spec"]["target"]["name"]]["data"].items()
        }
        assert written == expected, external["metadata"]["name"]


def test_a_rotated_value_reaches_the_secret_the_operator_writes(aws):
    """The rotation step of docs/runbooks.md: a new value in Secrets Manager is what the next refresh writes."""
    config = eso_config(app_name="shop", namespace="shop")
    client = boto3.client("secretsmanager", region_name=REGION)
    for name in names.aws_secrets(config).values():
        client.create_secret(Name=name, SecretString="first0value")
    app = next(m for m in render_manifests(config) if m["kind"] == "ExternalSecret" and m["metadata"]["name"] == "shop")

    def current():
        return {n: client.get_secret_value(SecretId=n)["SecretString"] for n in names.aws_secrets(config).values()}

    before = _operator_writes(app, current())["DATABASE_URL"]
    client.put_secret_value(SecretId="shop/postgres-password", SecretString="rotated0value")
    after = _operator_writes(app, current())["DATABASE_URL"]
    assert ":first0value@" in before and ":rotated0value@" in after
    assert quote("rotated0value", safe="") in after


# --- the deploy needs no secret ---------------------------------------------------------------


@pytest.mark.slow  # two deploys against the fake API server
def test_k8s_deploy_applies_with_no_secret_in_its_environment_and_shows_none(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("DEPLOY_"):
            monkeypatch.delenv(name)
    for name, value in {**{k: v for k, v in ESO.items()}}.items():
        monkeypatch.setenv(f"DEPLOY_{name.upper()}", value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.05)

    def run(*args):
        out = StringIO()
        call_command("k8s_deploy", "--json", "--timeout", "30", *args, interactive=False, stdout=out)
        return out.getvalue()

    # Canaries in the environment are not used, nor shown, even with --include-secrets.
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    assert _leaks(run("--render", "--include-secrets")) == []
    for name in SECRET_ENV:
        monkeypatch.delenv(name)
    with FakeApiServer(token="t0ken") as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        report = json.loads(run())
        assert report["outcome"] == "deployed", report
        assert {o["metadata"]["name"] for o in fake.list("externalsecrets", "django-app")} == {
            "django-app", "django-app-postgres", "django-app-redis"}  # fmt: skip
        assert [o["metadata"]["name"] for o in fake.list("secretstores", "django-app")] == [
            "django-app-aws-secrets-manager"]  # fmt: skip
        assert [s["metadata"]["name"] for s in fake.list("secrets", "django-app")
                if not s["metadata"]["name"].startswith("django-app-release-")] == []  # fmt: skip
        assert json.loads(run())["changed"] == 0
