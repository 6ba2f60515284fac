"""GitHub Actions workflows: test, build once, deploy by digest from one environment to the next.

``delivery.yml`` (pushes to the branch): test → build and push the image
once → deploy that digest to the first environment with ``k8s_deploy
--environment NAME --json`` (preflight, wait, automatic rollback) and smoke
test it → the same digest to each next environment, each job in its GitHub
environment (give the later ones required reviewers). A failed deploy fails
its job and attaches the JSON report.

``infrastructure.yml``: on pull requests, ``aws_provision --plan`` for each
environment's stack, summarised as one pull request comment; on pushes to the
branch, the same stacks applied from the ``infrastructure`` GitHub
environment (required reviewers).

AWS access only through ``aws-actions/configure-aws-credentials`` with
``role-to-assume`` (the roles of ``aws_provision --delivery``) and
``id-token: write``: no access key and no secret anywhere in the files.
"""

import yaml

from deploy.aws import delivery
from deploy.aws.cfn import stack_name
from deploy.conf import ConfigError, check_delivery

ACTIONS = {
    "checkout": "actions/checkout@v6",
    "setup-python": "actions/setup-python@v6",
    "aws": "aws-actions/configure-aws-credentials@v6",
    "ecr-login": "aws-actions/amazon-ecr-login@v2",
    "buildx": "docker/setup-buildx-action@v4",
    "build-push": "docker/build-push-action@v7",
    "upload": "actions/upload-artifact@v6",
}
RUNNER = "ubuntu-24.04"
# manage.py needs these to start; k8s_deploy and aws_provision connect to neither.
TOOL_ENV = {"DATABASE_URL": "sqlite:////tmp/unused.sqlite3", "REDIS_URL": "redis://127.0.0.1:6379/0"}
THROWAWAY_SECRET_KEY = {
    "name": "A throwaway SECRET_KEY for manage.py (the app's own comes from the environment's secret)",
    "run": 'echo "SECRET_KEY=$(python -c \'import secrets; print(secrets.token_urlsafe(50))\')" >> "$GITHUB_ENV"',
}


class PipelineError(ValueError):
    """Settings that cannot make a pipeline; the message names the setting."""


def _partition(region):
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def role_arn(base, purpose):
    account, region = delivery.account_of(base), base.aws_region
    return f"arn:{_partition(region)}:iam::{account}:role/{delivery.role_name(base, purpose)}"


def check(base, environments):
    try:
        check_delivery(base, environments)
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None
    if not delivery.account_of(base):
        raise PipelineError(
            f"DEPLOY['image_repository'] ({base.image_repository!r}) is not an ECR repository URI such as "
            "'123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop': the pipeline pushes to ECR. Set it to the "
            "infrastructure stack's RepositoryUri output."
        )
    if not base.aws_region:
        raise PipelineError(
            "DEPLOY['aws_region'] (environment variable DEPLOY_AWS_REGION) is required by the pipeline."
        )


def _python(version, requirements):
    return [
        {"uses": ACTIONS["checkout"], "with": {"persist-credentials": False}},
        {"uses": ACTIONS["setup-python"], "with": {"python-version": version, "cache": "pip"}},
        {"name": "Install", "run": f"python -m pip install -r {requirements}"},
    ]


def _credentials(base, purpose):
    return {
        "name": "AWS credentials (OpenID Connect: no stored key)",
        "uses": ACTIONS["aws"],
        "with": {
            "role-to-assume": role_arn(base, purpose),
            "role-session-name": f"{purpose}-${{{{ github.run_id }}}}",
            "aws-region": base.aws_region,
        },
    }


def _url(config):
    scheme = "https" if config.certificate_arn else "http"
    return f"{scheme}://{config.hosts[0]}"


def _deploy_job(base, name, config, needs, options):
    report = f"deploy-report-{name}.json"
    # The cluster is named, so a job never "succeeds" by finding none and applying nothing; it is the cluster
    # whose access entry the environment's role has.
    cluster = delivery.cluster_name(config)
    deploy = f"python manage.py k8s_deploy --environment {name} --eks-cluster {cluster} --json --no-input > {report}"
    steps = [
        *_python(options["python_version"], options["requirements"]),
        _credentials(base, f"deploy-{name}"),
        THROWAWAY_SECRET_KEY,
        {"name": f"Deploy the image to {name} (preflight, wait, rollback on failure)", "id": "deploy", "run": deploy},
        {
            "name": "Smoke test",
            "id": "smoke",
            "env": {"URL": _url(config)},
            "run": "curl --fail --silent --show-error --max-time 10 --retry 10 --retry-delay 6 --retry-all-errors "
            '"$URL/readyz"',
        },
        {
            "name": "Roll back after a failed smoke test",
            "if": "failure() && steps.smoke.outcome == 'failure'",
            "run": f"python manage.py k8s_deploy --environment {name} --eks-cluster {cluster} --rollback --json "
            f"--no-input > rollback-report-{name}.json",
        },
        {
            "name": "Attach the deploy report",
            "if": "always()",
            "uses": ACTIONS["upload"],
            "with": {
                "name": f"deploy-report-{name}",
                "path": f"{report}\nrollback-report-{name}.json",
                "if-no-files-found": "ignore",
            },
        },
    ]
    return {
        "name": f"Deploy to {name}",
        "needs": needs,
        "runs-on": RUNNER,
        "environment": {"name": config.github_deploy_environment, "url": _url(config)},
        "concurrency": {"group": f"deploy-{name}", "cancel-in-progress": False},
        "permissions": {"contents": "read", "id-token": "write"},
        "env": {
            **TOOL_ENV,
            "LOG_LEVEL": "WARNING",
            "DEPLOY_IMAGE_DIGEST": "${{ needs.build.outputs.digest }}",
            "DEPLOY_IMAGE_TAG": "${{ needs.build.outputs.tag }}",
        },
        "steps": steps,
    }


def delivery_workflow(base, environments, options):
    test = {
        "name": "Test",
        "runs-on": RUNNER,
        "services": {
            "postgres": {
                "image": base.postgres_image,
                "env": {"POSTGRES_HOST_AUTH_METHOD": "trust"},
                "ports": ["5432:5432"],
                "options": "--health-cmd pg_isready --health-interval 5s --health-retries 20",
            },
            "redis": {"image": base.redis_image, "ports": ["6379:6379"]},
        },
        "env": {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "REDIS_URL": "redis://127.0.0.1:6379/0"},
        "steps": [
            *_python(options["python_version"], options["test_requirements"]),
            THROWAWAY_SECRET_KEY,
            {"name": "Test", "run": options["test_command"]},
        ],
    }
    repository = base.image_repository
    build = {
        "name": "Build and push the image (once)",
        "needs": ["test"],
        "runs-on": RUNNER,
        "permissions": {"contents": "read", "id-token": "write"},
        "outputs": {
            "digest": "${{ steps.push.outputs.digest }}",
            "tag": "${{ steps.tag.outputs.tag }}",
        },
        "steps": [
            {"uses": ACTIONS["checkout"], "with": {"persist-credentials": False}},
            _credentials(base, "build"),
            {"name": "Log in to ECR", "uses": ACTIONS["ecr-login"]},
            {"uses": ACTIONS["buildx"]},
            {
                "name": "Tag",
                "id": "tag",
                "run": 'echo "tag=${GITHUB_SHA::12}-${GITHUB_RUN_ATTEMPT}" >> "$GITHUB_OUTPUT"',
            },
            {
                "name": "Build and push",
                "id": "push",
                "uses": ACTIONS["build-push"],
                "with": {
                    "context": ".",
                    "push": True,
                    "provenance": False,
                    "tags": f"{repository}:${{{{ steps.tag.outputs.tag }}}}",
                },
            },
        ],
    }
    jobs = {"test": test, "build": build}
    previous = None
    for name, config in environments.items():
        needs = ["build"] + ([previous] if previous else [])
        jobs[f"deploy-{name}"] = _deploy_job(base, name, config, needs, options)
        previous = f"deploy-{name}"
    return {
        "name": "Delivery",
        "on": {"push": {"branches": [base.github_branch]}, "workflow_dispatch": {}},
        "permissions": {"contents": "read"},
        # No workflow-wide concurrency group: a run waiting for production's approval would hold every later
        # run, staging included. Each deploy job queues in its environment's own group instead.
        "jobs": jobs,
    }


def _select(environment):
    return f" --environment {environment}" if environment else ""


def _stack_report(action, environment):
    """The JSON report ``aws_provision`` writes for one stack: ``plan-staging.json``, ``apply-infra.json``."""
    return f"{action}-{environment or 'infra'}.json"


def _stack_steps(base, stacks, action, options):
    """A job's set-up, then ``aws_provision`` once per stack, ``action`` "plan" (change sets only) or "apply"."""
    steps = [
        *_python(options["python_version"], options["requirements"]),
        _credentials(base, f"infra-{action}"),
        THROWAWAY_SECRET_KEY,
    ]
    plan = " --plan" if action == "plan" else ""
    for stack, name in stacks.items():
        steps.append(
            {
                "name": f"{action.capitalize()} stack {stack}",
                "run": f"python manage.py aws_provision{_select(name)}{plan} --json --no-input "
                f"> {_stack_report(action, name)}",
            }
        )
    return steps


def infrastructure_workflow(base, environments, options):
    stacks = {}
    for name, config in environments.items():
        stacks.setdefault(stack_name(config), name)  # environments sharing a stack apply it once
    if len(stacks) == 1 and len(environments) > 1:
        stacks = {stack_name(base): None}  # one cluster for all: the stack of DEPLOY itself
    tool_env = {
        **TOOL_ENV,
        "LOG_LEVEL": "WARNING",
        "DEPLOY_AWS_CLOUDFORMATION_ROLE_ARN": role_arn(base, "cloudformation"),
    }
    plans = [_stack_report("plan", name) for name in stacks.values()]
    plan_steps = _stack_steps(base, stacks, "plan", options)
    plan_steps += [
        {
            "name": "Summarise the change sets",
            "if": "always()",
            "run": f"python manage.py deploy_pipeline --plan-comment {' '.join(plans)} > plan.md",
        },
        {
            "name": "Comment on the pull request",
            "if": "always()",
            "env": {"GH_TOKEN": "${{ github.token }}", "PR": "${{ github.event.pull_request.number }}"},
            "run": 'gh pr comment "$PR" --edit-last --body-file plan.md || gh pr comment "$PR" --body-file plan.md',
        },
    ]
    apply_steps = _stack_steps(base, stacks, "apply", options)
    apply_steps.append(
        {
            "name": "Attach the reports",
            "if": "always()",
            "uses": ACTIONS["upload"],
            "with": {"name": "infrastructure-reports", "path": "apply-*.json", "if-no-files-found": "ignore"},
        }
    )
    return {
        "name": "Infrastructure",
        "on": {"pull_request": {"branches": [base.github_branch]}, "push": {"branches": [base.github_branch]}},
        "permissions": {"contents": "read"},
        "concurrency": {"group": "infrastructure-${{ github.event_name }}", "cancel-in-progress": False},
        "jobs": {
            "plan": {
                "name": "Plan (change sets)",
                # Pull requests from forks get no OIDC token: nothing to plan with.
                "if": "github.event_name == 'pull_request' && "
                "github.event.pull_request.head.repo.full_name == github.repository",
                "runs-on": RUNNER,
                "permissions": {"contents": "read", "id-token": "write", "pull-requests": "write"},
                "env": tool_env,
                "steps": plan_steps,
            },
            "apply": {
                "name": "Apply (after approval)",
                "if": "github.event_name == 'push'",
                "runs-on": RUNNER,
                "environment": {"name": delivery.INFRASTRUCTURE_ENVIRONMENT},
                "concurrency": {"group": "infrastructure-apply", "cancel-in-progress": False},
                "permissions": {"contents": "read", "id-token": "write"},
                "env": tool_env,
                "steps": apply_steps,
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True  # each step written out in full: no YAML anchors to follow


def _text(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def to_yaml(workflow):
    return yaml.dump(workflow, Dumper=_Dumper, sort_keys=False, width=200, allow_unicode=True)


def github_files(base, environments, options):
    """{relative path: YAML text} of the workflows."""
    check(base, environments)
    return {
        ".github/workflows/delivery.yml": to_yaml(delivery_workflow(base, environments, options)),
        ".github/workflows/infrastructure.yml": to_yaml(infrastructure_workflow(base, environments, options)),
    }
