"""Every command's help works in a fresh clone with nothing set; running one still demands its configuration."""

import subprocess
import sys

from django.core.management import get_commands

from tests.conftest import ROOT
from tests.forkserver import run_python

BARE = {"PATH": "/usr/bin:/bin"}  # no SECRET_KEY, DATABASE_URL, REDIS_URL, DEBUG or DJANGO_SETTINGS_MODULE


def _run(*args):
    return run_python(["manage.py", *args], env=BARE, cwd=ROOT)


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
    # An interpreter each (forked, tests/forkserver.py): the settings see each command line as manage.py gives it.
    failed = []
    for line in [[name, "--help"] for name in ours] + [["help", "k8s_deploy"]]:
        done = _run(*line)
        if done.returncode != 0 or "usage:" not in done.stdout:
            failed.append(f"{line}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
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


def test_help_and_a_render_without_a_cluster_never_import_the_kubernetes_client(tmp_path):
    """Importing the Kubernetes client costs 0.2 s of CPU: only talking to a cluster imports it."""
    script = (
        "import runpy, sys\n"
        "for line in (['k8s_deploy', '--help'], ['k8s_deploy', '--output', sys.argv[1]]):\n"
        "    sys.argv = ['manage.py', *line]\n"
        "    try:\n"
        "        runpy.run_path('manage.py', run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "print('kubernetes' in sys.modules, 'kubernetes_validate' in sys.modules)\n"
    )
    env = {**BARE, "DEBUG": "true", "HOME": str(tmp_path), "DJANGO_SETTINGS_MODULE": "project.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "k8s")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "k8s").is_dir(), "the render was written"
    assert done.stdout.split()[-2:] == ["False", "True"], done.stdout[-500:]
