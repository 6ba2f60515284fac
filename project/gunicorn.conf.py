"""gunicorn configuration: ``gunicorn -c project/gunicorn.conf.py project.wsgi``.

Workers come from ``WEB_CONCURRENCY`` (gunicorn's own variable) and threads
from ``GUNICORN_THREADS``. Metrics use prometheus_client's multiprocess mode:
each worker writes its own files in ``PROMETHEUS_MULTIPROC_DIR`` (a private
temporary folder when unset or empty), whose metric files (``*.db``) are removed
when the master starts and dead workers' when they exit.
"""

import os
import tempfile
from pathlib import Path

from deploy.logging import gunicorn_logconfig
from deploy.tls import gunicorn_secure_scheme_headers

# One address, or several separated by commas (the NLB's TLS offload port beside 8000).
bind = [address.strip() for address in os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",") if address.strip()]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
# Heartbeat files on tmpfs, not on the container's (read-only) disk.
_SHM = "/dev/shm"  # noqa: S108 - tmpfs by design, not a shared temporary file
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", _SHM if Path(_SHM).is_dir() else None)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")
# The scheme header gunicorn trusts is the one Django trusts (deploy/tls.py), none when HTTPS is told by the port.
secure_scheme_headers = gunicorn_secure_scheme_headers(
    os.environ.get("SECURE_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO=https")
)
# gunicorn's control socket (for gunicornc) defaults to ~/.gunicorn/gunicorn.ctl, one path shared by
# every gunicorn of the user: off unless GUNICORN_CONTROL_SOCKET names a path for this one.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]

accesslog = "-"
errorlog = "-"
logger_class = "deploy.logging.JsonAccessLogger"
logconfig_dict = gunicorn_logconfig(os.environ.get("LOG_LEVEL", "INFO").upper())

# Empty counts as unset: Path("") is the current folder, which on_starting would otherwise empty.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-multiproc-")


def on_starting(server):
    # Only the metric files of earlier runs (prometheus_client writes KIND_PID.db): the folder may be one the
    # user named by mistake (/tmp, a home folder), and nothing else in it is ours to delete.
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for entry in metrics_dir.glob("*.db"):
        if entry.is_file():
            entry.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
