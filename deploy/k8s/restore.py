"""Restoring a backup of the in-cluster PostgreSQL: one restricted Job, then a row count check.

``restore_job`` renders ``postgres/_restore-job.yaml`` for one backup file of the nightly CronJob;
``run_restore`` creates it and waits for it, and returns a :class:`RestoreOutcome`: restored, failed, or still
running when ``timeout`` passed (the Job goes on in the cluster). Its log has one line per table with the rows the
dump holds and the rows the database holds after the restore. The Job fails when the file is missing, when
``pg_restore`` fails (``--single-transaction``: the database is left as it was) or when a count differs.

At most one restore runs at a time: ``run_restore`` first looks for a restore Job that has not finished; for the
same backup it waits for that Job instead of starting another (a rerun after ``--timeout`` attaches), for another
backup it refuses with :class:`RestoreActive`, naming the Job and how to follow it.

``list_backups`` runs the same kind of Job with a listing script instead, since the backup volume is the only
complete record of the backups (the CronJob keeps the logs of its last few Jobs only).
"""

import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime

from deploy.k8s import names

# The names the backup CronJob writes: DATABASE-YYYYMMDDTHHMMSSZ.dump.
_BACKUP = re.compile(r"[A-Za-z0-9_.-]+-\d{8}T\d{6}Z\.dump")
_STAMP = re.compile(r"-(\d{8}T\d{6}Z)\.dump$")
# The backup a restore Job restores, so that a rerun knows whether an active Job is its own.
BACKUP_ANNOTATION = f"{names.MANAGED_BY}/backup"
LISTED = re.compile(r"^backup: (\S+)\s+(\d+)$")

RESTORED, FAILED, RUNNING = "restored", "failed", "running"
_COMPLETE = "complete"


class RestoreError(Exception):
    """A restore that cannot start (bad name, no in-cluster PostgreSQL) or that failed in the cluster."""


class RestoreActive(RestoreError):
    """Another restore Job has not finished: starting a second ``pg_restore`` beside it is refused."""

    def __init__(self, config, job, backup):
        self.job, self.backup = job, backup
        super().__init__(
            f"The restore Job {job} (backup {backup or 'unknown'}) is still running in namespace {config.namespace}; "
            f"a second restore would run pg_restore beside it. Follow it with "
            f"'kubectl -n {config.namespace} logs -f job/{job}', wait for it with "
            f"'kubectl -n {config.namespace} wait --for=condition=complete --timeout=1h job/{job}' (or run "
            f"k8s_deploy --restore {backup or 'BACKUP'} again, which waits for it), then restore the other backup."
        )


@dataclass
class RestoreOutcome:
    status: str  # RESTORED, FAILED or RUNNING
    job: str
    log: list = field(default_factory=list)
    attached: bool = False  # the Job was already running: this run waited for it instead of starting one

    @property
    def ok(self):
        return self.status == RESTORED


def check_mode(config, operation="restore"):
    """RestoreError unless the database is the cluster's: the Jobs restore and list the nightly dumps of its volume.

    Asked before anything else (k8s_deploy asks it before reading the rds mode's stack outputs): a mode these Jobs
    cannot serve is refused without a call to AWS or the cluster.
    """
    if config.postgres_in_cluster or config.postgres_operator:
        return
    if operation == "list":
        raise RestoreError(
            "The backups listed are those of the cluster's PostgreSQL (postgres_mode 'in-cluster' or "
            f"'cloudnative-pg'); with postgres_mode {config.postgres_mode!r} the managed database's snapshots are "
            "listed by its provider (docs/high-availability.md#recovery-procedures)."
        )
    raise RestoreError(
        "The restore Job restores the PostgreSQL of the cluster (postgres_mode 'in-cluster' or "
        f"'cloudnative-pg'); with postgres_mode {config.postgres_mode!r} restore the managed database with its "
        "own snapshots or point-in-time restore (docs/high-availability.md#recovery-procedures)."
    )


def check_backup_name(config, backup):
    check_mode(config)
    if not _BACKUP.fullmatch(backup or "") or not backup.startswith(f"{config.postgres_database}-"):
        raise RestoreError(
            f"{backup!r} is not a backup name: the CronJob writes {config.postgres_database}-YYYYMMDDTHHMMSSZ.dump "
            "to the backup volume. List them with k8s_deploy --backups."
        )


def restore_script(config, backup):
    """The Job's shell script; a test runs the same text against a local PostgreSQL."""
    postgres = names.endpoint(config, "postgres")
    connect = (
        f"-h {shlex.quote(postgres.host)} -p {postgres.port} -U {shlex.quote(config.postgres_user)} "
        f"-d {shlex.quote(config.postgres_database)}"
    )
    path = shlex.quote(f"/backups/{backup}")
    # $table is the dump's own COPY target, an identifier pg_dump already quoted, expanded by the shell.
    count = '"SELECT count(*) FROM $table"'
    return (
        "set -eu; "
        'export PGPASSWORD="$(cat /run/secrets/postgres/password)"; '
        f"f={path}; "
        'if [ ! -f "$f" ]; then echo "restore: no backup $f; the backups are:"; ls -1 /backups; exit 2; fi; '
        f'pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error {connect} "$f"; '
        # Rows per table in the dump: the lines of each COPY block of its data section.
        'pg_restore --data-only -f - "$f" | awk \'/^COPY /{t=$2; n=0; c=1; next} '
        "c && /^\\\\\\.$/{print t, n; c=0; next} c{n++}' > /tmp/expected; "
        "bad=0; "
        "while read -r table rows; do "
        f'got="$(psql -X -A -t -q {connect} -c {count})"; '
        'echo "restore: $table dump=$rows database=$got"; '
        'if [ "$got" != "$rows" ]; then bad=1; fi; '
        "done < /tmp/expected; "
        'if [ "$bad" != 0 ]; then echo "restore: row counts differ"; exit 3; fi; '
        'echo "restore: verified $(wc -l < /tmp/expected) table(s) from $f"'
    )


def list_script(config):
    """The listing Job's script: one line 'backup: NAME BYTES' per dump of this database on the volume."""
    pattern = shlex.quote(f"{config.postgres_database}-")
    return (
        "set -eu; cd /backups; "
        f'for f in {pattern}*.dump; do [ -f "$f" ] || continue; echo "backup: $f $(wc -c < "$f")"; done; '
        'echo "backups: listed"'
    )


def parse_backups(config, log):
    """The backups a listing Job's log names, oldest first, as dicts (name, bytes, time)."""
    found = []
    for line in log.splitlines():
        match = LISTED.match(line.strip())
        if not match or not _BACKUP.fullmatch(match.group(1)):
            continue
        name = match.group(1)
        if not name.startswith(f"{config.postgres_database}-"):
            continue
        stamp = datetime.strptime(_STAMP.search(name).group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        found.append({"name": name, "bytes": int(match.group(2)), "time": stamp.isoformat()})
    return sorted(found, key=lambda b: b["time"])


def _job(config, operation, script, suffix, now, annotations=None):
    from deploy.conf import DeploySecrets
    from deploy.k8s.render import _environment, build_context, render_template

    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    env = _environment(config)
    context = build_context(config, DeploySecrets(), True, env)
    from deploy.k8s import backup as s3

    bucket = config.postgres_backup_bucket
    context.update(
        # With a bucket: the backup is fetched from S3 (and checked) into the pod first; the listing reads S3.
        s3_fetch=s3.fetch_command(config, (annotations or {}).get(BACKUP_ANNOTATION)) if bucket else None,
        s3_list=s3.list_command(config) if bucket and operation == "list-backups" else None,
        operation=operation,
        operation_script=script,
        operation_job_name=names.resource_name(config.app_name, f"{suffix}-{stamp}"),
        operation_annotations=annotations or {},
    )
    (job,) = render_template(env, "postgres/_restore-job.yaml", context)
    return job


def stack_during_restore(stack):
    """The stack as the runbook leaves it while a restore runs: writes frozen by scaling the app to 0 (step 1).

    The autoscaler does not scale a Deployment up from 0, so the app's HorizontalPodAutoscaler no longer counts
    either. Validating the restore Job with the stack at its largest instead would count ten app pods that are not
    there, and refuse a restore that fits (the cloudnative-pg mode's three instances leave no room for them).
    """
    app = {
        manifest["metadata"]["name"]
        for manifest in stack
        if manifest.get("kind") == "Deployment" and names.component(manifest) == "app"
    }
    during = []
    for manifest in stack:
        if manifest.get("kind") == "HorizontalPodAutoscaler" and manifest["spec"]["scaleTargetRef"]["name"] in app:
            continue
        if manifest.get("kind") == "Deployment" and manifest["metadata"]["name"] in app:
            manifest = {**manifest, "spec": {**manifest["spec"], "replicas": 0}}
        during.append(manifest)
    return during


def restore_job(config, backup, now=None):
    check_backup_name(config, backup)
    return _job(config, "restore", restore_script(config, backup), "restore", now, {BACKUP_ANNOTATION: backup})


def list_job(config, now=None):
    # The CloudNativePG mode keeps the same nightly dumps on the same volume: --restore takes them, so --backups
    # must list them.
    check_mode(config, "list")
    return _job(config, "list-backups", list_script(config), "backups", now)


def _finished(job):
    return any(
        c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
        for c in (job.get("status") or {}).get("conditions") or []
    )


def active_restores(cluster, config):
    """The restore Jobs of this app that have not finished, oldest first."""
    selector = f"{names.release_selector(config.app_name)},{names.OPERATION}=restore"
    jobs = [j for j in cluster.list("batch/v1", "Job", config.namespace, label_selector=selector) if not _finished(j)]
    return sorted(jobs, key=lambda j: j["metadata"].get("creationTimestamp") or "")


def _wait(cluster, config, job, timeout, progress):
    """(status, log lines) of the Job after waiting at most ``timeout`` seconds."""
    from deploy.k8s.rollout import WaitFailure, wait_for

    try:
        wait_for(cluster, job, timeout, progress)
        status = _COMPLETE
    except WaitFailure:
        live = cluster.get_manifest(job)
        status = RUNNING if live is not None and not _finished(live) else FAILED
    pods = cluster.list("v1", "Pod", config.namespace, label_selector=f"job-name={job['metadata']['name']}")
    log = cluster.pod_log(config.namespace, pods[-1]["metadata"]["name"], tail=200) if pods else ""
    return status, [line for line in log.splitlines() if line.strip()]


def run_restore(cluster, config, backup, timeout, progress=None):
    """Start the restore Job (or wait for the one restoring ``backup`` already), and return its outcome."""
    check_backup_name(config, backup)
    active = active_restores(cluster, config)
    if active:
        job = active[0]
        restoring = (job["metadata"].get("annotations") or {}).get(BACKUP_ANNOTATION)
        if restoring != backup:
            raise RestoreActive(config, job["metadata"]["name"], restoring)
        (progress or (lambda message: None))(f"job {job['metadata']['name']} is already restoring {backup}: waiting")
        status, log = _wait(cluster, config, job, timeout, progress)
        return RestoreOutcome(RESTORED if status == _COMPLETE else status, job["metadata"]["name"], log, attached=True)
    job = restore_job(config, backup)
    cluster.create(job)
    status, log = _wait(cluster, config, job, timeout, progress)
    return RestoreOutcome(RESTORED if status == _COMPLETE else status, job["metadata"]["name"], log)


def list_backups(cluster, config, timeout, progress=None):
    """Run the listing Job, read its log, delete it; return (backups, job name)."""
    job = list_job(config)
    cluster.create(job)
    name = job["metadata"]["name"]
    try:
        status, log = _wait(cluster, config, job, timeout, progress)
    finally:
        cluster.delete("batch/v1", "Job", name, config.namespace)
    if status != _COMPLETE or "backups: listed" not in log:
        shown = "\n".join(f"  {line}" for line in log[-20:]) or "  (no log)"
        if status == _COMPLETE:  # the script ran to its end, but what it printed did not reach us
            outcome = "finished, but its log could not be read or has no listing ('backups: listed' missing)"
        else:
            outcome = "did not finish in time" if status == RUNNING else "failed"
        raise RestoreError(f"The Job {name} that lists the backups {outcome}; its log ends with:\n{shown}")
    return parse_backups(config, "\n".join(log)), name
