"""Create or update the AWS infrastructure of the deploy as one CloudFormation stack."""

from contextlib import nullcontext
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy.aws import cfn
from deploy.aws.cfn import stack
from deploy.aws.session import AwsError, sentence, session
from deploy.conf import ConfigError, get_config, get_environment_names
from deploy.management.output import JsonDocument


class Command(BaseCommand):
    help = (
        "Render the AWS infrastructure (VPC, EKS, add-ons, IAM, EFS, ECR) as one CloudFormation template from the "
        "deploy settings, and create or update its stack through a change set."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--environment", metavar="NAME", help="Provision this environment of DEPLOY['environments']."
        )
        parser.add_argument(
            "--delivery",
            action="store_true",
            help="The delivery stack instead: the GitHub OIDC provider and the roles the pipeline assumes, for every "
            "environment (or the --environment given).",
        )
        mode = parser.add_mutually_exclusive_group()  # without one: create or update the stack
        mode.add_argument("--plan", action="store_true", help="Create a change set and show it; execute nothing.")
        mode.add_argument("--render", action="store_true", help="Print the template and stop (no AWS call).")
        mode.add_argument("--delete", action="store_true", help="Delete the stack (asks for its name first).")
        parser.add_argument(
            "--output", metavar="FILE", help="Where to write the template (default build/cloudformation/STACK.json)."
        )
        parser.add_argument("--region", help="AWS region (default: DEPLOY['aws_region'], then the AWS SDK's).")
        parser.add_argument("--profile", help="AWS profile (default: DEPLOY['aws_profile'], then the standard chain).")
        parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
        parser.add_argument(
            "--no-input", "--noinput", action="store_false", dest="interactive", help="Never ask for confirmation."
        )

    def handle(self, *args, **options):
        self.options = options
        document = JsonDocument(self.stdout)
        with document.run() if options["json"] else nullcontext():
            self._run(document)

    def _run(self, document):
        options = self.options
        try:
            config = get_config(options["environment"])
            if options["delivery"]:
                template, name = self._delivery(config, options["environment"])
            else:
                template, name = cfn.render_template(config), cfn.stack_name(config)
        except ConfigError as exc:
            raise CommandError(f"Invalid infrastructure settings: {exc}") from None
        output = Path(options["output"] or f"build/cloudformation/{name}.json")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(cfn.to_text(template))
        except OSError as exc:
            raise CommandError(
                f"Cannot write the template to {output}: {exc.strerror}. Pass --output a path in a writable "
                "directory. Nothing was sent to AWS."
            ) from None
        if options["render"]:
            self.stdout.write(cfn.to_text(template), ending="")
            return
        try:
            client = session(options["region"] or config.aws_region, options["profile"] or config.aws_profile).client(
                "cloudformation"
            )
            if options["delete"]:
                document.set(self._delete(client, name))
                return
            report = stack.apply_stack(client, name, template, plan=options["plan"],
                                       role_arn=config.aws_cloudformation_role_arn, progress=self._say)  # fmt: skip
        except stack.StackError as exc:
            if exc.report is not None:
                document.set({"template": str(output), **exc.report.as_dict()})
            raise CommandError(f"{sentence(exc)} The template is in {output}.") from None
        except AwsError as exc:
            raise CommandError(str(exc)) from None
        document.set({"template": str(output), **report.as_dict()})
        self._say(self._summary(report, output))
        if report.executed:
            self._say_settings(report.outputs)

    def _delivery(self, config, environment):
        from deploy.aws import delivery

        names = [environment] if environment else get_environment_names()
        environments = {name: get_config(name) for name in names}
        name = delivery.delivery_stack_name(config) + (f"-{environment}" if environment else "")
        return delivery.render_delivery_template(config, environments), name

    def _say(self, text):
        if not self.options["json"] and self.options["verbosity"] >= 1:
            self.stdout.write(text)

    @staticmethod
    def _summary(report, output):
        name = report.stack
        return {
            "unchanged": f"Nothing to change: stack {name} already has this template ({output}).",
            "no-changes": f"Nothing to change in stack {name}.",
            "planned": f"Plan: {len(report.changes)} change(s) to stack {name}; nothing was executed.",
        }.get(report.outcome, f"Stack {name} is {report.status}. Deploy settings from its outputs:")

    def _say_settings(self, outputs):
        for key, setting in (("ClusterName", "eks_cluster"), ("EfsFileSystemId", "efs_file_system_id"),
                             ("RepositoryUri", "image_repository"), ("AppRoleArn", "app_role_arn"),
                             ("CloudFormationRoleArn", "aws_cloudformation_role_arn"),
                             ("SecretsReaderRoleArn", "secrets_reader_role_arn"),
                             ("BackupBucketName", "postgres_backup_bucket"),
                             ("CutoverBucket", "cutover_bucket")):  # fmt: skip
            if key in outputs:
                self._say(f"  DEPLOY['{setting}'] = {outputs[key]!r}")
        if "DatabaseAddress" in outputs:
            self._say(f"PostgreSQL (RDS): {outputs['DatabaseAddress']}:{outputs.get('DatabasePort')}, read from this "
                      "stack by k8s_deploy (postgres_mode 'rds'); create the app's user once as "
                      "docs/high-availability.md#managed-postgresql-rds says.")  # fmt: skip

    def _delete(self, client, name):
        region = client.meta.region_name
        if stack.stack_status(client, name) is None:
            self._say(f"There is no stack {name} in {region}: nothing to delete.")
            return {"stack": name, "region": region, "status": None, "outcome": "absent"}
        if self.options["interactive"]:
            # The question goes to stderr with --json: stdout holds the one document.
            ask = self.stderr if self.options["json"] else self.stdout
            ask.write(f"This deletes stack {name} in {region} and everything in it but the retained data. Type its "
                      "name: ", ending="")  # fmt: skip
            ask.flush()
            try:
                answer = input()
            except EOFError:
                raise CommandError(
                    "Cancelled: no answer (standard input is closed); nothing was deleted. Pass --no-input to delete "
                    "without asking."
                ) from None
            if answer.strip() != name:
                raise CommandError("Cancelled: nothing was deleted.")
        final = stack.delete_stack(client, name, progress=self._say)
        self._say(f"Stack {name}: {final}.")
        return {"stack": name, "region": region, "status": final, "outcome": "deleted"}
