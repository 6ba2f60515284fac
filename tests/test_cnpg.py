"""PostgreSQL as a CloudNativePG Cluster (postgres_mode 'cloudnative-pg'): render, CRD schema, policy, wiring,
capacity, and a deploy against the fake API server (with the CRD served, and without)."""

import base64
import copy
import gzip
import hashlib
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.conf import ConfigError, DeploySecrets, load_config
from deploy.k8s import capacity, cnpg, crds, names, rollout, wiring
from deploy.k8s.render import render_manifests, to_yaml
from deploy.k8s.validate import policy_problems, schema_problems, stack_totals
from tests.k8s_helpers import by_kind, deploy, fake_cluster, mode_config

NS = "django-app"
CLUSTER = "django-app-postgres"


@pytest.fixture(scope="module")
def config():
    return mode_config("cloudnative-pg")


@pytest.fixture(scope="module")
def manifests(config):
    return render_manifests(config)


def _cluster(manifests):
    (found,) = by_kind(manifests, "Cluster")
    return found


# --- the render --------------------------------------------------------------------


def test_the_mode_renders_a_cluster_instead_of_the_statefulset(config, manifests):
    spec = _cluster(manifests)["spec"]
    assert _cluster(manifests)["apiVersion"] == "postgresql.cnpg.io/v1"
    assert not [m for m in by_kind(manifests, "StatefulSet") if m["metadata"]["namespace"] == NS]
    assert not by_kind(manifests, "Service", CLUSTER)
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1, "dataDurability": "required"}
    assert spec["storage"] == {"storageClass": config.postgres_storage_class, "size": config.postgres_storage_size}
    # Zones: at most one instance more in one zone than in another; hosts: apart where the nodes allow.
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
    assert spread["labelSelector"] == {"matchLabels": {"cnpg.io/cluster": CLUSTER}}
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert spec["enablePDB"] is True and spec["enableSuperuserAccess"] is False
    # The app's user is the database's owner, with its password from a Secret in the operator's form.
    initdb = spec["bootstrap"]["initdb"]
    assert initdb == {"database": "app", "owner": "app", "secret": {"name": CLUSTER}}
    (secret,) = by_kind(manifests, "Secret", CLUSTER)
    assert secret["type"] == "kubernetes.io/basic-auth" and set(secret["data"]) == {"username", "password"}


def test_the_app_and_its_jobs_reach_the_operators_read_write_service(config, manifests):
    rw = names.endpoint(config, "postgres")
    assert rw.host == f"{CLUSTER}-rw.{NS}.svc" and rw.port == 5432
    secrets = DeploySecrets(secret_key="k" * 40, postgres_password="pg-canary-pw", redis_password="r-canary-pw")
    full = render_manifests(config, secrets, redact=False)
    (app_secret,) = by_kind(full, "Secret", "django-app")
    url = base64.b64decode(app_secret["data"]["DATABASE_URL"]).decode()
    assert url == f"postgres://app:pg-canary-pw@{CLUSTER}-rw.{NS}.svc:5432/app"
    (pg_secret,) = by_kind(full, "Secret", CLUSTER)
    assert base64.b64decode(pg_secret["data"]["username"]).decode() == "app"
    assert base64.b64decode(pg_secret["data"]["password"]).decode() == "pg-canary-pw"
    (backup,) = by_kind(manifests, "CronJob")
    assert f"-h {CLUSTER}-rw.{NS}.svc -p 5432" in json.dumps(backup)
    # The password is in the two Secrets only: not in the Cluster, a ConfigMap or the redacted render.
    for manifest in full:
        if manifest["kind"] != "Secret":
            assert "pg-canary-pw" not in json.dumps(manifest), manifest["kind"]
    assert "pg-canary-pw" not in to_yaml(render_manifests(config, secrets))


def test_synchronous_needs_a_replica_and_asynchronous_drops_the_quorum():
    with pytest.raises(ConfigError, match="postgres_instances"):
        load_config({"postgres_mode": "cloudnative-pg", "postgres_instances": 1}, environ={})
    single = load_config(
        {"postgres_mode": "cloudnative-pg", "postgres_instances": 1, "postgres_replication": "asynchronous"},
        environ={},
    )
    spec = _cluster(render_manifests(single))["spec"]
    assert spec["instances"] == 1 and "postgresql" not in spec


@pytest.mark.parametrize(
    "operand, tools",
    [("ghcr.io/cloudnative-pg/postgresql:17.2", "postgres:16.4-bookworm"),
     ("ghcr.io/cloudnative-pg/postgresql:16.4", "registry.example:5000/postgres:15-alpine")],
)  # fmt: skip
def test_the_operand_and_the_backup_tools_share_a_major_version(operand, tools):
    # The backup CronJob's pg_dump is postgres_image's: a 16 pg_dump refuses a 17 server, every night.
    settings = {"postgres_mode": "cloudnative-pg", "postgres_cnpg_image": operand, "postgres_image": tools}
    with pytest.raises(ConfigError, match=r"postgres_cnpg_image.*major version.*DEPLOY_POSTGRES_CNPG_IMAGE"):
        load_config(settings, environ={})
    load_config({**settings, "postgres_mode": "in-cluster"}, environ={})  # the StatefulSet runs no operand
    load_config({**settings, "postgres_cnpg_image": "ghcr.io/cloudnative-pg/postgresql:" + tools.split(":")[-1][:2]
                 + ".9"}, environ={})  # fmt: skip


def test_an_operator_in_the_apps_namespace_is_refused_at_configuration():
    # The render used to fail on the wiring check, telling the operator to edit the NetworkPolicy templates.
    with pytest.raises(ConfigError, match=r"postgres_operator_namespace.*differ.*'django-app'.*cnpg-system"):
        load_config({"postgres_mode": "cloudnative-pg", "postgres_operator_namespace": "django-app"}, environ={})


def test_a_long_app_name_keeps_the_cluster_and_its_services_within_dns_limits():
    config = mode_config("cloudnative-pg", app_name="a" * 60)
    cluster = _cluster(render_manifests(config))
    assert len(cluster["metadata"]["name"]) <= names.CNPG_CLUSTER_MAX
    assert names.endpoint(config, "postgres").name == f"{cluster['metadata']['name']}-rw"


# --- the CRD schema ----------------------------------------------------------------


def test_the_vendored_crd_is_the_recorded_file():
    readme = (crds.CRD_DIR / "README.md").read_text()
    text = (crds.CRD_DIR / "postgresql.cnpg.io_clusters.yaml").read_bytes()
    assert hashlib.sha256(text).hexdigest() in readme and "v1.30.0" in readme
    assert "postgresql.cnpg.io" in crds.groups()


def test_the_backup_crds_are_vendored_with_their_versions():
    readme = (crds.CRD_DIR / "README.md").read_text()
    for name, version in (("postgresql.cnpg.io_scheduledbackups.yaml", "v1.30.0"),
                          ("barmancloud.cnpg.io_objectstores.yaml", "v0.14.0")):  # fmt: skip
        text = (crds.CRD_DIR / name).read_bytes()
        row = next(line for line in readme.splitlines() if f"`{name}`" in line)
        assert hashlib.sha256(text).hexdigest() in row and version in row, name
    assert "barmancloud.cnpg.io" in crds.groups()
    # Both are served at v1 and strict: an undeclared field is refused.
    store = {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore", "metadata": {"name": "s"},
             "spec": {"configuration": {"destinationPath": "s3://b/p/", "walz": {}}}}  # fmt: skip
    assert any("'walz' was unexpected" in p for p in crds.problems(store))
    scheduled = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup", "metadata": {"name": "s"},
                 "spec": {"cluster": {"name": "c"}, "schedule": "0 0 3 * * *", "method": "snapshot"}}  # fmt: skip
    assert any("'snapshot' is not one of" in p for p in crds.problems(scheduled))


def test_the_cluster_passes_its_crd_schema_and_a_broken_one_does_not(manifests):
    assert schema_problems(manifests) == []
    broken = copy.deepcopy(_cluster(manifests))
    broken["spec"]["instancez"] = 3
    broken["spec"]["postgresql"]["synchronous"]["method"] = "some"
    broken["spec"]["storage"]["size"] = 20
    found = schema_problems([broken])
    assert any("instancez" in p for p in found), found
    assert any("spec.postgresql.synchronous.method" in p for p in found), found
    assert any("spec.storage.size" in p for p in found), found
    assert all(p.startswith(f"Cluster {NS}/{CLUSTER} (CRD postgresql.cnpg.io/v1)") for p in found)


# --- policy and wiring ---------------------------------------------------------------


def test_policy_and_wiring_hold(config, manifests):
    assert policy_problems(manifests, config) == []


def test_the_operators_pods_are_checked_as_the_operator_makes_them(config, manifests):
    """Pod Security "restricted", requests and limits: the Cluster's pods count like any pod of the namespace."""
    broken = copy.deepcopy(manifests)
    spec = _cluster(broken)["spec"]
    spec["seccompProfile"] = {"type": "Unconfined"}
    del spec["resources"]["limits"]["memory"]
    found = policy_problems(broken, config)
    assert any(f"Cluster {NS}/{CLUSTER} container 'postgres': seccompProfile" in p for p in found), found
    assert any(f"Cluster {NS}/{CLUSTER} container 'postgres' states no limits.memory" in p for p in found), found


def test_the_flows_of_the_cluster_are_needed_and_allowed(config, manifests):
    allowed = {str(flow) for flow in wiring.reachability(manifests)}
    pg, operator = f"{NS}/postgres", "cnpg-system/{app.kubernetes.io/name=cloudnative-pg}"
    for flow in (
        f"{NS}/app → {pg} on 5432/TCP",
        f"{NS}/migrate → {pg} on 5432/TCP",
        f"{NS}/postgres-backup → {pg} on 5432/TCP",
        f"{pg} → {pg} on 5432/TCP",
        f"{pg} → {pg} on 8000/TCP",
        f"{operator} → {pg} on 8000/TCP",
        f"{pg} → {config.vpc_cidr} on 443/TCP",
    ):
        assert flow in allowed, flow
    assert f"{operator} → {pg} on 5432/TCP" not in allowed
    assert f"{NS}/app → {pg} on 8000/TCP" not in allowed


@pytest.mark.parametrize(
    "break_it, expected",
    [
        # The operator's namespace allowed no longer: failover and status stop.
        (lambda p: p["spec"]["ingress"].pop(2), "the CloudNativePG operator reads each instance's status"),
        # Replication between instances no longer allowed in.
        (lambda p: p["spec"]["ingress"].pop(1), "the replicas stream the primary's WAL"),
        # The instances no longer allowed out to the Kubernetes API.
        (lambda p: p["spec"]["egress"].pop(1), "holds the primary's lease in the Kubernetes API"),
    ],
)
def test_the_wiring_rule_sees_a_missing_cluster_flow(config, manifests, break_it, expected):
    broken = copy.deepcopy(manifests)
    (policy,) = by_kind(broken, "NetworkPolicy", CLUSTER)
    break_it(policy)
    problems = wiring.wiring_problems(broken, config)
    assert any(expected in p and "do not allow" in p for p in problems), problems


def test_a_reference_to_a_service_the_operator_does_not_make_is_refused(config, manifests):
    broken = copy.deepcopy(manifests)
    (configmap,) = [m for m in by_kind(broken, "ConfigMap") if m["metadata"]["name"] == "django-app"]
    configmap["data"]["REPLICA_HOST"] = f"{CLUSTER}-rx.{NS}.svc:5432"
    problems = wiring.wiring_problems(broken, config)
    assert any(f"{CLUSTER}-rx" in p and "no Service" in p for p in problems), problems
    configmap["data"]["REPLICA_HOST"] = f"{CLUSTER}-ro.{NS}.svc:5432"  # made by the operator: resolves
    assert not any("REPLICA_HOST" in p for p in wiring.wiring_problems(broken, config))


# --- capacity -------------------------------------------------------------------------


def test_capacity_counts_three_instances_and_their_volumes(config, manifests):
    small = mode_config("default")
    small_manifests = render_manifests(small)
    totals, small_totals = stack_totals(manifests)[NS], stack_totals(small_manifests)[NS]
    # Three instance pods instead of one StatefulSet pod, with the same requests.
    assert totals["pods"] - small_totals["pods"] == 2
    assert totals["requests.cpu"] - small_totals["requests.cpu"] == 2 * 250
    assert totals["limits.memory"] - small_totals["limits.memory"] == 2 * 2**30
    assert totals["storage"] - small_totals["storage"] == 2 * 20 * 2**30
    nodes = capacity.configured_nodes(config)
    cpu, _, _ = capacity.worst_case(manifests, nodes.count)
    small_cpu, _, _ = capacity.worst_case(small_manifests, nodes.count)
    assert cpu - small_cpu == 500
    assert capacity.capacity_problems(manifests, nodes) == []
    # Two instances more do not fit the default node group: the check says so, with the fix.
    bigger = mode_config("cloudnative-pg", postgres_instances=5)
    found = policy_problems(render_manifests(bigger), bigger)
    assert any(p.startswith("Capacity: the stack at its largest requests") for p in found), found
    assert capacity.capacity_problems(render_manifests(bigger), nodes)


def test_the_quota_counts_the_instances(config):
    tight = mode_config("cloudnative-pg", quota_storage="60Gi")
    found = policy_problems(render_manifests(tight), tight)
    assert any("requests.storage" in p and "60Gi" in p for p in found), found


def test_the_rollout_waits_for_the_operators_ready_condition():
    cluster = {"metadata": {"name": "c"}, "spec": {"instances": 3}}
    assert rollout.cnpg_cluster_status(cluster)[0] is False
    cluster["status"] = {"readyInstances": 2, "conditions": [{"type": "Ready", "status": "False"}], "phase": "x"}
    assert rollout.cnpg_cluster_status(cluster) == (False, "cluster c: 2 of 3 instances ready (x)")
    cluster["status"].update(readyInstances=3, conditions=[{"type": "Ready", "status": "True"}], currentPrimary="c-1")
    assert rollout.cnpg_cluster_status(cluster) == (True, "cluster c: 3 instances ready, primary c-1")


# --- the WAL archive and base backups to S3 (the Barman Cloud plugin) ------------------------

ARCHIVED = {"postgres_backup_bucket": "shop-backups", "aws_region": "eu-west-1", "node_count_min": 4}


@pytest.fixture(scope="module")
def archived():
    config = mode_config("cloudnative-pg", **ARCHIVED)
    return config, render_manifests(config)


def test_a_backup_bucket_archives_the_clusters_wal_and_takes_scheduled_base_backups(archived):
    config, manifests = archived
    (store,) = by_kind(manifests, "ObjectStore")
    assert store["apiVersion"] == "barmancloud.cnpg.io/v1" and store["metadata"]["namespace"] == NS
    configuration = store["spec"]["configuration"]
    assert configuration["destinationPath"] == "s3://shop-backups/cnpg/"
    # No key anywhere: the sidecar takes the Cluster's ServiceAccount's role (EKS Pod Identity).
    assert configuration["s3Credentials"] == {"inheritFromIAMRole": True}
    assert configuration["wal"] == {"compression": "gzip"}
    assert store["spec"]["retentionPolicy"] == f"{config.postgres_backup_bucket_keep_days}d" == "30d"
    plugins = _cluster(manifests)["spec"]["plugins"]
    assert plugins == [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                        "parameters": {"barmanObjectName": store["metadata"]["name"]}}]  # fmt: skip
    (scheduled,) = by_kind(manifests, "ScheduledBackup")
    assert scheduled["spec"]["cluster"] == {"name": CLUSTER}
    assert scheduled["spec"]["method"] == "plugin" and scheduled["spec"]["immediate"] is True
    assert scheduled["spec"]["pluginConfiguration"] == {"name": "barman-cloud.cloudnative-pg.io"}
    # The operator's cron has a seconds field: the nightly 03:00 UTC of postgres_backup_schedule.
    assert scheduled["spec"]["schedule"] == "0 0 3 * * *"
    assert cnpg.backup_schedule("@daily") == "@daily"
    # Without a bucket: none of it.
    plain = render_manifests(mode_config("cloudnative-pg"))
    assert not by_kind(plain, "ObjectStore") and not by_kind(plain, "ScheduledBackup")
    assert "plugins" not in _cluster(plain)["spec"]


def test_the_archive_passes_its_crd_schemas_and_a_broken_one_does_not(archived):
    _, manifests = archived
    assert schema_problems(manifests) == []
    store = copy.deepcopy(by_kind(manifests, "ObjectStore")[0])
    store["spec"]["retentionPolicy"] = "30 days"
    store["spec"]["configuration"]["s3Credentials"]["inheritFromIamRole"] = True
    scheduled = copy.deepcopy(by_kind(manifests, "ScheduledBackup")[0])
    scheduled["spec"]["method"] = "barman"
    found = schema_problems([store, scheduled])
    assert any("spec.retentionPolicy: '30 days' does not match" in p for p in found), found
    assert any("'inheritFromIamRole' was unexpected" in p for p in found), found
    assert any("spec.method: 'barman' is not one of" in p for p in found), found


def test_the_sidecar_is_counted_and_checked_and_the_instances_reach_s3(archived):
    config, manifests = archived
    assert policy_problems(manifests, config) == []
    plain_config = mode_config("cloudnative-pg", node_count_min=4)
    plain = render_manifests(plain_config)
    # The plugin's sidecar in each of the three instances: its requests and limits count in the quota.
    sidecar = capacity.cpu_millis(cnpg.SIDECAR_RESOURCES["requests"]["cpu"])
    totals, plain_totals = stack_totals(manifests)[NS], stack_totals(plain)[NS]
    pg_dump_upload = totals["requests.cpu"] - plain_totals["requests.cpu"] - 3 * sidecar
    (cronjob,) = by_kind(manifests, "CronJob")
    (plain_cronjob,) = by_kind(plain, "CronJob")
    assert pg_dump_upload == sum(
        capacity.cpu_millis(c["resources"]["requests"]["cpu"])
        for c in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        + cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"].get("initContainers", [])
    ) - sum(
        capacity.cpu_millis(c["resources"]["requests"]["cpu"])
        for c in plain_cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        + plain_cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"].get("initContainers", [])
    )
    # The sidecar (a restartable init container, with the plugin's security context) comes with the archiver.
    broken = copy.deepcopy(manifests)
    (sidecar_container,) = cnpg.instance_pod(_cluster(broken))[1]["initContainers"]
    assert sidecar_container["name"] == "plugin-barman-cloud" and sidecar_container["restartPolicy"] == "Always"
    assert sidecar_container["securityContext"]["runAsNonRoot"] is True
    _cluster(broken)["spec"]["plugins"][0]["isWALArchiver"] = False
    assert "initContainers" not in cnpg.instance_pod(_cluster(broken))[1]
    assert stack_totals(broken)[NS]["requests.cpu"] == totals["requests.cpu"] - 3 * sidecar
    _cluster(broken)["spec"]["plugins"][0]["isWALArchiver"] = True
    # The instances (their sidecar) may reach S3 and the Pod Identity agent; the wiring rule needs both.
    allowed = {str(flow) for flow in wiring.reachability(manifests)}
    assert f"{NS}/postgres → 0.0.0.0/0 on 443/TCP" in allowed
    assert f"{NS}/postgres → 169.254.170.23/32 on 80/TCP" in allowed
    assert f"{NS}/postgres → 0.0.0.0/0 on 443/TCP" not in {str(f) for f in wiring.reachability(plain)}
    (policy,) = by_kind(broken, "NetworkPolicy", CLUSTER)
    policy["spec"]["egress"] = [rule for rule in policy["spec"]["egress"]
                                if {"port": 443, "protocol": "TCP"} not in rule["ports"]]  # fmt: skip
    problems = wiring.wiring_problems(broken, config)
    assert any("Barman Cloud sidecar archives" in p and "do not allow" in p for p in problems), problems


def test_on_the_default_three_nodes_the_archive_does_not_fit_and_the_check_says_so():
    # Three sidecars and the dump's uploader are 260m more than the 55m the default node group has spare.
    config = mode_config("cloudnative-pg", **{**ARCHIVED, "node_count_min": 3})
    found = policy_problems(render_manifests(config), config)
    assert any(p.startswith("Capacity: the stack at its largest requests") for p in found), found


@pytest.mark.parametrize("mode", [{"postgres_mode": "external", "postgres_host": "10.1.2.3",
                                   "postgres_cidr": "10.1.0.0/16"}, {"postgres_mode": "rds"}])  # fmt: skip
def test_a_backup_bucket_is_still_refused_where_postgresql_is_not_in_the_cluster(mode):
    with pytest.raises(ConfigError, match=r"postgres_backup_bucket.*postgres_mode is '(external|rds)'"):
        load_config({**mode, "postgres_backup_bucket": "shop-backups", "aws_region": "eu-west-1"}, environ={})


# --- a restore to a point in time ----------------------------------------------------------

MOMENT = "2026-01-31T09:15:00Z"


def test_the_recovery_cluster_replays_the_archive_to_the_moment_and_passes_its_schema(archived):
    from deploy.k8s import pitr

    config, _ = archived
    cluster, policy = pitr.recovery_manifests(config, MOMENT)
    assert schema_problems([cluster, policy]) == []
    assert cluster["metadata"]["name"] == names.cnpg_recovery_name("django-app") == f"{CLUSTER}-pitr"
    recovery = cluster["spec"]["bootstrap"]["recovery"]
    assert recovery["recoveryTarget"] == {"targetTime": MOMENT}
    assert (recovery["database"], recovery["owner"], recovery["secret"]) == ("app", "app", {"name": CLUSTER})
    (source,) = cluster["spec"]["externalClusters"]
    assert source["name"] == recovery["source"]
    # It reads the live Cluster's archive (its serverName) through the live ObjectStore, and archives nothing.
    assert source["plugin"] == {"name": cnpg.BARMAN_PLUGIN, "parameters": {
        "barmanObjectName": cnpg.object_store_name(CLUSTER), "serverName": CLUSTER}}  # fmt: skip
    assert "plugins" not in cluster["spec"] and cluster["spec"]["instances"] == 1
    assert "postgresql" not in cluster["spec"]  # one instance: nothing synchronous to wait for
    # A time in another zone is kept as the same moment.
    (other, _) = pitr.recovery_manifests(config, "2026-01-31T10:15:00+01:00")
    assert other["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == "2026-01-31T10:15:00+01:00"
    # Its pods: selected by their own cluster label, reachable by each other and the operator only.
    own = {cnpg.CLUSTER_LABEL: cluster["metadata"]["name"]}
    assert policy["spec"]["podSelector"] == {"matchLabels": own}
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert peer.get("namespaceSelector") or peer["podSelector"] == {"matchLabels": own}, peer
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert {443, 80, 5432, 8000} <= egress_ports
    assert json.dumps(policy).count(CLUSTER + '"') == 0  # nothing of the live Cluster's selectors left
    assert cluster["spec"]["topologySpreadConstraints"][0]["labelSelector"] == {"matchLabels": own}


@pytest.mark.parametrize(
    "settings, moment, message",
    [({}, MOMENT, "postgres_backup_bucket"), (ARCHIVED, "2026-01-31 09:15", "with its zone"),
     (ARCHIVED, "yesterday", "RFC 3339")],
)  # fmt: skip
def test_a_recovery_without_an_archive_or_a_moment_is_refused(settings, moment, message):
    from deploy.k8s import pitr

    with pytest.raises(pitr.RecoveryError, match=message):
        pitr.recovery_manifests(mode_config("cloudnative-pg", **settings), moment)


def test_the_docs_show_the_recovery_cluster_the_tool_makes():
    import yaml

    from deploy.k8s import pitr

    ha = (Path(__file__).resolve().parent.parent / "docs/high-availability.md").read_text()
    block = ha.split("its Cluster is:", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    shown = yaml.safe_load(block)
    assert schema_problems([shown]) == []
    config = mode_config("cloudnative-pg", **{**ARCHIVED, "postgres_backup_bucket": "my-backups"})
    assert shown == pitr.recovery_manifests(config, MOMENT)[0]
    assert "recoveryTarget" in block and "targetTime: '2026-01-31T09:15:00Z'" in block


# --- a deploy against the fake API server ---------------------------------------------------


@pytest.fixture
def server(tmp_path, monkeypatch):
    with fake_cluster(tmp_path, monkeypatch, postgres_mode="cloudnative-pg") as fake:
        yield fake


@pytest.mark.slow
def test_a_deploy_applies_the_cluster_waits_for_it_then_the_app(server):
    report = deploy()
    assert report["outcome"] == "deployed"
    live = server.get("clusters", CLUSTER, NS, group="postgresql.cnpg.io")
    assert live["spec"]["instances"] == 3
    assert live["spec"]["bootstrap"]["initdb"]["secret"] == {"name": CLUSTER}
    assert not server.list("statefulsets", NS)
    kinds = [path.split("/")[-2] for path in server.applied_order() if "/leases/" not in path]
    # The Cluster (and its Secret before it) before the migration Job, which needs the database.
    assert kinds.index("secrets") < kinds.index("clusters") < kinds.index("jobs")
    assert any("cluster django-app-postgres: 3 instances ready" in w for w in report["waits"]), report["waits"]
    assert deploy()["changed"] == 0
    # Canaries: the password is in the two Secrets only, not in the release record, the Cluster or a render.
    records = [s for s in server.list("secrets", NS) if s["metadata"]["name"].startswith("django-app-release-v")]
    recorded = "".join(gzip.decompress(base64.b64decode(r["data"]["manifests"])).decode() for r in records)
    assert "Cluster" in recorded and "pg-secret-pw" not in recorded
    assert "pg-secret-pw" not in json.dumps(live)
    out = StringIO()
    call_command("k8s_deploy", "--render", stdout=out)
    assert "kind: Cluster" in out.getvalue() and "pg-secret-pw" not in out.getvalue()


@pytest.mark.slow
def test_without_the_operator_nothing_is_applied_and_the_message_says_what_to_install(server):
    server.missing_groups.add("postgresql.cnpg.io")
    with pytest.raises(CommandError) as excinfo:
        deploy()
    message = str(excinfo.value)
    assert "does not serve Cluster (postgresql.cnpg.io/v1)" in message
    assert "kubectl apply --server-side -f https://raw.githubusercontent.com/cloudnative-pg" in message
    assert not server.list("secrets", NS) and not server.list("deployments", NS)
    assert server.get("namespaces", NS) is None
    assert "pg-secret-pw" not in message


@pytest.mark.slow
def test_with_a_bucket_the_archive_is_applied_in_order_and_without_the_plugin_nothing_is(tmp_path, monkeypatch):
    settings = {"postgres_mode": "cloudnative-pg", **{k: str(v) for k, v in ARCHIVED.items()}}
    with fake_cluster(tmp_path, monkeypatch, **settings) as server:
        server.missing_groups.add("barmancloud.cnpg.io")
        with pytest.raises(CommandError) as excinfo:
            deploy()
        assert "does not serve ObjectStore (barmancloud.cnpg.io/v1)" in str(excinfo.value)
        assert "plugin-barman-cloud/releases/download/v0.14.0/manifest.yaml" in str(excinfo.value)
        assert server.get("namespaces", NS) is None
        server.missing_groups.discard("barmancloud.cnpg.io")
        assert deploy()["outcome"] == "deployed"
        store = server.get("objectstores", f"{CLUSTER}-backups", NS, group="barmancloud.cnpg.io")
        assert store["spec"]["configuration"]["destinationPath"] == "s3://shop-backups/cnpg/"
        kinds = [path.split("/")[-2] for path in server.applied_order() if "/leases/" not in path]
        # The store before the Cluster that names it; the schedule after the Cluster it backs up.
        assert kinds.index("objectstores") < kinds.index("clusters") < kinds.index("scheduledbackups")


@pytest.mark.slow
def test_the_preflight_names_the_missing_crd(server):
    server.missing_groups.add("postgresql.cnpg.io")
    out = StringIO()
    with pytest.raises(CommandError, match=r"preflight failed \(.*custom resources"):
        call_command("k8s_deploy", "--preflight", stdout=out)
    assert "CloudNativePG operator 1.30.0" in out.getvalue()
    server.missing_groups.clear()
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:  # the fake lacks the EKS add-ons: only this row matters here
        call_command("k8s_deploy", "--preflight", stdout=out)
    assert "custom resources" not in str(excinfo.value)
    assert "every kind of the render is served" in out.getvalue()


def _leave_for_an_external_server(monkeypatch):
    """The next deploy renders no Cluster: PostgreSQL moved to a server outside the cluster."""
    monkeypatch.setenv("DEPLOY_POSTGRES_MODE", "external")
    monkeypatch.setenv("DEPLOY_POSTGRES_HOST", "10.1.2.3")
    monkeypatch.setenv("DEPLOY_POSTGRES_CIDR", "10.1.0.0/16")


@pytest.mark.slow
def test_a_cluster_no_longer_rendered_is_kept_with_its_data(server, monkeypatch):
    assert deploy()["outcome"] == "deployed"
    _leave_for_an_external_server(monkeypatch)
    report = deploy()
    assert report["outcome"] == "deployed"
    assert server.get("clusters", CLUSTER, NS, group="postgresql.cnpg.io") is not None
    assert f"Cluster {NS}/{CLUSTER}" not in report.get("pruned", [])


def test_a_cluster_no_longer_rendered_goes_with_prune_volumes(server, monkeypatch):
    # docs/high-availability.md: "k8s_deploy prunes it only with --prune-volumes".
    assert deploy()["outcome"] == "deployed"
    _leave_for_an_external_server(monkeypatch)
    out = StringIO()
    call_command("k8s_deploy", "--timeout", "30", interactive=False, stdout=out)
    assert f"kept Cluster {NS}/{CLUSTER} (its data volumes go with it: only with --prune-volumes)" in out.getvalue()
    report = deploy("--prune-volumes")
    assert f"Cluster {NS}/{CLUSTER}" in report["pruned"]
    assert server.get("clusters", CLUSTER, NS, group="postgresql.cnpg.io") is None


def test_the_docs_know_the_mode():
    root = Path(__file__).resolve().parent.parent
    reference = (root / "docs/reference/configuration.md").read_text()
    for setting in ("postgres_instances", "postgres_replication", "postgres_operator_namespace"):
        assert setting in reference
    ha = (root / "docs/high-availability.md").read_text()
    assert cnpg.API_VERSION in ha and "cnpg-1.30.0.yaml" in ha


def test_the_restore_job_restores_into_the_primary_through_the_rw_service(config, manifests):
    from deploy.k8s.restore import restore_job

    job = restore_job(config, "app-20260101T030000Z.dump")
    script = json.dumps(job)
    assert f"-h {CLUSTER}-rw.{NS}.svc -p 5432 -U app -d app" in script
    # It reads the password from the operator's basic-auth Secret, and the policies let it reach the instances.
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == CLUSTER for v in volumes)
    assert wiring.wiring_problems([*manifests, job], config) == []
    # Pod security and resources hold; the capacity with a restore running beside three instances and the app at
    # its maximum is over the default nodes (the runbook scales the app to 0 first).
    assert [p for p in policy_problems([*manifests, job], config) if not p.startswith("Capacity:")] == []
