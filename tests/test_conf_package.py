"""The settings package: environment names derived from field names, checks in one module, settings in groups."""

import dataclasses

import pytest

from deploy import conf
from deploy.conf import ConfigError, checks, fields, groups, load_config
from tests.conftest import ROOT
from tests.forkserver import run_python

# The settings read from DEPLOY only, with no environment variable: every other one is DEPLOY_ + its name.
WITHOUT_ENVIRONMENT_VARIABLE = {"logging_quota", "monitoring_quota", "staff_access", "environments", "environment"}


def test_every_environment_variable_is_deploy_and_the_name_but_the_listed_exceptions():
    names = {f.name: fields.env_name(f) for f in conf.setting_fields()}
    assert {name for name, env in names.items() if env is None} == WITHOUT_ENVIRONMENT_VARIABLE
    assert set(fields.WITHOUT_ENVIRONMENT_VARIABLE) == WITHOUT_ENVIRONMENT_VARIABLE
    differing = {name: env for name, env in names.items() if env and env != f"DEPLOY_{name.upper()}"}
    assert differing == {}
    assert {row["name"]: row["env"] for row in conf.describe_settings()} == names


@pytest.mark.parametrize("kind", [int, bool])
def test_every_derived_variable_is_the_one_read(kind):
    # A value of the wrong type in each variable is refused with that variable's name: the name derived for
    # the message is the one load_config reads.
    typed = [f for f in conf.setting_fields() if f.type is kind]
    assert typed
    for f in typed:
        env = f"DEPLOY_{f.name.upper()}"
        with pytest.raises(ConfigError, match=f"environment variable {env}\\) must be"):
            load_config({}, environ={env: "many"})


def test_environment_strings_keep_this_tools_shapes_over_django_environs():
    # django-environ alone reads 'ok' as true and '1_000' as 1000; here both are refused, as before.
    with pytest.raises(ConfigError, match="DEPLOY_MONITORING\\) must be true or false; got 'ok'"):
        load_config({}, environ={"DEPLOY_MONITORING": "ok"})
    with pytest.raises(ConfigError, match="must be a whole number; got '1_000'"):
        load_config({}, environ={"DEPLOY_QUOTA_PODS": "1_000"})
    config = load_config(
        {},
        environ={
            "DEPLOY_MONITORING": "Off",
            "DEPLOY_QUOTA_PODS": " 12 ",
            "DEPLOY_HOSTS": " a.example.com, ,b.example.com",
        },
    )
    assert (config.monitoring, config.quota_pods, config.hosts) == (False, 12, ["a.example.com", "b.example.com"])


def test_a_bad_aws_value_is_refused_by_load_config_with_the_message_of_before():
    with pytest.raises(ConfigError) as excinfo:
        load_config({"node_instance_type": "large-t3"}, environ={})
    assert str(excinfo.value) == (
        "DEPLOY['node_instance_type'] 'large-t3' is not an EC2 instance type such as 't3.large' or 'm6i.xlarge'."
    )
    with pytest.raises(ConfigError, match=r"at least 2 different zones \(got \['eu-west-1a', 'eu-west-1a'\]\)"):
        load_config({"aws_availability_zones": ["eu-west-1a", "eu-west-1a"]}, environ={})


def test_the_settings_package_imports_no_aws_or_cloudformation_code():
    code = "import sys, deploy.conf; print(sorted(m for m in sys.modules if m.startswith(('deploy.aws', 'boto'))))"
    result = run_python(["-c", code], cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_the_stacks_network_rules_live_in_checks_and_run_for_aws_provision_only():
    from deploy.aws import cfn

    assert cfn.check_settings is checks.check_aws_stack
    # A cluster made elsewhere names its own VPC; the subnet settings, unused then, are not held against it.
    config = load_config({"vpc_cidr": "172.20.0.0/16"}, environ={})
    with pytest.raises(ConfigError) as excinfo:
        checks.check_aws_stack(config)
    assert (
        str(excinfo.value) == "DEPLOY['public_subnet_cidrs'] has 10.0.0.0/20, which is outside the VPC 172.20.0.0/16."
    )
    assert checks.check_aws_stack(load_config({"aws_availability_zones": ["a", "b"]}, environ={})) == 2


def test_every_setting_belongs_to_one_group_and_keeps_its_name_on_the_config():
    group_classes = [
        groups.AppSettings, groups.PostgresSettings, groups.RedisSettings, groups.PolicySettings,
        groups.ObservabilitySettings, groups.AwsSettings, groups.DeliverySettings,
    ]  # fmt: skip
    declared = [f.name for group in group_classes for f in dataclasses.fields(group)]
    assert declared == [f.name for f in conf.setting_fields()]  # each once, in the reference's order
    config = load_config({"postgres_mode": "cloudnative-pg"}, environ={})
    assert all(isinstance(config, group) for group in group_classes)
    assert (config.postgres_mode, config.postgres_operator, config.redis_in_cluster) == ("cloudnative-pg", True, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.postgres_mode = "external"
    assert groups.PostgresSettings().postgres_in_cluster  # a group stands alone, with its defaults


@pytest.mark.parametrize("setting", ["alert_sns_role_arn", "aws_cloudformation_role_arn"])
def test_role_arns_are_ascii_as_iam_makes_them(setting):
    # These two accepted any Unicode letter in the role's name (the other role settings did not): IAM refuses them.
    with pytest.raises(ConfigError, match=r"must be an IAM role ARN \(arn:aws:iam::ACCOUNT:role/NAME\)"):
        load_config({setting: "arn:aws:iam::123456789012:role/d\u00e9ploiement"}, environ={})
    assert getattr(load_config({setting: "arn:aws:iam::123456789012:role/deploy"}, environ={}), setting)


@pytest.mark.parametrize("setting", ["cutover_bucket", "postgres_backup_bucket"])
@pytest.mark.parametrize("bucket", ["my..bucket", "xn--shop", "shop-s3alias", "192.168.1.10"])
def test_both_bucket_settings_follow_s3s_naming_rules(setting, bucket):
    # The cut-over bucket had a weaker check of its own, which let these through to fail in CloudFormation.
    with pytest.raises(ConfigError, match=f"DEPLOY\\['{setting}'\\].*must be empty, or an S3 bucket name"):
        load_config({setting: bucket, "aws_region": "eu-west-1"}, environ={})
