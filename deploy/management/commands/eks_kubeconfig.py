"""A kubeconfig for an EKS cluster (for staff, using the AWS CLI exec plugin), or a bearer token."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy.aws import eks
from deploy.aws.session import AwsError
from deploy.conf import ConfigError, get_config


class Command(BaseCommand):
    help = "Print (or write) a kubeconfig for an EKS cluster that uses 'aws eks get-token', or print a token."

    def add_arguments(self, parser):
        parser.add_argument(
            "cluster", nargs="?", help="Name of the EKS cluster (default: the --environment's DEPLOY['eks_cluster'])."
        )
        parser.add_argument(
            "--environment",
            metavar="NAME",
            help="Take the cluster, region and profile from this environment of DEPLOY['environments'].",
        )
        parser.add_argument("--region", help="AWS region (default: the AWS SDK's).")
        parser.add_argument("--profile", help="AWS profile (default: the standard credential chain).")
        parser.add_argument("--output", metavar="FILE", help="Write the kubeconfig to FILE instead of printing it.")
        parser.add_argument("--token", action="store_true", help="Print a bearer token (k8s-aws-v1.…) instead.")
        parser.add_argument(
            "--role-arn",
            metavar="ARN",
            help="Act as this IAM role (a staff role of DEPLOY['staff_access']): the kubeconfig's 'aws eks "
            "get-token' assumes it (its own context, eks-REGION-CLUSTER-ROLE), and --token assumes it with STS "
            "first. Your own identity must be allowed to assume it.",
        )

    def handle(self, *args, cluster, environment, region, profile, output, token, role_arn, **options):
        if environment:
            try:
                config = get_config(environment)
            except ConfigError as exc:
                raise CommandError(f"Invalid deploy configuration: {exc}") from None
            cluster = cluster or config.eks_cluster
            region = region or config.aws_region or None
            profile = profile or config.aws_profile or None
            if not cluster:
                raise CommandError(
                    f"Environment {environment!r} names no EKS cluster: set DEPLOY['environments']"
                    f"[{environment!r}]['eks_cluster'] (or DEPLOY['eks_cluster']), or name the cluster."
                )
        elif not cluster:
            raise CommandError("Name the EKS cluster (manage.py eks_kubeconfig CLUSTER) or pass --environment NAME.")
        try:
            access = eks.staff_access(cluster, region, profile, role_arn, token)
        except AwsError as exc:
            raise CommandError(str(exc)) from None
        if token:
            self.stdout.write(access.text)
        elif output:
            path = Path(output)
            path.write_text(access.text)
            path.chmod(0o600)
            self.stdout.write(f"Wrote {path} (context {access.context}).")
        else:
            self.stdout.write(access.text, ending="")
