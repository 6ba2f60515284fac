"""The hashed locks (requirements/*.lock) against their inputs (requirements/*.txt), and installs from them.

requirements/envs.py is what `make venv` and `make lock` run; it is loaded here
from its file, as make runs it.
"""

import base64
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT, load_envs

envs = load_envs()

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


@pytest.fixture
def copy(tmp_path):
    """A copy of the repository's requirements/ (inputs, locks and envs.py) under tmp_path."""
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new))


def test_the_locks_agree_with_the_requirements():
    assert envs.check() == []


def test_a_pin_changed_without_make_lock_fails_naming_the_package(copy):
    locked = envs.read_lock(copy / "requirements" / "base.lock", copy)["django"].version
    edit(copy / "requirements" / "base.txt", f"Django=={locked}", "Django==5.2.99")
    problems = envs.check(copy)
    # dev.lock and deploy.lock (through their -r base.txt) and base.lock disagree, each said once, naming it.
    assert problems == [
        f"Django: requirements/base.txt asks for Django==5.2.99 but requirements/{lock} has {locked}; run `make lock`"
        for lock in ("dev.lock", "base.lock", "deploy.lock")
    ]


def test_a_requirement_added_or_removed_without_make_lock_is_named(copy):
    edit(copy / "requirements" / "dev.txt", "pytest-django==", "cowsay==6.1\npytest-django==")
    tqdm = next(line for line in (copy / "requirements" / "base.txt").read_text().splitlines() if "tqdm" in line)
    edit(copy / "requirements" / "base.txt", tqdm + "\n", "")
    problems = envs.check(copy)
    assert "cowsay: requirements/dev.txt asks for cowsay==6.1 but requirements/dev.lock does not have it; " \
        "run `make lock`" in problems  # fmt: skip
    removed = [p for p in problems if p.startswith("tqdm:")]
    assert removed == [
        f"tqdm: requirements/{lock} has it because of requirements/base.txt, which no longer names it; run `make lock`"
        for lock in ("dev.lock", "base.lock", "deploy.lock")
    ]
    assert len(problems) == 4, problems


def test_the_tools_and_bootstrap_locks_are_checked_too(copy):
    edit(copy / "requirements" / "tools.txt", "checkov==", "checkov>=999,==")
    edit(copy / "requirements" / "bootstrap.txt", "uv==", "uv==0.0.1\n# was uv==")
    problems = envs.check(copy)
    assert [p.split(":")[0] for p in problems] == ["uv", "checkov"], problems
    edit(copy / "requirements" / "tools.txt", "checkov>=999,==", "checkov>=999,,")
    with pytest.raises(envs.EnvError, match=r"^requirements/tools.txt: cannot read 'checkov>=999,,3\.") as failure:
        envs.check(copy)
    assert str(failure.value).endswith("fix that line")
    (copy / "requirements" / "tools.lock").unlink()
    assert "requirements/tools.lock is missing: run `make lock`" in envs.check(copy)


def test_make_lock_refuses_a_lock_with_merge_conflict_markers_and_changes_nothing(copy):
    lock = copy / "requirements" / "dev.lock"
    text = lock.read_text()
    conflicted = text.replace("pytest==", "<<<<<<< HEAD\npytest==", 1).replace(
        "\n# via", "\n=======\n>>>>>>> i99\n# via", 1
    )
    lock.write_text(conflicted)
    before = {path.name: path.read_bytes() for path in (copy / "requirements").iterdir()}
    with pytest.raises(envs.EnvError) as failure:
        envs.lock(root=copy)
    assert str(failure.value) == (
        "requirements/dev.lock holds merge conflict markers: take either side "
        "(git checkout --theirs requirements/dev.lock) and run `make lock` again"
    )
    assert {path.name: path.read_bytes() for path in (copy / "requirements").iterdir()} == before
    assert not (copy / ".venv-bootstrap").exists()


def test_the_runtime_lock_holds_the_same_files_as_the_development_lock(copy):
    base = envs.read_lock(ROOT / "requirements" / "base.lock")
    dev = envs.read_lock(ROOT / "requirements" / "dev.lock")
    assert base, "base.lock pins nothing"
    for name, pin in base.items():
        assert (dev[name].version, dev[name].hashes) == (pin.version, pin.hashes), name
    # A base.lock drifted from dev.lock (a hash that dev.lock does not list) is named.
    lock = copy / "requirements" / "base.lock"
    edit(lock, base["gunicorn"].hashes[0], "sha256:" + "0" * 64)
    assert [p.split(":")[0] for p in envs.check(copy)] == ["gunicorn"]


def test_every_locked_package_is_pinned_and_hashed_by_make_lock():
    for name in ("bootstrap", "base", "dev", "tools"):
        lock = ROOT / "requirements" / f"{name}.lock"
        assert "#    make lock\n" in lock.read_text()
        pins = envs.read_lock(lock)
        assert pins and all(pin.hashes and all(h.startswith("sha256:") for h in pin.hashes) for pin in pins.values())
    assert envs.read_lock(ROOT / "requirements" / "bootstrap.lock").keys() == {"uv"}


def test_the_running_environment_holds_the_development_lock():
    missing = {}
    for name, pin in envs.read_lock(ROOT / "requirements" / "dev.lock").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            missing[name] = (pin.version, installed)
    assert missing == {}, "(locked, installed): run `make venv`"


def test_make_venv_stops_naming_the_package_and_leaves_nothing(copy):
    edit(copy / "requirements" / "dev.txt", "ruff==", "ruff==0.0.1\n# ruff==")
    result = subprocess.run(
        [BASE_PYTHON, "requirements/envs.py", "sync", ".venv=requirements/dev.lock"],
        cwd=copy, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "ruff: requirements/dev.txt asks for ruff==0.0.1 but requirements/dev.lock has" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (copy / ".venv").exists() and not (copy / ".venv-bootstrap").exists()


def test_pip_settings_are_read_from_pip_with_its_variables_first(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url =\n    file:///srv/a/simple\n    file:///srv/b/simple\nfind-links = /srv/wheels\n"
        "cert = /etc/mirror-ca.pem\ntimeout = 60\n"
    )
    for key in [key for key in os.environ if key.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/other-wheels")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    settings = envs.pip_settings(BASE_PYTHON)
    assert settings == envs.IndexSettings(
        index_url="https://mirror.example/simple",
        extra_index_urls=("file:///srv/a/simple", "file:///srv/b/simple"),
        find_links=("/srv/other-wheels",),
        cert="/etc/mirror-ca.pem",
        timeout="60",
    )
    assert settings.uv_environment() == {
        "UV_INDEX_URL": "https://mirror.example/simple",
        "UV_EXTRA_INDEX_URL": "file:///srv/a/simple file:///srv/b/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "UV_FIND_LINKS": "/srv/other-wheels",
        "SSL_CERT_FILE": "/etc/mirror-ca.pem",
        "UV_HTTP_TIMEOUT": "60",
    }
    # The lock is resolved against the primary index alone: its hashes are that index's files.
    assert settings.uv_environment(primary_only=True) == {
        "UV_INDEX_URL": "https://mirror.example/simple",
        "SSL_CERT_FILE": "/etc/mirror-ca.pem",
        "UV_HTTP_TIMEOUT": "60",
    }


# --- installs refuse what the lock does not list ----------------------------------------------------


def make_wheel(directory, body):
    """A pure-Python wheel of `tinypkg` 1.0 whose module holds `body`; returns (path, sha256 spec)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = "tinypkg-1.0.dist-info"
    files = {
        "tinypkg/__init__.py": body,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = directory / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uv():
    found = envs.find_uv()
    assert found is not None, "uv could not be installed from requirements/bootstrap.lock"
    return found


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_an_install_refuses_a_file_whose_hash_the_lock_does_not_list(installer, tmp_path, monkeypatch, request):
    _, locked_hash = make_wheel(tmp_path / "good", "VALUE = 'locked'\n")
    make_wheel(tmp_path / "tampered", "VALUE = 'tampered'\n")  # same name and version, other bytes
    lock = tmp_path / "tiny.lock"
    lock.write_text(f"tinypkg==1.0 \\\n    --hash={locked_hash}\n")
    for key in [key for key in os.environ if key.startswith(("PIP_", "UV_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    env_dir = tmp_path / "env"

    def sync_from(wheels):
        # Only a local wheel directory, no index: for uv through the settings, for pip through its variables.
        monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
        uv = request.getfixturevalue("uv") if installer == "uv" else None
        settings = envs.IndexSettings(find_links=(str(wheels),), no_index=True)
        envs.Installer(uv=uv, settings=settings, python=BASE_PYTHON).sync(env_dir, lock)

    def installed_value():
        answer = subprocess.run(
            [str(env_dir / "bin" / "python"), "-c", "import tinypkg; print(tinypkg.VALUE)"],
            capture_output=True, text=True,
        )  # fmt: skip
        return answer.stdout.strip() if answer.returncode == 0 else None

    sync_from(tmp_path / "good")
    assert installed_value() == "locked"

    # Removed by hand, then offered only the tampered file: refused, and nothing of it is installed.
    site = env_dir / "lib" / "python3.12" / "site-packages"
    shutil.rmtree(site / "tinypkg")
    shutil.rmtree(site / "tinypkg-1.0.dist-info")
    with pytest.raises(envs.EnvError, match=r"(?i)hash") as failure:
        sync_from(tmp_path / "tampered")
    assert "Traceback" not in str(failure.value)
    assert "A file whose hash the lock does not list was refused: if a pin changed, run `make lock`" in str(
        failure.value
    )
    assert installed_value() is None
    assert not list(site.glob("tinypkg*"))
