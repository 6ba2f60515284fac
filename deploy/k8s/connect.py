"""Connecting to the cluster: where it is (kubeconfig, in-cluster, EKS) and an API client for it.

:func:`find_cluster` says which cluster is configured, if any; :func:`api_client`
makes the Kubernetes ApiClient for it (or for an :class:`Endpoint`). The endpoint
form is the seam for EKS: an API server URL, its CA, and a function that returns
a bearer token, called before each request so that a short-lived token is
refreshed during long waits. The client that talks to it is ``client.Cluster``.
"""

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
import yaml

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True)
class ClusterSource:
    kind: str  # "kubeconfig", "in-cluster" or "eks"
    detail: str

    def __str__(self):
        return f"{self.kind} ({self.detail})"


class NoSuchKubeconfig(Exception):
    """KUBECONFIG names files of which none exists: an error, not "no cluster"."""


def find_cluster(environ=None, home=None, eks_cluster=None):
    """The configured cluster, or None when nothing points at one.

    A ``KUBECONFIG`` that is set but names no existing file raises
    :class:`NoSuchKubeconfig`: someone meant a cluster, and rendering to a
    folder instead would hide the mistake.
    """
    environ = os.environ if environ is None else environ
    if eks_cluster:
        return ClusterSource("eks", eks_cluster)
    if environ.get("KUBECONFIG"):
        named = [p for p in environ["KUBECONFIG"].split(os.pathsep) if p]
        paths = [p for p in named if Path(p).is_file()]
        if paths:
            return ClusterSource("kubeconfig", os.pathsep.join(paths))
        if named:
            raise NoSuchKubeconfig(
                f"KUBECONFIG names {os.pathsep.join(named)}, which does not exist (or is not a file). "
                "Fix the path, or unset KUBECONFIG to use ~/.kube/config or to render without a cluster."
            )
    default = Path(home or Path.home()) / ".kube" / "config"
    if default.is_file():
        return ClusterSource("kubeconfig", str(default))
    if environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.is_file():
        return ClusterSource("in-cluster", environ["KUBERNETES_SERVICE_HOST"])
    return None


class ConnectError(Exception):
    """No usable cluster connection; the message says what to fix."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    ca_data: bytes | None = None
    token: Callable[[], str] | None = field(default=None, repr=False)


# Seconds to connect to the API server, and to wait for each answer.
DEFAULT_TIMEOUT = (5, 30)


def _tuned(configuration):
    # Fail fast: one retry when connecting fails, none when a server took the request and did not answer
    # (another wait would only double the time-out); the deploy reports and can be rerun.
    configuration.retries = urllib3.Retry(total=1, read=0, redirect=0)
    return configuration


def _bounded(client, timeout):
    """Every request of ``client`` gets ``timeout`` unless its caller gives one: discovery included.

    The Kubernetes client waits forever by default, so a server that accepts
    the connection and never answers would hang the deploy in discovery.
    """
    rest = client.rest_client
    request = rest.request

    def request_with_timeout(*args, _request_timeout=None, **kwargs):
        return request(*args, _request_timeout=_request_timeout or timeout, **kwargs)

    rest.request = request_with_timeout
    client.request_timeout = timeout
    return client


def api_client(source, context=None, endpoint=None, timeout=DEFAULT_TIMEOUT):
    """An ApiClient for ``source`` (a ClusterSource) or ``endpoint`` (an Endpoint).

    ``timeout`` is ``(connect, read)`` in seconds, applied to every request.
    """
    from kubernetes import client as k8s_client  # here, not at the top: rendering never needs it (0.2 s)
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    if endpoint is not None:
        return _bounded(endpoint_client(endpoint), timeout)
    configuration = k8s_client.Configuration()
    try:
        if source.kind == "in-cluster":
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            # A KUBECONFIG list of files is merged by the client, as kubectl does.
            config_file = os.environ.get("KUBECONFIG") or source.detail
            k8s_config.load_kube_config(
                config_file=config_file, context=context, client_configuration=configuration, persist_config=False
            )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConnectError(
            f"Cannot use the {source}: it is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}. "
            "Fix the file, or point KUBECONFIG at a valid one."
        ) from None
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = f" context {context!r}" if context else ""
        raise ConnectError(f"Cannot use the {source}{where}: {exc}") from None
    return _bounded(k8s_client.ApiClient(_tuned(configuration)), timeout)


def endpoint_client(endpoint):
    from kubernetes import client as k8s_client

    configuration = k8s_client.Configuration(host=endpoint.host)
    if endpoint.ca_data:
        with tempfile.NamedTemporaryFile("wb", prefix="k8s-ca-", suffix=".crt", delete=False) as handle:
            handle.write(endpoint.ca_data)
        configuration.ssl_ca_cert = handle.name
    if endpoint.token is not None:
        configuration.api_key_prefix["BearerToken"] = "Bearer"

        def refresh(conf):
            conf.api_key["BearerToken"] = endpoint.token()

        configuration.refresh_api_key_hook = refresh
        configuration.api_key["BearerToken"] = ""
    return k8s_client.ApiClient(_tuned(configuration))
