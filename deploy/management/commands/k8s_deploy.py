"""Render, validate and deploy the Kubernetes manifests of this project.

With no cluster configured, the manifests are rendered, validated and
written to ``build/k8s/``; nothing is applied and the command exits 0.
With a cluster: server-side apply in rank order, the migration Job, the
rollout, prune, release history; automatic rollback when the rollout fails.

The command parses its options into one ``deploy.k8s.operations.Request``, calls
``operations.run`` and prints the report it returns (text, or ``--json``).
"""

import json
import re
import sys

from django.core.management.base import BaseCommand, CommandError

from deploy.conf import ConfigError, get_config
from deploy.k8s import operations
from deploy.k8s.connect import DEFAULT_TIMEOUT
from deploy.k8s.operations import RESTORE_ANOTHER_ACTIVE, RESTORE_STILL_RUNNING
from deploy.management.output import JsonDocument

# What --restore, --backups and --cutover cannot be combined with (they act on the cluster's database, not on the
# manifests alone); the other modes exclude each other in the parser.
_NOT_WITH_OPERATIONS = ("output", "include_secrets", "push", "no_wait", "prune_volumes", "force_conflicts")
# The mode flags, one at most (a mutually exclusive group), and the mode each selects.
_MODES = {"preflight": "preflight", "dry_run": "dry-run", "diff": "diff", "history": "history",
          "rollback": "rollback", "restore": "restore", "backups": "backups", "cutover": "cutover"}  # fmt: skip


_OPERATIONS = ("--restore", "--backups", "--cutover")
# What the other modes would silently ignore (--render prints today's render and stops before any mode), and why.
_IGNORED_BY = {
    "history": ("render", *_NOT_WITH_OPERATIONS),
    "rollback": ("render", "output", "include_secrets", "push"),
    "preflight": ("render",),
    "diff": ("render",),
    "dry-run": ("render",),
}
_WHY_IGNORED = {
    "history": "it lists the revisions recorded in the cluster, renders nothing and changes nothing",
    "rollback": "it applies a recorded revision, not today's render (which --render and --output show)",
    "preflight": "--render prints today's manifests and asks no cluster",
    "diff": "--render prints today's manifests and asks no cluster",
    "dry-run": "--render prints today's manifests and asks no cluster",
}
# Options that exclude each other are a usage error, as argparse's own: exit status 2, nothing done.
USAGE = 2


def _refusal(operation, flags):
    return (
        f"{operation} cannot be combined with {', '.join(flags)}: it acts on the cluster's database, not on the "
        f"manifests. Run it on its own{' (--render prints the restore Job)' if operation == '--restore' else ''}, "
        "and the other options in a separate k8s_deploy. Nothing was done."
    )


def _conflict(message):
    """argparse's "argument X: not allowed with argument Y" of the modes group, in this command's words."""
    found = re.fullmatch(r"argument (\S+): not allowed with argument (\S+)", message)
    if not found:
        return message
    later, earlier = found.groups()
    actions = [flag for flag in _OPERATIONS if flag in (later, earlier)]
    if len(actions) == 2:
        return f"{' and '.join(actions)} are separate actions: pass one of them. Nothing was done."
    if actions:
        return _refusal(actions[0], [later if actions[0] == earlier else earlier])
    return f"{earlier} and {later} are separate modes: pass one of them. Nothing was done."


class Command(BaseCommand):
    help = (
        "Render the Kubernetes manifests from settings.DEPLOY and the environment, validate them, "
        "and apply them to the cluster. With no cluster configured, write them to build/k8s/ and apply nothing."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        error, parse_args = parser.error, parser.parse_args

        def parse(args=None, namespace=None):
            parser.json_requested = "--json" in (sys.argv[2:] if args is None else args)
            return parse_args(args, namespace)

        def fail(message):
            message = _conflict(message)
            if parser.called_from_command_line and getattr(parser, "json_requested", False):
                # A usage error too leaves stdout with the one JSON document --json promises (exit status 2).
                self.stdout.write(json.dumps({"ok": False, "error": message}, indent=2))
            error(message)

        parser.parse_args, parser.error = parse, fail
        return parser

    def add_arguments(self, parser):
        modes = parser.add_mutually_exclusive_group()  # what the run does besides deploying; one at most
        parser.add_argument(
            "--environment",
            metavar="NAME",
            help="Deploy this environment of DEPLOY['environments'] (such as staging or production).",
        )
        parser.add_argument(
            "--render",
            action="store_true",
            help=(
                "Print the manifests as one multi-document YAML (with --json: in the report, key manifests), and stop; "
                "with --output, write them there instead. No cluster is asked."
            ),
        )
        parser.add_argument(
            "--output",
            metavar="DIR",
            help="Write one file per object and a kustomization.yaml to DIR (default with no cluster: build/k8s). "
            "With a cluster the run deploys as well: add --render to only write.",
        )
        parser.add_argument(
            "--include-secrets",
            action="store_true",
            help="Put the real Secret values in --render and --output (redacted otherwise).",
        )
        parser.add_argument("--json", action="store_true", help="Print a machine-readable report instead of sentences.")
        parser.add_argument("--context", help="kubeconfig context to use (default: the current context).")
        parser.add_argument("--eks-cluster", help="Deploy to this EKS cluster (default: DEPLOY['eks_cluster']).")
        parser.add_argument("--region", help="AWS region (default: DEPLOY['aws_region'], then the AWS SDK's).")
        parser.add_argument("--profile", help="AWS profile (default: DEPLOY['aws_profile'], then the standard chain).")
        modes.add_argument(
            "--preflight", action="store_true", help="Check that the cluster can run the stack, and stop."
        )
        parser.add_argument(
            "--skip-preflight", action="store_true", help="Do not run the preflight before deploying to EKS."
        )
        parser.add_argument(
            "--push",
            action="store_true",
            help="Build the image with Docker, push it to ECR (creating the repository), and deploy it by digest.",
        )
        modes.add_argument(
            "--dry-run", action="store_true", help="Server-side dry run of every object: shows what would change."
        )
        modes.add_argument("--diff", action="store_true", help="Show what would change against the live objects.")
        parser.add_argument("--timeout", type=int, default=600, help="Seconds to wait for each workload (default 600).")
        parser.add_argument(
            "--request-timeout",
            type=float,
            default=DEFAULT_TIMEOUT[1],
            metavar="SECONDS",
            help=f"Seconds to wait for each answer of the API server, discovery included (default "
            f"{DEFAULT_TIMEOUT[1]}; connecting waits at most {DEFAULT_TIMEOUT[0]}).",
        )
        parser.add_argument("--no-wait", action="store_true", help="Apply and return without waiting for rollouts.")
        parser.add_argument(
            "--prune-volumes",
            action="store_true",
            help="Also delete PersistentVolumeClaims (and their data) that the render no longer contains.",
        )
        parser.add_argument(
            "--force-conflicts",
            action="store_true",
            help="Take over fields that another field manager owns (by default only fields this tool owned).",
        )
        modes.add_argument("--history", action="store_true", help="List the revisions recorded in the cluster.")
        modes.add_argument(
            "--rollback",
            nargs="?",
            const=0,
            type=int,
            metavar="REV",
            help="Re-apply revision REV (default: the last successful one before the current).",
        )
        modes.add_argument(
            "--restore",
            metavar="BACKUP",
            help="Restore this backup of the nightly CronJob (APP-YYYYMMDDTHHMMSSZ.dump) into the in-cluster "
            "PostgreSQL with a restricted Job, check every table's row count against the dump, and stop. Waits "
            f"--timeout seconds; a Job still running then exits {RESTORE_STILL_RUNNING} and runs on (run the same "
            f"command again to wait for it); while a restore Job runs, another backup is refused (exit "
            f"{RESTORE_ANOTHER_ACTIVE}). With --render, print the Job instead.",
        )
        modes.add_argument(
            "--backups",
            action="store_true",
            help="List the backups on the backup volume (name, size, time) with a short restricted Job, and stop.",
        )
        modes.add_argument(
            "--cutover",
            metavar="SQLITE_FILE",
            help="Cut over from this SQLite file (docs/migration.md): preflight, maintenance on here, data services, "
            "the file through S3 (DEPLOY['cutover_bucket']) into a copy-and-verify Job, the release, a smoke test; "
            "each step timed, recorded in build/cutover/APP.json; stops at the first failure.",
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="With --cutover: continue the recorded cut-over, skipping the steps that finished.",
        )
        parser.add_argument(
            "--yes",
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation before changing the cluster.",
        )

    def handle(self, *args, **options):
        self.json = JsonDocument(self.stdout)
        if not options["json"]:
            return self._handle(options)
        with self.json.run():
            self._handle(options)
        return None

    def _handle(self, options):
        try:
            config = get_config(options["environment"])
        except ConfigError as exc:
            raise CommandError(f"Invalid deploy configuration: {exc}") from None
        request = self._request(config, options)
        try:
            report = operations.run(request)
        except operations.OperationFailed as exc:
            if options["json"]:
                if exc.document is not None:
                    self.json.set(exc.document)
            else:
                self._print(exc.output)
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        if options["json"]:
            self.json.set(report.document)
            return
        self._print(report.output)
        if options["verbosity"] >= 1 and report.sentence:
            self.stdout.write(report.sentence)
        if options["verbosity"] >= 2:
            self._print(report.detail)

    def _request(self, config, options):
        if options["resume"] and not options["cutover"]:
            raise CommandError(
                "--resume continues a cut-over: pass it with --cutover SQLITE_FILE. Nothing was done.", returncode=USAGE
            )
        mode = next(
            (mode for name, mode in _MODES.items() if options[name] is not None and options[name] is not False),
            "deploy",
        )
        if mode in ("restore", "backups", "cutover"):
            others = [
                name
                for name in _NOT_WITH_OPERATIONS
                if options[name] not in (None, False) and not (name == "push" and mode == "cutover")
            ]
            if mode in ("backups", "cutover") and options["render"]:
                others.insert(0, "render")
            if others:
                flags = [f"--{name.replace('_', '-')}" for name in others]
                raise CommandError(_refusal(f"--{mode}", flags), returncode=USAGE)
        ignored = [name for name in _IGNORED_BY.get(mode, ()) if options[name] not in (None, False)]
        if ignored:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in ignored)
            raise CommandError(
                f"--{mode} cannot be combined with {flags}: {_WHY_IGNORED[mode]}. Run them in separate k8s_deploy "
                "commands. Nothing was done.",
                returncode=USAGE,
            )
        quiet = options["json"] or options["verbosity"] < 1
        return operations.Request(
            config,
            mode=mode,
            render=options["render"],
            output=options["output"],
            include_secrets=options["include_secrets"],
            eks_cluster=options["eks_cluster"],
            context=options["context"],
            region=options["region"],
            profile=options["profile"],
            skip_preflight=options["skip_preflight"],
            push=options["push"],
            timeout=options["timeout"],
            request_timeout=options["request_timeout"],
            wait=not options["no_wait"],
            prune_volumes=options["prune_volumes"],
            force_conflicts=options["force_conflicts"],
            rollback=options["rollback"] or 0,
            backup=options["restore"] or "",
            sqlite_file=options["cutover"] or "",
            resume=options["resume"],
            progress=(lambda message: None) if quiet else self.stdout.write,
            notice=(self.stderr if options["json"] else self.stdout).write,
            warn=lambda warning: self.stderr.write(f"Warning: {warning}"),
            confirm=self._confirm if options["interactive"] else operations.always_yes,
        )

    def _confirm(self, question):
        """The operator's answer, or None when there is no terminal to ask on."""
        if not sys.stdin.isatty():
            return None
        return input(question).strip().lower() in ("y", "yes")

    def _print(self, texts):
        for text in texts:
            self.stdout.write(text, ending="" if text.endswith("\n") or not text else "\n")
