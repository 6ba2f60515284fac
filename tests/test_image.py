"""The container image, built and run for real with a local Docker engine (see tests/README.md).

.ci/run installs Docker, starts dockerd with its own data root (no bridge, no
iptables) and exports DOCKER_HOST; every container uses the host network.
These tests are skipped only where no Docker engine answers, and say so. The
``image`` fixture (tests/conftest.py, tests/docker_images.py) builds the app's
image from this clone once per run, under a tag of the run's own.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import time

import psycopg
import pytest

from tests.conftest import PYTHON, ROOT, free_port, http_get, load_envs, production_env, tool
from tests.docker_images import BASE, docker, docker_env

# The tests that run the image (marked docker) start first, in this file's order (tests/conftest.py): the first
# worker to ask for the image builds it, the others wait for that build, then each runs its test beside the
# others. The rehearsal, the longest, comes first. The Dockerfile's and compose files' checks need no image.
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def database():
    name = f"image_test_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _env_args(**env):
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


def app_env(database_url, port):
    return {
        "SECRET_KEY": "image-test-" + "x" * 40,
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:6379/13",
        "ALLOWED_HOSTS": "localhost",
        "SECURE_SSL_REDIRECT": "false",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_GRACEFUL_TIMEOUT": "10",
    }


@pytest.mark.docker
@pytest.mark.slow
def test_the_rehearsal_of_the_cutover_on_a_hundred_thousand_rows(image):
    """make rehearse at 10^5 rows with the run's image: copied, verified, served, timed (bench/rehearse.py)."""
    result = subprocess.run(
        [PYTHON, "bench/rehearse.py", "--rows", "100000", "--image", image, "--json"],
        cwd=ROOT,
        env=docker_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["verified"] is True and report["rows"] > 90_000  # seed_demo makes about the rows asked
    assert set(report["steps"]) == {"maintenance_on", "snapshot", "upload", "copy_job", "new_deployment"}
    assert report["downtime_seconds"] >= sum(report["steps"].values()) - report["steps"]["maintenance_on"]


@pytest.mark.docker
@pytest.mark.slow
def test_the_image_runs_read_only_as_non_root_and_stops_cleanly(image, database):
    env = app_env(database, free_port())
    run = ["run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", *_env_args(**env), image]
    migrate = docker(*run, "python", "manage.py", "migrate", "--noinput", "-v0", check=False)
    assert migrate.returncode == 0, migrate.stderr
    name = f"app-{os.getpid()}"
    docker("run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           *_env_args(**env), image)  # fmt: skip
    url = f"http://{env['GUNICORN_BIND']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_get(url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, docker("logs", name, check=False).stdout
            time.sleep(0.5)
        assert http_get(url + "/readyz", {"Host": "10.0.0.7"})[0] == 200
        status, _, body = http_get(url + "/metrics")
        assert status == 200 and b"django_http_requests" in body
        status, _, page = http_get(url + "/products/", {"Host": "localhost"})
        assert status == 200
        start = page.index(b'href="/static/catalog/site.') + len(b'href="')
        css = page[start : page.index(b'"', start)].decode()
        status, headers, _ = http_get(url + css, {"Host": "localhost"})
        assert status == 200 and headers["Content-Type"].startswith("text/css")
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        assert docker("exec", name, "id", "-g").stdout.strip() == "10001"
        # Logs are JSON lines.
        first = next(line for line in docker("logs", name).stdout.splitlines() if line.strip())
        assert first.startswith("{")
        # SIGTERM: gunicorn is PID 1 (exec) and stops within the grace period, with status 0.
        started = time.monotonic()
        docker("stop", "--time", "30", name)
        assert time.monotonic() - started < 25
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        docker("rm", "-f", name, check=False)


@pytest.mark.docker
@pytest.mark.slow
def test_migrate_from_sqlite_verify_inside_the_container(image, database, tmp_path):
    source = tmp_path / "source.sqlite3"
    env = production_env(DATABASE_URL=f"sqlite:///{source}")
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "seed_demo", "--rows", "1500", "-v0"], cwd=ROOT, env=env, check=True)
    source.chmod(0o644)
    tmp_path.chmod(0o755)
    args = _env_args(**app_env(database, free_port()), SQLITE_SOURCE="/data/source.sqlite3")
    run = ["run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "-v", f"{tmp_path}:/data:ro", *args]
    assert docker(*run, image, "python", "manage.py", "migrate", "-v0", check=False).returncode == 0
    result = docker(*run, image, "python", "manage.py", "migrate_from_sqlite", "--verify", "--no-input", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified:" in result.stdout
    with sqlite3.connect(source) as db:
        assert db.execute("SELECT count(*) FROM catalog_product").fetchone()[0] > 0


@pytest.mark.docker
@pytest.mark.slow
def test_the_cutover_job_script_inside_the_container(image, database, tmp_path):
    """The cut-over Job's script as rendered, in the release image: the file from moto's S3 server on 127.0.0.1,
    its SHA-256 checked, migrate, copy and verify into the local PostgreSQL; a file whose digest does not match
    is refused before anything is written."""
    import boto3
    from moto.server import ThreadedMotoServer

    from deploy.aws import transfer
    from deploy.conf import load_config
    from deploy.k8s import cutover

    source = tmp_path / "source.sqlite3"
    env = production_env(DATABASE_URL=f"sqlite:///{source}")
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "seed_demo", "--rows", "1500", "-v0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        aws = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "AKIATESTING",
            "AWS_SECRET_ACCESS_KEY": "aws-secret-not-shown",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="eu-west-1",
                          aws_access_key_id="AKIATESTING", aws_secret_access_key="aws-secret-not-shown")  # fmt: skip
        s3.create_bucket(Bucket="shop-cutover", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        digest = transfer.sha256_of(source)
        key = transfer.object_key("django-app", digest)
        transfer.upload(s3, source, "shop-cutover", key, digest)
        config = load_config({"cutover_bucket": "shop-cutover"}, environ={})
        run = ["run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/data:mode=1777",
               *_env_args(**app_env(database, free_port()), **aws), image, "/bin/sh", "-c"]  # fmt: skip

        refused = docker(*run, cutover.script(config, "shop-cutover", key, "0" * 64), check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "does not have the SHA-256 the cut-over sent" in refused.stderr
        with psycopg.connect(database) as conn:  # nothing written: not even the schema
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0

        done = docker(*run, cutover.script(config, "shop-cutover", key, digest), check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout[done.stdout.index("{") :])
        assert report["verified"] is True
        with sqlite3.connect(source) as db, psycopg.connect(database) as conn:
            for table in ("catalog_product", "catalog_category"):
                query = f"SELECT count(*) FROM {table}"
                assert conn.execute(query).fetchone()[0] == db.execute(query).fetchone()[0] > 0
    finally:
        server.stop()


@pytest.mark.docker
@pytest.mark.slow
def test_the_image_stays_close_to_its_base(image):
    sizes = {tag: int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout) for tag in (BASE, image)}
    added = (sizes[image] - sizes[BASE]) / 1e6
    # Measured and reported by make bench; here a bound that catches a stray layer (wheels, caches).
    assert added < 250, f"the image adds {added:.0f} MB to its base"


@pytest.mark.docker
@pytest.mark.slow
def test_the_image_holds_exactly_the_locked_runtime(image):
    """The image's virtual environment: base.lock's packages at their locked versions, and nothing else."""
    listing = "import importlib.metadata as m; print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"
    run = ["run", "--rm", "--network", "host", "--read-only", "--entrypoint", "python", image, "-c", listing]
    envs = load_envs()
    installed = {}
    for line in docker(*run).stdout.split():
        name, _, version = line.partition("==")
        installed[envs.canonicalize_name(name)] = version
    locked = {name: pin.version for name, pin in envs.read_lock(ROOT / "requirements" / "base.lock").items()}
    assert installed == locked
    # The development environment's lock holds the same versions (and files) of each.
    dev = envs.read_lock(ROOT / "requirements" / "dev.lock")
    assert {name: dev[name].version for name in locked} == locked


def test_compose_files_are_valid():
    compose = shutil.which("docker-compose")
    if not compose:
        pytest.skip("Debian's docker-compose is not installed (.ci/run installs it)")
    for files in (["compose.yaml"], ["compose.yaml", "compose.override.yaml"]):
        args = [arg for f in files for arg in ("-f", f)]
        result = subprocess.run([compose, *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [compose, "-f", "compose.yaml", "--profile", "monitoring", "config", "--services"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert set(services) == {"postgres", "redis", "migrate", "app", "prometheus"}


@pytest.mark.slow  # checkov
def test_dockerfile_passes_hadolint_and_checkov():
    checkov_args = ["--framework", "dockerfile", "--skip-download", "--quiet", "--compact", "-f", "Dockerfile"]
    for name, args in (("hadolint", ["Dockerfile"]), ("checkov", checkov_args)):
        result = subprocess.run([tool(name), *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
