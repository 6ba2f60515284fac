"""deploy_pipeline --github: workflows that actionlint accepts, in the right order, by digest, with no key."""

import json
import re
import shutil
import subprocess
from io import StringIO
from pathlib import Path

import boto3
import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from moto import mock_aws

from deploy.aws import cfn, delivery
from deploy.conf import load_config
from deploy.pipeline.files import hand_edited
from tests.aws_helpers import fake_aws_environment
from tests.test_delivery_aws import render
from tests.test_environments import DEPLOY

ACTIONLINT = shutil.which("actionlint", path=str(Path(__file__).resolve().parent.parent / ".venv" / "bin")) or (
    shutil.which("actionlint")
)
SECRET_VALUES = {
    "DEPLOY_SECRET_KEY": "sk-value-that-must-not-appear-0123456789",
    "DEPLOY_POSTGRES_PASSWORD": "pg-value-that-must-not-appear",
    "DEPLOY_REDIS_PASSWORD": "redis-value-that-must-not-appear",
    "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "pg-superuser-value-that-must-not-appear",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEVALUE0001",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value-that-must-not-appear",
}
WORKFLOWS = (".github/workflows/delivery.yml", ".github/workflows/infrastructure.yml")


@pytest.fixture
def generated(settings, tmp_path, monkeypatch):
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    settings.DEPLOY = DEPLOY
    call_command("deploy_pipeline", "--github", "--output", str(tmp_path), stdout=StringIO())
    return tmp_path


def load(root, name):
    return yaml.safe_load((root / ".github/workflows" / name).read_text())


def actionlint(*files):
    assert ACTIONLINT, "actionlint is not installed: pip install -r requirements/dev.txt"
    return subprocess.run([ACTIONLINT, "-no-color", *map(str, files)], capture_output=True, text=True, timeout=120)


def test_the_workflows_pass_actionlint(generated, tmp_path):
    files = [generated / w for w in WORKFLOWS]
    result = actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check rejects a broken workflow, so it is one.
    broken = tmp_path / "broken" / ".github/workflows/delivery.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(files[0].read_text().replace("- deploy-staging\n", "- deploy-stagin\n"))
    result = actionlint(broken)
    assert result.returncode == 1 and "deploy-stagin" in result.stdout


def test_jobs_run_in_order_and_production_waits_for_staging_and_its_environment(generated):
    workflow = load(generated, "delivery.yml")
    jobs = workflow["jobs"]
    assert list(jobs) == ["test", "build", "deploy-staging", "deploy-production"]
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert jobs["build"]["needs"] == ["test"]
    assert jobs["deploy-staging"]["needs"] == ["build"]
    assert jobs["deploy-production"]["needs"] == ["build", "deploy-staging"]
    assert "environment" not in jobs["build"] and "environment" not in jobs["test"]
    assert jobs["deploy-staging"]["environment"]["name"] == "staging"
    assert jobs["deploy-production"]["environment"]["name"] == "production"
    for name in ("staging", "production"):
        commands = [s.get("run", "") for s in jobs[f"deploy-{name}"]["steps"]]
        deploy = next(c for c in commands if "k8s_deploy" in c and "--rollback" not in c)
        assert re.fullmatch(
            rf"python manage\.py k8s_deploy --environment {name} --eks-cluster shop-{name}-cluster --json --no-input "
            rf"> deploy-report-{name}\.json",
            deploy,
        )
        smoke = commands.index(next(c for c in commands if c.startswith("curl --fail")))
        assert commands.index(deploy) < smoke
    # A run waiting for production's approval must not hold the next run's staging deploy: deploys queue per
    # environment, and nothing queues the workflow as a whole.
    assert "concurrency" not in workflow
    groups = [jobs[f"deploy-{name}"]["concurrency"]["group"] for name in ("staging", "production")]
    assert len(set(groups)) == 2


def test_the_image_is_built_once_and_referred_to_by_digest_after(generated):
    jobs = load(generated, "delivery.yml")["jobs"]
    builders = [
        (job, step)
        for job, body in jobs.items()
        for step in body["steps"]
        if "build-push-action" in step.get("uses", "") or re.search(r"docker (build|push)|--push", step.get("run", ""))
    ]
    assert [job for job, _ in builders] == ["build"]
    ((_, push),) = builders
    assert push["with"]["push"] is True and push["id"] == "push"
    assert jobs["build"]["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    order = list(jobs)
    for job in order[order.index("build") + 1 :]:
        env = jobs[job]["env"]
        assert env["DEPLOY_IMAGE_DIGEST"] == "${{ needs.build.outputs.digest }}", job
        assert "build" in jobs[job]["needs"]
        text = yaml.safe_dump(jobs[job])
        assert "image_tag" not in text and ":latest" not in text


def test_no_secret_value_and_no_access_key_anywhere(generated):
    role_names = {r["Properties"]["RoleName"] for r in render()["Resources"].values() if "RoleName" in r["Properties"]}
    for name in WORKFLOWS:
        text = (generated / name).read_text()
        for value in SECRET_VALUES.values():
            assert value not in text
        for forbidden in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws-access-key-id", "aws-secret-access-key"):
            assert forbidden.lower() not in text.lower()
        assert not re.search(r"\$\{\{\s*secrets\.", text)  # no GitHub secret either: roles only
        workflow = yaml.safe_load(text)
        assert workflow["permissions"] == {"contents": "read"}
        for job_name, job in workflow["jobs"].items():
            credentials = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-cred")]
            for step in credentials:
                assert set(step["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
                arn = step["with"]["role-to-assume"]
                assert re.fullmatch(r"arn:aws:iam::123456789012:role/[\w+=,.@-]+", arn)
                assert arn.rsplit("/", 1)[1] in role_names  # a role the delivery stack creates
                assert job["permissions"]["id-token"] == "write", job_name
            if not credentials:
                assert "id-token" not in job.get("permissions", {}), job_name


def test_each_job_assumes_the_role_that_trusts_it(generated):
    template = render()
    by_name = {r["Properties"]["RoleName"]: r for r in template["Resources"].values() if "RoleName" in r["Properties"]}
    for workflow_name in ("delivery.yml", "infrastructure.yml"):
        workflow = load(generated, workflow_name)
        for job in workflow["jobs"].values():
            for step in job["steps"]:
                if "role-to-assume" not in step.get("with", {}):
                    continue
                role = by_name[step["with"]["role-to-assume"].rsplit("/", 1)[1]]
                sub = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
                sub = sub["token.actions.githubusercontent.com:sub"]
                # The subject GitHub gives this job: its environment if it has one, else the event's ref.
                if "environment" in job:
                    assert sub == f"repo:example/shop:environment:{job['environment']['name']}"
                elif job.get("if", "").startswith("github.event_name == 'pull_request'"):
                    assert sub == "repo:example/shop:pull_request"
                else:
                    assert sub == "repo:example/shop:ref:refs/heads/main"
                    assert workflow["on"]["push"]["branches"] == ["main"]


def test_a_failed_deploy_fails_its_job_and_attaches_the_report(generated):
    jobs = load(generated, "delivery.yml")["jobs"]
    for name in ("staging", "production"):
        steps = jobs[f"deploy-{name}"]["steps"]
        deploy = next(s for s in steps if s.get("id") == "deploy")
        assert "continue-on-error" not in deploy and "|| true" not in deploy["run"]
        upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
        assert upload["if"] == "always()"
        assert f"deploy-report-{name}.json" in upload["with"]["path"].split()
        assert steps.index(upload) == len(steps) - 1


def test_infrastructure_is_planned_on_pull_requests_and_applied_after_approval(generated):
    workflow = load(generated, "infrastructure.yml")
    assert set(workflow["on"]) == {"pull_request", "push"}
    plan, apply = workflow["jobs"]["plan"], workflow["jobs"]["apply"]
    assert "environment" not in plan and plan["permissions"]["pull-requests"] == "write"
    runs = [s.get("run", "") for s in plan["steps"]]
    assert any("aws_provision --environment staging --plan --json" in r for r in runs)
    assert any("deploy_pipeline --plan-comment plan-staging.json plan-production.json" in r for r in runs)
    assert any(r.startswith('gh pr comment "$PR"') for r in runs)
    assert apply["environment"] == {"name": "infrastructure"}
    assert apply["if"] == "github.event_name == 'push'"
    runs = [s.get("run", "") for s in apply["steps"]]
    assert [r for r in runs if "aws_provision" in r] == [
        "python manage.py aws_provision --environment staging --json --no-input > apply-staging.json",
        "python manage.py aws_provision --environment production --json --no-input > apply-production.json",
    ]
    assert not any("--plan" in r for r in runs)
    assert plan["env"]["DEPLOY_AWS_CLOUDFORMATION_ROLE_ARN"].endswith(":role/shop-github-cloudformation")


def test_environments_sharing_a_stack_apply_it_once(settings, tmp_path):
    settings.DEPLOY = {**DEPLOY, "aws_stack_name": "shop-infra"}
    call_command("deploy_pipeline", "--github", "--output", str(tmp_path), stdout=StringIO())
    jobs = load(tmp_path, "infrastructure.yml")["jobs"]
    runs = [s.get("run", "") for s in jobs["apply"]["steps"]]
    assert [r for r in runs if "aws_provision" in r] == [
        "python manage.py aws_provision --json --no-input > apply-infra.json"
    ]
    assert any("--plan-comment plan-infra.json > plan.md" in s.get("run", "") for s in jobs["plan"]["steps"])


def test_a_second_run_writes_identical_files(generated):
    before = {w: (generated / w).read_bytes() for w in WORKFLOWS}
    stamps = {w: (generated / w).stat().st_mtime_ns for w in WORKFLOWS}
    out = StringIO()
    call_command("deploy_pipeline", "--github", "--output", str(generated), stdout=out)
    assert {w: (generated / w).read_bytes() for w in WORKFLOWS} == before
    assert {w: (generated / w).stat().st_mtime_ns for w in WORKFLOWS} == stamps  # not even rewritten
    assert out.getvalue().split() == [
        "unchanged",
        str(generated / WORKFLOWS[0]),
        "unchanged",
        str(generated / WORKFLOWS[1]),
    ]


def test_a_settings_change_updates_the_files_it_concerns(generated, settings):
    settings.DEPLOY = {**DEPLOY, "github_branch": "trunk"}
    out = StringIO()
    call_command("deploy_pipeline", "--github", "--output", str(generated), "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["ok"] is True  # the same shape as a refused run's document
    assert {Path(r["path"]).name: r["outcome"] for r in document["files"]} == {
        "delivery.yml": "updated",
        "infrastructure.yml": "updated",
    }
    assert load(generated, "delivery.yml")["on"]["push"]["branches"] == ["trunk"]


def test_a_hand_edited_file_is_refused_unless_forced(generated, settings):
    delivery_file, infrastructure_file = (generated / w for w in WORKFLOWS)
    edited = delivery_file.read_text().replace("runs-on: ubuntu-24.04", "runs-on: self-hosted", 1)
    delivery_file.write_text(edited)
    infrastructure_before = infrastructure_file.read_text()
    assert hand_edited(edited) and not hand_edited(infrastructure_before)
    settings.DEPLOY = {**DEPLOY, "github_branch": "trunk"}  # a change that would rewrite both
    with pytest.raises(CommandError, match=r"Not written: .*delivery\.yml changed since it was generated\. "
                                           r"Nothing was written\..*--force"):  # fmt: skip
        call_command("deploy_pipeline", "--github", "--output", str(generated), stdout=StringIO())
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("deploy_pipeline", "--github", "--output", str(generated), "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"ok": False, "error": str(excinfo.value)}  # one document, for CI
    assert delivery_file.read_text() == edited  # the hand edit is kept
    assert infrastructure_file.read_text() == infrastructure_before  # and nothing else was written
    call_command("deploy_pipeline", "--github", "--output", str(generated), "--force", stdout=StringIO())
    assert "self-hosted" not in delivery_file.read_text()
    assert not hand_edited(delivery_file.read_text())
    assert load(generated, "infrastructure.yml")["on"]["push"]["branches"] == ["trunk"]


@pytest.mark.parametrize(
    "deploy, message",
    [
        ({**DEPLOY, "github_repository": ""}, r"github_repository.*is required"),
        ({**DEPLOY, "image_repository": "shop"}, r"DEPLOY\['image_repository'\] \('shop'\) is not an ECR repository"),
        ({**DEPLOY, "aws_region": ""}, r"DEPLOY\['aws_region'\] .* is required by the pipeline"),
        ({**DEPLOY, "environments": {"staging": {"replicas_min": 1}}}, r"\['staging'\]\['replicas_min'\]"),
    ],
)
def test_settings_that_cannot_make_a_pipeline_write_nothing(settings, tmp_path, deploy, message):
    settings.DEPLOY = deploy
    with pytest.raises(CommandError, match=message):
        call_command("deploy_pipeline", "--github", "--output", str(tmp_path / "out"), stdout=StringIO())
    assert not (tmp_path / "out").exists()


def test_the_ci_system_must_be_named(settings, tmp_path):
    settings.DEPLOY = DEPLOY
    with pytest.raises(CommandError, match=r"Say which CI system: --github"):
        call_command("deploy_pipeline", "--output", str(tmp_path), stdout=StringIO())


@pytest.mark.slow
def test_the_plan_comment_summarises_real_change_sets(settings, tmp_path, monkeypatch):
    fake_aws_environment(monkeypatch, "eu-west-1")
    monkeypatch.chdir(tmp_path)
    deploy = {**DEPLOY, "image_repository": "shop"}
    settings.DEPLOY = deploy
    with mock_aws():
        boto3.client("cloudformation", region_name="eu-west-1")
        call_command("aws_provision", "--environment", "staging", "--no-input", stdout=StringIO())
        settings.DEPLOY = {**deploy, "node_instance_type": "m6i.large"}
        out = StringIO()
        call_command("aws_provision", "--environment", "staging", "--plan", "--json", "--no-input", stdout=out)
    (tmp_path / "plan-staging.json").write_text(out.getvalue())
    (tmp_path / "plan-production.json").write_text("")  # a plan that failed before its report
    comment = StringIO()
    call_command(
        "deploy_pipeline", "--plan-comment", "plan-staging.json", "plan-production.json", "missing.json", stdout=comment
    )
    text = comment.getvalue()
    stack = cfn.stack_name(load_config(deploy, environ={}, environment="staging"))
    assert f"### Stack `{stack}`" in text
    assert re.search(r"\| Modify \| `NodeGroup` \| AWS::EKS::Nodegroup \|", text)
    assert "The plan failed before it wrote its report" in text
    assert "### `missing.json`" in text and "did not run" in text


def test_role_names_in_the_workflows_come_from_one_place():
    base = load_config(DEPLOY, environ={})
    template = render()
    assert template["Resources"]["DeployStagingRole"]["Properties"]["RoleName"] == delivery.role_name(
        base, "deploy-staging"
    )


def test_the_deploy_jobs_install_what_the_deploy_commands_import(generated):
    """Every job that runs manage.py installs a file of this repository that holds every dependency the deploy
    app declares: with requirements/base.txt (the image's runtime), k8s_deploy stopped on `import
    kubernetes_validate` in every deploy job."""
    import tomllib

    from packaging.utils import canonicalize_name

    from tests.conftest import ROOT as root
    from tests.conftest import load_envs

    envs = load_envs()
    declared = {
        canonicalize_name(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0])
        for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    checked = 0
    for name in WORKFLOWS:
        for job_name, job in load(generated, Path(name).name)["jobs"].items():
            runs = [step.get("run", "") for step in job["steps"]]
            if not any("manage.py" in run for run in runs):
                continue
            install = next(run for run in runs if "pip install" in run)
            path = root / install.split(" -r ", 1)[1].split()[0]
            assert path.is_file(), f"{name} {job_name}: {install}"
            if path.suffix == ".lock":
                installed = set(envs.read_lock(path, root))
            else:
                installed = {canonicalize_name(i.requirement.name) for i in envs.read_requirements(path, root)}
            assert declared <= installed, f"{name} {job_name} lacks {sorted(declared - installed)}"
            checked += 1
    assert checked >= 4  # test, two deploys, plan, apply


def test_a_plan_that_failed_with_its_json_report_is_said_in_the_comment_not_no_change(settings, tmp_path, monkeypatch):
    # aws_provision --plan --json writes {"ok": false, "error": ...} when the plan fails: the comment must say so.
    fake_aws_environment(monkeypatch, "eu-west-1")
    monkeypatch.chdir(tmp_path)
    settings.DEPLOY = {**DEPLOY, "image_repository": "shop"}
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("aws_provision", "--environment", "staging", "--plan", "--json", "--no-input",
                     "--profile", "no-such-profile", stdout=out)  # fmt: skip
    (tmp_path / "plan-staging.json").write_text(out.getvalue())
    (tmp_path / "plan-production.json").write_text("[]")  # JSON, but not a report
    comment = StringIO()
    call_command("deploy_pipeline", "--plan-comment", "plan-staging.json", "plan-production.json", stdout=comment)
    text = comment.getvalue()
    assert "No change" not in text
    assert "**The plan failed**: The AWS profile 'no-such-profile' is not in ~/.aws/config" in text
    assert "### `plan-production.json`" in text and "The plan failed before it wrote its report" in text
