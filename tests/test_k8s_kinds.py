"""deploy/k8s/kinds.py: the one home of apply rank, scope, prune kinds, describe and the object key."""

from deploy.conf import load_config
from deploy.k8s import kinds
from deploy.k8s.render import file_name, render_manifests


def _obj(kind, name, namespace=None):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


def test_the_rank_table_covers_every_rendered_kind():
    rendered = {m["kind"] for m in render_manifests(load_config({}, environ={}))}
    assert rendered <= set(kinds.RANK)


def test_sort_key_applies_rank_by_rank_then_by_namespace_and_name():
    objects = [_obj("Deployment", "web", "app"), _obj("Service", "b", "app"), _obj("Service", "a", "app"),
               _obj("Namespace", "app"), _obj("Widget", "x", "app")]  # fmt: skip
    ordered = [kinds.describe(m) for m in sorted(objects, key=kinds.sort_key)]
    assert ordered == ["Namespace app", "Service app/a", "Service app/b", "Deployment app/web", "Widget app/x"]
    assert kinds.rank("Widget") == kinds.LAST_RANK > kinds.rank("HorizontalPodAutoscaler")


def test_the_files_written_carry_the_same_rank():
    assert file_name(_obj("Service", "web", "app")) == f"{kinds.rank('Service'):02d}-app-service-web.yaml"
    assert file_name(_obj("Widget", "x", "app")).startswith(f"{kinds.LAST_RANK:02d}-")


def test_scope_describe_and_key():
    assert kinds.cluster_scoped("ClusterRole") and not kinds.cluster_scoped("Role")
    assert kinds.describe(_obj("StorageClass", "efs")) == "StorageClass efs"
    assert kinds.describe(_obj("Secret", "s", "app")) == "Secret app/s"
    assert kinds.describe({"kind": "Secret"}) == "Secret None"  # a malformed render is still named in a message
    assert kinds.key(_obj("Secret", "s", "app")) == ("Secret", "app", "s")
    assert kinds.key(_obj("Namespace", "app")) == ("Namespace", None, "app")


def test_prune_lists_no_kind_it_never_prunes_and_every_cluster_scoped_one_it_lists_is_ranked():
    listed = {kind for _, kind in kinds.PRUNABLE}
    assert not listed & kinds.NEVER_PRUNED
    assert listed & kinds.CLUSTER_SCOPED <= set(kinds.RANK)


def test_prune_lists_every_kind_any_mode_renders_but_the_never_pruned():
    # A kind missing here is never pruned once a render stops making it (a PriorityClass unset, a Cluster whose mode
    # was left): every mode the tests know is rendered, with the switches that add kinds on.
    from tests.k8s_helpers import MODES, mode_config

    rendered = set()
    configs = [mode_config(mode) for mode in MODES]
    # The cloudnative-pg mode's WAL archive (ObjectStore, ScheduledBackup) comes with a backups bucket.
    configs.append(mode_config("cloudnative-pg", postgres_backup_bucket="app-backups", aws_region="eu-west-1"))
    for config in configs:
        rendered |= {(m["apiVersion"], m["kind"]) for m in render_manifests(config)}
    missing = {pair for pair in rendered - set(kinds.PRUNABLE) if pair[1] not in kinds.NEVER_PRUNED}
    assert not missing


def test_the_component_of_an_object_is_its_label():
    from deploy.k8s import names

    labelled = {"kind": "Job", "metadata": {"name": "m", "labels": names.labels("app", "migrate", "1")}}
    assert names.component(labelled) == "migrate"
    assert names.component({"kind": "Job", "metadata": {"name": "m"}}) is None
    assert names.component({"kind": "Job", "metadata": {"name": "m", "labels": None}}) is None
