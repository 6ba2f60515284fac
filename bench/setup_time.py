"""Set-up time as a new user meets it: a fresh clone, then `make venv` and `make demo`.

Usage: python bench/setup_time.py [--cold] [--pip] [--rows N]

Each figure is the wall time of one make command in a fresh `git clone` of this
repository's HEAD (nothing of .venv, .venv-tools or .venv-bootstrap there):

- `make venv` is `make test`'s set-up part (all it does before pytest starts);
- `make demo` includes that set-up, then seeds, copies, verifies and renders.

With uv's cache as this machine has it ("warm"), and with --cold an empty one
(a new UV_CACHE_DIR and no pip cache: every file downloaded). --pip adds the
fallback (INSTALLER=pip), the way every set-up went before uv, for comparison.
The demo copies into a PostgreSQL database of its own (demo_bench_PID), dropped
at the end. Targets: make demo < 40 s, make venv < 15 s.

Other processes share the CPU: the load average is printed with the figures.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"venv": 15.0, "demo": 40.0}
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def fresh_clone(workdir, name):
    clone = workdir / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return clone


def timed_make(clone, target, env):
    started = time.monotonic()
    result = subprocess.run(["make", "-C", str(clone), target], env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"make {target} failed in {clone} (output above)")
    # requirements/envs.py prints one line per environment with its own time.
    details = re.findall(r"^(\.venv\S*: .* in [0-9.]+ s)$", result.stdout, flags=re.MULTILINE)
    return elapsed, details


def measure(workdir, label, extra_env, rows, db):
    env = {**os.environ, **extra_env, "DEMO_ROWS": str(rows), "DEMO_PG_DB": db}
    figures = {}
    for target in ("venv", "demo"):
        if "UV_CACHE_DIR" in extra_env:  # cold: empty again for each clone
            shutil.rmtree(extra_env["UV_CACHE_DIR"], ignore_errors=True)
        clone = fresh_clone(workdir, f"{re.sub(r'[^a-z]+', '-', label)}-{target}")
        figures[target] = timed_make(clone, target, env)
        print(f"{label}: make {target} {figures[target][0]:.1f} s", file=sys.stderr, flush=True)
        shutil.rmtree(clone, ignore_errors=True)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cold", action="store_true", help="also with an empty uv cache")
    parser.add_argument("--pip", action="store_true", help="also with the pip fallback (minutes)")
    parser.add_argument("--rows", type=int, default=20000, help="DEMO_ROWS, as make demo's default")
    args = parser.parse_args()
    db = f"demo_bench_{os.getpid()}"
    runs = [("uv, cache warm", {"INSTALLER": "uv"})]
    with tempfile.TemporaryDirectory(prefix="setup-bench-") as tmp:
        workdir = Path(tmp)
        if args.cold:
            cold = {"INSTALLER": "uv", "UV_CACHE_DIR": str(workdir / "uv-cache"), "PIP_NO_CACHE_DIR": "1"}
            runs.append(("uv, cache empty", cold))
        if args.pip:
            runs.append(("pip (fallback)", {"INSTALLER": "pip", "PIP_NO_CACHE_DIR": "1"}))
        load_before = os.getloadavg()
        results = []
        try:
            for label, extra in runs:
                results.append((label, measure(workdir, label, extra, args.rows, db)))
        finally:
            subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)
        load_after = os.getloadavg()
    print(f"fresh clone of {ROOT.name} at HEAD, {os.cpu_count()} cores, DEMO_ROWS={args.rows}")
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print(f"{'':<18}{'make venv (s)':>15}{'make demo (s)':>15}")
    for label, figures in results:
        print(f"{label:<18}{figures['venv'][0]:>15.1f}{figures['demo'][0]:>15.1f}")
    print(f"{'target':<18}{TARGETS['venv']:>15.0f}{TARGETS['demo']:>15.0f}")
    for label, figures in results:
        for target, (_, details) in figures.items():
            for line in details:
                print(f"  {label}, make {target}: {line}")
    warm = results[0][1]
    met = all(warm[target][0] < limit for target, limit in TARGETS.items())
    print(f"uv, cache warm: {'both targets met' if met else 'a target MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
