"""The delivery stack: what lets a CI system deploy without any long-lived credential.

One CloudFormation stack (``aws_provision --delivery``), rendered from every
environment of ``DEPLOY['environments']``:

- the account's GitHub OIDC identity provider (or a reference to it);
- a build role, assumable only by workflows of the repository's branch: push
  to the one ECR repository;
- one deploy role per environment, assumable only by jobs of that GitHub
  environment: describe that environment's cluster, an EKS access entry in
  it, read that environment's secret;
- an infrastructure plan role (pull requests: change sets, never executed)
  and an infrastructure apply role (the ``infrastructure`` GitHub environment:
  execute change sets), which may pass only the CloudFormation role, the one
  role that changes resources.

Every trust is ``StringEquals`` on the token's ``aud`` and ``sub``: no
wildcard, so a fork, another branch or another environment gets nothing.
"""

import re

from deploy.aws.cfn import infra_cluster_name, stack_name
from deploy.aws.ecr import repository_name
from deploy.conf import check_delivery
from deploy.k8s import names

GITHUB_ISSUER = "token.actions.githubusercontent.com"
AUDIENCE = "sts.amazonaws.com"
INFRASTRUCTURE_ENVIRONMENT = "infrastructure"
# GitHub's intermediate CA thumbprints; IAM no longer checks them for GitHub but the API still asks for one.
THUMBPRINTS = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
ECR_URI = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/(.+)$")
ACCESS_POLICY = {
    "cluster": "AmazonEKSClusterAdminPolicy",
    "namespace": "AmazonEKSAdminPolicy",
}
ECR_PUSH = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImages",
    "ecr:DescribeRepositories",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
]
PLAN_ACTIONS = [
    "cloudformation:CreateChangeSet",
    "cloudformation:DeleteChangeSet",
    "cloudformation:DescribeChangeSet",
    "cloudformation:DescribeStackEvents",
    "cloudformation:DescribeStacks",
    "cloudformation:GetTemplate",
]
APPLY_ACTIONS = [*PLAN_ACTIONS, "cloudformation:CreateStack", "cloudformation:ExecuteChangeSet"]


def delivery_stack_name(config):
    return names.truncate(f"{config.app_name}-delivery")


def role_name(config, purpose):
    """The IAM role names the workflows assume; fixed, so the workflow files can name them."""
    return names.truncate(f"{config.app_name}-github-{purpose}")


def subject(config, kind, value=""):
    """The OIDC ``sub`` claim GitHub puts in the token of a job of that kind."""
    repo = f"repo:{config.github_repository}"
    return {
        "branch": f"{repo}:ref:refs/heads/{config.github_branch}",
        "environment": f"{repo}:environment:{value}",
        "pull_request": f"{repo}:pull_request",
    }[kind]


def account_of(config):
    """The AWS account of the ECR repository, when the image repository names one."""
    match = ECR_URI.match(config.image_repository)
    return match.group(1) if match else ""


def _sub(text):
    return {"Fn::Sub": text}


def _region(config):
    return config.aws_region or "${AWS::Region}"


def _trust(provider, sub):
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{GITHUB_ISSUER}:aud": AUDIENCE, f"{GITHUB_ISSUER}:sub": sub},
                },
            }
        ],
    }


def _policy(name, statements):
    return [{"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}]


def _camel(name):
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def cluster_name(config):
    """The environment's cluster: DEPLOY['eks_cluster'], or the one its infrastructure stack creates."""
    return config.eks_cluster or infra_cluster_name(config)


def _arn(service, region, rest):
    return f"arn:${{AWS::Partition}}:{service}:{region}:${{AWS::AccountId}}:{rest}"


def resource_arns(config):
    """The ARNs (as Fn::Sub strings) of the resources an environment's roles may touch."""
    region, cluster = _region(config), cluster_name(config)
    repository = repository_name(config.image_repository)
    account = account_of(config) or "${AWS::AccountId}"
    ecr_region = ECR_URI.match(config.image_repository).group(2) if account_of(config) else region
    return {
        "cluster": f"arn:${{AWS::Partition}}:eks:{region}:${{AWS::AccountId}}:cluster/{cluster}",
        "nodegroups": f"arn:${{AWS::Partition}}:eks:{region}:${{AWS::AccountId}}:nodegroup/{cluster}/*/*",
        # Secrets Manager adds '-' and six random characters to a secret's name in its ARN.
        "secret": _arn("secretsmanager", region, f"secret:{config.secrets_name}-??????"),
        "repository": f"arn:${{AWS::Partition}}:ecr:{ecr_region}:{account}:repository/{repository}",
        "stack": f"arn:${{AWS::Partition}}:cloudformation:{region}:${{AWS::AccountId}}:stack/{stack_name(config)}/*",
    }


def _preflight_statements(config):
    """What k8s_deploy's preflight reads, for the settings that make it read it (deploy/aws/preflight.py)."""
    region, statements = _region(config), []
    if config.efs_file_system_id:
        statements.append({"Sid": "PreflightEfs", "Effect": "Allow", "Action": [
                               "elasticfilesystem:DescribeFileSystems", "elasticfilesystem:DescribeMountTargets"],
                           "Resource": _sub(_arn("elasticfilesystem", region,
                                                 f"file-system/{config.efs_file_system_id}"))})  # fmt: skip
    if config.app_role_arn:
        statements.append({"Sid": "PreflightAppRole", "Effect": "Allow", "Action": "iam:GetRole",
                           "Resource": config.app_role_arn})  # fmt: skip
    if config.postgres_outside_cluster:
        statements.append({"Sid": "PreflightRds", "Effect": "Allow", "Action": "rds:DescribeDBInstances",
                           "Resource": _sub(_arn("rds", region, "db:*"))})  # fmt: skip
    if not config.redis_in_cluster:
        statements.append({"Sid": "PreflightElastiCache", "Effect": "Allow",
                           "Action": ["elasticache:DescribeCacheClusters", "elasticache:DescribeReplicationGroups"],
                           "Resource": [_sub(_arn("elasticache", region, "cluster:*")),
                                        _sub(_arn("elasticache", region, "replicationgroup:*"))]})  # fmt: skip
    return statements


def render_delivery_template(base, environments):
    """The delivery stack's template. ``environments`` maps each name to its :class:`DeployConfig`."""
    check_delivery(base, environments)
    resources, outputs = {}, {}
    if base.github_oidc_provider == "create":
        resources["GitHubOidcProvider"] = {
            "Type": "AWS::IAM::OIDCProvider",
            "Properties": {
                "Url": f"https://{GITHUB_ISSUER}",
                "ClientIdList": [AUDIENCE],
                "ThumbprintList": THUMBPRINTS,
            },
        }
        provider = {"Ref": "GitHubOidcProvider"}
    else:
        provider = _sub(f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:oidc-provider/{GITHUB_ISSUER}")
    first = next(iter(environments.values()))

    def role(logical, purpose, sub, description, statements=None, managed=None):
        properties = {
            "RoleName": role_name(base, purpose),
            "Description": description,
            "MaxSessionDuration": 3600,
            "AssumeRolePolicyDocument": _trust(provider, sub),
        }
        if statements:
            properties["Policies"] = _policy(purpose, statements)
        if managed:
            properties["ManagedPolicyArns"] = managed
        resources[logical] = {"Type": "AWS::IAM::Role", "Properties": properties}
        outputs[f"{logical}Arn"] = {"Description": description, "Value": {"Fn::GetAtt": [logical, "Arn"]}}

    arns = resource_arns(first)
    role(
        "BuildRole",
        "build",
        subject(base, "branch"),
        f"Pushes the image built from {base.github_repository}@{base.github_branch} to its ECR repository.",
        [
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "EcrPush", "Effect": "Allow", "Action": ECR_PUSH, "Resource": _sub(arns["repository"])},
        ],
    )
    for name, config in environments.items():
        arns = resource_arns(config)
        logical = f"Deploy{_camel(name)}Role"
        statements = [
            {
                "Sid": "DescribeCluster",
                "Effect": "Allow",
                "Action": ["eks:DescribeCluster", "eks:ListNodegroups"],
                "Resource": _sub(arns["cluster"]),
            },
            {
                "Sid": "DescribeNodegroups",
                "Effect": "Allow",
                "Action": "eks:DescribeNodegroup",
                "Resource": _sub(arns["nodegroups"]),
            },
            {
                "Sid": "ReadSecrets",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": _sub(arns["secret"]),
            },
            {
                "Sid": "ReadImage",
                "Effect": "Allow",
                "Action": ["ecr:DescribeImages", "ecr:BatchGetImage"],
                "Resource": _sub(arns["repository"]),
            },
        ]
        statements += _preflight_statements(config)
        if config.postgres_mode == "rds":
            # k8s_deploy reads the RDS instance's address from the infrastructure stack's outputs (deploy/aws/rds.py).
            statements.append({"Sid": "ReadDatabaseOutputs", "Effect": "Allow",
                               "Action": "cloudformation:DescribeStacks", "Resource": _sub(arns["stack"])})  # fmt: skip
        role(
            logical,
            f"deploy-{name}",
            subject(config, "environment", config.github_deploy_environment),
            f"Deploys environment {name} (namespace {config.namespace}, cluster {cluster_name(config)}).",
            statements,
        )
        scope = {"Type": "cluster"}
        if config.ci_cluster_access == "namespace":
            namespaces = [config.namespace]
            namespaces += (
                [config.monitoring_namespace] if config.monitoring and config.monitoring_mode == "standalone" else []
            )
            namespaces += [config.logging_namespace] if config.logging else []
            scope = {"Type": "namespace", "Namespaces": namespaces}
        resources[f"Deploy{_camel(name)}Access"] = {
            "Type": "AWS::EKS::AccessEntry",
            "Properties": {
                "ClusterName": cluster_name(config),
                "PrincipalArn": {"Fn::GetAtt": [logical, "Arn"]},
                "Type": "STANDARD",
                "AccessPolicies": [
                    {
                        "PolicyArn": _sub(
                            "arn:${AWS::Partition}:eks::aws:cluster-access-policy/"
                            + ACCESS_POLICY[config.ci_cluster_access]
                        ),
                        "AccessScope": scope,
                    }
                ],
            },
        }
    stacks = sorted({resource_arns(c)["stack"] for c in environments.values()})
    resources["CloudFormationRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": role_name(base, "cloudformation"),
            "Description": "The only role that changes the infrastructure: CloudFormation assumes it to apply "
            "a change set that the infrastructure apply role executes.",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudformation.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "ManagedPolicyArns": [_sub("arn:${AWS::Partition}:iam::aws:policy/AdministratorAccess")],
        },
    }
    outputs["CloudFormationRoleArn"] = {
        "Description": "DEPLOY['aws_cloudformation_role_arn']",
        "Value": {"Fn::GetAtt": ["CloudFormationRole", "Arn"]},
    }
    pass_role = {
        "Sid": "PassTheCloudFormationRole",
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": {"Fn::GetAtt": ["CloudFormationRole", "Arn"]},
        "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
    }
    for logical, purpose, sub, actions, what in (
        ("InfraPlanRole", "infra-plan", subject(base, "pull_request"), PLAN_ACTIONS,
         "Creates change sets of the infrastructure stacks for pull requests; executes none."),
        ("InfraApplyRole", "infra-apply", subject(base, "environment", INFRASTRUCTURE_ENVIRONMENT), APPLY_ACTIONS,
         "Executes the infrastructure stacks' change sets, from the approved 'infrastructure' environment."),
    ):  # fmt: skip
        statements = [
            {"Sid": "Stacks", "Effect": "Allow", "Action": actions, "Resource": [_sub(s) for s in stacks]},
            pass_role,
        ]
        role(logical, purpose, sub, what, statements)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Delivery of {base.app_name}: GitHub OIDC provider and the roles its workflows assume "
        "(rendered by manage.py aws_provision --delivery)",
        "Resources": resources,
        "Outputs": outputs,
    }
