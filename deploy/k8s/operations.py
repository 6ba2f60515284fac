"""What ``k8s_deploy`` does, one entry point per mode, each returning a :class:`Report`.

``run(request)`` renders the stack ONCE, validates exactly that list, and hands it to the mode: written to a folder
when there is no cluster, or deployed, diffed, dry-run, rolled back, cut over; ``history``, ``preflight``,
``restore`` and ``backups`` act on the cluster. Every way a mode stops is an :class:`OperationFailed`: what
happened and how to fix it, the report so far (the ``--json`` document) and the exit code. The command parses its
options into a :class:`Request`, calls :func:`run` and prints the report; nothing here writes to stdout.

Who owns what below this layer: the order of one deploy and prune (``deploy.py``'s ``Deployer``), the kinds
(``kinds.py``), the render (``render.py``), the checks (``validate.py``), the API client (``client.py``) and how it
is reached (``connect.py``), the release records (``releases.py``), restore Jobs (``restore.py``), the cut-over
(``cutover.py``).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.conf import SUPPORTED_KUBERNETES_VERSIONS, get_secrets
from deploy.k8s.client import Cluster, ClusterError
from deploy.k8s.connect import DEFAULT_TIMEOUT, ConnectError, NoSuchKubeconfig, api_client, find_cluster
from deploy.k8s.deploy import Deployer, DeployFailed, unserved_kinds
from deploy.k8s.exposure import warnings as exposure_warnings
from deploy.k8s.kinds import describe
from deploy.k8s.observability import alert_warnings
from deploy.k8s.releases import LockHeld, history
from deploy.k8s.render import RenderError, redacted, render_manifests, to_yaml, write_manifests
from deploy.k8s.validate import validate_manifests
from deploy.management import exit_codes

DEFAULT_OUTPUT = "build/k8s"
# Exit codes of --restore besides 1 (failed or could not run): the Job outlived --timeout and goes on in the
# cluster; another restore Job is active, so none was started.
RESTORE_STILL_RUNNING = exit_codes.STILL_RUNNING
RESTORE_ANOTHER_ACTIVE = exit_codes.ALREADY_RUNNING

MODES = ("deploy", "render", "preflight", "diff", "dry-run", "history", "rollback", "restore", "backups", "cutover")
# The flags that act on the cluster only, in the order messages name them: with no cluster configured they stop
# instead of writing build/k8s/.
NEEDS_CLUSTER = ("preflight", "history", "push", "diff", "dry-run", "rollback", "restore", "cutover", "backups")


class OperationFailed(Exception):
    """A mode stopped: the message says what and how to fix it; ``document`` is the --json report so far (or None),
    ``output`` what the text report printed before the stop, ``exit_code`` the command's exit status."""

    def __init__(self, message, document=None, output=(), exit_code=1):
        super().__init__(message)
        self.document, self.output, self.exit_code = document, list(output), exit_code


@dataclass
class Report:
    """What one run did: ``document`` is the --json report; without --json, ``output`` is printed whatever the
    verbosity (tables, YAML, diffs), ``sentence`` at verbosity 1 and more, ``detail`` at verbosity 2."""

    document: object
    output: list = field(default_factory=list)
    sentence: str = ""
    detail: list = field(default_factory=list)


def always_yes(question):
    return True


@dataclass
class Request:
    """A k8s_deploy run, as its options give it."""

    config: object
    mode: str = "deploy"
    render: bool = False  # --render: print the manifests (with --restore: the restore Job) instead
    output: str | None = None
    include_secrets: bool = False
    eks_cluster: str | None = None
    context: str | None = None
    region: str | None = None
    profile: str | None = None
    skip_preflight: bool = False
    push: bool = False
    timeout: int = 600
    request_timeout: float = DEFAULT_TIMEOUT[1]
    wait: bool = True
    prune_volumes: bool = False
    force_conflicts: bool = False
    rollback: int = 0  # with mode "rollback": the revision, 0 for the last good one before the current
    backup: str = ""  # with mode "restore"
    sqlite_file: str = ""  # with mode "cutover"
    resume: bool = False
    # Callbacks: progress lines, notices (stderr with --json), and a question answered True, False, or None when
    # nobody can be asked (no terminal).
    progress: Callable[[str], None] = lambda message: None
    notice: Callable[[str], None] = lambda message: None
    confirm: Callable[[str], bool | None] = always_yes
    warn: Callable[[str], None] = lambda message: None  # what the render warns of (stderr)
    secrets: object = None  # deploy.conf.DeploySecrets; read from the environment when None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")


# --- the stack, rendered once --------------------------------------------------------------------------------------


@dataclass
class Rendered:
    manifests: list  # what is applied (real Secret values) or written (redacted unless --include-secrets)
    redacted: bool
    warnings: list

    def for_output(self, include_secrets):
        """The manifests as --output and --render show them."""
        return self.manifests if include_secrets or self.redacted else redacted(self.manifests)


def _render(config, secrets, redact, doing="Cannot render the manifests"):
    try:
        return render_manifests(config, secrets, redact=redact)
    except RenderError as exc:
        raise OperationFailed(f"{doing}: {exc}") from None


def render_stack(config, secrets=None, *, redact=True, doing="Cannot render the manifests", warn=None):
    """Render the stack once and validate exactly that list; raise :class:`OperationFailed` naming every problem.

    ``warn`` is called with each warning about the settings (exposure, alerting) once the render is valid.
    """
    manifests = _render(config, secrets, redact, doing)
    check(manifests, config)
    rendered = Rendered(manifests, redact, exposure_warnings(config) + alert_warnings(config))
    for warning in rendered.warnings if warn else ():
        warn(warning)
    return rendered


def check(manifests, config):
    problems = validate_manifests(manifests, config)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise OperationFailed(
            f"The rendered manifests are not valid ({len(problems)} problem(s)); nothing was written or "
            f"applied:\n{shown}{more}"
        )


def write(manifests, output):
    try:
        write_manifests(manifests, output)
    except RenderError as exc:
        raise OperationFailed(str(exc)) from None
    except OSError as exc:
        raise OperationFailed(f"Cannot write the manifests to {output}: {exc.strerror}.") from None


def _base(rendered, request):
    """The part of the report every render gives."""
    return {
        "objects": [],
        "validated_for": list(SUPPORTED_KUBERNETES_VERSIONS),
        "secrets_redacted": not request.include_secrets,
        "applied": False,
        "warnings": rendered.warnings,
    }


# --- the run ---------------------------------------------------------------------------------------------------------


def run(request):
    """The one call of ``k8s_deploy``: see the module's docstring."""
    config = request.config
    if request.mode in ("restore", "backups"):
        from deploy.k8s.restore import RestoreError, check_mode

        try:  # before the rds mode's stack outputs are read: a refusal needs no AWS
            check_mode(config, "restore" if request.mode == "restore" else "list")
        except RestoreError as exc:
            raise OperationFailed(f"{exc} Nothing was done.") from None
    if config.postgres_mode == "rds":
        config = request.config = with_rds(request)
    if request.mode == "restore" and request.render:
        return render_restore(request)
    secrets = request.secrets or get_secrets()
    if request.render:
        rendered = render_stack(config, secrets, redact=not request.include_secrets, warn=request.warn)
        if request.output:  # written instead of printed, as aws_provision --render --output does; no cluster asked
            return write_only(request, rendered, "--render: no cluster was asked, nothing was applied.")
        document = {key: value for key, value in _base(rendered, request).items() if key not in ("objects", "applied")}
        # With --json, the manifests go inside the one document, not as YAML beside it.
        return Report({**document, "manifests": rendered.manifests}, [to_yaml(rendered.manifests)])
    try:
        source = find_cluster(eks_cluster=request.eks_cluster or config.eks_cluster)
    except NoSuchKubeconfig as exc:
        raise OperationFailed(f"{exc} Nothing was written or applied.") from None
    if source is None:
        flags = [f"--{flag}" for flag in NEEDS_CLUSTER if flag == request.mode or (flag == "push" and request.push)]
        if flags:
            raise OperationFailed(
                f"No cluster configured: {', '.join(flags)} {'needs' if len(flags) == 1 else 'need'} a cluster, and "
                "none was found (no KUBECONFIG, no ~/.kube/config, not in a pod, no EKS cluster named). Point "
                "KUBECONFIG at one, pass --eks-cluster, or start the training sandbox (make sandbox) to practise. "
                "Nothing was written or applied."
            )
        rendered = render_stack(config, secrets, redact=not request.include_secrets, warn=request.warn)
        return write_only(
            request,
            rendered,
            "No cluster configured (no KUBECONFIG, no ~/.kube/config, not in a pod, no EKS cluster named): nothing was "
            "applied.",
        )
    cluster = connect(request, source)
    if request.mode == "history":
        return show_history(cluster, config)
    if request.mode == "restore":
        return restore(request, cluster)
    if request.mode == "backups":
        return backups(request, cluster)
    if request.mode == "preflight":
        rendered = render_stack(config, secrets, redact=not request.include_secrets, warn=request.warn)
        if request.output:
            write(rendered.manifests, request.output)
        return preflight(request, source, cluster, rendered, stop=True)
    if request.push:
        # Nothing is built or pushed for a stack that would be refused: the render with today's image is checked
        # first (redacted: the real Secret values may not be read yet). The render with the pushed digest is then
        # the one validated and applied.
        render_stack(config, secrets, redact=True, doing="Cannot deploy (nothing was built or pushed)")
        config = request.config = push(request)
    if config.secrets_name:
        secrets = read_secrets(request)
    rendered = render_stack(config, secrets, redact=False, doing="Cannot deploy", warn=request.warn)
    if request.output:
        write(rendered.for_output(request.include_secrets), request.output)
    if request.mode == "cutover":
        return cutover(request, cluster, rendered)
    writes = request.mode not in ("diff", "dry-run")
    if source.kind == "eks" and writes and not request.skip_preflight:
        preflight(request, source, cluster, rendered, stop=False)
    document = {**_base(rendered, request), "cluster": str(source)}
    if request.output:
        document["output"] = request.output
    deployer = Deployer(
        cluster, config, timeout=request.timeout, wait=request.wait, prune_volumes=request.prune_volumes,
        force_conflicts=request.force_conflicts, progress=request.progress,
    )  # fmt: skip
    if request.mode == "diff":
        return diff(deployer, rendered, document)
    if request.mode == "dry-run":
        return dry_run(deployer, rendered, document)
    return deploy(request, cluster, deployer, rendered, document)


def write_only(request, rendered, why):
    """No cluster, or --render: the validated render written to a folder; nothing applied. ``why`` says which."""
    output = request.output or DEFAULT_OUTPUT
    write(rendered.manifests, output)
    document = {
        **_base(rendered, request),
        "objects": [{"object": describe(m), "result": "written"} for m in rendered.manifests],
        "output": output,
        "cluster": None,
    }
    return Report(
        document,
        sentence=f"{why} {len(rendered.manifests)} manifests validated for Kubernetes "
        f"{', '.join(SUPPORTED_KUBERNETES_VERSIONS)} and written to {output}/.",
        detail=[f"  {describe(m)}" for m in rendered.manifests],
    )


# --- reaching AWS and the cluster ------------------------------------------------------------------------------------


def aws_session(request):
    from deploy.aws.session import AwsError, session

    try:
        return session(request.region or request.config.aws_region, request.profile or request.config.aws_profile)
    except AwsError as exc:
        raise OperationFailed(str(exc)) from None


def with_rds(request):
    """The RDS instance's host, port and CIDR from the infrastructure stack's outputs (deploy/aws/rds.py)."""
    from deploy.aws import rds
    from deploy.aws.session import AwsError

    try:
        return rds.wire(request.config, aws_session(request).client("cloudformation"))
    except AwsError as exc:
        raise OperationFailed(f"{exc} Nothing was rendered or applied.") from None


def connect(request, source):
    """The API client of the cluster ``source`` names (deploy/k8s/connect.py), with the request's time-outs."""
    from deploy.aws import eks
    from deploy.aws.session import AwsError

    if request.timeout < 0:
        # A negative wait ended every wait at once: a restore Job was reported "still running after -5 s".
        raise OperationFailed(f"--timeout must be 0 seconds or more, not {request.timeout}.")
    if request.request_timeout <= 0:
        raise OperationFailed(f"--request-timeout must be more than 0 seconds, not {request.request_timeout}.")
    timeout = (min(DEFAULT_TIMEOUT[0], request.request_timeout), request.request_timeout)
    try:
        if source.kind == "eks":
            endpoint, _ = eks.endpoint(aws_session(request), source.detail)
            return Cluster(api_client(None, endpoint=endpoint, timeout=timeout))
        return Cluster(api_client(source, context=request.context, timeout=timeout))
    except (ConnectError, ClusterError, AwsError) as exc:
        raise OperationFailed(str(exc)) from None


def read_secrets(request):
    from deploy.aws.secrets import read_secrets as read
    from deploy.aws.session import AwsError

    try:
        return read(aws_session(request), request.config.secrets_name)
    except AwsError as exc:
        raise OperationFailed(f"{exc} Nothing was applied.") from None


def push(request):
    """Build the image, push it to ECR, and the configuration that deploys it by digest."""
    from deploy.aws import ecr
    from deploy.aws.session import AwsError

    config, session = request.config, aws_session(request)
    try:
        _, created = ecr.ensure_repository(session, ecr.repository_name(config.image_repository))
        ecr.docker_login(session)
        digest = ecr.build_and_push(f"{config.image_repository}:{config.image_tag}")
    except AwsError as exc:
        raise OperationFailed(str(exc)) from None
    request.notice(
        f"Pushed {config.image_repository}:{config.image_tag} as {digest}{' (new repository)' if created else ''}."
    )
    return dataclasses.replace(config, image_digest=digest)


# --- modes -----------------------------------------------------------------------------------------------------------


def preflight(request, source, cluster, rendered, stop):
    """Whether the cluster (and on EKS its AWS side) can run the stack; a failure stops the run."""
    import json

    from deploy.aws import preflight as checks_of
    from deploy.aws.session import AwsError

    config, checks = request.config, []
    try:
        if source.kind == "eks":
            found, _ = checks_of.aws_checks(aws_session(request), config, source.detail)
            checks += found
        checks += checks_of.cluster_checks(cluster, config, rendered.manifests)
        # Custom resources of the render (CloudNativePG's Cluster): served only where their operator is.
        missing = unserved_kinds(cluster, rendered.manifests)
        checks.append(
            checks_of.Check(
                "custom resources", not missing, "; ".join(missing) or "every kind of the render is served",
                "Install the operator named, then deploy again." if missing else "",
            )
        )  # fmt: skip
    except (AwsError, ClusterError) as exc:
        raise OperationFailed(f"The preflight could not run: {exc}") from None
    failed = [c.name for c in checks if not c.ok]
    document = {**json.loads(checks_of.report(checks, as_json=True)), "warnings": rendered.warnings}
    report = Report(document, [checks_of.report(checks)])
    if failed:
        raise OperationFailed(
            f"The preflight failed ({', '.join(failed)}); nothing was applied. Fix them (see the table and "
            "docs/deploying.md), or pass --skip-preflight to deploy anyway.",
            document,
            report.output,
        )
    return report if stop else None


def show_history(cluster, config):
    try:
        releases = history(cluster, config.app_name, config.namespace)
    except ClusterError as exc:
        raise OperationFailed(str(exc)) from None
    if not releases:
        return Report([], [f"No revision recorded for {config.app_name} in namespace {config.namespace}."])
    lines = [f"{'REV':>4}  {'TIME':<27} {'OUTCOME':<12} {'IMAGE':<40} {'COMMIT':<12} USER / NOTE"]
    lines += [
        f"{r.revision:>4}  {r.time:<27} {r.outcome:<12} {r.image:<40} {r.commit or '-':<12} {r.user}"
        f"{'  ' + r.note if r.note else ''}"
        for r in releases
    ]
    return Report([r.__dict__ for r in releases], lines)


def _applied(document, result):
    """The report of a deploy, dry run or diff: ``objects`` becomes what happened to each object."""
    document = {**document, **result.as_dict()}
    if result.diffs:
        document["diffs"] = result.diffs
    return document


def _objects(result):
    return [f"  {o['object']}: {o['result']}" for o in result.objects]


def _preview(deployer, rendered, document, as_diff):
    try:
        result = (deployer.diff if as_diff else deployer.dry_run)(rendered.manifests)
    except ClusterError as exc:
        raise OperationFailed(str(exc)) from None
    if as_diff:
        output, sentence = list(result.diffs), f"{len(result.diffs)} object(s) would change; nothing was applied."
    else:
        output = []
        sentence = (
            f"Dry run: {len(result.changed)} object(s) would change, {len(result.pruned)} would be pruned; "
            "nothing was applied."
        )
    return Report(_applied(document, result), output, sentence, _objects(result))


def diff(deployer, rendered, document):
    """What would change against the live objects, one unified diff each (a Secret's values hidden)."""
    return _preview(deployer, rendered, document, as_diff=True)


def dry_run(deployer, rendered, document):
    """The server-side dry run of every object, and what the prune would delete."""
    return _preview(deployer, rendered, document, as_diff=False)


def rollback_target(cluster, config, revision):
    """(manifests, revision) of ``revision``, or of the last successful one before the current when 0."""
    releases = history(cluster, config.app_name, config.namespace, with_manifests=True)
    if not releases:
        raise OperationFailed(f"No revision is recorded for {config.app_name} in namespace {config.namespace}.")
    if revision == 0:
        good = [r for r in releases[:-1] if r.outcome in ("deployed", "superseded")]
        if not good:
            raise OperationFailed("There is no earlier successful revision to roll back to.")
        target = good[-1]
    else:
        target = next((r for r in releases if r.revision == revision), None)
        if target is None:
            known = ", ".join(str(r.revision) for r in releases)
            raise OperationFailed(f"--rollback {revision}: no such revision (recorded: {known}).")
    return target.manifests, target.revision


def deploy(request, cluster, deployer, rendered, document):
    """Deploy the render (or, with mode "rollback", a recorded revision with today's Secrets)."""
    config, manifests, rollback_of = request.config, rendered.manifests, None
    try:
        if request.mode == "rollback":
            recorded, rollback_of = rollback_target(cluster, config, request.rollback)
            # Records leave Secrets out (they hold no secret value): keep today's, which the prune would
            # otherwise delete, taking the app's SECRET_KEY and database passwords with them.
            manifests = [m for m in recorded if m["kind"] != "Secret"] + [m for m in manifests if m["kind"] == "Secret"]
        what = f"revision {rollback_of} again" if rollback_of else f"image {config.image}"
        if request.confirm(f"Deploy {what} to {cluster.host}, namespace {config.namespace}? [y/N] ") is False:
            raise OperationFailed("Cancelled: nothing was applied.")
        result = deployer.deploy(manifests, rollback_of=rollback_of)
    except LockHeld as exc:
        raise OperationFailed(f"{exc} Nothing was applied.") from None
    except DeployFailed as exc:
        raise OperationFailed(str(exc), {**_applied(document, exc.report), "applied": True}) from None
    except ClusterError as exc:
        raise OperationFailed(str(exc)) from None
    return Report(
        {**_applied(document, result), "applied": True},
        [],
        f"Revision {result.revision} {result.outcome}: {len(result.changed)} object(s) changed, "
        f"{len(result.objects) - len(result.changed)} unchanged, {len(result.pruned)} pruned.",
        _objects(result),
    )


def render_restore(request):
    """The restore Job of ``request.backup``, validated with the stack as it stands during a restore."""
    from deploy.k8s.restore import RestoreError, restore_job, stack_during_restore

    config = request.config
    try:
        job = restore_job(config, request.backup)
    except (RestoreError, RenderError) as exc:
        raise OperationFailed(f"{exc} Nothing was rendered.") from None
    stack = _render(config, request.secrets or get_secrets(), redact=True)
    # With the stack (the wiring rule needs the policies it relies on), as it stands during a restore.
    check([*stack_during_restore(stack), job], config)
    return Report({"validated_for": list(SUPPORTED_KUBERNETES_VERSIONS), "manifests": [job]}, [to_yaml([job])])


def restore(request, cluster):
    from deploy.k8s.restore import RUNNING, RestoreActive, RestoreError, check_backup_name, run_restore

    config, backup = request.config, request.backup
    try:
        check_backup_name(config, backup)
    except RestoreError as exc:
        raise OperationFailed(f"{exc} Nothing was restored.") from None
    where = f"database {config.postgres_database!r} in namespace {config.namespace} on {cluster.host}"
    answer = request.confirm(f"Replace the data of {where} with {backup}? [y/N] ")
    if answer is None:
        raise OperationFailed(
            f"--restore replaces the data of {where}: pass --yes to confirm without a terminal. Nothing was restored."
        )
    if not answer:
        raise OperationFailed("Cancelled: nothing was restored.")
    try:
        outcome = run_restore(cluster, config, backup, request.timeout, request.progress)
    except RestoreActive as exc:
        raise OperationFailed(
            f"{exc} Nothing was started.",
            {"status": "refused", "job": exc.job, "restoring": exc.backup},
            exit_code=RESTORE_ANOTHER_ACTIVE,
        ) from None
    except ClusterError as exc:
        raise OperationFailed(f"The restore Job could not run: {exc} Nothing was restored.") from None
    job, lines, namespace = outcome.job, outcome.log, config.namespace
    document = {"status": outcome.status, "restored": backup, "job": job, "attached": outcome.attached, "log": lines}
    if outcome.status == RUNNING:
        raise OperationFailed(
            f"The restore Job {job} is still running after {request.timeout} s (--timeout); it goes on in the "
            f"cluster and nothing is known yet of its result. Follow it with 'kubectl -n {namespace} logs -f "
            f"job/{job}', or wait for it and get its result with the same command again (k8s_deploy --restore "
            f"{backup} --yes), which waits for this Job instead of starting another. Keep the app scaled to 0 "
            "meanwhile (docs/runbooks.md#restoring-a-backup).",
            document,
            exit_code=RESTORE_STILL_RUNNING,
        )
    if not outcome.ok:
        shown = "\n".join(f"  {line}" for line in lines[-20:]) or "  (no log)"
        raise OperationFailed(
            f"The restore Job {job} failed; its log ends with:\n{shown}\n"
            "pg_restore runs in one transaction: unless the log says 'row counts differ', the database is as "
            "it was. Fix the cause and run k8s_deploy --restore again (docs/runbooks.md#restoring-a-backup).",
            document,
        )
    attached = ", which was already running" if outcome.attached else ""
    return Report(document, [*lines, f"Restored {backup} into {where} (Job {job}{attached})."])


def backups(request, cluster):
    from deploy.k8s.restore import RestoreError, list_backups

    config = request.config
    try:
        found, job = list_backups(cluster, config, request.timeout, request.progress)
    except (RestoreError, ClusterError) as exc:
        raise OperationFailed(f"Cannot list the backups: {exc}") from None
    document = {"backups": found, "job": job}
    if not found:
        return Report(
            document,
            [
                f"No backup of database {config.postgres_database!r} on the volume {config.app_name}-postgres-backup "
                "yet (the CronJob writes one every night; docs/runbooks.md#restoring-a-backup)."
            ],
        )
    lines = [f"{'BACKUP':<40} {'SIZE':>12}  TIME (UTC)"]
    lines += [f"{backup['name']:<40} {backup['bytes']:>12}  {backup['time']}" for backup in found]
    return Report(document, lines)


def cutover(request, cluster, rendered):
    """The cut-over from a SQLite file (deploy/k8s/cutover.py), with the manifests rendered for this run."""
    from deploy import maintenance
    from deploy.k8s.cutover import Cutover, CutoverFailed

    config, source = request.config, Path(request.sqlite_file)
    if not source.is_file():
        raise OperationFailed(f"--cutover: {source} is not a file. Nothing was changed.")
    question = (
        f"Cut over from {source} to {cluster.host}, namespace {config.namespace}: the site here goes into "
        "maintenance until the new one serves. Continue? [y/N] "
    )
    if request.confirm(question) is False:
        raise OperationFailed("Cancelled: nothing was changed.")
    deployer = Deployer(cluster, config, timeout=request.timeout, progress=request.progress)
    job = Cutover(
        cluster,
        config,
        rendered.manifests,
        source,
        state_path=Path("build") / "cutover" / f"{config.app_name}.json",
        preflight=sqlite_preflight,
        s3=aws_session(request).client("s3"),
        flag=maintenance.MaintenanceFlag.from_settings(),
        deployer=deployer,
        timeout=request.timeout,
        progress=request.progress,
    )
    try:
        report = job.run(resume=request.resume)
    except CutoverFailed as exc:
        raise OperationFailed(str(exc), {"cutover": exc.report} if exc.report else None) from None
    lines = [f"  {step['step']:<15} {step['outcome']:<7} {step['seconds']:>9.1f} s" for step in report["steps"]]
    lines.append(
        f"Cut-over done: downtime {report['downtime_seconds']:.1f} s from maintenance on to the smoke test. "
        "Now switch the traffic to the new deployment (DNS, balancer): the point of no return."
    )
    return Report({"cutover": report}, lines)


def sqlite_preflight(path):
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
