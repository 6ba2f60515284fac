"""Create or update the AWS infrastructure of the deploy as one CloudFormation stack."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy.aws import cloudformation as cfn
from deploy.aws.session import AwsError, call, session
from deploy.conf import ConfigError, get_config, get_environment_names


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
        parser.add_argument("--plan", action="store_true", help="Create a change set and show it; execute nothing.")
        parser.add_argument("--render", action="store_true", help="Print the template and stop (no AWS call).")
        parser.add_argument(
            "--output", metavar="FILE", help="Where to write the template (default build/cloudformation/STACK.json)."
        )
        parser.add_argument("--delete", action="store_true", help="Delete the stack (asks for its name first).")
        parser.add_argument("--region", help="AWS region (default: DEPLOY['aws_region'], then the AWS SDK's).")
        parser.add_argument("--profile", help="AWS profile (default: DEPLOY['aws_profile'], then the standard chain).")
        parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
        parser.add_argument(
            "--no-input", "--noinput", action="store_false", dest="interactive", help="Never ask for confirmation."
        )

    def handle(self, *args, **options):
        try:
            config = get_config(options["environment"])
            if options["delivery"]:
                template, name = self._delivery(config, options["environment"])
            else:
                template, name = cfn.render_template(config), cfn.stack_name(config)
        except ConfigError as exc:
            raise CommandError(f"Invalid infrastructure settings: {exc}") from None
        self.role_arn = config.aws_cloudformation_role_arn
        output = Path(options["output"] or f"build/cloudformation/{name}.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(cfn.to_text(template))
        if options["render"]:
            self.stdout.write(cfn.to_text(template), ending="")
            return None
        try:
            aws = session(options["region"] or config.aws_region, options["profile"] or config.aws_profile)
            client = aws.client("cloudformation")
            if options["delete"]:
                return self._delete(client, name, options)
            return self._apply(client, name, template, output, options)
        except AwsError as exc:
            raise CommandError(str(exc)) from None

    def _delivery(self, config, environment):
        from deploy.aws import delivery

        names = [environment] if environment else get_environment_names()
        environments = {name: get_config(name) for name in names}
        name = delivery.delivery_stack_name(config) + (f"-{environment}" if environment else "")
        return delivery.render_delivery_template(config, environments), name

    def _say(self, options, text):
        if not options["json"] and options["verbosity"] >= 1:
            self.stdout.write(text)

    def _apply(self, client, name, template, output, options):
        import time

        deployed, status = call(f"Reading stack {name}", cfn.current_template, cloudformation=client, name=name)
        report = {"stack": name, "template": str(output), "status": status}
        if deployed is not None and json.loads(json.dumps(deployed)) == json.loads(cfn.to_text(template)):
            report.update(changes=[], executed=False)
            self._say(options, f"Nothing to change: stack {name} already has this template ({output}).")
            return self._json(report, options)
        started = time.time() - 1
        if deployed is None and not options["plan"]:
            # A new stack is created directly; updates (and plans) go through change sets.
            self._say(options, f"Creating stack {name} ({len(template['Resources'])} resources):")
            call(
                f"Creating stack {name}",
                client.create_stack,
                StackName=name,
                TemplateBody=cfn.to_text(template),
                Capabilities=["CAPABILITY_NAMED_IAM", "CAPABILITY_IAM"],
                OnFailure="ROLLBACK",
                **({"RoleARN": self.role_arn} if self.role_arn else {}),
            )
            report["changes"] = [{"action": "Add", "resource": r, "type": v["Type"], "replacement": ""}
                                 for r, v in template["Resources"].items()]  # fmt: skip
            return self._finish(client, name, started, report, options)
        change_set, changes = cfn.plan_change_set(
            client, name, template, exists=deployed is not None, role_arn=self.role_arn
        )
        report["changes"] = changes
        for c in changes:
            self._say(options, f"  {c['action']:<8} {c['resource']:<34} {c['type']}"
                      f"{'  (replacement: ' + c['replacement'] + ')' if c['replacement'] else ''}")  # fmt: skip
        if not changes:
            client.delete_change_set(ChangeSetName=change_set, StackName=name)
            report["executed"] = False
            self._say(options, f"Nothing to change in stack {name}.")
            return self._json(report, options)
        if options["plan"]:
            client.delete_change_set(ChangeSetName=change_set, StackName=name)
            if deployed is None:
                client.delete_stack(StackName=name)  # the empty stack a CREATE change set leaves behind
            report["executed"] = False
            self._say(options, f"Plan: {len(changes)} change(s) to stack {name}; nothing was executed.")
            return self._json(report, options)
        try:
            client.execute_change_set(ChangeSetName=change_set, StackName=name)
        except Exception as exc:
            from deploy.aws.session import explain

            error = explain(exc, f"Executing the change set of stack {name}")
            if error is None:
                raise
            raise CommandError(f"{error} Nothing was changed; the template is in {output}.") from None
        return self._finish(client, name, started, report, options)

    def _finish(self, client, name, started, report, options):
        final, failure, outputs = cfn.stream_events(client, name, started, lambda line: self._say(options, line))
        report.update(status=final, outputs=outputs, executed=True)
        if failure or not final.endswith("COMPLETE") or "ROLLBACK" in final:
            resource, kind, reason = failure or ("?", "", final)
            if options["json"]:
                self._json({**report, "failed_resource": resource, "reason": reason}, options)
            raise CommandError(f"Stack {name} ended {final}: {resource} ({kind}) failed: {reason}")
        self._say(options, f"Stack {name} is {final}. Deploy settings from its outputs:")
        for key, setting in (("ClusterName", "eks_cluster"), ("EfsFileSystemId", "efs_file_system_id"),
                             ("RepositoryUri", "image_repository"), ("AppRoleArn", "app_role_arn"),
                             ("CloudFormationRoleArn", "aws_cloudformation_role_arn"),
                             ("SecretsReaderRoleArn", "secrets_reader_role_arn"),
                             ("BackupBucketName", "postgres_backup_bucket")):  # fmt: skip
            if key in outputs:
                self._say(options, f"  DEPLOY['{setting}'] = {outputs[key]!r}")
        return self._json(report, options)

    def _delete(self, client, name, options):
        import time

        if options["interactive"]:
            answer = input(f"This deletes stack {name} and everything in it but the retained data. Type its name: ")
            if answer.strip() != name:
                raise CommandError("Cancelled: nothing was deleted.")
        started = time.time() - 1
        call(f"Deleting stack {name}", client.delete_stack, StackName=name)
        try:
            final, failure, _ = cfn.stream_events(client, name, started, lambda line: self._say(options, line))
        except AwsError as exc:
            if "does not exist" not in str(exc):
                raise
            final, failure = "DELETE_COMPLETE", None
        if failure:
            raise CommandError(f"Deleting stack {name} failed: {failure[0]}: {failure[2]}")
        self._say(options, f"Stack {name}: {final}.")
        return

    def _json(self, report, options):
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
