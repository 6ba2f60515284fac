"""The AWS infrastructure of the deploy, as one CloudFormation stack rendered from the same settings.

One module a part of the stack, each adding its resources to a :class:`~deploy.aws.cfn.template.Template` and
returning its outputs (the deploy settings it feeds):

- ``network``: the VPC, public and private subnets in each availability zone, NAT;
- ``eks``: the cluster (Secrets encrypted with KMS), staff access entries, the managed node group, the add-ons;
- ``identities``: the IAM roles pods get through EKS Pod Identity (CSI drivers, load balancer controller, app);
- ``secrets``: the app's secrets in Secrets Manager and the role only the External Secrets Operator may assume;
- ``backups``: the in-cluster PostgreSQL's backup bucket (and the CloudNativePG Cluster's WAL archive) and the
  backup pods' role;
- ``storage``: the EFS file system of the static files;
- ``rds``: the RDS PostgreSQL instance of postgres_mode 'rds';
- ``registry``: the ECR repository (in the first environment's stack);
- ``cutover``: the bucket that carries the SQLite file into the cluster;
- ``template``: what they build with; ``stack``: creating, updating and deleting the stack (change sets).
"""

from deploy.aws.cfn.backups import add_backups
from deploy.aws.cfn.cutover import add_cutover
from deploy.aws.cfn.eks import add_addons, add_cluster, infra_cluster_name
from deploy.aws.cfn.identities import add_identities, add_roles
from deploy.aws.cfn.network import add_network
from deploy.aws.cfn.rds import add_database
from deploy.aws.cfn.registry import add_registry
from deploy.aws.cfn.secrets import add_app_secrets
from deploy.aws.cfn.storage import add_storage
from deploy.aws.cfn.template import Template, to_text
from deploy.conf import check_aws_stack as check_settings
from deploy.k8s import names

__all__ = ["check_settings", "infra_cluster_name", "render_template", "stack_name", "to_text"]


def stack_name(config):
    return config.aws_stack_name or names.truncate(f"{names.scoped(config)}-infra")


# --- the template ----------------------------------------------------------------


def render_template(config):
    """The stack's template (a dict) for ``config``; ConfigError before anything is rendered if it cannot work.

    The parts are added in a fixed order, and their outputs gathered in another, so that the same settings always
    give the same text (build/cloudformation/STACK.json, and the unchanged-template check of ``stack.apply_stack``).
    """
    t = Template(config, check_settings(config))
    network = add_network(t)
    cluster = add_cluster(t)
    roles = add_roles(t)
    add_addons(t)
    add_identities(t)
    secrets = add_app_secrets(t)
    backups = add_backups(t) if config.postgres_in_cluster or config.postgres_operator else {}
    storage = add_storage(t)
    database = add_database(t) if config.postgres_mode == "rds" else {}
    registry = add_registry(t)
    cutover = add_cutover(t)
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Infrastructure of {config.app_name}: VPC, EKS, EFS, ECR (rendered by manage.py aws_provision)",
    }
    if config.aws_availability_zones:
        template["Parameters"] = {
            "AvailabilityZones": {
                "Type": "List<AWS::EC2::AvailabilityZone::Name>",
                "Default": ",".join(config.aws_availability_zones),
                "Description": "DEPLOY['aws_availability_zones']",
            }
        }
    outputs = {**secrets, **backups, **cluster, **storage, **roles, **network, **database, **registry, **cutover}
    return {**template, "Resources": t.resources, "Outputs": outputs}
