"""Every command's help works in a fresh clone with nothing set; running one still demands its configuration."""

import subprocess
import sys

from django.core.management import get_commands

from tests.conftest import ROOT

BARE = {"PATH": "/usr/bin:/bin"}  # no SECRET_KEY, DATABASE_URL, REDIS_URL, DEBUG or DJANGO_SETTINGS_MODULE


def _manage(*args):
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=BARE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _run(*args):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=BARE, capture_output=True, text=True)


# Run in one interpreter, as ``manage.py CMD --help`` would, for every command Django knows.
EVERY_HELP = """
import sys
from django.core.management import ManagementUtility, get_commands
sys.argv = ["manage.py", "--help"]
import django; django.setup()
failed = []
for name in sorted(get_commands()):
    try:
        ManagementUtility(["manage.py", name, "--help"]).execute()
    except SystemExit as exc:
        if exc.code:
            failed.append(name)
print("FAILED:", failed, "COUNT:", len(get_commands()), file=sys.stderr)
"""


def test_the_projects_commands_help_works_with_an_empty_environment():
    ours = sorted(name for name, app in get_commands().items() if not app.startswith("django"))
    assert {"k8s_deploy", "migrate_from_sqlite", "aws_provision", "eks_kubeconfig", "seed_demo"} <= set(ours)
    # One interpreter each, started together: the settings see each command line as manage.py would give it.
    runs = {name: _manage(name, "--help") for name in ours}
    runs["help k8s_deploy"] = _manage("help", "k8s_deploy")
    failed = []
    for name, process in runs.items():
        out, err = process.communicate(timeout=120)
        if process.returncode != 0 or "usage:" not in out:
            failed.append(f"{name}: exit {process.returncode}: {err.strip()[-300:]}")
    assert failed == []


def test_every_commands_help_works_with_an_empty_environment():
    env = {**BARE, "DJANGO_SETTINGS_MODULE": "project.settings"}
    out = subprocess.run([sys.executable, "-c", EVERY_HELP], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "FAILED: [] COUNT:" in out.stderr, out.stderr[-2000:]
    assert int(out.stderr.rsplit("COUNT:", 1)[1]) > 30


def test_help_lists_the_projects_commands_with_an_empty_environment():
    out = _run("help")
    assert out.returncode == 0, out.stderr
    assert "[deploy]" in out.stdout and "k8s_deploy" in out.stdout and "seed_demo" in out.stdout


def test_a_command_that_runs_still_names_the_missing_variable():
    out = _run("k8s_deploy")
    assert out.returncode == 1
    assert "Set the SECRET_KEY environment variable" in out.stderr
    assert "Traceback" not in out.stderr
    # --help as the value of an option is not a request for help.
    out = _run("k8s_deploy", "--output", "help")
    assert out.returncode == 1 and "SECRET_KEY" in out.stderr
    assert not (ROOT / "help").exists()
