"""A restore to a point in time in the cloudnative-pg mode: a second Cluster bootstrapped from the WAL archive.

:func:`recovery_manifests` makes, from the stack's own render, the ``Cluster`` that CloudNativePG recovers from the
Barman Cloud archive up to ``target_time`` (``bootstrap.recovery`` reading ``externalClusters``' plugin entry, the
live Cluster's ``serverName``), and the NetworkPolicy its pods need (each other, the operator, the Kubernetes API,
S3). The recovery Cluster archives nothing (no ``spec.plugins``) and nothing of the app may reach it: it is a copy
to check and copy back from (docs/high-availability.md#a-restore-to-a-point-in-time). Its instances' ServiceAccount
(named after it) gets the backup role from aws_provision (``CnpgRecoveryIdentity``).
"""

import copy
from datetime import datetime

from deploy.k8s import cnpg, names

SOURCE = "origin"  # the externalClusters entry the recovery reads


class RecoveryError(ValueError):
    """The recovery cannot be rendered; the message says why and what to do."""


def recovery_name(config):
    return names.cnpg_recovery_name(config.app_name)


def recovery_manifests(config, target_time):
    """[Cluster, NetworkPolicy] recovering the live Cluster's data as of ``target_time`` (RFC 3339, with a zone)."""
    from deploy.k8s.render import render_manifests

    if not config.postgres_operator or not config.postgres_backup_bucket:
        raise RecoveryError(
            "A restore to a point in time reads the Cluster's WAL archive: it needs postgres_mode 'cloudnative-pg' "
            "and DEPLOY['postgres_backup_bucket'] (docs/high-availability.md#a-restore-to-a-point-in-time)."
        )
    try:
        moment = datetime.fromisoformat(target_time.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RecoveryError(
            f"target time {target_time!r} is not an RFC 3339 time with its zone, such as 2026-01-31T09:15:00Z."
        )
    stack = render_manifests(config)
    live = names.cnpg_cluster_name(config.app_name)
    name = recovery_name(config)
    (cluster,) = [copy.deepcopy(m) for m in stack if cnpg.is_cluster(m)]
    (policy,) = [copy.deepcopy(m) for m in stack if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == live]
    spec = cluster["spec"]
    initdb = spec["bootstrap"]["initdb"]
    cluster["metadata"]["name"] = name
    spec["bootstrap"] = {
        "recovery": {
            "source": SOURCE,
            "database": initdb["database"],
            "owner": initdb["owner"],
            "secret": initdb["secret"],
            "recoveryTarget": {"targetTime": moment.isoformat().replace("+00:00", "Z")},
        }
    }
    spec["externalClusters"] = [
        {
            "name": SOURCE,
            "plugin": {
                "name": cnpg.BARMAN_PLUGIN,
                "parameters": {"barmanObjectName": cnpg.object_store_name(live), "serverName": live},
            },
        }
    ]
    spec.pop("plugins", None)  # a copy to check: it archives nothing (the live Cluster's archive stays its own)
    # One instance: a copy to read from, not a service (no replica to wait for, no disruption budget to drain).
    spec["instances"] = 1
    spec.pop("postgresql", None)
    spec["enablePDB"] = False
    own = {cnpg.CLUSTER_LABEL: name}
    for constraint in spec.get("topologySpreadConstraints", []):
        constraint["labelSelector"] = {"matchLabels": dict(own)}
    policy["metadata"]["name"] = name
    policy["spec"]["podSelector"] = {"matchLabels": dict(own)}
    # In: its own instances and the operator only (none of the app's pods). Out: as the live instances.
    instances = {cnpg.CLUSTER_LABEL: live}

    def kept(peer):
        return "namespaceSelector" in peer or peer.get("podSelector", {}).get("matchLabels") == instances

    policy["spec"]["ingress"] = [rule for rule in policy["spec"]["ingress"] if all(map(kept, rule["from"]))]
    for rule in (*policy["spec"]["ingress"], *policy["spec"]["egress"]):
        for peer in rule.get("from", []) + rule.get("to", []):
            if peer.get("podSelector", {}).get("matchLabels") == instances:
                peer["podSelector"] = {"matchLabels": dict(own)}
    return [cluster, policy]
