"""A kubeconfig for an EKS cluster (for staff, using the AWS CLI exec plugin), or a bearer token."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy.aws import eks
from deploy.aws.session import AwsError, session


class Command(BaseCommand):
    help = "Print (or write) a kubeconfig for an EKS cluster that uses 'aws eks get-token', or print a token."

    def add_arguments(self, parser):
        parser.add_argument("cluster", help="Name of the EKS cluster.")
        parser.add_argument("--region", help="AWS region (default: the AWS SDK's).")
        parser.add_argument("--profile", help="AWS profile (default: the standard credential chain).")
        parser.add_argument("--output", metavar="FILE", help="Write the kubeconfig to FILE instead of printing it.")
        parser.add_argument("--token", action="store_true", help="Print a bearer token (k8s-aws-v1.…) instead.")

    def handle(self, *args, cluster, region, profile, output, token, **options):
        try:
            aws = session(region, profile)
            if token:
                self.stdout.write(eks.make_token(aws, cluster))
                return
            text = eks.kubeconfig(eks.describe_cluster(aws, cluster), aws.region_name, profile)
        except AwsError as exc:
            raise CommandError(str(exc)) from None
        if output:
            path = Path(output)
            path.write_text(text)
            path.chmod(0o600)
            self.stdout.write(f"Wrote {path} (context eks-{aws.region_name}-{cluster}).")
        else:
            self.stdout.write(text, ending="")
