"""The backup CronJob's commands when backups go to S3 (DEPLOY['postgres_backup_bucket']).

Two containers share an emptyDir: ``pg-dump`` (the PostgreSQL image) writes ``pg_dump --format=custom`` into a
FIFO there, ``upload`` (the app's image, which has boto3) streams the FIFO to S3 with its SHA-256
(``deploy/aws/backups.py``). The dump is never on a disk. pg_dump's exit status goes to a file beside the FIFO
as soon as it ends, and the uploader waits for it after the end of the stream: a failed dump aborts the upload.
Credentials come from the CronJob's ServiceAccount through EKS Pod Identity (the agent on the node at
``POD_IDENTITY_AGENT``); nothing secret is in the cluster for it.
"""

import shlex

from deploy.k8s import names

WORK = "/work"
FIFO = f"{WORK}/dump.fifo"
STATUS = f"{WORK}/status"
# The EKS Pod Identity agent: a link-local address on every node, where the AWS SDK asks for credentials.
POD_IDENTITY_AGENT = "169.254.170.23/32"
POD_IDENTITY_PORT = 80


def make_fifo_command():
    return ["mkfifo", "-m", "0600", FIFO]


def dump_script(config):
    """The ``pg-dump`` container's script (a test runs the same text against a local PostgreSQL)."""
    postgres = names.endpoint(config, "postgres")
    connect = (
        f"-h {shlex.quote(postgres.host)} -p {postgres.port} -U {shlex.quote(config.postgres_user)} "
        f"-d {shlex.quote(config.postgres_database)}"
    )
    return (
        "set -u; "
        'export PGPASSWORD="$(cat /run/secrets/postgres/password)"; '
        "status=0; "
        # To stdout, not -f: pg_dump fsyncs a file it writes, which a FIFO refuses. The shell opens the FIFO
        # whatever pg_dump then does, so the uploader always reads an end, and then the status.
        f"pg_dump --format=custom --no-owner {connect} > {FIFO} || status=$?; "
        f'echo "$status" > {STATUS}; '
        'echo "backup: pg_dump exited with status $status"; '
        'exit "$status"'
    )


def upload_command(config):
    """The ``upload`` container's command, in the app's image (its entrypoint is not needed)."""
    return [
        "python", "-m", "deploy.aws.backups", "upload", "--bucket", config.postgres_backup_bucket,
        "--database", config.postgres_database, "--source", FIFO, "--status", STATUS,
    ]  # fmt: skip


def fetch_command(config, backup):
    """The restore Job's init container: the backup from S3 into the pod's /backups, checked against its SHA-256."""
    return [
        "python", "-m", "deploy.aws.backups", "download", "--bucket", config.postgres_backup_bucket,
        "--name", backup, "--to", f"/backups/{backup}",
    ]  # fmt: skip


def list_command(config):
    """The listing Job's command: the bucket's backups of this database, as the volume's listing prints them."""
    return [
        "python", "-m", "deploy.aws.backups", "list", "--bucket", config.postgres_backup_bucket,
        "--database", config.postgres_database,
    ]  # fmt: skip
