"""The fork server (tests/forkserver.py) gives what a real interpreter gives for the same command line."""

import json
import os
import subprocess
import sys

import pytest

from tests import forkserver
from tests.conftest import ROOT, production_env

BARE = {"PATH": "/usr/bin:/bin"}

BOTH_STREAMS = "import sys; print('out', sys.argv); print('err', file=sys.stderr); sys.exit(3)"
SHOW_SETTINGS = (
    "from django.conf import settings; print(settings.SETTINGS_MODULE, settings.ALLOWED_HOSTS, "
    "'tests.testapp' in settings.INSTALLED_APPS)"
)
WHERE = "import os, sys; print(os.getcwd(), sys.argv, sys.path[:3], sorted(os.environ.items()))"
LEAVE_OPEN = (
    "class Noisy:\n    def __del__(self):\n        print('freed')\n"
    "noisy = Noisy()\nleft = open('left-open.txt', 'w')\nleft.write('written')\n"
)
# Held by a module, as Django's admin.site: nothing at the end may evaluate it (isinstance would, by __class__).
LEAVE_LAZY = (
    "import sys, types\nfrom django.utils.functional import SimpleLazyObject\n"
    "holder = sys.modules['holder'] = types.ModuleType('holder')\nholder.site = SimpleLazyObject(lambda: 1 / 0)\n"
)
MODULE = "import os, sys; print(__name__, sys.argv, sys.path[:3]); raise SystemExit(int(os.environ['CODE']))\n"


def _settings_env(module, hosts):
    return production_env(DJANGO_SETTINGS_MODULE=module, ALLOWED_HOSTS=hosts)


def _cases(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tool.py").write_text(MODULE)
    return {
        "success": (["manage.py", "check"], _settings_env("tests.settings", "a.example"), ROOT),
        "command error": (["manage.py", "check", "--tag", "nope"], _settings_env("tests.settings", "a"), ROOT),
        "missing setting": (["manage.py", "k8s_deploy"], BARE, ROOT),
        "uncaught exception": (["manage.py", "check", "--tag", "nope", "--traceback"], {**BARE, "DEBUG": "1"}, ROOT),
        "both streams, -c with argv": (["-c", BOTH_STREAMS, "one", "two words"], BARE, ROOT),
        "a SystemExit message": (["-c", "raise SystemExit('bye')"], BARE, ROOT),
        "a syntax error": (["-c", "x = ("], BARE, ROOT),
        "settings read the environment": (
            ["manage.py", "shell", "-v0", "-c", SHOW_SETTINGS],
            _settings_env("tests.settings", "one.example,two.example"),
            ROOT,
        ),
        "another settings module": (
            ["manage.py", "shell", "-v0", "-c", SHOW_SETTINGS],
            _settings_env("project.settings", "three.example"),
            ROOT,
        ),
        "a cwd, PYTHONPATH, the environment replaced": (
            ["-c", WHERE, "x"],
            {**BARE, "PYTHONPATH": f"pkg::{tmp_path}", "ONLY_HERE": "1"},
            tmp_path,
        ),
        "-m from PYTHONPATH": (["-m", "tool", "--flag"], {**BARE, "PYTHONPATH": "pkg", "CODE": "7"}, tmp_path),
        "-m django": (["-m", "django", "--version"], BARE, tmp_path),
        "-m of nothing": (["-m", "no_such_module"], BARE, tmp_path),
        # The bytes surrogates stand for (os.fsdecode of a name that is not UTF-8), as C.UTF-8's stdout writes them.
        "a surrogate-escaped name printed": (["-c", "print('caf\\udcc3\\udca9')"], BARE, tmp_path),
        "TZ read at start-up": (
            ["-c", "import time; print(time.tzname, time.timezone)"],
            {**BARE, "TZ": "XYZ-5"},
            tmp_path,
        ),
        "what the run leaves, freed at its end": (["-c", LEAVE_OPEN], BARE, tmp_path),
        "a lazy object never evaluated": (["-c", LEAVE_LAZY], BARE, tmp_path),
        "an environment larger than a socket's message": (
            ["-c", "import os; print(sum(len(v) for k, v in os.environ.items() if k.startswith('BIG')))"],
            {**BARE, **{f"BIG{n}": "x" * 100_000 for n in range(3)}},
            tmp_path,
        ),
    }


def test_a_forked_run_gives_what_a_real_interpreter_gives(tmp_path):
    cases = _cases(tmp_path)
    differ = {}
    for name, (args, env, cwd) in cases.items():
        assert forkserver.forkable(args, env, str(cwd)), name
        real = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        forked = forkserver.run_python(args, env=env, cwd=cwd, timeout=300)
        assert isinstance(forked, subprocess.CompletedProcess) and forked.args == [sys.executable, *args]
        if (forked.returncode, forked.stdout, forked.stderr) != (real.returncode, real.stdout, real.stderr):
            differ[name] = {"real": (real.returncode, real.stdout, real.stderr), "forked": forked}
    assert differ == {}
    # The cases are what they say: each outcome happened (in both, since they are equal).
    outcome = {name: forkserver.run_python(*case) for name, case in cases.items()}
    assert outcome["success"].returncode == 0 and "no issues" in outcome["success"].stdout
    assert outcome["command error"].returncode == 1 and "CommandError" in outcome["command error"].stderr
    assert "Set the SECRET_KEY" in outcome["missing setting"].stderr
    assert outcome["uncaught exception"].stderr.startswith("Traceback (most recent call last):\n")
    assert f'File "{ROOT / "manage.py"}"' in outcome["uncaught exception"].stderr
    assert outcome["both streams, -c with argv"].stdout == "out ['-c', 'one', 'two words']\n"
    assert outcome["both streams, -c with argv"].stderr == "err\n"
    assert outcome["settings read the environment"].stdout == "tests.settings ['one.example', 'two.example'] True\n"
    assert outcome["another settings module"].stdout == "project.settings ['three.example'] False\n"
    where = outcome["a cwd, PYTHONPATH, the environment replaced"].stdout
    assert where.startswith(f"{tmp_path} ['-c', 'x'] ['', '{tmp_path / 'pkg'}', '{tmp_path}']")
    assert "('ONLY_HERE', '1')" in where and "DATABASE_URL" not in where
    assert outcome["a surrogate-escaped name printed"].stdout == "café\n"
    assert outcome["TZ read at start-up"].stdout == "('XYZ', 'XYZ') -18000\n"
    assert outcome["what the run leaves, freed at its end"].stdout == "freed\n"
    assert outcome["a lazy object never evaluated"].returncode == 0
    assert (tmp_path / "left-open.txt").read_text() == "written"  # by the last run, a forked one
    assert outcome["an environment larger than a socket's message"].stdout == "300000\n"
    module = outcome["-m from PYTHONPATH"]
    assert module.returncode == 7 and module.stdout.startswith(f"__main__ ['{tmp_path / 'pkg' / 'tool.py'}', '--flag']")


def test_a_child_that_outlives_its_timeout_is_killed(tmp_path):
    hang = "import os, time; print(os.getpid(), flush=True); time.sleep(3600)"
    with pytest.raises(subprocess.TimeoutExpired) as forked:
        forkserver.run_python(["-c", hang], env=BARE, cwd=tmp_path, timeout=1)
    with pytest.raises(subprocess.TimeoutExpired) as real:
        subprocess.run([sys.executable, "-c", hang], env=BARE, cwd=tmp_path, capture_output=True, text=True, timeout=1)
    assert forked.value.cmd == [sys.executable, "-c", hang] and forked.value.timeout == 1
    assert forked.value.stderr is real.value.stderr is None  # nothing written, as subprocess.run says it
    assert isinstance(forked.value.stdout, bytes) and isinstance(real.value.stdout, bytes)
    pid = int(forked.value.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    assert forkserver.run_python(["-c", "print('next')"], env=BARE, cwd=tmp_path).stdout == "next\n"


def test_the_zygote_has_imported_the_libraries_and_nothing_that_reads_the_environment():
    seen = forkserver.run_python(
        ["-c", "import json, sys, django.conf, django.apps; print(json.dumps(sorted(sys.modules))); print("
         "django.conf.settings.configured, django.apps.apps.ready)"],
        env=BARE, cwd=ROOT,
    )  # fmt: skip
    modules, state = seen.stdout.splitlines()
    modules = set(json.loads(modules))
    assert set(forkserver.PRELOADED) <= modules  # imported before the fork: the child did not import them
    for name in ("kubernetes", "boto3", "botocore", "deploy", "apps", "project", "tests", "environ"):
        assert not {module for module in modules if module == name or module.startswith(name + ".")}, name
    assert state == "False False"
    # Only this process's own command line is in the child's sys.modules: a fresh interpreter imports none of these.
    cold = subprocess.run([sys.executable, "-c", "import sys; print('django' in sys.modules)"], env=BARE,
                          capture_output=True, text=True)  # fmt: skip
    assert cold.stdout == "False\n"


def test_a_dead_zygote_is_replaced_and_what_it_cannot_be_runs_in_a_real_interpreter(tmp_path):
    first = forkserver.run_python(["-c", "import os; print(os.getppid())"], env=BARE, cwd=tmp_path)
    zygote = forkserver.zygote_pid()
    assert int(first.stdout) == zygote
    forkserver._zygote.process.kill()
    forkserver._zygote.process.wait()  # dead, as one that crashed between two runs
    again = forkserver.run_python(["-c", "import os; print(os.getppid())"], env=BARE, cwd=tmp_path)
    assert again.returncode == 0 and int(again.stdout) == forkserver.zygote_pid() != zygote
    # An interpreter variable a fork cannot honour: a real interpreter (its parent is this process).
    real = forkserver.run_python(["-c", "import os; print(os.getppid())"], env={**BARE, "PYTHONHASHSEED": "1"})
    assert int(real.stdout) == os.getpid()
    assert not forkserver.forkable(["-X", "dev", "-c", "pass"], BARE, str(tmp_path))
    assert not forkserver.forkable(["-c", "pass"], {**BARE, "LC_ALL": "C"}, str(tmp_path))
    assert not forkserver.forkable(["-c", "pass"], {**BARE, "PSYCOPG_IMPL": "python"}, str(tmp_path))


def test_check_raises_with_the_output():
    with pytest.raises(subprocess.CalledProcessError) as failed:
        forkserver.run_python(["-c", "import sys; print('why', file=sys.stderr); sys.exit(4)"], env=BARE, check=True)
    assert failed.value.returncode == 4 and failed.value.stderr == "why\n"
