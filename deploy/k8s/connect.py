"""An API client for the cluster: kubeconfig, in-cluster service account, or an endpoint.

The endpoint form is the seam for EKS: an API server URL, its CA, and a
function that returns a bearer token, called before each request so that a
short-lived token is refreshed during long waits.
"""

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException


class ConnectError(Exception):
    """No usable cluster connection; the message says what to fix."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    ca_data: bytes | None = None
    token: Callable[[], str] | None = field(default=None, repr=False)


def _tuned(configuration):
    configuration.retries = 1  # fail fast on an unreachable server; the deploy reports and can be rerun
    return configuration


def api_client(source, context=None, endpoint=None):
    """An ApiClient for ``source`` (a ClusterSource) or ``endpoint`` (an Endpoint)."""
    if endpoint is not None:
        return endpoint_client(endpoint)
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
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = f" context {context!r}" if context else ""
        raise ConnectError(f"Cannot use the {source}{where}: {exc}") from None
    return k8s_client.ApiClient(_tuned(configuration))


def endpoint_client(endpoint):
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
