"""The API client of the cluster (`Cluster`): discovery, server-side apply, get, list, create, replace, delete,
logs, events, the service proxy.

Every error from the cluster becomes a :class:`ClusterError` whose message
says what was refused and why (401, 403 with the verb and resource, 409 with
the fields, 422 with the field, 5xx, unreachable, timeouts).
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import urllib3

# The Kubernetes client, imported when a cluster is first talked to (``_import_kubernetes``): importing it takes
# 0.2 s of CPU, which rendering, validating and --help never need. Until then no answer of a cluster can exist.
DynamicClient = DynamicApiError = ResourceNotFoundError = None


def _import_kubernetes():
    global DynamicClient, DynamicApiError, ResourceNotFoundError
    if DynamicClient is None:
        from kubernetes.dynamic import DynamicClient
        from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError


def _is_dynamic_api_error(exc):
    """Whether ``exc`` is the dynamic client's DynamicApiError, with or without a Cluster made in this process.

    One can exist only once its module is imported (by anyone: ``_import_kubernetes`` may not have run yet).
    """
    exceptions = sys.modules.get("kubernetes.dynamic.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.DynamicApiError)


FIELD_MANAGER = "django-k8s-deploy"
TIMEOUT = (5, 30)  # connect, read (seconds) for one request, unless the ApiClient says otherwise


def _raised_in_discovery(exc):
    """Whether ``exc`` came out of the Kubernetes client's discovery code (not out of ours)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename.replace(os.sep, "/").endswith("kubernetes/dynamic/discovery.py")


def _as_dict(_client, data):
    """The dynamic client's answer as the JSON it parsed: no ResourceInstance built to be turned back into it."""
    return data


class ClusterError(Exception):
    """The cluster refused or could not be reached.

    ``status`` is the HTTP status when there is one; ``causes`` the Status
    causes (for a 409 apply conflict: one per field, with the other manager).
    """

    def __init__(self, message, status=None, causes=()):
        super().__init__(message)
        self.status = status
        self.causes = list(causes)


def _status(exc):
    try:
        return json.loads(exc.body)
    except (TypeError, ValueError):
        return {}


def _status_message(exc):
    return _status(exc).get("message") or str(exc.reason or exc)


def explain(exc, doing, host=None, timeout=None):
    """One sentence for an error raised while ``doing`` something (against ``host``)."""
    if isinstance(exc, ClusterError):
        return exc
    if _is_dynamic_api_error(exc):
        status = exc.status
        message = _status_message(exc)
        if status == 401:
            text = f"{doing}: the cluster rejected the credentials (401 Unauthorized). Check the kubeconfig user, or refresh the token."  # noqa: E501
        elif status == 403:
            text = f"{doing}: forbidden (403): {message}. Grant that verb on that resource to this identity (RBAC)."
        elif status == 409:
            text = f"{doing}: conflict (409): {message}"
        elif status == 422:
            text = f"{doing}: the cluster rejected the object as invalid (422): {message}"
        elif status == 404:
            text = f"{doing}: not found (404): {message}"
        elif status and status >= 500:
            text = f"{doing}: the API server failed ({status}): {message}"
        else:
            text = f"{doing}: {status} {message}"
        return ClusterError(text, status, _status(exc).get("details", {}).get("causes", []))
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError | OSError):
        reason = getattr(exc, "reason", None) or exc
        server = f"the cluster's API server {host}" if host else "the cluster's API server"
        # urllib3's NewConnectionError (refused, no route, unknown host) is a ConnectTimeoutError by inheritance
        # only: nothing waited, and "did not answer in time" would send the operator after the wrong problem.
        refused = isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)
        if not refused and (
            isinstance(reason, urllib3.exceptions.TimeoutError | TimeoutError) or "timed out" in str(reason)
        ):
            limits = f" ({timeout[0]:g} s to connect, {timeout[1]:g} s to answer)" if timeout else ""
            return ClusterError(
                f"{doing}: {server} did not answer in time{limits}. Check that the address in the kubeconfig "
                "(or --context, --eks-cluster) is this cluster's API server and that it is reachable from here."
            )
        return ClusterError(f"{doing}: cannot reach {server} ({reason}).")
    return None


def discovery_cache(host):
    """Where the API discovery of ``host`` is cached: a directory of this user's only.

    Not the shared temporary directory: there any local user could plant, under a predictable name, the
    discovery document this tool then trusts for the cluster, and a document left by another server that
    once had the same address (a port reused on a workstation or a CI runner) skipped discovery altogether.
    """
    digest = hashlib.sha256(host.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "django-k8s-deploy"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        if base.stat().st_uid != os.getuid() or base.stat().st_mode & 0o022:
            raise PermissionError(f"{base} is not this user's own")
    except OSError:
        base = Path(tempfile.mkdtemp(prefix="k8s-deploy-discovery-"))  # no lasting cache: discovered every run
    return base / f"discovery-{digest}.json"


_NOT_SERVED = object()  # a kind the discovery did not find, remembered for the rest of the run


class NotServed(ClusterError):
    """The cluster's discovery has no such kind: the API is off, or the CRD is not installed."""

    @classmethod
    def of(cls, api_version, kind):
        return cls(f"The cluster does not serve {kind} in {api_version}: is the API enabled, or the CRD installed?")


class Cluster:
    """A thin layer over the Kubernetes client's DynamicClient."""

    def __init__(self, api_client, field_manager=FIELD_MANAGER):
        self.api_client = api_client
        self.field_manager = field_manager
        self.host = api_client.configuration.host
        self.timeout = getattr(api_client, "request_timeout", TIMEOUT)
        self._resources = {}
        self._group_versions = None  # every group/version the cluster serves, asked once (``serves``)
        _import_kubernetes()
        try:
            self.dynamic = DynamicClient(api_client, cache_file=str(discovery_cache(self.host)))
        except Exception as exc:
            error = self._explain(exc, f"Connecting to {self.host} (API discovery)")
            if error is None and _raised_in_discovery(exc):
                # The client read an answer that is not a discovery document (a proxy's page, say) and tripped.
                error = ClusterError(
                    f"Connecting to {self.host} (API discovery): the answer is not what a Kubernetes API server "
                    f"sends ({type(exc).__name__}: {exc}). Is the kubeconfig's server address an API server's?"
                )
            if error is None:
                raise
            raise error from None

    def _explain(self, exc, doing):
        return explain(exc, doing, self.host, self.timeout)

    def resource(self, api_version, kind):
        # Found ones remembered: the discoverer keeps a kind it found too, but searches its cache (and may rewrite
        # its file) on each of a deploy's two requests per object. Missing ones too: for each, the discoverer
        # fetched the whole discovery again (a deploy's prune asks for the Prometheus operator's three kinds).
        if (found := self._resources.get((api_version, kind))) is not None:
            if found is _NOT_SERVED:
                raise NotServed.of(api_version, kind)
            return found
        try:
            if not self.serves(api_version):
                raise ResourceNotFoundError(api_version)  # not asked of the discoverer: see ``serves``
            found = self._resources[api_version, kind] = self.dynamic.resources.get(api_version=api_version, kind=kind)
            return found
        except ResourceNotFoundError:
            self._resources[api_version, kind] = _NOT_SERVED
            raise NotServed.of(api_version, kind) from None
        except Exception as exc:  # discovery of a group not cached yet talks to the server
            error = self._explain(exc, f"Discovering {kind} ({api_version})")
            if error is None:
                raise
            raise error from None

    def serves(self, api_version):
        """Whether the cluster serves ``api_version`` (``v1``, ``apps/v1``...) at all.

        The discoverer, asked for a kind it has not seen, fetches the whole discovery again (its cache may
        be older than a CRD): for each kind of a group the cluster does not have at all (the Prometheus
        operator's, without the operator), once per kind. The group list, asked once a run, answers those.
        """
        if self._group_versions is None:
            found = set()
            for path in ("/api", "/apis"):
                answer = self._call(f"Discovering the API ({path})", self.dynamic.request, "get", path,
                                    serializer=_as_dict)  # fmt: skip
                if not isinstance(answer, dict):  # a proxy's page, say: not an API server's answer
                    raise ClusterError(
                        f"Discovering the API ({path}) at {self.host}: the answer is not JSON, so this is not a "
                        "Kubernetes API server (a proxy or a wrong address in the kubeconfig?)."
                    )
                found |= set(answer.get("versions") or [])
                found |= {v["groupVersion"] for g in answer.get("groups") or [] for v in g.get("versions") or []}
            self._group_versions = found
        return api_version in self._group_versions

    def _call(self, doing, function, *args, **kwargs):
        try:
            return function(*args, _request_timeout=self.timeout, **kwargs)
        except Exception as exc:
            error = self._explain(exc, doing)
            if error is None:
                raise
            raise error from None

    def get(self, api_version, kind, name, namespace=None):
        resource = self.resource(api_version, kind)
        try:
            found = resource.get(name=name, namespace=namespace, _request_timeout=self.timeout, serializer=_as_dict)
        except DynamicApiError as exc:
            if exc.status == 404:
                return None
            raise self._explain(exc, f"Reading {kind} {name}") from None
        except Exception as exc:
            error = self._explain(exc, f"Reading {kind} {name}")
            if error is None:
                raise
            raise error from None
        return found

    def get_manifest(self, manifest):
        meta = manifest["metadata"]
        return self.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace"))

    def list(self, api_version, kind, namespace=None, label_selector=None, field_selector=None):
        resource = self.resource(api_version, kind)
        kwargs = {"label_selector": label_selector, "field_selector": field_selector}
        if resource.namespaced:
            kwargs["namespace"] = namespace
        return self._call(f"Listing {kind}", resource.get, serializer=_as_dict, **kwargs).get("items") or []

    def apply(self, manifest, dry_run=False, force=False):
        meta = manifest["metadata"]
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        kwargs = {
            "body": manifest,
            "name": meta["name"],
            "field_manager": self.field_manager,
            "force_conflicts": force,
        }
        if resource.namespaced:
            kwargs["namespace"] = meta.get("namespace")
        if dry_run:
            kwargs["dry_run"] = "All"
        return self._call(
            f"Applying {manifest['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " "),
            resource.server_side_apply,
            serializer=_as_dict,
            **kwargs,
        )

    def create(self, manifest):
        meta = manifest["metadata"]
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        return self._call(
            f"Creating {manifest['kind']} {meta['name']}",
            resource.create,
            body=manifest,
            namespace=meta.get("namespace"),
            serializer=_as_dict,
        )

    def replace(self, manifest):
        meta = manifest["metadata"]
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        return self._call(
            f"Updating {manifest['kind']} {meta['name']}",
            resource.replace,
            body=manifest,
            name=meta["name"],
            namespace=meta.get("namespace"),
            serializer=_as_dict,
        )

    def delete(self, api_version, kind, name, namespace=None):
        resource = self.resource(api_version, kind)
        kwargs = {"name": name, "body": {"propagationPolicy": "Foreground"}}
        if resource.namespaced:
            kwargs["namespace"] = namespace
        try:
            resource.delete(_request_timeout=self.timeout, **kwargs)
        except DynamicApiError as exc:
            if exc.status != 404:
                raise self._explain(exc, f"Deleting {kind} {name}") from None

    def pod_log(self, namespace, name, tail=20):
        """The last ``tail`` lines of a pod's log, or "" when the cluster cannot give them (the pod is gone, its
        container not started yet, the API server refused or did not answer): a log only adds to a report."""
        try:
            response = self.dynamic.request(
                "get",
                f"/api/v1/namespaces/{namespace}/pods/{name}/log",
                query_params=[("tailLines", tail)],
                _request_timeout=self.timeout,
            )
        except Exception as exc:
            if self._explain(exc, f"Reading the log of pod {name}") is None:
                raise  # not an answer of the cluster nor a lost connection: a bug, shown as one
            return ""
        data = response.data if hasattr(response, "data") else response
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    def service_proxy_get(self, namespace, service, port, path, headers=None):
        """GET ``path`` from a Service through the API server's service proxy: ``(status, headers, text)``.

        The API server sends the request to one ready endpoint of the Service and returns what it answered,
        status included; the caller needs ``get`` on ``services/proxy`` in the namespace (RBAC). A 4xx or 5xx
        from the app is an answer, not an error; only an unreachable API server raises :class:`ClusterError`.
        """
        target = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        header_params = {"Accept": "text/html,application/json;q=0.9,*/*;q=0.8", **(headers or {})}
        try:
            response = self.dynamic.request(
                "get", target, header_params=header_params, serialize=False, _request_timeout=self.timeout
            )
        except DynamicApiError as exc:
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            return exc.status, dict(exc.headers or {}), body
        except Exception as exc:
            error = self._explain(exc, f"Requesting {path} from the Service {service}:{port} (service proxy)")
            if error is None:
                raise
            raise error from None
        data = response.data if hasattr(response, "data") else response
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return response.status, dict(response.headers or {}), text

    def events(self, namespace, name):
        try:
            items = self.list("v1", "Event", namespace, field_selector=f"involvedObject.name={name}")
        except ClusterError:
            return []
        return [f"{e.get('reason')}: {e.get('message')}" for e in items]
