"""EKS access, ECR and the cluster preflight, against moto (in-process and its threaded server)."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from io import StringIO

import boto3
import botocore.exceptions
import botocore.parsers
import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from moto import mock_aws
from moto.server import ThreadedMotoServer

from deploy.aws import ecr, eks, preflight
from deploy.aws.session import AwsError, explain, session
from deploy.conf import load_config, with_discovered
from deploy.k8s import rollout
from deploy.k8s.client import Cluster, ClusterError
from deploy.k8s.connect import api_client
from tests.conftest import http_get
from tests.docker_images import BASE, docker, docker_env
from tests.fake_apiserver import FakeApiServer, Fault

REGION = "eu-west-1"
SECRET = "testing-secret"


@pytest.fixture
def aws(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("AWS_", "DEPLOY_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    with mock_aws():
        yield boto3.Session(region_name=REGION)


def make_cluster(aws, name="shop", version="1.33", subnets=2, nodegroup=True):
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{'abc'[i]}")["Subnet"][
            "SubnetId"
        ]
        for i in range(subnets)
    ]
    iam = aws.client("iam")
    role = iam.create_role(RoleName=f"{name}-cluster", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    client = aws.client("eks")
    client.create_cluster(name=name, version=version, roleArn=role, resourcesVpcConfig={"subnetIds": subnet_ids})
    if nodegroup:
        client.create_nodegroup(clusterName=name, nodegroupName="default", subnets=subnet_ids, nodeRole=role)
    return subnet_ids


# --- the token ------------------------------------------------------------------


def _verify(token, cluster_name, secret=None):
    """Recompute the SigV4 signature of the presigned URL, with hashlib and hmac only."""
    secret = secret or boto3.Session().get_credentials().secret_key
    assert token.startswith("k8s-aws-v1.")
    encoded = token[len("k8s-aws-v1.") :]
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    signature = params.pop("X-Amz-Signature")
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    headers = f"host:{parts.hostname}\nx-k8s-aws-id:{cluster_name}\n"
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            canonical_query,
            headers,
            params["X-Amz-SignedHeaders"],
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    date = params["X-Amz-Date"]
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return params, hmac.compare_digest(expected, signature)


def test_the_token_is_a_presigned_get_caller_identity_valid_for_that_cluster_only(aws):
    token = eks.make_token(session(), "shop")
    params, valid = _verify(token, "shop")
    assert valid
    assert params["Action"] == "GetCallerIdentity" and params["X-Amz-Expires"] == "60"
    assert params["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    access_key = boto3.Session().get_credentials().access_key
    assert params["X-Amz-Credential"].startswith(f"{access_key}/")
    assert params["X-Amz-Credential"].endswith(f"/{REGION}/sts/aws4_request")
    assert not _verify(token, "other-cluster")[1]
    assert not _verify(token, "shop", secret="wrong")[1]


def test_tokens_are_refreshed_before_they_expire(aws):
    now = [0.0]
    provider = eks.TokenProvider(session(), "shop", clock=lambda: now[0])
    first = provider()
    now[0] += 60
    assert provider() == first and provider.made == 1
    now[0] += eks.REFRESH_AFTER
    time.sleep(1.1)  # a new signing time, so a new token
    assert provider() != first and provider.made == 2


# --- EKS and the kubeconfig -------------------------------------------------------


def test_cluster_lookup_and_kubeconfig(aws):
    subnets = make_cluster(aws)
    info = eks.describe_cluster(session(), "shop")
    assert info.endpoint.startswith("https://") and info.status == "ACTIVE" and info.version == "1.33"
    assert set(info.subnets) == set(subnets)
    config = yaml.safe_load(eks.kubeconfig(info, REGION, "ops"))
    user = config["users"][0]["user"]["exec"]
    assert user["command"] == "aws" and user["args"][-3:] == ["shop", "--output", "json"]
    assert user["env"] == [{"name": "AWS_PROFILE", "value": "ops"}]
    out = StringIO()
    call_command("eks_kubeconfig", "shop", "--region", REGION, stdout=out)
    assert "get-token" in out.getvalue()
    out = StringIO()
    call_command("eks_kubeconfig", "shop", "--region", REGION, "--token", stdout=out)
    assert _verify(out.getvalue().strip(), "shop")[1]


def test_a_kubeconfig_and_a_token_per_staff_role(aws):
    make_cluster(aws)
    iam = aws.client("iam")
    allow = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}
    trust = {"Version": "2012-10-17", "Statement": [allow]}
    role = iam.create_role(RoleName="ops-oncall", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    out = StringIO()
    call_command("eks_kubeconfig", "shop", "--region", REGION, "--role-arn", role, stdout=out)
    config = yaml.safe_load(out.getvalue())
    user = config["users"][0]["user"]["exec"]
    assert user["args"][-2:] == ["--role-arn", role] and "get-token" in user["args"]
    assert config["current-context"] == f"eks-{REGION}-shop-ops-oncall"
    out = StringIO()
    call_command("eks_kubeconfig", "shop", "--region", REGION, "--role-arn", role, "--token", stdout=out)
    params, _ = _verify(out.getvalue().strip(), "shop")
    own = boto3.Session().get_credentials().access_key
    # Signed with the role's temporary credentials (moto's STS), not the caller's own key.
    assert not params["X-Amz-Credential"].startswith(f"{own}/") and params["X-Amz-Security-Token"]
    assert params["X-Amz-Credential"].startswith("ASIA")  # STS's temporary keys
    with pytest.raises(CommandError, match="is not an IAM role ARN"):
        call_command("eks_kubeconfig", "shop", "--region", REGION, "--role-arn", "ops-oncall", stdout=StringIO())


def test_staff_access_is_the_library_call_of_eks_kubeconfig(aws):
    make_cluster(aws)
    access = eks.staff_access("shop", REGION)
    assert access.context == f"eks-{REGION}-shop" == yaml.safe_load(access.text)["current-context"]
    token = eks.staff_access("shop", REGION, token=True)
    assert token.context is None and _verify(token.text, "shop")[1]
    with pytest.raises(AwsError, match="is not an IAM role ARN"):
        eks.staff_access("shop", REGION, role_arn="ops-oncall")


def test_an_unknown_cluster_is_one_clear_message(aws):
    with pytest.raises(AwsError, match=r"Describing EKS cluster 'nope': not found \(ResourceNotFoundException\)"):
        eks.describe_cluster(session(), "nope")


# --- ECR -------------------------------------------------------------------------------


def test_ecr_repository_is_created_with_its_policies_and_idempotently(aws):
    uri, created = ecr.ensure_repository(session(), "shop/web")
    assert created and uri.endswith("/shop/web")
    client = aws.client("ecr")
    repo = client.describe_repositories(repositoryNames=["shop/web"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    policy = json.loads(client.get_lifecycle_policy(repositoryName="shop/web")["lifecyclePolicyText"])
    assert [r["selection"]["tagStatus"] for r in policy["rules"]] == ["untagged", "any"]
    assert ecr.ensure_repository(session(), "shop/web") == (uri, False)
    assert ecr.repository_name("123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/web") == "shop/web"


# --- preflight ---------------------------------------------------------------------------


def _cluster_addons(server, network_policy=True, nodes=3):
    for i in range(nodes):
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i}"},
                "status": {"allocatable": {"cpu": "1930m", "memory": "7452Mi"}}}  # fmt: skip
        server.create("", "v1", "Node", "nodes", None, body, False)
    for name in ("aws-load-balancer-controller", "metrics-server"):
        server.create("apps", "v1", "Deployment", "deployments", "kube-system",
                      {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}}, False)  # fmt: skip
    for driver in ("ebs.csi.aws.com", "efs.csi.aws.com"):
        body = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": driver}}
        server.create("storage.k8s.io", "v1", "CSIDriver", "csidrivers", None, body, False)
    enabled = "true" if network_policy else "false"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "amazon-vpc-cni"},
            "data": {"enable-network-policy-controller": enabled}}  # fmt: skip
    server.create("", "v1", "ConfigMap", "configmaps", "kube-system", body, False)


def _efs(aws, subnets):
    efs = aws.client("efs")
    fs = efs.create_file_system(CreationToken="static")["FileSystemId"]
    for subnet in subnets:
        efs.create_mount_target(FileSystemId=fs, SubnetId=subnet)
    return fs


def test_preflight_passes_on_a_complete_cluster(aws):
    subnets = make_cluster(aws)
    fs = _efs(aws, subnets)
    config = load_config({"efs_file_system_id": fs}, environ={})
    checks, _ = preflight.aws_checks(session(), config, "shop")
    with FakeApiServer() as server:
        _cluster_addons(server)
        checks += preflight.cluster_checks(Cluster(api_client(None, endpoint=_endpoint(server))), config)
    assert [c for c in checks if not c.ok] == []
    assert {c.name for c in checks} >= {
        "cluster status", "kubernetes version", "node groups", "EFS mount targets", "AWS Load Balancer Controller",
        "metrics-server", "CSI driver ebs.csi.aws.com", "CSI driver efs.csi.aws.com", "network policy enforcement",
    }  # fmt: skip
    table = preflight.report(checks)
    assert "FAIL" not in table


def _endpoint(server):
    from deploy.k8s.connect import Endpoint

    return Endpoint(host=server.url)


def test_preflight_fails_each_check_with_a_fix(aws):
    subnets = make_cluster(aws, subnets=3)
    efs = aws.client("efs")
    fs = efs.create_file_system(CreationToken="static")["FileSystemId"]
    efs.create_mount_target(FileSystemId=fs, SubnetId=subnets[0])
    config = load_config({"efs_file_system_id": fs}, environ={})
    checks, _ = preflight.aws_checks(session(), config, "shop")
    by_name = {c.name: c for c in checks}
    assert not by_name["EFS mount targets"].ok
    assert (
        subnets[1] in by_name["EFS mount targets"].detail and "create-mount-target" in by_name["EFS mount targets"].fix
    )
    with FakeApiServer() as server:
        _cluster_addons(server, network_policy=False)
        cluster_checks = preflight.cluster_checks(Cluster(api_client(None, endpoint=_endpoint(server))), config)
    policy = next(c for c in cluster_checks if c.name == "network policy enforcement")
    assert not policy.ok and "enableNetworkPolicy" in policy.fix
    with FakeApiServer() as server:
        missing = preflight.cluster_checks(Cluster(api_client(None, endpoint=_endpoint(server))), config)
    assert {c.name for c in missing if not c.ok} >= {"AWS Load Balancer Controller", "metrics-server"}
    unknown, cluster = preflight.aws_checks(session(), config, "no-such-cluster")
    assert cluster is None and not unknown[0].ok and "list-clusters" in unknown[0].fix
    report = json.loads(preflight.report(checks + cluster_checks, as_json=True))
    assert report["ok"] is False


def test_preflight_stops_on_a_server_that_does_not_answer_or_refuses_instead_of_reporting_add_ons_missing():
    # Every add-on is installed: a check that cannot read it must not report it missing (the operator would
    # reinstall what is there), nor wait one full time-out per check.
    config = load_config({}, environ={})
    with FakeApiServer() as server:
        _cluster_addons(server)
        cluster = Cluster(api_client(None, endpoint=_endpoint(server), timeout=(1, 1)))
        server.faults.append(Fault("GET", r"/deployments/", latency=2.5, times=10))
        started = time.monotonic()
        with pytest.raises(ClusterError) as excinfo:
            preflight.cluster_checks(cluster, config)
        elapsed = time.monotonic() - started
        assert elapsed < 2.5, f"waited {elapsed:.1f} s: one time-out, not one per check"
        assert f"{server.url} did not answer in time" in str(excinfo.value)
        server.faults.clear()
        server.forbidden.add(("get", "deployments"))
        with pytest.raises(ClusterError) as excinfo:
            preflight.cluster_checks(cluster, config)
        assert "forbidden (403)" in str(excinfo.value) and "missing" not in str(excinfo.value)


def test_preflight_checks_managed_database_endpoints(aws):
    make_cluster(aws)
    rds = aws.client("rds")
    instance = rds.create_db_instance(
        DBInstanceIdentifier="shop", Engine="postgres", DBInstanceClass="db.t3.micro", MasterUsername="app",
        MasterUserPassword="password123", AllocatedStorage=20,
    )["DBInstance"]  # fmt: skip
    host = instance["Endpoint"]["Address"]
    good = load_config({"postgres_mode": "external", "postgres_host": host, "postgres_cidr": "10.0.0.0/16"}, environ={})
    checks, _ = preflight.aws_checks(session(), good, "shop")
    assert next(c for c in checks if c.name == "RDS endpoint").ok
    bad = load_config(
        {"postgres_mode": "external", "postgres_host": "gone.abc.eu-west-1.rds.amazonaws.com",
         "postgres_cidr": "10.0.0.0/16"}, environ={},
    )  # fmt: skip
    checks, _ = preflight.aws_checks(session(), bad, "shop")
    assert not next(c for c in checks if c.name == "RDS endpoint").ok


def test_preflight_checks_the_rds_instance_of_rds_mode_and_no_endpoint_of_an_in_cluster_postgres(aws):
    """'rds' is checked at the host the stack's outputs gave (deploy/aws/rds.py wires it before the preflight);
    'cloudnative-pg' runs in the namespace like 'in-cluster': no RDS endpoint to look for."""
    make_cluster(aws)
    instance = aws.client("rds").create_db_instance(
        DBInstanceIdentifier="shop", Engine="postgres", DBInstanceClass="db.t3.micro", MasterUsername="app",
        MasterUserPassword="password123", AllocatedStorage=20,
    )["DBInstance"]  # fmt: skip
    rds_mode = load_config({"postgres_mode": "rds"}, environ={})
    for host, ok in ((instance["Endpoint"]["Address"], True), ("gone.abc.eu-west-1.rds.amazonaws.com", False)):
        wired = with_discovered(rds_mode, "Stack shop-infra", postgres_host=host, postgres_port=5432,
                                postgres_cidr="10.0.0.0/16")  # fmt: skip
        checks, _ = preflight.aws_checks(session(), wired, "shop")
        [check] = [c for c in checks if c.name == "RDS endpoint"]
        assert (check.ok, check.detail) == (ok, host)
    for mode in ("in-cluster", "cloudnative-pg"):
        checks, _ = preflight.aws_checks(session(), load_config({"postgres_mode": mode}, environ={}), "shop")
        assert [c.name for c in checks if "RDS" in c.name] == [], mode


# --- end to end ------------------------------------------------------------------------------


def test_deploy_to_eks_arrives_with_bearer_tokens_refreshed_during_a_long_wait(aws, monkeypatch, tmp_path):
    make_cluster(aws)
    from moto.eks.models import eks_backends

    tokens = set()
    secret, verified = boto3.Session().get_credentials().secret_key, {}

    def check(header):  # every request's token; each distinct one is verified once
        tokens.add(header)
        if header not in verified:
            verified[header] = header.startswith("Bearer k8s-aws-v1.") and _verify(header[7:], "shop", secret)[1]
        return verified[header]

    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(eks, "REFRESH_AFTER", 1.0)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "DEPLOY_SECRET_KEY": "k" * 40,
        "DEPLOY_POSTGRES_PASSWORD": "p",
        "DEPLOY_REDIS_PASSWORD": "r",
        "DEPLOY_POSTGRES_SUPERUSER_PASSWORD": "su",
    }.items():
        monkeypatch.setenv(name, value)
    with FakeApiServer(token_check=check) as server:
        eks_backends[next(iter(eks_backends))][REGION].clusters["shop"].endpoint = server.url
        server.scenarios["deployment/django-app"] = "slow"
        server.tick = 0.3  # the rollout takes a few seconds: longer than a token's life here
        out = StringIO()
        call_command("k8s_deploy", "--eks-cluster", "shop", "--region", REGION, "--skip-preflight", "--json",
                     interactive=False, stdout=out)  # fmt: skip
        report = json.loads(out.getvalue())
        assert report["outcome"] == "deployed"
        assert server.get("deployments", "django-app", "django-app") is not None
        assert all(dict((k.lower(), v) for k, v in h.items())["authorization"].startswith("Bearer k8s-aws-v1.")
                   for _, _, _, h in server.requests)  # fmt: skip
    assert len(tokens) >= 2, "the token was not refreshed during the wait"


def test_preflight_runs_before_a_deploy_and_stops_it(aws, monkeypatch, tmp_path):
    make_cluster(aws)
    from moto.eks.models import eks_backends

    monkeypatch.chdir(tmp_path)
    for name in ("DEPLOY_SECRET_KEY", "DEPLOY_POSTGRES_PASSWORD", "DEPLOY_REDIS_PASSWORD"):
        monkeypatch.setenv(name, "x" * 20)
    monkeypatch.setenv("DEPLOY_POSTGRES_SUPERUSER_PASSWORD", "y" * 20)
    with FakeApiServer() as server:
        eks_backends[next(iter(eks_backends))][REGION].clusters["shop"].endpoint = server.url
        with pytest.raises(CommandError, match=r"The preflight failed \(.*AWS Load Balancer Controller"):
            call_command("k8s_deploy", "--eks-cluster", "shop", "--region", REGION, interactive=False,
                         stdout=StringIO())  # fmt: skip
        assert server.applied_order() == []


def test_threaded_moto_server_over_http(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        uri, created = ecr.ensure_repository(session(), "over-http")
        assert created and "over-http" in uri
        with pytest.raises(AwsError, match="not found"):
            eks.describe_cluster(session(), "nope")
    finally:
        server.stop()


# --- errors --------------------------------------------------------------------------------


def _client_error(code, message="m"):
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "DescribeCluster")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (botocore.exceptions.NoCredentialsError(), "no AWS credentials found"),
        (_client_error("AccessDeniedException", "User is not authorized"), "access denied (AccessDeniedException)"),
        (_client_error("ThrottlingException"), "AWS is throttling requests"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://eks.x"), "cannot reach the AWS endpoint"),
        # An HTML page where an AWS answer was expected (moto's server for a region it lacks: a 500 page).
        (botocore.parsers.ResponseParserError("invalid XML received: b'<!doctype html>'"), "did not answer as AWS"),
    ],
)
def test_every_aws_error_is_one_sentence(error, expected):
    message = str(explain(error, "Describing EKS cluster 'shop'"))
    assert message.startswith("Describing EKS cluster 'shop': ") and expected in message


def test_no_credentials_and_unknown_region_end_clearly(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AwsError, match=r"not an AWS region with EKS .*: correct --region, DEPLOY\['aws_region'\]"):
        session("xx-nowhere-1")
    with pytest.raises(AwsError, match="No AWS region"):
        session()
    with pytest.raises(AwsError, match="profile 'ghost'"):
        session(REGION, "ghost")
    with pytest.raises(AwsError, match="no AWS credentials found"):
        eks.make_token(session(REGION), "shop")


# After the run's image is built (``image``): the same Dockerfile on the same base, so this build finds every layer
# in the engine's cache instead of building them again beside it.
@pytest.mark.docker
@pytest.mark.slow
def test_push_to_a_local_registry_pins_the_digest(image, tmp_path, monkeypatch):
    registry = shutil.which("docker-registry")
    if not registry:
        pytest.skip("needs Debian's docker-registry and a Docker engine (.ci/run installs and starts them)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen([registry, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pushed = f"127.0.0.1:{port}/django-app:push-test"
    try:
        deadline = time.monotonic() + 30
        while True:  # the registry answers its API root once it listens
            try:
                if http_get(f"http://127.0.0.1:{port}/v2/", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.05)
        if "DOCKER_HOST" in docker_env():
            monkeypatch.setenv("DOCKER_HOST", docker_env()["DOCKER_HOST"])
        digest = ecr.build_and_push(pushed, build_args={"BASE_IMAGE": BASE})
        assert digest.startswith("sha256:") and len(digest) == 71
        from deploy.k8s.render import render_manifests

        config = load_config({"image_repository": f"127.0.0.1:{port}/django-app", "image_digest": digest}, environ={})
        deployment = next(m for m in render_manifests(config) if m["kind"] == "Deployment"
                          and m["metadata"]["name"] == "django-app")  # fmt: skip
        assert (
            deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"127.0.0.1:{port}/django-app@{digest}"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        docker("rmi", "--no-prune", pushed, check=False)  # the tag only: the layers are the run image's


def test_kubeconfig_for_an_environment_takes_its_cluster_and_region(aws, settings):
    make_cluster(aws, name="shop-staging")
    settings.DEPLOY = {
        "environments": {"staging": {"eks_cluster": "shop-staging", "aws_region": REGION}, "production": {}}
    }
    out = StringIO()
    call_command("eks_kubeconfig", "--environment", "staging", stdout=out)
    config = yaml.safe_load(out.getvalue())
    assert config["users"][0]["user"]["exec"]["args"][-3:] == ["shop-staging", "--output", "json"]
    with pytest.raises(
        CommandError, match=r"Environment 'production' names no EKS cluster: set DEPLOY\['environments'\]"
    ):
        call_command("eks_kubeconfig", "--environment", "production", stdout=StringIO())
    with pytest.raises(CommandError, match=r"Name the EKS cluster .* or pass --environment NAME"):
        call_command("eks_kubeconfig", stdout=StringIO())


def test_motos_own_service_models_do_not_reach_the_clients_the_code_makes():
    """moto reads its service models through a Loader of its own that merges its extras (operations and error
    shapes real AWS does not have) into them: the botocore data files the workers share must not carry those
    extras into the clients of the code under test, which would then know errors production clients do not."""
    from moto.core.utils import _load_service_model

    _load_service_model("ec2", "service-2")  # what moto's request routing reads (cached per process by moto)
    _load_service_model("s3", "service-2")
    assert not hasattr(boto3.client("ec2", region_name="us-east-1").exceptions, "DryRunOperation")
    assert (
        "BucketCORSPreflightCheck" not in boto3.client("s3", region_name="us-east-1").meta.service_model.operation_names
    )
