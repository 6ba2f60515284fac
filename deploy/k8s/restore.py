"""Restoring a backup of the in-cluster PostgreSQL: one restricted Job, then a row count check.

``restore_job`` renders ``postgres/_restore-job.yaml`` for one backup file of the nightly CronJob;
``run_restore`` creates it and waits for it, and returns its log: one line per table with the rows the dump holds
and the rows the database holds after the restore. The Job fails when the file is missing, when ``pg_restore``
fails (``--single-transaction``: the database is left as it was) or when a count differs.
"""

import re
import shlex
from datetime import UTC, datetime

from deploy.k8s import names

# The names the backup CronJob writes: DATABASE-YYYYMMDDTHHMMSSZ.dump.
_BACKUP = re.compile(r"[A-Za-z0-9_.-]+-\d{8}T\d{6}Z\.dump")


class RestoreError(Exception):
    """A restore that cannot start (bad name, no in-cluster PostgreSQL) or that failed in the cluster."""


def check_backup_name(config, backup):
    if not (config.postgres_in_cluster or config.postgres_operator):
        raise RestoreError(
            "The restore Job restores the in-cluster PostgreSQL; with postgres_mode 'external' restore the managed "
            "database with its own snapshots (docs/runbooks.md)."
        )
    if not _BACKUP.fullmatch(backup or "") or not backup.startswith(f"{config.postgres_database}-"):
        raise RestoreError(
            f"{backup!r} is not a backup name: the CronJob writes {config.postgres_database}-YYYYMMDDTHHMMSSZ.dump "
            "to the backup volume. List them with the command in docs/runbooks.md#restoring-a-backup."
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


def restore_job(config, backup, now=None):
    from deploy.conf import DeploySecrets
    from deploy.k8s.render import _environment, build_context, render_template

    check_backup_name(config, backup)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    env = _environment(config)
    context = build_context(config, DeploySecrets(), True, env)
    context["restore_script"] = restore_script(config, backup)
    context["restore_job_name"] = names.resource_name(config.app_name, f"restore-{stamp}")
    (job,) = render_template(env, "postgres/_restore-job.yaml", context)
    return job


def run_restore(cluster, config, backup, timeout, progress=None):
    """Create the Job, wait for it, and return (ok, log lines)."""
    from deploy.k8s.rollout import WaitFailure, wait_for

    job = restore_job(config, backup)
    cluster.create(job)
    try:
        wait_for(cluster, job, timeout, progress)
        ok = True
    except WaitFailure:
        ok = False
    pods = cluster.list("v1", "Pod", config.namespace, label_selector=f"job-name={job['metadata']['name']}")
    log = cluster.pod_log(config.namespace, pods[0]["metadata"]["name"], tail=200) if pods else ""
    return ok, job["metadata"]["name"], log
