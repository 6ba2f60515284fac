"""Where the cluster is, if there is one: kubeconfig, in-cluster, or EKS."""

import os
from dataclasses import dataclass
from pathlib import Path

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
