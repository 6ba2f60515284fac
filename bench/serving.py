"""Serving benchmark: wrk against gunicorn on 127.0.0.1, all in one run.

Measures requests/s and p99 latency for /healthz, the cached product list
and the same list uncached, then the uncached list again with the metrics
middleware switched off, and again with no maintenance flag to check, and prints
the ratios the project targets:

- cached list >= 5x the uncached list;
- metrics middleware costs <= 10% of requests/s;
- the maintenance flag check (a stat() of MAINTENANCE_FILE, the Redis key read
  at most once a second) costs nothing measurable: two gunicorns side by side,
  with and without a flag, served the cached list in alternating wrk rounds
  (the per-round ratios' spread is the noise to read the median against); also
  timed alone, in-process, per request, against the cost of the request it guards.

Usage: python bench/serving.py [--seconds 5] [--connections 16] [--rows 5000]
       python bench/serving.py --flag-rounds-only [--flag-rounds 5]
Needs wrk (Debian's package) and the PostgreSQL and Redis on 127.0.0.1.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = "bench_serving"


def log(message):
    print(message, file=sys.stderr, flush=True)


def environment(static_root, **extra):
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        SECRET_KEY="bench-" + "x" * 50,
        DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME,
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        ALLOWED_HOSTS="localhost",
        SECURE_SSL_REDIRECT="false",
        STATIC_ROOT=str(static_root),
        LOG_LEVEL="WARNING",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def prepare(rows, static_root):
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    env = environment(static_root)
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "seed_demo", "--rows", str(rows), "--verbosity", "0")
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")


@contextmanager
def gunicorn(static_root, port, workers, **extra):
    metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    env = environment(
        static_root,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=workers,
        GUNICORN_THREADS=1,
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        **extra,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "project/gunicorn.conf.py", "project.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def wrk(url, seconds, connections):
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", "Host: localhost", url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} error responses during the benchmark")
    return rps, float(p99.group(1)) * scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--flag-check-only", action="store_true", help="Only time the maintenance flag check.")
    parser.add_argument("--flag-rounds", type=int, default=5, help="Alternating wrk rounds, with and without a flag.")
    parser.add_argument(
        "--flag-rounds-only", action="store_true", help="Only the alternating rounds (and the in-process timing)."
    )
    args = parser.parse_args()
    if args.flag_check_only:
        static_root = Path(tempfile.mkdtemp(prefix="bench-static-"))
        print(flag_check_cost(static_root, static_root / "no-maintenance.json"))
        shutil.rmtree(static_root, ignore_errors=True)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")

    static_root = Path(tempfile.mkdtemp(prefix="bench-static-"))
    log(f"preparing database {DB_NAME} with {args.rows} rows")
    prepare(args.rows, static_root)
    flag_file = static_root / "no-maintenance.json"  # absent: checked on each request, as in production
    if args.flag_rounds_only:
        print(f"load average at the start: {os.getloadavg()}")
        print(flag_rounds(static_root, args, flag_file))
        print(flag_check_cost(static_root, flag_file))
        print(f"load average at the end: {os.getloadavg()}")
        shutil.rmtree(static_root, ignore_errors=True)
        return
    results = {}
    with gunicorn(static_root, args.port, args.workers, MAINTENANCE_FILE=flag_file) as url:
        for name, path in [
            ("healthz", "/healthz"),
            ("list cached", "/products/"),
            ("list uncached", "/products/live/"),
        ]:
            log(f"wrk {path}")
            results[name] = wrk(url + path, args.seconds, args.connections)
    with gunicorn(static_root, args.port, args.workers, METRICS_MIDDLEWARE="false") as url:
        log("wrk /products/live/ without the metrics middleware")
        results["list uncached, no metrics"] = wrk(url + "/products/live/", args.seconds, args.connections)
    with gunicorn(static_root, args.port, args.workers, MAINTENANCE_FILE="", MAINTENANCE_CACHE="") as url:
        log("wrk /products/live/ without a maintenance flag to check")
        results["list uncached, no flag"] = wrk(url + "/products/live/", args.seconds, args.connections)
    rounds = flag_rounds(static_root, args, flag_file)
    check = flag_check_cost(static_root, flag_file)
    shutil.rmtree(static_root, ignore_errors=True)

    print(f"{'endpoint':<28}{'requests/s':>12}{'p99 ms':>10}")
    for name, (rps, p99) in results.items():
        print(f"{name:<28}{rps:>12.1f}{p99:>10.2f}")
    cached_ratio = results["list cached"][0] / results["list uncached"][0]
    metrics_cost = 1 - results["list uncached"][0] / results["list uncached, no metrics"][0]
    print(f"cached / uncached: {cached_ratio:.1f}x (target >= 5x) {'OK' if cached_ratio >= 5 else 'MISSED'}")
    print(f"metrics middleware cost: {metrics_cost:.1%} (target <= 10%) {'OK' if metrics_cost <= 0.10 else 'MISSED'}")
    flag_cost = 1 - results["list uncached"][0] / results["list uncached, no flag"][0]
    print(f"maintenance flag check, under wrk: {flag_cost:+.1%} of requests/s (one run each, one after the other)")
    print(rounds)
    print(check)


def flag_rounds(static_root, args, flag_file):
    """The flag check's cost on the cached list (the cheapest page it guards), as a ratio measured in rounds.

    Two gunicorns run side by side, one checking the file and the Redis key on every request, one with no flag
    configured, and wrk alternates between them (order swapped each round), so that a change of the machine's
    load falls on both alike. The spread of the per-round ratios is the noise the median is to be read against.
    """
    ratios, with_flag, without = [], [], []
    with (
        gunicorn(static_root, args.port, args.workers, MAINTENANCE_FILE=flag_file, MAINTENANCE_CACHE="default") as a,
        gunicorn(static_root, args.port + 1, args.workers, MAINTENANCE_FILE="", MAINTENANCE_CACHE="") as b,
    ):
        for round_ in range(args.flag_rounds):
            log(f"round {round_ + 1}/{args.flag_rounds}: /products/ with and without the flag check")
            order = [(a, with_flag), (b, without)]
            for url, into in order if round_ % 2 == 0 else order[::-1]:
                into.append(wrk(url + "/products/", args.seconds, args.connections)[0])
            ratios.append(with_flag[-1] / without[-1])
    ratios.sort()
    median = ratios[len(ratios) // 2]
    return (
        f"maintenance flag check, {args.flag_rounds} alternating rounds on /products/: with {median_of(with_flag):.1f}"
        f" req/s, without {median_of(without):.1f} req/s (medians); with/without per round {ratios[0]:.3f} to "
        f"{ratios[-1]:.3f}, median {median:.3f} ({1 - median:+.1%} cost)"
    )


def median_of(values):
    return sorted(values)[len(values) // 2]


FLAG_CHECK = """
import timeit, django
django.setup()
from django.test import RequestFactory
from django.http import HttpResponse
from deploy.maintenance import MaintenanceMiddleware
page = HttpResponse("ok")
request = RequestFactory().get("/products/live/")
middleware = MaintenanceMiddleware(lambda request: page)
middleware(request)
runs = 200000
view = middleware.get_response
with_check = min(timeit.repeat(lambda: middleware(request), number=runs, repeat=5))
without = min(timeit.repeat(lambda: view(request), number=runs, repeat=5))
print(f"{(with_check - without) / runs * 1e6:.2f}")
"""


def flag_check_cost(static_root, flag_file):
    """Microseconds per request that the middleware adds (file stat + cache poll), timed alone in-process."""
    env = environment(static_root, MAINTENANCE_FILE=flag_file, MAINTENANCE_CACHE="default")
    out = subprocess.run([sys.executable, "-c", FLAG_CHECK], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the flag check could not be timed:\n{out.stderr}")
    return f"maintenance flag check alone: {float(out.stdout):.2f} us per request (file stat + cache key poll)"


if __name__ == "__main__":
    main()
