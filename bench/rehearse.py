"""Rehearsal of the cut-over on this machine, timed from the first refused write to the first served page.

The same sequence as ``k8s_deploy --cutover`` with the cluster's parts played by this machine: the old
deployment is gunicorn on a seeded SQLite file with a maintenance file; the Job is the release image in Docker
running the script the cut-over renders (fetch from moto's S3 server on 127.0.0.1 with its SHA-256 checked,
migrate, copy and verify into the local PostgreSQL); the new deployment is the image's gunicorn on PostgreSQL.

    python bench/rehearse.py --rows 100000 [--json]     (make rehearse ROWS=…)

Prints each step's seconds and the downtime: from the first POST refused with 503 to the first page the new
deployment serves; apart from them, the seconds seeding took and the load average at the start and the end.
Needs Docker (DOCKER_HOST), the PostgreSQL and Redis on 127.0.0.1, and builds the image from the locally made
base (tests/docker/build-base-image.sh) unless --image names one.
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE = "local/python:3.12-slim-bookworm"
IMAGE = "django-app:rehearse"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BUCKET = "rehearsal-cutover"


def log(message):
    print(message, file=sys.stderr, flush=True)


def docker_env():
    env = dict(os.environ)
    if "DOCKER_HOST" not in env and Path("/var/run/docker-ci.sock").exists():
        env["DOCKER_HOST"] = "unix:///var/run/docker-ci.sock"
    return env


def docker(*args, check=True):
    return subprocess.run(["docker", *args], env=docker_env(), capture_output=True, text=True, check=check)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_of(url, method="GET", timeout=5):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                     headers={"Host": "localhost", "Accept": "text/html"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until(check, seconds, what):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen in {seconds} s")
        time.sleep(0.05)


def app_env(**extra):
    return {
        "SECRET_KEY": "rehearsal-" + "x" * 40,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "ALLOWED_HOSTS": "localhost",
        "SECURE_SSL_REDIRECT": "false",
        "MAINTENANCE_CACHE": "",
        "LOG_LEVEL": "WARNING",
        **{k: str(v) for k, v in extra.items()},
    }


@contextmanager
def old_deployment(work, source, flag):
    """gunicorn of this checkout on the SQLite file, with the maintenance file."""
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env.update(app_env(DATABASE_URL=f"sqlite:///{source}", MAINTENANCE_FILE=flag, WEB_CONCURRENCY=2,
                       GUNICORN_BIND=f"127.0.0.1:{port}", STATIC_ROOT=work / "static",
                       PROMETHEUS_MULTIPROC_DIR=work / "metrics"))  # fmt: skip
    (work / "metrics").mkdir()
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "project/gunicorn.conf.py", "project.wsgi"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: status_of(url + "/") == 200, 60, "the old deployment serving")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--image", help="Use this image instead of building django-app:rehearse.")
    parser.add_argument("--json", action="store_true", help="Print the timings as one JSON document.")
    args = parser.parse_args()

    # The product's settings, as the image has them, whatever the caller's are (the test suite's tests.settings
    # would seed the file with test apps the image does not know, and the preflight would rightly refuse it).
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ.setdefault("SECRET_KEY", "rehearsal-" + "x" * 40)
    os.environ.setdefault("DATABASE_URL", PG_ADMIN)
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    import boto3
    import django
    from moto.server import ThreadedMotoServer

    django.setup()
    from deploy.aws import transfer
    from deploy.conf import load_config
    from deploy.k8s import cutover

    image = args.image
    if not image:
        log("building the image from the local base")
        subprocess.run(["bash", str(ROOT / "tests/docker/build-base-image.sh"), BASE], env=docker_env(), check=True)
        docker("build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE, str(ROOT))
        image = IMAGE

    work = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    work.chmod(0o755)
    source, flag = work / "db.sqlite3", work / "maintenance.json"
    database = f"rehearsal_{os.getpid()}"
    seed_env = {**os.environ, **app_env(DATABASE_URL=f"sqlite:///{source}")}
    log(f"seeding {source} with about {args.rows} rows")
    load = {"start": os.getloadavg()}
    seeding = time.monotonic()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=seed_env, check=True)
    # seed_demo writes a SQLite file with executemany in one transaction, journal in memory, no fsync (_SqliteWriter):
    # the one seeder of the rehearsal, the test that runs it and the SQLite copy's fixtures.
    subprocess.run([sys.executable, "manage.py", "seed_demo", "--rows", str(args.rows), "-v0"], cwd=ROOT,
                   env=seed_env, check=True)  # fmt: skip
    seed_seconds = round(time.monotonic() - seeding, 1)
    log(f"seeded in {seed_seconds} s (not part of the window)")
    with sqlite3.connect(source) as db:
        rows = sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                   for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))  # fmt: skip
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    target = PG_ADMIN.rsplit("/", 1)[0] + "/" + database
    moto_port = free_port()
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port)
    s3_server.start()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "AWS_ACCESS_KEY_ID": "AKIAREHEARSAL",
           "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_DEFAULT_REGION": "eu-west-1"}  # fmt: skip
    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="eu-west-1",
                      aws_access_key_id="AKIAREHEARSAL", aws_secret_access_key="rehearsal")  # fmt: skip
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    steps = {}
    new_name = f"rehearsal-new-{os.getpid()}"

    def timed(name, action):
        start = time.monotonic()
        result = action()
        steps[name] = round(time.monotonic() - start, 3)
        log(f"{name}: {steps[name]:.2f} s")
        return result

    try:
        with old_deployment(work, source, flag) as old:
            from deploy import maintenance

            state = {}
            timed("maintenance_on", lambda: maintenance.switch_on(maintenance.MaintenanceFlag(file=str(flag))))
            wait_until(lambda: status_of(old + "/", "POST") == 503, 10, "a refused write")
            first_refused = time.monotonic()

            def snapshot():
                final = work / "final.sqlite3"
                src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
                dst = sqlite3.connect(final)
                with dst:
                    src.backup(dst)
                dst.close()
                src.close()
                state.update(path=final, sha256=transfer.sha256_of(final), size=final.stat().st_size)

            timed("snapshot", snapshot)
            key = transfer.object_key("rehearsal", state["sha256"])
            timed("upload", lambda: transfer.upload(s3, state["path"], BUCKET, key, state["sha256"]))
            config = load_config({"cutover_bucket": BUCKET}, environ={})
            script = cutover.script(config, BUCKET, key, state["sha256"])
            env_args = [a for k, v in {**app_env(DATABASE_URL=target), **aws}.items() for a in ("-e", f"{k}={v}")]
            job = timed("copy_job", lambda: docker("run", "--rm", "--network", "host", "--read-only", "--tmpfs",
                                                   "/tmp", "--tmpfs", "/data:mode=1777", *env_args, image,
                                                   "/bin/sh", "-c", script, check=False))  # fmt: skip
            if job.returncode != 0:
                raise SystemExit(f"the copy Job failed ({job.returncode}):\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")
            verified = json.loads(job.stdout[job.stdout.index("{") :])
            port = free_port()

            def new_deployment():
                docker("run", "-d", "--name", new_name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
                       *[a for k, v in app_env(DATABASE_URL=target, GUNICORN_BIND=f"127.0.0.1:{port}",
                                               WEB_CONCURRENCY=2).items() for a in ("-e", f"{k}={v}")],
                       image)  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                wait_until(lambda: status_of(url + "/readyz") == 200, 120, "the new deployment ready")
                wait_until(lambda: status_of(url + "/products/live/") == 200, 60, "a page of the new deployment")

            timed("new_deployment", new_deployment)
            downtime = time.monotonic() - first_refused
    finally:
        docker("rm", "-f", new_name, check=False)
        s3_server.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)

    load["end"] = os.getloadavg()
    report = {"rows": rows, "file_bytes": state["size"], "steps": steps, "downtime_seconds": round(downtime, 3),
              "verified": verified.get("verified"), "seed_seconds": seed_seconds,
              "load_average": {when: [round(x, 2) for x in values] for when, values in load.items()},
              "cpus": os.cpu_count()}  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return
    print(f"rows {rows}, file {state['size'] / 1e6:.1f} MB, verified: {report['verified']}")
    print(f"seeded in {seed_seconds} s (migrate + seed_demo, before the window); load average (1, 5, 15 min) "
          f"{load['start']} at the start, {load['end']} at the end, {os.cpu_count()} CPUs")  # fmt: skip
    for name, seconds in steps.items():
        print(f"{name:<16}{seconds:>9.2f} s")
    print(f"{'downtime':<16}{downtime:>9.2f} s  (first refused write -> first page served by the new deployment)")


if __name__ == "__main__":
    main()
