"""Render, validate and deploy the Kubernetes manifests of this project.

With no cluster configured, the manifests are rendered, validated and
written to ``build/k8s/``; nothing is applied and the command exits 0.
With a cluster: server-side apply in rank order, the migration Job, the
rollout, prune, release history; automatic rollback when the rollout fails.
"""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy.conf import SUPPORTED_KUBERNETES_VERSIONS, ConfigError, get_config, get_secrets
from deploy.k8s.client import Cluster, ClusterError
from deploy.k8s.connect import DEFAULT_TIMEOUT, ConnectError, NoSuchKubeconfig, api_client, find_cluster
from deploy.k8s.deploy import Deployer, DeployFailed, unserved_kinds
from deploy.k8s.exposure import warnings as exposure_warnings
from deploy.k8s.kinds import describe
from deploy.k8s.observability import alert_warnings
from deploy.k8s.releases import LockHeld, history
from deploy.k8s.render import RenderError, render_manifests, to_yaml, write_manifests
from deploy.k8s.validate import validate_manifests
from deploy.management.output import JsonDocument

DEFAULT_OUTPUT = "build/k8s"
# Exit codes of --restore besides 1 (failed or could not run): the Job outlived --timeout and goes on in the
# cluster; another restore Job is active, so none was started.
RESTORE_STILL_RUNNING = 5
RESTORE_ANOTHER_ACTIVE = 4
# What --restore, --backups and --cutover cannot be combined with (they act on the cluster's database, not on the
# manifests alone).
_NOT_WITH_OPERATIONS = ("output", "include_secrets", "dry_run", "diff", "push", "history", "rollback", "preflight",
                        "no_wait", "prune_volumes", "force_conflicts")  # fmt: skip


class Command(BaseCommand):
    help = (
        "Render the Kubernetes manifests from settings.DEPLOY and the environment, validate them, "
        "and apply them to the cluster. With no cluster configured, write them to build/k8s/ and apply nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--environment",
            metavar="NAME",
            help="Deploy this environment of DEPLOY['environments'] (such as staging or production).",
        )
        parser.add_argument(
            "--render",
            action="store_true",
            help=(
                "Print the manifests as one multi-document YAML (with --json: in the report, key manifests), and stop."
            ),
        )
        parser.add_argument(
            "--output",
            metavar="DIR",
            help="Write one file per object and a kustomization.yaml to DIR (default with no cluster: build/k8s).",
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
        parser.add_argument(
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
        parser.add_argument(
            "--dry-run", action="store_true", help="Server-side dry run of every object: shows what would change."
        )
        parser.add_argument("--diff", action="store_true", help="Show what would change against the live objects.")
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
        parser.add_argument("--history", action="store_true", help="List the revisions recorded in the cluster.")
        parser.add_argument(
            "--rollback",
            nargs="?",
            const=0,
            type=int,
            metavar="REV",
            help="Re-apply revision REV (default: the last successful one before the current).",
        )
        parser.add_argument(
            "--restore",
            metavar="BACKUP",
            help="Restore this backup of the nightly CronJob (APP-YYYYMMDDTHHMMSSZ.dump) into the in-cluster "
            "PostgreSQL with a restricted Job, check every table's row count against the dump, and stop. Waits "
            f"--timeout seconds; a Job still running then exits {RESTORE_STILL_RUNNING} and runs on (run the same "
            f"command again to wait for it); while a restore Job runs, another backup is refused (exit "
            f"{RESTORE_ANOTHER_ACTIVE}). With --render, print the Job instead.",
        )
        parser.add_argument(
            "--backups",
            action="store_true",
            help="List the backups on the backup volume (name, size, time) with a short restricted Job, and stop.",
        )
        parser.add_argument(
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
        self.verbosity = options["verbosity"]
        try:
            config = get_config(options["environment"])
        except ConfigError as exc:
            raise CommandError(f"Invalid deploy configuration: {exc}") from None
        self._check_operation_options(options)
        if config.postgres_mode == "rds":
            config = self._rds(config, options)
        if options["restore"] and options["render"]:
            self._render_restore(config, options)
            return
        secrets = get_secrets()
        redact = not options["include_secrets"]
        try:
            manifests = render_manifests(config, secrets, redact=redact)
        except RenderError as exc:
            raise CommandError(f"Cannot render the manifests: {exc}") from None
        self._validate(manifests, config)
        warnings = exposure_warnings(config) + alert_warnings(config)
        for warning in warnings:
            self.stderr.write(f"Warning: {warning}")

        if options["render"] and options["json"]:
            # stdout holds one JSON document on every path: the manifests go inside it, not as YAML beside it.
            self.json.set(
                {
                    "validated_for": list(SUPPORTED_KUBERNETES_VERSIONS),
                    "secrets_redacted": redact,
                    "warnings": warnings,
                    "manifests": manifests,
                }
            )
            return
        if options["render"]:
            self.stdout.write(to_yaml(manifests), ending="")
            return

        report = {
            "objects": [describe(m) for m in manifests],
            "validated_for": list(SUPPORTED_KUBERNETES_VERSIONS),
            "secrets_redacted": redact,
            "applied": False,
            "warnings": warnings,
        }
        eks_cluster = options["eks_cluster"] or config.eks_cluster
        try:
            cluster = find_cluster(eks_cluster=eks_cluster)
        except NoSuchKubeconfig as exc:
            raise CommandError(f"{exc} Nothing was written or applied.") from None
        needs_cluster = [
            flag
            for flag, given in (
                ("--preflight", options["preflight"]),
                ("--history", options["history"]),
                ("--push", options["push"]),
                ("--diff", options["diff"]),
                ("--dry-run", options["dry_run"]),
                ("--rollback", options["rollback"] is not None),
                ("--restore", options["restore"]),
                ("--cutover", options["cutover"]),
                ("--backups", options["backups"]),
            )
            if given
        ]
        if cluster is None and needs_cluster:
            raise CommandError(
                f"No cluster configured: {', '.join(needs_cluster)} {'needs' if len(needs_cluster) == 1 else 'need'} "
                "a cluster, and none was found (no KUBECONFIG, no ~/.kube/config, not in a pod, no EKS cluster "
                "named). Point KUBECONFIG at one, pass --eks-cluster, or start the training sandbox (make sandbox) "
                "to practise. Nothing was written or applied."
            )
        output = options["output"] or (None if cluster else DEFAULT_OUTPUT)
        if output:
            self._write(manifests, output)
            report["output"] = output
        if cluster is None:
            report["cluster"] = None
            self._report(
                report,
                options,
                f"No cluster configured (no KUBECONFIG, no ~/.kube/config, not in a pod, no EKS cluster named): "
                f"nothing was applied. {len(manifests)} manifests validated for Kubernetes "
                f"{', '.join(SUPPORTED_KUBERNETES_VERSIONS)} and written to {output}/.",
            )
            return
        report["cluster"] = str(cluster)
        self._with_cluster(cluster, config, secrets, options, report)
        return

    # --- with a cluster ---------------------------------------------------------

    def _rds(self, config, options):
        """The RDS instance's host, port and CIDR from the infrastructure stack's outputs (deploy/aws/rds.py)."""
        from deploy.aws import rds
        from deploy.aws.session import AwsError

        try:
            return rds.wire(config, self._aws_session(config, options).client("cloudformation"))
        except AwsError as exc:
            raise CommandError(f"{exc} Nothing was rendered or applied.") from None

    def _aws_session(self, config, options):
        from deploy.aws.session import AwsError, session

        try:
            return session(options["region"] or config.aws_region, options["profile"] or config.aws_profile)
        except AwsError as exc:
            raise CommandError(str(exc)) from None

    def _connect(self, cluster, options, config):
        from deploy.aws import eks
        from deploy.aws.session import AwsError

        if options["timeout"] < 0:
            # A negative wait ended every wait at once: a restore Job was reported "still running after -5 s".
            raise CommandError(f"--timeout must be 0 seconds or more, not {options['timeout']}.")
        if options["request_timeout"] <= 0:
            raise CommandError(f"--request-timeout must be more than 0 seconds, not {options['request_timeout']}.")
        timeout = (min(DEFAULT_TIMEOUT[0], options["request_timeout"]), options["request_timeout"])
        try:
            if cluster.kind == "eks":
                endpoint, _ = eks.endpoint(self._aws_session(config, options), cluster.detail)
                return Cluster(api_client(None, endpoint=endpoint, timeout=timeout))
            return Cluster(api_client(cluster, context=options["context"], timeout=timeout))
        except (ConnectError, ClusterError, AwsError) as exc:
            raise CommandError(str(exc)) from None

    def _preflight(self, cluster_source, cluster, config, options, stop):
        from deploy.aws import preflight
        from deploy.aws.session import AwsError

        checks = []
        try:
            if cluster_source.kind == "eks":
                found, _ = preflight.aws_checks(self._aws_session(config, options), config, cluster_source.detail)
                checks += found
            checks += preflight.cluster_checks(cluster, config)
            # Custom resources of the render (CloudNativePG's Cluster): served only where their operator is.
            missing = unserved_kinds(cluster, render_manifests(config))
            checks.append(
                preflight.Check(
                    "custom resources", not missing, "; ".join(missing) or "every kind of the render is served",
                    "Install the operator named, then deploy again." if missing else "",
                )
            )  # fmt: skip
        except (AwsError, ClusterError) as exc:
            raise CommandError(f"The preflight could not run: {exc}") from None
        failed = [c.name for c in checks if not c.ok]
        if options["json"] and (stop or failed):
            document = json.loads(preflight.report(checks, as_json=True))
            document["warnings"] = exposure_warnings(config) + alert_warnings(config)
            self.json.set(document)
        elif stop or failed:
            self.stdout.write(preflight.report(checks))
        if failed:
            raise CommandError(
                f"The preflight failed ({', '.join(failed)}); nothing was applied. Fix them (see the table and "
                "docs/deploying.md), or pass --skip-preflight to deploy anyway."
            )

    def _read_secrets(self, config, options):
        from deploy.aws.secrets import read_secrets
        from deploy.aws.session import AwsError

        try:
            return read_secrets(self._aws_session(config, options), config.secrets_name)
        except AwsError as exc:
            raise CommandError(f"{exc} Nothing was applied.") from None

    def _push(self, config, options):
        import dataclasses

        from deploy.aws import ecr
        from deploy.aws.session import AwsError

        session = self._aws_session(config, options)
        try:
            _, created = ecr.ensure_repository(session, ecr.repository_name(config.image_repository))
            ecr.docker_login(session)
            digest = ecr.build_and_push(f"{config.image_repository}:{config.image_tag}")
        except AwsError as exc:
            raise CommandError(str(exc)) from None
        (self.stderr if options["json"] else self.stdout).write(
            f"Pushed {config.image_repository}:{config.image_tag} as {digest}{' (new repository)' if created else ''}."
        )
        return dataclasses.replace(config, image_digest=digest)

    def _with_cluster(self, cluster_source, config, secrets, options, report):
        cluster = self._connect(cluster_source, options, config)
        if options["history"]:
            return self._history(cluster, config, options)
        if options["preflight"]:
            self._preflight(cluster_source, cluster, config, options, stop=True)
            return None
        if options["restore"]:
            self._restore(cluster, config, options)
            return None
        if options["backups"]:
            self._backups(cluster, config, options)
            return None
        if options["push"]:
            config = self._push(config, options)
        if options["cutover"]:
            if config.secrets_name:
                secrets = self._read_secrets(config, options)
            return self._cutover(cluster, config, secrets, options)
        if config.secrets_name:
            secrets = self._read_secrets(config, options)
        writes = not (options["dry_run"] or options["diff"])
        if cluster_source.kind == "eks" and writes and not options["skip_preflight"]:
            self._preflight(cluster_source, cluster, config, options, stop=False)
        try:
            manifests = render_manifests(config, secrets, redact=False)
        except RenderError as exc:
            raise CommandError(f"Cannot deploy: {exc}") from None
        deployer = Deployer(
            cluster,
            config,
            timeout=options["timeout"],
            wait=not options["no_wait"],
            prune_volumes=options["prune_volumes"],
            force_conflicts=options["force_conflicts"],
            progress=self._progress(options),
        )
        try:
            if options["diff"]:
                result = deployer.diff(manifests)
                for diff in [] if options["json"] else result.diffs:  # with --json, they are in the report
                    self.stdout.write(diff, ending="" if diff.endswith("\n") else "\n")
                self._final(
                    report, result, options, f"{len(result.diffs)} object(s) would change; nothing was applied."
                )
                return None
            if options["dry_run"]:
                result = deployer.dry_run(manifests)
                self._final(
                    report,
                    result,
                    options,
                    f"Dry run: {len(result.changed)} object(s) would change, {len(result.pruned)} would be pruned; "
                    "nothing was applied.",
                )
                return None
            rollback_of = None
            if options["rollback"] is not None:
                recorded, rollback_of = self._rollback_manifests(cluster, config, options["rollback"])
                # Records leave Secrets out (they hold no secret value): keep today's, which the prune would
                # otherwise delete, taking the app's SECRET_KEY and database passwords with them.
                manifests = [m for m in recorded if m["kind"] != "Secret"] + [
                    m for m in manifests if m["kind"] == "Secret"
                ]
            self._confirm(cluster, config, options, rollback_of)
            result = deployer.deploy(manifests, rollback_of=rollback_of)
        except LockHeld as exc:
            raise CommandError(f"{exc} Nothing was applied.") from None
        except DeployFailed as exc:
            report.update(exc.report.as_dict(), applied=True)
            self.json.set(report)
            raise CommandError(str(exc)) from None
        except ClusterError as exc:
            raise CommandError(str(exc)) from None
        report["applied"] = True
        self._final(
            report,
            result,
            options,
            f"Revision {result.revision} {result.outcome}: {len(result.changed)} object(s) changed, "
            f"{len(result.objects) - len(result.changed)} unchanged, {len(result.pruned)} pruned.",
        )
        return None

    def _rollback_manifests(self, cluster, config, revision):
        releases = history(cluster, config.app_name, config.namespace, with_manifests=True)
        if not releases:
            raise CommandError(f"No revision is recorded for {config.app_name} in namespace {config.namespace}.")
        if revision == 0:
            good = [r for r in releases[:-1] if r.outcome in ("deployed", "superseded")]
            if not good:
                raise CommandError("There is no earlier successful revision to roll back to.")
            target = good[-1]
        else:
            target = next((r for r in releases if r.revision == revision), None)
            if target is None:
                known = ", ".join(str(r.revision) for r in releases)
                raise CommandError(f"--rollback {revision}: no such revision (recorded: {known}).")
        return target.manifests, target.revision

    def _history(self, cluster, config, options):
        try:
            releases = history(cluster, config.app_name, config.namespace)
        except ClusterError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.json.set([r.__dict__ for r in releases])
            return
        if not releases:
            self.stdout.write(f"No revision recorded for {config.app_name} in namespace {config.namespace}.")
            return
        self.stdout.write(f"{'REV':>4}  {'TIME':<27} {'OUTCOME':<12} {'IMAGE':<40} {'COMMIT':<12} USER / NOTE")
        for r in releases:
            self.stdout.write(
                f"{r.revision:>4}  {r.time:<27} {r.outcome:<12} {r.image:<40} {r.commit or '-':<12} {r.user}"
                f"{'  ' + r.note if r.note else ''}"
            )

    def _check_operation_options(self, options):
        if options["resume"] and not options["cutover"]:
            raise CommandError("--resume continues a cut-over: pass it with --cutover SQLITE_FILE. Nothing was done.")
        operations = [flag for flag, given in (("--restore", options["restore"]), ("--backups", options["backups"]),
                                               ("--cutover", options["cutover"])) if given]  # fmt: skip
        if not operations:
            return
        if len(operations) > 1:
            raise CommandError(f"{' and '.join(operations)} are separate actions: pass one of them. Nothing was done.")
        others = [
            name
            for name in _NOT_WITH_OPERATIONS
            if options[name] not in (None, False) and not (name == "push" and options["cutover"])
        ]
        if (options["backups"] or options["cutover"]) and options["render"]:
            others.insert(0, "render")
        if others:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in others)
            raise CommandError(
                f"{operations[0]} cannot be combined with {flags}: it acts on the cluster's database, not on the "
                f"manifests. Run it on its own{' (--render prints the restore Job)' if options['restore'] else ''}, "
                "and the other options in a separate k8s_deploy. Nothing was done."
            )

    def _render_restore(self, config, options):
        from deploy.k8s.restore import RestoreError, restore_job, stack_during_restore

        try:
            job = restore_job(config, options["restore"])
        except (RestoreError, RenderError) as exc:
            raise CommandError(f"{exc} Nothing was rendered.") from None
        try:
            stack = render_manifests(config, get_secrets(), redact=True)
        except RenderError as exc:
            raise CommandError(f"Cannot render the manifests: {exc}") from None
        # With the stack (the wiring rule needs the policies it relies on), as it stands during a restore.
        self._validate([*stack_during_restore(stack), job], config)
        if options["json"]:
            self.json.set({"validated_for": list(SUPPORTED_KUBERNETES_VERSIONS), "manifests": [job]})
        else:
            self.stdout.write(to_yaml([job]), ending="")

    def _restore(self, cluster, config, options):
        from deploy.k8s.restore import RUNNING, RestoreActive, RestoreError, check_backup_name, run_restore

        backup = options["restore"]
        try:
            check_backup_name(config, backup)
        except RestoreError as exc:
            raise CommandError(f"{exc} Nothing was restored.") from None
        where = f"database {config.postgres_database!r} in namespace {config.namespace} on {cluster.host}"
        if options["interactive"]:
            if not sys.stdin.isatty():
                raise CommandError(
                    f"--restore replaces the data of {where}: pass --yes to confirm without a terminal. "
                    "Nothing was restored."
                )
            answer = input(f"Replace the data of {where} with {backup}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Cancelled: nothing was restored.")
        try:
            outcome = run_restore(cluster, config, backup, options["timeout"], self._progress(options))
        except RestoreActive as exc:
            self.json.set({"status": "refused", "job": exc.job, "restoring": exc.backup})
            raise CommandError(f"{exc} Nothing was started.", returncode=RESTORE_ANOTHER_ACTIVE) from None
        except ClusterError as exc:
            raise CommandError(f"The restore Job could not run: {exc} Nothing was restored.") from None
        job, lines, namespace = outcome.job, outcome.log, config.namespace
        self.json.set({"status": outcome.status, "restored": backup, "job": job, "attached": outcome.attached,
                       "log": lines})  # fmt: skip
        if outcome.status == RUNNING:
            raise CommandError(
                f"The restore Job {job} is still running after {options['timeout']} s (--timeout); it goes on in the "
                f"cluster and nothing is known yet of its result. Follow it with 'kubectl -n {namespace} logs -f "
                f"job/{job}', or wait for it and get its result with the same command again (k8s_deploy --restore "
                f"{backup} --yes), which waits for this Job instead of starting another. Keep the app scaled to 0 "
                "meanwhile (docs/runbooks.md#restoring-a-backup).",
                returncode=RESTORE_STILL_RUNNING,
            )
        if not outcome.ok:
            shown = "\n".join(f"  {line}" for line in lines[-20:]) or "  (no log)"
            raise CommandError(
                f"The restore Job {job} failed; its log ends with:\n{shown}\n"
                "pg_restore runs in one transaction: unless the log says 'row counts differ', the database is as "
                "it was. Fix the cause and run k8s_deploy --restore again (docs/runbooks.md#restoring-a-backup)."
            )
        if not options["json"]:
            for line in lines:
                self.stdout.write(line)
            attached = ", which was already running" if outcome.attached else ""
            self.stdout.write(f"Restored {backup} into {where} (Job {job}{attached}).")

    def _backups(self, cluster, config, options):
        from deploy.k8s.restore import RestoreError, list_backups

        try:
            backups, job = list_backups(cluster, config, options["timeout"], self._progress(options))
        except (RestoreError, ClusterError) as exc:
            raise CommandError(f"Cannot list the backups: {exc}") from None
        if options["json"]:
            self.json.set({"backups": backups, "job": job})
            return
        if not backups:
            self.stdout.write(
                f"No backup of database {config.postgres_database!r} on the volume {config.app_name}-postgres-backup "
                "yet (the CronJob writes one every night; docs/runbooks.md#restoring-a-backup)."
            )
            return
        self.stdout.write(f"{'BACKUP':<40} {'SIZE':>12}  TIME (UTC)")
        for backup in backups:
            self.stdout.write(f"{backup['name']:<40} {backup['bytes']:>12}  {backup['time']}")

    def _cutover(self, cluster, config, secrets, options):
        from deploy import maintenance
        from deploy.k8s.cutover import Cutover, CutoverFailed

        source = Path(options["cutover"])
        if not source.is_file():
            raise CommandError(f"--cutover: {source} is not a file. Nothing was changed.")
        if options["interactive"] and sys.stdin.isatty():
            answer = input(
                f"Cut over from {source} to {cluster.host}, namespace {config.namespace}: the site here goes into "
                "maintenance until the new one serves. Continue? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Cancelled: nothing was changed.")
        try:
            manifests = render_manifests(config, secrets, redact=False)
        except RenderError as exc:
            raise CommandError(f"Cannot deploy: {exc}") from None
        deployer = Deployer(cluster, config, timeout=options["timeout"], progress=self._progress(options))
        cutover = Cutover(
            cluster,
            config,
            manifests,
            source,
            state_path=Path("build") / "cutover" / f"{config.app_name}.json",
            preflight=_sqlite_preflight,
            s3=_s3_client(config, options),
            flag=maintenance.MaintenanceFlag.from_settings(),
            deployer=deployer,
            timeout=options["timeout"],
            progress=self._progress(options),
        )
        try:
            report = cutover.run(resume=options["resume"])
        except CutoverFailed as exc:
            if exc.report:
                self.json.set({"cutover": exc.report})
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.json.set({"cutover": report})
            return
        for step in report["steps"]:
            self.stdout.write(f"  {step['step']:<15} {step['outcome']:<7} {step['seconds']:>9.1f} s")
        self.stdout.write(
            f"Cut-over done: downtime {report['downtime_seconds']:.1f} s from maintenance on to the smoke test. "
            "Now switch the traffic to the new deployment (DNS, balancer): the point of no return."
        )

    def _confirm(self, cluster, config, options, rollback_of):
        if not options["interactive"] or not sys.stdin.isatty():
            return
        what = f"revision {rollback_of} again" if rollback_of else f"image {config.image}"
        answer = input(f"Deploy {what} to {cluster.host}, namespace {config.namespace}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("Cancelled: nothing was applied.")

    def _progress(self, options):
        if options["json"] or options["verbosity"] < 1:
            return lambda message: None

        return self.stdout.write

    def _final(self, report, result, options, sentence):
        report.update(result.as_dict())
        if result.diffs:
            report["diffs"] = result.diffs
        self._report(report, options, sentence)

    def _validate(self, manifests, config):
        problems = validate_manifests(manifests, config)
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:50])
            more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise CommandError(
                f"The rendered manifests are not valid ({len(problems)} problem(s)); nothing was written or "
                f"applied:\n{shown}{more}"
            )

    def _write(self, manifests, output):
        try:
            write_manifests(manifests, output)
        except RenderError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"Cannot write the manifests to {output}: {exc.strerror}.") from None

    def _report(self, report, options, sentence):
        if options["json"]:
            self.json.set(report)
        elif self.verbosity >= 1:
            self.stdout.write(sentence)
            if self.verbosity >= 2:
                for line in report["objects"]:
                    self.stdout.write(
                        f"  {line['object']}: {line['result']}" if isinstance(line, dict) else f"  {line}"
                    )


def _sqlite_preflight(path):
    """The copy's own checks of the file that need no target: it opens read-only as SQLite, its pages and records
    are sound, no row points at a missing one (deploy.sqlite.preflight)."""
    from deploy.sqlite.preflight import integrity_problems
    from deploy.sqlite.source import SourceError, open_source

    try:
        source = open_source(path)
    except SourceError as exc:
        return [str(exc)]
    try:
        problems, _damaged = integrity_problems(source.raw, indexed=[])
        return [str(p) for p in problems]
    finally:
        source.close()


def _s3_client(config, options):
    from deploy.aws.session import AwsError, session

    try:
        return session(options["region"] or config.aws_region, options["profile"] or config.aws_profile).client("s3")
    except AwsError as exc:
        raise CommandError(str(exc)) from None
