"""aws_provision: the CloudFormation template (cfn-lint) and the stack's life (moto)."""

import base64
import json
import re
import subprocess
from io import StringIO
from pathlib import Path
from unittest import mock

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from django.core.management import call_command
from django.core.management.base import CommandError
from moto import mock_aws

from deploy.aws import cfn, rds
from deploy.aws.cfn import stack
from deploy.aws.cfn.eks import ADDONS
from deploy.aws.cfn.rds import database_cidr
from deploy.aws.session import AwsError
from deploy.conf import ConfigError, DeploySecrets, load_config
from deploy.k8s import wiring
from deploy.k8s.render import RenderError, render_manifests
from deploy.k8s.wiring import Flow
from tests.aws_helpers import fake_aws_environment, without_cluster_output
from tests.conftest import tool
from tests.k8s_helpers import by_kind

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-west-1"
OPTIONS = {
    "default": {},
    "three-zones-nat-per-az": {
        "aws_availability_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
        "public_subnet_cidrs": ["10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20"],
        "private_subnet_cidrs": ["10.0.64.0/19", "10.0.96.0/19", "10.0.128.0/19"],
        "nat_gateways": "per-az",
    },
    "bigger-nodes": {"node_instance_type": "m6i.2xlarge", "node_count_min": 3, "node_count_max": 10},
    "staff-access": {"staff_access": {"arn:aws:iam::123456789012:role/support": "read-only",
                                      "arn:aws:iam::123456789012:user/ops/alice": "operator"}},
    "other-names": {"app_name": "shop", "namespace": "shop", "aws_stack_name": "shop-prod",
                    "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/web",
                    "kubernetes_version": "1.31"},
    "rds": {"postgres_mode": "rds"},
    "cloudnative-pg": {"postgres_mode": "cloudnative-pg"},
    "rds-single-az-other-version": {"postgres_mode": "rds", "rds_multi_az": False, "rds_engine_version": "17.6",
                                    "rds_instance_class": "db.m7g.large", "rds_storage_size": 100,
                                    "rds_backup_retention_days": 35},
}  # fmt: skip


def test_cfn_lint_passes_for_the_default_and_each_option(tmp_path):
    files = []
    for name, deploy in OPTIONS.items():
        path = tmp_path / f"{name}.json"
        path.write_text(cfn.to_text(cfn.render_template(load_config(deploy, environ={}))))
        files.append(str(path))
    result = subprocess.run([tool("cfn-lint"), "--regions", REGION, "--", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_has_what_the_deploy_needs():
    template = cfn.render_template(load_config({}, environ={}))
    types = [r["Type"] for r in template["Resources"].values()]
    for kind in ("AWS::EC2::VPC", "AWS::EC2::NatGateway", "AWS::EKS::Cluster", "AWS::EKS::Nodegroup",
                 "AWS::EFS::FileSystem", "AWS::ECR::Repository", "AWS::EKS::PodIdentityAssociation"):  # fmt: skip
        assert kind in types
    assert types.count("AWS::EC2::Subnet") == 4 and types.count("AWS::EFS::MountTarget") == 2
    addons = {r["Properties"]["AddonName"]: r["Properties"] for r in template["Resources"].values()
              if r["Type"] == "AWS::EKS::Addon"}  # fmt: skip
    assert set(addons) == set(ADDONS)
    assert json.loads(addons["vpc-cni"]["ConfigurationValues"]) == {"enableNetworkPolicy": "true"}
    assert set(template["Outputs"]) >= {"ClusterName", "EfsFileSystemId", "RepositoryUri"}


def test_a_changed_setting_changes_only_its_sections():
    base = cfn.render_template(load_config({}, environ={}))
    changed = cfn.render_template(load_config({"node_instance_type": "m6i.large"}, environ={}))
    differing = {k for k in base["Resources"] if base["Resources"][k] != changed["Resources"][k]}
    assert differing == {"NodeGroup"}
    per_az = cfn.render_template(load_config({"nat_gateways": "per-az"}, environ={}))
    added = set(per_az["Resources"]) - set(base["Resources"])
    assert added == {"NatAddress2", "NatGateway2", "PrivateRouteTable2", "PrivateRoute2"}
    differing = {k for k in base["Resources"] if base["Resources"][k] != per_az["Resources"][k]}
    assert differing == {"PrivateSubnet2Routes"}


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ({"aws_availability_zones": ["eu-west-1a"]}, "at least 2 different zones"),
        ({"aws_availability_zones": ["eu-west-1a", "eu-west-1a"]}, "at least 2 different zones"),
        ({"public_subnet_cidrs": ["10.0.0.0/20", "10.0.64.0/20"]}, r"overlaps 10\.0\.64\.0/20"),
        ({"private_subnet_cidrs": ["10.0.64.0/18", "10.1.0.0/18"]}, "outside the VPC"),
        ({"node_instance_type": "large-t3"}, "not an EC2 instance type"),
        ({"node_instance_type": "t3.huge"}, "not an EC2 instance type"),
        ({"node_count_min": 5, "node_count_max": 3}, "node_count_min"),
        ({"public_subnet_cidrs": ["10.0.0.0/20"]}, "one CIDR per availability zone"),
    ],
)
def test_bad_settings_end_before_any_aws_call(settings, deploy, message, monkeypatch):
    settings.DEPLOY = deploy
    with (
        mock.patch("boto3.Session", side_effect=AssertionError("no AWS call may happen")),
        pytest.raises(CommandError, match=message) as excinfo,
    ):
        call_command("aws_provision", stdout=StringIO())
    assert "\n" not in str(excinfo.value)
    with pytest.raises(ConfigError):
        cfn.check_settings(load_config(deploy, environ={}))


@pytest.mark.parametrize("modes", [("--render", "--delete"), ("--plan", "--delete"), ("--render", "--plan")])
def test_the_modes_exclude_each_other(modes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match=r"not allowed with argument"):
        call_command("aws_provision", "--no-input", *modes, stdout=StringIO())
    assert not (tmp_path / "build").exists()  # refused before anything was rendered or written


@pytest.fixture
def aws(monkeypatch, tmp_path):
    fake_aws_environment(monkeypatch, REGION)
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION)


def provision(*args):
    out = StringIO()
    call_command("aws_provision", "--no-input", *args, stdout=out)
    return out.getvalue()


def test_the_cloudnative_pg_mode_gets_the_backup_bucket_its_archive_goes_to(aws, settings, monkeypatch):
    # moto makes the bucket, but neither its lifecycle rules nor the pod identity associations: test_backup_s3
    # checks those in the template.
    monkeypatch.setattr(cfn, "render_template", without_cluster_output(cfn.render_template))
    settings.DEPLOY = {"postgres_mode": "cloudnative-pg"}
    out = provision()
    stack = aws.describe_stacks(StackName="django-app-infra")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert f"DEPLOY['postgres_backup_bucket'] = '{outputs['BackupBucketName']}'" in out
    s3 = boto3.client("s3", region_name=REGION)
    assert outputs["BackupBucketName"] in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # The setting it prints is accepted in this mode now (with the region the pods write in).
    config = load_config({"postgres_mode": "cloudnative-pg", "postgres_backup_bucket": outputs["BackupBucketName"],
                          "aws_region": REGION}, environ={})  # fmt: skip
    assert config.postgres_backup_bucket == outputs["BackupBucketName"]


def test_the_stack_is_created_its_events_shown_and_its_outputs_read(aws, monkeypatch):
    # moto creates no EKS cluster, node group, add-on or pod identity association from CloudFormation: those
    # resources are checked by cfn-lint only.
    monkeypatch.setattr(cfn, "render_template", without_cluster_output(cfn.render_template))
    out = provision()
    stack = aws.describe_stacks(StackName="django-app-infra")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    # Events as they arrived (moto records the stack's own events, not each resource's).
    assert "CREATE_IN_PROGRESS" in out and "CREATE_COMPLETE" in out
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["RepositoryUri"].endswith("/django-app")
    assert outputs["EfsFileSystemId"].startswith("fs-")
    assert "DEPLOY['efs_file_system_id'] = 'fs-" in out
    assert f"DEPLOY['cutover_bucket'] = {outputs['CutoverBucket']!r}" in out  # as docs/infrastructure.md lists
    assert Path("build/cloudformation/django-app-infra.json").exists()
    assert boto3.client("eks", region_name=REGION).list_clusters()["clusters"] == []  # as said above


def test_an_unchanged_template_is_nothing_to_change_without_a_change_set(aws):
    provision()
    with mock.patch.object(stack, "plan_change_set", side_effect=AssertionError("no change set")):
        assert "Nothing to change" in provision()


def test_plan_shows_the_change_set_and_executes_nothing(aws, settings):
    provision()
    settings.DEPLOY = {"node_instance_type": "m6i.large"}
    report = json.loads(provision("--plan", "--json"))
    assert report["executed"] is False
    assert {c["resource"] for c in report["changes"]} >= {"NodeGroup"}
    deployed = aws.get_template(StackName="django-app-infra")["TemplateBody"]
    deployed = deployed if isinstance(deployed, dict) else json.loads(deployed)
    assert deployed["Resources"]["NodeGroup"]["Properties"]["InstanceTypes"] == ["t3.large"]


def test_a_failed_create_is_reported_with_its_resource_and_reason(aws):
    # An ECR repository of that name already exists: moto refuses the creation at once.
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName="django-app")
    with pytest.raises(CommandError, match=r"Creating stack django-app-infra: .*RepositoryAlreadyExists.*django-app"):
        provision()


def test_a_failed_run_with_json_prints_one_document_with_the_error(aws):
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName="django-app")
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("aws_provision", "--no-input", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["ok"] is False and document["error"] == str(excinfo.value)
    assert "RepositoryAlreadyExists" in document["error"]
    assert document["error"].endswith("The template is in build/cloudformation/django-app-infra.json.")
    # What is left is moto's: its create_stack raised while it made the resources, and its record of the stack
    # stays CREATE_IN_PROGRESS. (Real CloudFormation accepts the call and reports the failure in the stack's events,
    # then rolls back: test_cfn_stack.py's test_a_create_that_rolls_back_is_reported_with_the_resource_that_failed.)
    left = [(s["StackName"], s["StackStatus"]) for s in aws.list_stacks()["StackSummaries"]]
    assert left == [("django-app-infra", "CREATE_IN_PROGRESS")]


def test_failed_stack_events_name_the_resource(aws):
    """The path real CloudFormation takes: a resource fails, the stack rolls back (events stubbed)."""
    from datetime import UTC, datetime

    client = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(client)
    now = datetime.now(UTC)
    event = {"StackId": "id", "EventId": "e1", "StackName": "s", "LogicalResourceId": "NodeGroup",
             "ResourceType": "AWS::EKS::Nodegroup", "Timestamp": now, "ResourceStatus": "CREATE_FAILED",
             "ResourceStatusReason": "Instance type t3.huge is not supported"}  # fmt: skip
    stubber.add_response("describe_stack_events", {"StackEvents": [event]})
    stubber.add_response(
        "describe_stacks",
        {"Stacks": [{"StackName": "s", "CreationTime": now, "StackStatus": "ROLLBACK_COMPLETE"}]},
    )
    lines = []
    with stubber:
        final, failure, _ = stack.stream_events(client, "s", 0, lines.append)
    assert final == "ROLLBACK_COMPLETE"
    assert failure == ("NodeGroup", "AWS::EKS::Nodegroup", "Instance type t3.huge is not supported")
    assert "NodeGroup" in lines[0] and "CREATE_FAILED" in lines[0]


def test_delete_asks_for_the_stack_name(aws, monkeypatch):
    # moto cannot delete the full stack (it deletes the VPC before what is in it): a small one shows the flow.
    small = {"Resources": {"Repository": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": "x"}}},
             "Outputs": {}}  # fmt: skip
    monkeypatch.setattr(cfn, "render_template", lambda config: small)
    provision()
    monkeypatch.setattr("builtins.input", lambda *prompt: "wrong-name")
    with pytest.raises(CommandError, match="Cancelled"):
        call_command("aws_provision", "--delete", stdout=StringIO())
    provision("--delete")
    stacks = aws.describe_stacks()["Stacks"]
    assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks if s["StackName"] == "django-app-infra")


# --- postgres_mode 'rds': the managed database (docs/high-availability.md#managed-postgresql-rds) ---------------

RDS = {"postgres_mode": "rds"}
SECRETS_ENV = {
    "DEPLOY_SECRET_KEY": "rds-canary-secret-key-1",
    "DEPLOY_POSTGRES_PASSWORD": "rds-canary-app-password-2",
    "DEPLOY_REDIS_PASSWORD": "rds-canary-redis-password-3",
    "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "rds-canary-superuser-4",
}
SECRETS = {name: SECRETS_ENV[env] for name, env in DeploySecrets.ENV.items() if env in SECRETS_ENV}


def test_the_rds_instance_is_multi_az_encrypted_private_and_its_password_is_not_in_the_template():
    deploy = {
        **RDS,
        "rds_backup_retention_days": 14,
        "rds_instance_class": "db.m7g.large",
        "rds_engine_version": "17.6",
    }
    template = cfn.render_template(load_config(deploy, environ={}))
    resources = template["Resources"]
    database = resources["Database"]
    db = database["Properties"]
    assert database["Type"] == "AWS::RDS::DBInstance"
    assert (db["Engine"], db["EngineVersion"], db["DBInstanceClass"]) == ("postgres", "17.6", "db.m7g.large")
    assert db["MultiAZ"] is True and db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True and db["KmsKeyId"] == {"Ref": "DatabaseKey"}
    key = resources["DatabaseKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    assert db["ManageMasterUserPassword"] is True and db["MasterUserSecret"] == {"KmsKeyId": {"Ref": "DatabaseKey"}}
    assert (db["BackupRetentionPeriod"], db["DeletionProtection"], db["CopyTagsToSnapshot"]) == (14, True, True)
    assert database["DeletionPolicy"] == database["UpdateReplacePolicy"] == "Snapshot"
    # In the private subnets, and only there.
    subnets = resources[db["DBSubnetGroupName"]["Ref"]]
    assert subnets["Type"] == "AWS::RDS::DBSubnetGroup"
    assert subnets["Properties"]["SubnetIds"] == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    # Its one security group admits 5432 from the EKS cluster security group (the pods') and nothing else.
    [group] = [g["Ref"] for g in db["VPCSecurityGroups"]]
    assert "SecurityGroupIngress" not in resources[group]["Properties"]
    ingress = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    rules = [r for r in ingress if r["GroupId"] == {"Ref": group}]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["SourceSecurityGroupId"]) for r in rules] == [
        ("tcp", 5432, 5432, {"Fn::GetAtt": ["Cluster", "ClusterSecurityGroupId"]})
    ]
    assert not [r for r in rules if "CidrIp" in r]
    parameters = resources[db["DBParameterGroupName"]["Ref"]]["Properties"]
    assert parameters["Family"] == "postgres17" and parameters["Parameters"] == {"rds.force_ssl": "1"}
    outputs = template["Outputs"]
    assert outputs["DatabaseAddress"]["Value"] == {"Fn::GetAtt": ["Database", "Endpoint.Address"]}
    assert outputs["DatabasePort"]["Value"] == {"Fn::GetAtt": ["Database", "Endpoint.Port"]}
    assert outputs["DatabaseMasterSecretArn"]["Value"] == {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]}
    assert outputs["DatabaseCidr"]["Value"] == "10.0.0.0/16"  # the default private subnets span half the VPC each
    # No password property anywhere: RDS generates the master password and keeps it in Secrets Manager.
    text = json.dumps(database)
    assert '"MasterUserPassword"' not in text and text.count("Password") == 1  # ManageMasterUserPassword
    # No output hands out a secret's value (a dynamic reference would resolve to it).
    assert "resolve:secretsmanager" not in cfn.to_text(template)
    assert "SecretString" not in json.dumps(template["Outputs"])


def test_without_rds_mode_the_template_has_no_database():
    for deploy in (
        {},
        {"postgres_mode": "external", "postgres_host": "db.example.internal", "postgres_cidr": "10.9.0.0/16"},
    ):
        template = cfn.render_template(load_config(deploy, environ={}))
        assert not [k for k in template["Resources"] if k.startswith("Database")]
        assert not [k for k in template["Outputs"] if k.startswith("Database")]
    single = cfn.render_template(load_config({**RDS, "rds_multi_az": False}, environ={}))
    assert single["Resources"]["Database"]["Properties"]["MultiAZ"] is False


@pytest.mark.parametrize(
    ("private", "cidr"),
    [
        (["10.0.64.0/19", "10.0.96.0/19"], "10.0.64.0/18"),
        (["10.0.64.0/19", "10.0.96.0/19", "10.0.128.0/19"], "10.0.0.0/16"),
        (["10.0.64.0/18", "10.0.128.0/18"], "10.0.0.0/16"),
    ],
)
def test_the_database_cidr_is_the_smallest_network_holding_every_private_subnet(private, cidr):
    zones = {"aws_availability_zones": [f"eu-west-1{z}" for z in "abc"[: len(private)]]}
    public = ["10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20"][: len(private)]
    config = load_config({**RDS, **zones, "private_subnet_cidrs": private, "public_subnet_cidrs": public}, environ={})
    assert database_cidr(config) == cidr


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ({**RDS, "postgres_host": "db.example.internal"}, r"postgres_host'\] must be empty .* 'rds'"),
        ({**RDS, "postgres_cidr": "10.0.0.0/16"}, r"postgres_cidr'\] must be empty"),
        ({**RDS, "rds_instance_class": "m7g.large"}, "RDS instance class"),
        ({**RDS, "rds_backup_retention_days": 0}, "from 1 to 35"),
        ({**RDS, "rds_backup_retention_days": 36}, "from 1 to 35"),
        ({**RDS, "rds_engine_version": "16"}, "PostgreSQL version"),
        ({**RDS, "rds_storage_size": 10}, "from 20 to 65536"),
    ],
)
def test_bad_rds_settings_are_refused(deploy, message):
    with pytest.raises(ConfigError, match=message):
        load_config(deploy, environ={})


def _moto_ready(render):
    """The rds template as moto can create it, each change for a gap in moto 5's CloudFormation:
    it creates no EKS cluster, so the cluster security group the ingress rule names is a stand-in group; a Ref to
    a DBParameterGroup reaches its create_db_instance as an object, so the instance is made without it (the group
    itself is created and checked); GetAtt MasterUserSecret.SecretArn is unknown to it, as is ClusterName's
    cluster, and one unresolvable output makes it drop them all."""

    def template(config):
        rendered = without_cluster_output(render)(config)
        rendered["Outputs"].pop("DatabaseMasterSecretArn")
        rendered["Resources"]["ClusterSecurityGroupStandIn"] = {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {"GroupDescription": "stands for the EKS cluster security group", "VpcId": {"Ref": "Vpc"}},
        }
        ingress = rendered["Resources"]["DatabaseIngressFromCluster"]["Properties"]
        assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["Cluster", "ClusterSecurityGroupId"]}
        ingress["SourceSecurityGroupId"] = {"Fn::GetAtt": ["ClusterSecurityGroupStandIn", "GroupId"]}
        rendered["Resources"]["Database"]["Properties"].pop("DBParameterGroupName")
        return rendered

    return template


@pytest.fixture
def rds_stack(aws, settings, monkeypatch):
    settings.DEPLOY = RDS
    monkeypatch.setattr(cfn, "render_template", _moto_ready(cfn.render_template))
    out = provision()
    stack = aws.describe_stacks(StackName="django-app-infra")["Stacks"][0]
    return out, stack, {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_moto_creates_the_rds_instance_in_the_private_subnets_behind_its_security_group(aws, rds_stack):
    out, stack, outputs = rds_stack
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    rds = boto3.client("rds", region_name=REGION)
    [instance] = rds.describe_db_instances()["DBInstances"]
    assert (instance["Engine"], instance["EngineVersion"]) == ("postgres", "16.10")
    assert instance["MultiAZ"] and instance["StorageEncrypted"] and not instance["PubliclyAccessible"]
    assert instance["BackupRetentionPeriod"] == 7 and instance["CopyTagsToSnapshot"]
    resources = aws.describe_stack_resources(StackName="django-app-infra")["StackResources"]
    physical = {r.get("LogicalResourceId"): r.get("PhysicalResourceId") for r in resources}  # moto: some lack both
    subnets = {s["SubnetIdentifier"] for s in instance["DBSubnetGroup"]["Subnets"]}
    assert subnets == {physical["PrivateSubnet1"], physical["PrivateSubnet2"]}
    ec2 = boto3.client("ec2", region_name=REGION)
    [group] = ec2.describe_security_groups(GroupIds=[physical["DatabaseSecurityGroup"]])["SecurityGroups"]
    admitted = [(p["IpProtocol"], p["FromPort"], p["ToPort"], [g["GroupId"] for g in p["UserIdGroupPairs"]],
                 p["IpRanges"]) for p in group["IpPermissions"]]  # fmt: skip
    assert admitted == [("tcp", 5432, 5432, [physical["ClusterSecurityGroupStandIn"]], [])]
    groups = rds.describe_db_parameter_groups()["DBParameterGroups"]
    [ours] = [g for g in groups if not g["DBParameterGroupName"].startswith("default.")]  # moto keeps no id of it
    assert ours["DBParameterGroupFamily"] == "postgres16"
    forced = rds.describe_db_parameters(DBParameterGroupName=ours["DBParameterGroupName"], Source="user")
    assert {(p["ParameterName"], p["ParameterValue"]) for p in forced["Parameters"]} == {("rds.force_ssl", "1")}
    assert outputs["DatabaseAddress"] == instance["Endpoint"]["Address"]
    assert outputs["DatabasePort"] == "5432" and outputs["DatabaseCidr"] == "10.0.0.0/16"
    assert f"PostgreSQL (RDS): {instance['Endpoint']['Address']}:5432" in out


def _database_url(manifests):
    from urllib.parse import urlsplit

    [url] = [base64.b64decode(m["data"]["DATABASE_URL"]).decode() for m in manifests
             if m["kind"] == "Secret" and "DATABASE_URL" in m.get("data", {})]  # fmt: skip
    return urlsplit(url)


def test_k8s_deploy_wiring_comes_from_the_stack_outputs(aws, rds_stack):
    _, _, outputs = rds_stack
    config = load_config(RDS, environ={})
    wired = rds.wire(config, aws)
    assert (wired.postgres_host, wired.postgres_port, wired.postgres_cidr) == (
        outputs["DatabaseAddress"], 5432, outputs["DatabaseCidr"])  # fmt: skip
    manifests = render_manifests(wired, DeploySecrets(**SECRETS), redact=False)
    url = _database_url(manifests)
    assert (url.hostname, url.port, url.username, url.query) == (outputs["DatabaseAddress"], 5432, "app",
                                                                  "sslmode=require")  # fmt: skip
    # The app's and the migration Job's egress reach that CIDR on that port, and the wiring rule holds.
    allowed = set(wiring.reachability(manifests))
    for source in ("django-app/app", "django-app/migrate"):
        assert Flow(source, outputs["DatabaseCidr"], "5432/TCP") in allowed
    assert not [f for f in allowed if f.destination == "django-app/postgres"]
    assert wiring.wiring_problems(manifests, wired) == []
    assert not [s for s in by_kind(manifests, "StatefulSet") if "postgres" in s["metadata"]["name"]]


def test_k8s_deploy_renders_rds_mode_from_the_stack_without_leaking_secrets(aws, rds_stack, monkeypatch):
    _, _, outputs = rds_stack
    for name, value in SECRETS_ENV.items():
        monkeypatch.setenv(name, value)
    out = StringIO()
    call_command("k8s_deploy", "--render", stdout=out)
    text = out.getvalue()
    assert f"cidr: {outputs['DatabaseCidr']}" in text
    assert not [v for v in SECRETS_ENV.values() if v in text or base64.b64encode(v.encode()).decode() in text]
    assert "arn:aws:secretsmanager" not in text  # the master secret is not the app's
    out = StringIO()
    call_command("k8s_deploy", "--render", "--include-secrets", stdout=out)
    url = _database_url([m for m in yaml.safe_load_all(out.getvalue()) if m])
    assert (url.hostname, url.port, url.password) == (outputs["DatabaseAddress"], 5432, SECRETS["postgres_password"])


def test_rds_mode_without_the_stack_or_its_outputs_renders_nothing(aws, settings, tmp_path):
    settings.DEPLOY = RDS
    with pytest.raises(CommandError, match=r"django-app-infra.*aws_provision.*Nothing was rendered") as excinfo:
        call_command("k8s_deploy", "--render", "--output", "out", stdout=StringIO())
    assert "\n" not in str(excinfo.value)
    assert re.search(r"does not exist\. Create it with 'manage\.py aws_provision'", str(excinfo.value))
    assert not (tmp_path / "out").exists()
    # A stack made without the rds mode has no database outputs: named, with the fix.
    settings.DEPLOY = {}
    provision()
    with pytest.raises(AwsError, match=r"no DatabaseAddress, DatabasePort, DatabaseCidr output.*aws_provision"):
        rds.wire(load_config(RDS, environ={}), aws)
    with pytest.raises(RenderError, match=r"'rds'.*k8s_deploy"):
        render_manifests(load_config(RDS, environ={}))


def test_only_the_cutover_jobs_identity_may_read_the_cutover_file():
    from deploy.aws import transfer
    from deploy.k8s import cutover
    from tests.test_delivery_aws import allows

    bucket = "arn:aws:s3:::shop-cutover-bucket"
    for deploy in ({}, {"postgres_mode": "external", "postgres_host": "10.1.2.3", "postgres_cidr": "10.1.0.0/16"}):
        config = load_config(deploy, environ={})
        template = json.loads(
            json.dumps(cfn.render_template(config))
            .replace("${CutoverBucket.Arn}", bucket)
            .replace("${BackupBucket.Arn}", "arn:aws:s3:::shop-backups")
        )  # as AWS resolves them
        resources = template["Resources"]

        def statements(logical):
            properties = resources[logical]["Properties"]
            if resources[logical]["Type"] == "AWS::IAM::Policy":
                return properties["PolicyDocument"]["Statement"]
            return [s for p in properties.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]

        key = f"{bucket}/{transfer.object_key(config.app_name, 'a' * 64)}"
        reader = statements("CutoverRole")
        assert allows(reader, "s3:GetObject", key)
        elsewhere = (("s3:GetObject", f"{bucket}/other/file"), ("s3:GetObject", "arn:aws:s3:::x/cutover/f"))
        for action, resource in (("s3:PutObject", key), ("s3:DeleteObject", key), ("s3:ListBucket", bucket),
                                 *elsewhere):  # fmt: skip
            assert not allows(reader, action, resource), (action, resource)
        # No other role of the stack may read it (the app's pods included).
        others = [n for n, r in resources.items() if r["Type"] in ("AWS::IAM::Role", "AWS::IAM::Policy")]
        assert "AppRole" in others
        for logical in others:
            if logical != "CutoverRole":
                assert not allows([s for s in statements(logical) if s["Effect"] == "Allow"], "s3:GetObject", key)
        # The role is the pod identity of the ServiceAccount the cut-over Job runs as, in the app's namespace.
        trust = resources["CutoverRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                          "Action": ["sts:AssumeRole", "sts:TagSession"]}]  # fmt: skip
        association = resources["CutoverIdentity"]["Properties"]
        job, _ = cutover.cutover_manifests(config, "b", "k", "a" * 64, 1)
        assert association["ServiceAccount"] == job["spec"]["template"]["spec"]["serviceAccountName"]
        assert association["Namespace"] == job["metadata"]["namespace"] == config.namespace
        assert association["RoleArn"] == {"Fn::GetAtt": ["CutoverRole", "Arn"]}
        # The bucket: nothing public, TLS only, the file expires; its name is what DEPLOY['cutover_bucket'] takes.
        properties = resources["CutoverBucket"]["Properties"]
        assert all(properties["PublicAccessBlockConfiguration"].values())
        (rule,) = properties["LifecycleConfiguration"]["Rules"]
        assert rule["Prefix"] == transfer.PREFIX and rule["ExpirationInDays"] == 7
        (deny,) = resources["CutoverBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert template["Outputs"]["CutoverBucket"] == {"Description": "DEPLOY['cutover_bucket']",
                                                        "Value": {"Ref": "CutoverBucket"}}  # fmt: skip


def test_delete_with_json_prints_one_document_and_asks_on_stderr(aws, monkeypatch):
    small = {"Resources": {"Repository": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": "x"}}},
             "Outputs": {}}  # fmt: skip
    monkeypatch.setattr(cfn, "render_template", lambda config: small)
    provision()
    monkeypatch.setattr("sys.stdin", StringIO("django-app-infra\n"))
    out, err = StringIO(), StringIO()
    call_command("aws_provision", "--delete", "--json", stdout=out, stderr=err)
    assert json.loads(out.getvalue()) == {
        "stack": "django-app-infra", "region": REGION, "status": "DELETE_COMPLETE", "outcome": "deleted", "ok": True,
    }  # fmt: skip
    assert "Type its name" in err.getvalue()


def test_delete_without_an_answer_deletes_nothing_and_says_how_to_skip_the_question(aws, monkeypatch):
    small = {"Resources": {"Repository": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": "x"}}},
             "Outputs": {}}  # fmt: skip
    monkeypatch.setattr(cfn, "render_template", lambda config: small)
    provision()
    monkeypatch.setattr("sys.stdin", StringIO(""))  # closed: a CI job that forgot --no-input
    out = StringIO()
    with pytest.raises(CommandError, match=r"^Cancelled: no answer .*nothing was deleted\. Pass --no-input"):
        call_command("aws_provision", "--delete", "--json", stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue())["ok"] is False
    assert aws.describe_stacks(StackName="django-app-infra")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"


def test_deleting_a_stack_that_is_not_there_says_so_instead_of_delete_complete(aws):
    # CloudFormation accepts deleting a stack that does not exist (a wrong region, a wrong --environment).
    text = provision("--delete")
    assert text.strip() == f"There is no stack django-app-infra in {REGION}: nothing to delete."
    document = json.loads(provision("--delete", "--json"))
    assert (document["outcome"], document["status"], document["ok"]) == ("absent", None, True)


def test_a_stack_name_cloudformation_refuses_ends_with_one_json_document(aws, settings):
    settings.DEPLOY = {"aws_stack_name": "shop_prod"}
    out = StringIO()
    with pytest.raises(CommandError, match=r"'shop_prod' is not a CloudFormation stack name") as excinfo:
        call_command("aws_provision", "--plan", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"ok": False, "error": str(excinfo.value)}
    assert aws.list_stacks()["StackSummaries"] == []


def test_a_template_that_cannot_be_written_ends_before_any_aws_call_with_one_json_document(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    out = StringIO()
    with (
        mock.patch("boto3.Session", side_effect=AssertionError("no AWS call may happen")),
        pytest.raises(CommandError, match=r"^Cannot write the template to .*file/t\.json: \w.*\. Pass --output"),
    ):
        call_command("aws_provision", "--plan", "--json", "--output", str(tmp_path / "file" / "t.json"), stdout=out)
    assert json.loads(out.getvalue())["ok"] is False
