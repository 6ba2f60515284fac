"""The delivery stack (aws_provision --delivery): GitHub OIDC trust and least-privilege roles.

cfn-lint checks the template; moto creates the stack (its IAM roles with their trust and inline policies; moto
creates neither OIDC providers nor EKS access entries from CloudFormation, so the provider's properties go
through moto's IAM API and the access entries are checked by cfn-lint and by reading the template). Whether a
role may do something is decided by a small IAM evaluator below: moto's own policy evaluation knows only
StringEquals and reads '?' as a regular expression, too loose to prove a role cannot reach a resource.
"""

import ast
import fnmatch
import json
import re
import subprocess
from io import StringIO

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from moto import mock_aws

from deploy.aws import cfn, delivery
from deploy.aws.secrets import read_secrets
from deploy.aws.session import AwsError
from deploy.conf import ConfigError, load_config
from tests.aws_helpers import fake_aws_environment
from tests.conftest import tool
from tests.test_environments import DEPLOY

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ISSUER = "token.actions.githubusercontent.com"


def render(deploy=DEPLOY, only=None):
    names = [only] if only else list(deploy["environments"])
    environments = {name: load_config(deploy, environ={}, environment=name) for name in names}
    return delivery.render_delivery_template(load_config(deploy, environ={}), environments)


# --- a small IAM evaluator: Allow statements, Action/Resource wildcards, StringEquals/StringLike conditions ---


def _resolve(value):
    """Fn::Sub and Fn::GetAtt of a rendered template as AWS would resolve them in ACCOUNT and REGION."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        for name, real in (("AWS::Partition", "aws"), ("AWS::AccountId", ACCOUNT), ("AWS::Region", REGION)):
            text = text.replace("${" + name + "}", real)
        assert "${" not in text, text
        return text
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"arn:aws:iam::{ACCOUNT}:role/{value['Fn::GetAtt'][0]}"
    if isinstance(value, dict) and "Ref" in value:
        return f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"
    return value


def _listed(value):
    return [_resolve(v) for v in (value if isinstance(value, list) else [value])]


def _glob(pattern, text, case=True):
    # IAM wildcards: '*' any run of characters, '?' exactly one; nothing else is special.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, 0 if case else re.IGNORECASE) is not None


def _conditions_hold(condition, context):
    for operator, tests in (condition or {}).items():
        for key, expected in tests.items():
            if key not in context:
                return False
            values = expected if isinstance(expected, list) else [expected]
            match = (lambda v: v == context[key]) if operator == "StringEquals" else None
            if operator == "StringLike":
                match = lambda v: _glob(v, context[key])  # noqa: E731
            assert match, f"operator {operator} is not known to this evaluator"
            if not any(match(v) for v in values):
                return False
    return True


def allows(statements, action, resource, context=None):
    for s in statements:
        assert s["Effect"] == "Allow"  # these roles have no Deny: nothing to order
        if not any(_glob(a, action, case=False) for a in _listed(s["Action"])):
            continue
        if not any(_glob(r, resource) for r in _listed(s.get("Resource", "*"))):
            continue
        if _conditions_hold(s.get("Condition"), context or {}):
            return True
    return False


def statements_of(template, logical):
    properties = template["Resources"][logical]["Properties"]
    return [s for p in properties.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def may_assume(template, logical, sub, aud="sts.amazonaws.com"):
    trust = template["Resources"][logical]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    context = {f"{ISSUER}:sub": sub, f"{ISSUER}:aud": aud}
    return allows(trust, "sts:AssumeRoleWithWebIdentity", "*", context)


# --- what each environment owns, as AWS would name it --------------------------------------


def owned(environment):
    cluster = f"shop-{environment}-cluster"
    return {
        "cluster": f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{cluster}",
        "nodegroup": f"arn:aws:eks:{REGION}:{ACCOUNT}:nodegroup/{cluster}/nodes/4ec6a1b2",
        "secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:shop/{environment}-AbC123",
    }


ACTIONS = [
    "eks:DescribeCluster",
    "eks:ListNodegroups",
    "eks:DescribeNodegroup",
    "eks:DeleteCluster",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
]


def test_the_staging_role_cannot_touch_production_resources():
    template = render()
    staging, production = statements_of(template, "DeployStagingRole"), statements_of(template, "DeployProductionRole")
    for action in ACTIONS:
        for resource in owned("production").values():
            assert not allows(staging, action, resource), (action, resource)
        for resource in owned("staging").values():
            assert not allows(production, action, resource), (action, resource)
    # ... while each reaches its own, so the checks above can fail.
    mine = owned("staging")
    assert allows(staging, "eks:DescribeCluster", mine["cluster"])
    assert allows(staging, "eks:DescribeNodegroup", mine["nodegroup"])
    assert allows(staging, "secretsmanager:GetSecretValue", mine["secret"])
    assert allows(production, "secretsmanager:GetSecretValue", owned("production")["secret"])
    # A secret whose name only starts like staging's is not staging's.
    assert not allows(staging, "secretsmanager:GetSecretValue", mine["secret"].replace("staging-", "staging-old-"))
    # No write, delete or IAM action anywhere in a deploy role; no push either (the build role pushes).
    for statement in staging + production:
        for action in _listed(statement["Action"]):
            assert re.match(r"^(eks:(Describe|List)|secretsmanager:GetSecretValue$|ecr:(Describe|BatchGet))", action)
            assert "*" not in action
        assert "*" not in _listed(statement["Resource"])


def test_only_the_build_role_pushes_and_only_to_the_one_repository():
    template = render()
    build = statements_of(template, "BuildRole")
    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/shop"
    assert allows(build, "ecr:PutImage", repository)
    assert allows(build, "ecr:GetAuthorizationToken", "*")
    assert not allows(build, "ecr:PutImage", repository + "-other")
    assert not allows(build, "ecr:DeleteRepository", repository)
    assert not allows(build, "ecr:BatchDeleteImage", repository)
    for logical in ("DeployStagingRole", "DeployProductionRole"):
        assert not allows(statements_of(template, logical), "ecr:PutImage", repository)
        assert allows(statements_of(template, logical), "ecr:DescribeImages", repository)


def test_each_role_trusts_only_its_repository_and_branch_or_environment():
    template = render()
    repo = "repo:example/shop"
    cases = {
        "BuildRole": f"{repo}:ref:refs/heads/main",
        "DeployStagingRole": f"{repo}:environment:staging",
        "DeployProductionRole": f"{repo}:environment:production",
        "InfraPlanRole": f"{repo}:pull_request",
        "InfraApplyRole": f"{repo}:environment:infrastructure",
    }
    others = [
        *cases.values(),
        f"{repo}:ref:refs/heads/feature",
        f"{repo}:ref:refs/tags/v1",
        "repo:example/shop-fork:environment:production",
        "repo:attacker/shop:ref:refs/heads/main",
        f"{repo}:environment:production-2",
    ]
    for logical, sub in cases.items():
        assert may_assume(template, logical, sub), logical
        assert not may_assume(template, logical, sub, aud="sigstore"), logical
        for other in others:
            if other != sub:
                assert not may_assume(template, logical, other), (logical, other)
        trust = template["Resources"][logical]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust[0]["Principal"] == {"Federated": {"Ref": "GitHubOidcProvider"}}
        assert set(trust[0]["Condition"]) == {"StringEquals"}  # exact subjects: no StringLike, no wildcard


def test_the_infrastructure_roles_change_stacks_only_through_the_cloudformation_role():
    template = render()
    plan, apply = statements_of(template, "InfraPlanRole"), statements_of(template, "InfraApplyRole")
    stack = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/shop-staging-infra/0a1b2c3d"
    assert allows(plan, "cloudformation:CreateChangeSet", stack.replace("staging", "production"))
    assert allows(plan, "cloudformation:CreateChangeSet", stack)
    assert not allows(plan, "cloudformation:ExecuteChangeSet", stack)
    assert not allows(plan, "cloudformation:DeleteStack", stack)
    assert allows(apply, "cloudformation:ExecuteChangeSet", stack)
    assert not allows(apply, "cloudformation:DeleteStack", stack)
    assert not allows(apply, "cloudformation:ExecuteChangeSet", stack.replace("shop-staging-infra", "shop-delivery"))
    cfn_role = f"arn:aws:iam::{ACCOUNT}:role/CloudFormationRole"
    passed = {"iam:PassedToService": "cloudformation.amazonaws.com"}
    for statements in (plan, apply):
        assert allows(statements, "iam:PassRole", cfn_role, passed)
        assert not allows(statements, "iam:PassRole", cfn_role, {"iam:PassedToService": "ec2.amazonaws.com"})
        assert not allows(statements, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/DeployProductionRole", passed)
        assert not allows(statements, "iam:CreateRole", "*")


def test_access_entries_give_each_role_its_own_cluster():
    template = render()
    for name in ("staging", "production"):
        entry = template["Resources"][f"Deploy{name.capitalize()}Access"]["Properties"]
        assert entry["ClusterName"] == f"shop-{name}-cluster"
        assert entry["PrincipalArn"] == {"Fn::GetAtt": [f"Deploy{name.capitalize()}Role", "Arn"]}
        assert entry["AccessPolicies"][0]["AccessScope"] == {"Type": "cluster"}
    shared = {**DEPLOY, "eks_cluster": "shop", "ci_cluster_access": "namespace"}
    shared["environments"] = {
        name: {k: v for k, v in values.items() if k != "eks_cluster"} for name, values in DEPLOY["environments"].items()
    }
    template = render(shared)
    entry = template["Resources"]["DeployStagingAccess"]["Properties"]
    assert entry["ClusterName"] == "shop"
    assert entry["AccessPolicies"][0]["PolicyArn"]["Fn::Sub"].endswith("/AmazonEKSAdminPolicy")
    assert entry["AccessPolicies"][0]["AccessScope"] == {
        "Type": "namespace",
        "Namespaces": ["shop-staging", "monitoring", "logging"],
    }


VARIANTS = {
    "two-environments": DEPLOY,
    "shared-cluster-existing-provider": {
        **DEPLOY,
        "eks_cluster": "shop",
        "ci_cluster_access": "namespace",
        "github_oidc_provider": "existing",
    },
    "external-services-and-efs": {
        **DEPLOY,
        "postgres_mode": "external",
        "postgres_host": "shop.abc.eu-west-1.rds.amazonaws.com",
        "postgres_cidr": "10.0.0.0/16",
        "redis_mode": "external",
        "redis_host": "shop.abc.cache.amazonaws.com",
        "redis_cidr": "10.0.0.0/16",
        "efs_file_system_id": "fs-0123456789abcdef0",
        "app_role_arn": f"arn:aws:iam::{ACCOUNT}:role/shop-app",
    },
}


@pytest.mark.slow
def test_cfn_lint_passes_for_each_variant(tmp_path):
    files = []
    for name, deploy in VARIANTS.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(render(deploy), indent=2))
        files.append(str(path))
    for name in DEPLOY["environments"]:  # and each environment's infrastructure stack
        path = tmp_path / f"infra-{name}.json"
        path.write_text(cfn.to_text(cfn.render_template(load_config(DEPLOY, environ={}, environment=name))))
        files.append(str(path))
    result = subprocess.run([tool("cfn-lint"), "--regions", REGION, "--", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_environment_has_its_own_infrastructure_stack_and_the_first_owns_the_repository():
    staging, production = (load_config(DEPLOY, environ={}, environment=n) for n in ("staging", "production"))
    assert (cfn.stack_name(staging), cfn.stack_name(production)) == ("shop-staging-infra", "shop-production-infra")
    assert cfn.stack_name(load_config(DEPLOY, environ={})) == "shop-infra"  # without --environment, as before
    ours, theirs = cfn.render_template(staging), cfn.render_template(production)
    assert ours["Resources"]["Cluster"]["Properties"]["Name"] == "shop-staging-cluster" == staging.eks_cluster
    assert theirs["Resources"]["Cluster"]["Properties"]["Name"] == "shop-production-cluster"
    # One repository (one image, promoted by digest): a second stack creating it would fail (it exists).
    assert "Repository" in ours["Resources"] and "RepositoryUri" in ours["Outputs"]
    assert "Repository" not in theirs["Resources"] and "RepositoryUri" not in theirs["Outputs"]
    assert theirs["Resources"]["AppIdentity"]["Properties"]["Namespace"] == "shop-production"
    # The delivery roles point at the clusters and stacks these templates create.
    arns = delivery.resource_arns(production)
    assert arns["cluster"].endswith(":cluster/shop-production-cluster")
    assert "stack/shop-production-infra/" in arns["stack"]


def test_the_preflight_reads_only_what_the_settings_name():
    template = render(VARIANTS["external-services-and-efs"])
    staging = statements_of(template, "DeployStagingRole")
    efs = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/fs-0123456789abcdef0"
    assert allows(staging, "elasticfilesystem:DescribeMountTargets", efs)
    assert not allows(staging, "elasticfilesystem:DescribeMountTargets", efs.replace("0123", "9999"))
    assert allows(staging, "iam:GetRole", f"arn:aws:iam::{ACCOUNT}:role/shop-app")
    assert not allows(staging, "iam:GetRole", f"arn:aws:iam::{ACCOUNT}:role/shop-github-deploy-production")
    assert allows(staging, "rds:DescribeDBInstances", f"arn:aws:rds:{REGION}:{ACCOUNT}:db:shop")
    assert not any("Preflight" in s.get("Sid", "") for s in statements_of(render(), "DeployStagingRole"))


def test_the_preflight_may_look_for_an_rds_instance_only_where_postgresql_is_outside_the_cluster():
    instance = f"arn:aws:rds:{REGION}:{ACCOUNT}:db:shop"
    for mode, reads in (("rds", True), ("external", True), ("cloudnative-pg", False), ("in-cluster", False)):
        deploy = {**DEPLOY, "postgres_mode": mode}
        if mode == "external":
            deploy.update(postgres_host="shop.abc.eu-west-1.rds.amazonaws.com", postgres_cidr="10.0.0.0/16")
        staging = statements_of(render(deploy), "DeployStagingRole")
        assert allows(staging, "rds:DescribeDBInstances", instance) is reads, mode


def test_in_rds_mode_each_deploy_role_reads_its_own_infrastructure_stack_only():
    # k8s_deploy reads the RDS instance's address from the stack's outputs (deploy/aws/rds.py).
    stack = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/shop-%s-infra/0f1e2d3c"
    template = render({**DEPLOY, "postgres_mode": "rds"})
    staging = statements_of(template, "DeployStagingRole")
    assert allows(staging, "cloudformation:DescribeStacks", stack % "staging")
    assert not allows(staging, "cloudformation:DescribeStacks", stack % "production")
    assert not allows(staging, "cloudformation:UpdateStack", stack % "staging")
    assert not allows(statements_of(render(), "DeployStagingRole"), "cloudformation:DescribeStacks", stack % "staging")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"github_repository": ""}, r"DEPLOY\['github_repository'\] .* is required for the delivery stack"),
        ({"environments": {}}, r"The delivery stack needs environments"),
        (
            {"environments": {**DEPLOY["environments"], "staging": {"namespace": "shop-staging"}}},
            r"DEPLOY\['environments'\]\['staging'\]\['secrets_name'\] is required",
        ),
        (
            {
                "environments": {
                    **DEPLOY["environments"],
                    "staging": {**DEPLOY["environments"]["staging"], "image_repository": "other"},
                }
            },
            r"different image repositories",
        ),
        (
            {
                "environments": {
                    **DEPLOY["environments"],
                    "staging": {**DEPLOY["environments"]["staging"], "github_environment": "production"},
                }
            },
            r"Environments 'staging' and 'production' use the same GitHub environment 'production'",
        ),
    ],
)
def test_bad_delivery_settings_are_one_clear_error(change, message):
    with pytest.raises(ConfigError, match=message):
        render({**DEPLOY, **change})


# --- against moto --------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch, tmp_path, settings):
    fake_aws_environment(monkeypatch, REGION)
    monkeypatch.chdir(tmp_path)
    settings.DEPLOY = DEPLOY
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.mark.slow
def test_the_delivery_stack_creates_the_roles_as_rendered(aws, monkeypatch):
    iam = aws.client("iam")
    cfn_role = iam.create_role(RoleName="bootstrap-cfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    monkeypatch.setenv("DEPLOY_AWS_CLOUDFORMATION_ROLE_ARN", cfn_role)
    out = StringIO()
    call_command("aws_provision", "--delivery", "--no-input", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["stack"] == "shop-delivery" and report["status"] == "CREATE_COMPLETE"
    assert report["outputs"]["DeployStagingRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/shop-github-deploy-staging"
    stack = aws.client("cloudformation").describe_stacks(StackName="shop-delivery")["Stacks"][0]
    assert stack["RoleARN"] == cfn_role  # CloudFormation, not the caller, changes the resources
    template = render()
    for logical in ("BuildRole", "DeployStagingRole", "DeployProductionRole", "InfraPlanRole", "InfraApplyRole"):
        properties = template["Resources"][logical]["Properties"]
        role = iam.get_role(RoleName=properties["RoleName"])["Role"]
        created = role["AssumeRolePolicyDocument"]["Statement"][0]
        assert created["Condition"] == properties["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
        assert created["Action"] == "sts:AssumeRoleWithWebIdentity"
        (policy_name,) = iam.list_role_policies(RoleName=properties["RoleName"])["PolicyNames"]
        document = iam.get_role_policy(RoleName=properties["RoleName"], PolicyName=policy_name)["PolicyDocument"]
        # moto keeps the document it got from CloudFormation as the text of a Python dict
        document = ast.literal_eval(document) if isinstance(document, str) else document
        assert [s.get("Sid") for s in document["Statement"]] == [s.get("Sid") for s in statements_of(template, logical)]
        assert iam.list_attached_role_policies(RoleName=properties["RoleName"])["AttachedPolicies"] == []
    # Only CloudFormation may assume the one broad role (moto does not attach AWS managed policies from a template).
    trust = iam.get_role(RoleName="shop-github-cloudformation")["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    # The provider's properties, as the template has them, are accepted by IAM.
    provider = template["Resources"]["GitHubOidcProvider"]["Properties"]
    arn = iam.create_open_id_connect_provider(
        Url=provider["Url"], ClientIDList=provider["ClientIdList"], ThumbprintList=provider["ThumbprintList"]
    )["OpenIDConnectProviderArn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"] == ["sts.amazonaws.com"]


def test_an_existing_provider_is_named_by_its_fixed_arn(aws, settings):
    settings.DEPLOY = {**DEPLOY, "github_oidc_provider": "existing"}
    out = StringIO()
    call_command("aws_provision", "--delivery", "--environment", "production", "--no-input", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["stack"] == "shop-delivery-production"
    iam = aws.client("iam")
    names = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert "shop-github-deploy-production" in names and "shop-github-deploy-staging" not in names
    trust = iam.get_role(RoleName="shop-github-deploy-production")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"}


def test_delivery_refusals_leave_no_stack(aws, settings):
    settings.DEPLOY = {**DEPLOY, "github_repository": ""}
    with pytest.raises(CommandError, match=r"github_repository.*is required for the delivery stack"):
        call_command("aws_provision", "--delivery", "--no-input", stdout=StringIO())
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []
    assert not any(r["RoleName"].startswith("shop-") for r in aws.client("iam").list_roles()["Roles"])


# --- the environment's secret ----------------------------------------------------------------

VALUES = {
    "DEPLOY_SECRET_KEY": "k" * 50,
    "DEPLOY_POSTGRES_PASSWORD": "pg-Secret-1",
    "DEPLOY_REDIS_PASSWORD": "redis-Secret-2",
    "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "pg-super-Secret-3",
}


def test_secrets_are_read_from_the_environments_secret(aws):
    client = aws.client("secretsmanager")
    client.create_secret(Name="shop/staging", SecretString=json.dumps(VALUES))
    secrets = read_secrets(aws, "shop/staging")
    assert (
        secrets.secret_key,
        secrets.postgres_password,
        secrets.redis_password,
        secrets.postgres_superuser_password,
    ) == tuple(VALUES.values())
    assert "pg-Secret-1" not in repr(secrets)


@pytest.mark.parametrize(
    "stored, message",
    [
        ("not json pg-Secret-1", r"is not a JSON object of strings"),
        (json.dumps(["pg-Secret-1"]), r"is not a JSON object of strings"),
        (json.dumps({"DEPLOY_POSTGRES_PASSWORD": 12345678}), r"is not a JSON object of strings"),
        (json.dumps({**VALUES, "PASSWORD": "pg-Secret-1"}), r"unknown key\(s\) 'PASSWORD'"),
    ],
)
def test_a_malformed_secret_is_named_and_its_value_never_shown(aws, stored, message):
    aws.client("secretsmanager").create_secret(Name="shop/staging", SecretString=stored)
    with pytest.raises(AwsError, match=message) as caught:
        read_secrets(aws, "shop/staging")
    assert "pg-Secret-1" not in str(caught.value) and "12345678" not in str(caught.value)


def test_every_key_the_secret_may_hold_is_read_and_documented_from_one_list(aws):
    from deploy.conf import SECRET_ENV
    from deploy.docs import configuration_page

    stored = {env: f"value-of-{field}" for field, env in SECRET_ENV.items()}
    aws.client("secretsmanager").create_secret(Name="shop/staging", SecretString=json.dumps(stored))
    secrets = read_secrets(aws, "shop/staging")
    assert {field: getattr(secrets, field) for field in SECRET_ENV} == {f: f"value-of-{f}" for f in SECRET_ENV}
    page = configuration_page()
    (row,) = [line for line in page.splitlines() if line.startswith("| `secrets_name` |")]
    for env in SECRET_ENV.values():
        assert env in row and f"- `{env}`: " in page
    aws.client("secretsmanager").update_secret(SecretId="shop/staging", SecretString="[]")
    with pytest.raises(AwsError) as caught:
        read_secrets(aws, "shop/staging")
    assert all(f'"{env}": "..."' in str(caught.value) for env in SECRET_ENV.values())


def test_a_missing_secret_stops_the_deploy_before_anything_is_applied(aws, settings, monkeypatch):
    from deploy.k8s import operations

    settings.DEPLOY = {**DEPLOY, "aws_region": REGION}
    applied = []
    monkeypatch.setattr(operations, "connect", lambda request, source: object())
    monkeypatch.setattr(operations, "Deployer", lambda *a, **k: applied.append(a))
    with pytest.raises(CommandError, match=r"Reading secret 'shop/staging' from AWS Secrets Manager: not found.*"
                                           r"Nothing was applied\."):  # fmt: skip
        call_command("k8s_deploy", "--environment", "staging", "--skip-preflight", "--no-input", stdout=StringIO())
    assert applied == []


def test_glob_is_iam_not_shell():
    # The evaluator's own check: '?' is one character and '[' is literal, unlike fnmatch.
    assert _glob("secret:a-??????", "secret:a-AbC123") and not _glob("secret:a-??????", "secret:a-AbC12")
    assert not _glob("[ab]", "a") and fnmatch.fnmatch("a", "[ab]")
