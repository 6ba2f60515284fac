"""Write the CI pipeline of this project (GitHub Actions) from the deploy settings and environments."""

from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from deploy.conf import ConfigError, get_config, get_environment_names
from deploy.management.output import JsonDocument
from deploy.pipeline import github
from deploy.pipeline.files import HandEdited, write_files
from deploy.pipeline.summary import plan_comment


class Command(BaseCommand):
    help = (
        "Write the delivery pipeline (test, build once, deploy by digest to each environment in turn, "
        "infrastructure plans on pull requests) as GitHub Actions workflows. A second run changes nothing; "
        "a file edited by hand is not overwritten without --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("--github", action="store_true", help="Write GitHub Actions workflows.")
        parser.add_argument(
            "--output", metavar="DIR", default=".", help="Project root to write .github/workflows/ under (default .)."
        )
        parser.add_argument("--force", action="store_true", help="Overwrite files that were edited by hand.")
        parser.add_argument("--python-version", default="3.12", help="Python version of the jobs (default 3.12).")
        parser.add_argument(
            "--requirements",
            default="requirements/deploy.lock",
            help=(
                "Requirements the deploy and infrastructure jobs install: the runtime and what k8s_deploy needs "
                "(kubernetes-validate) (default requirements/deploy.lock, hashed)."
            ),
        )
        parser.add_argument(
            "--test-requirements",
            default="requirements/dev.lock",
            help="Requirements the test job installs (default requirements/dev.lock, hashed).",
        )
        parser.add_argument(
            "--test-command",
            default="python -m pytest -q",
            help="The test job's command (default: python -m pytest -q).",
        )
        parser.add_argument(
            "--plan-comment",
            nargs="+",
            metavar="REPORT",
            help="Print a pull request comment summarising these aws_provision --plan --json reports, and stop.",
        )
        parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")

    def handle(self, *args, **options):
        if options["plan_comment"]:
            self.stdout.write(plan_comment(options["plan_comment"]), ending="")
            return
        document = JsonDocument(self.stdout)
        with document.run() if options["json"] else nullcontext():
            written, environments = self._write(options)
            # An object, as a refused run's {"ok": false, "error": ...}: one shape whatever the outcome.
            document.set({"files": [{"path": str(w.path), "outcome": w.outcome} for w in written]})
        if options["json"]:
            return
        for w in written:
            self.stdout.write(f"{w.outcome:<11} {w.path}")
        if any(w.outcome != "unchanged" for w in written):
            self.stdout.write(
                "Next: aws_provision --delivery (the roles), then in GitHub create the environments "
                f"{', '.join(environments)} and {github.delivery.INFRASTRUCTURE_ENVIRONMENT!r} with required "
                "reviewers (docs/delivery.md)."
            )

    def _write(self, options):
        if not options["github"]:
            raise CommandError("Say which CI system: --github (GitHub Actions; the only one supported so far).")
        try:
            base = get_config()
            environments = {name: get_config(name) for name in get_environment_names()}
            files = github.github_files(base, environments, options)
        except (ConfigError, github.PipelineError) as exc:
            raise CommandError(f"Cannot write the pipeline: {exc}") from None
        try:
            written = write_files(files, options["output"], "deploy_pipeline --github", force=options["force"])
        except HandEdited as exc:
            raise CommandError(
                f"Not written: {exc} changed since it was generated. Nothing was written. Move your changes into "
                "the settings (or a separate workflow file), or pass --force to overwrite."
            ) from None
        except OSError as exc:
            raise CommandError(f"Cannot write the pipeline under {options['output']}: {exc.strerror}.") from None
        return written, environments
