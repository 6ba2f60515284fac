"""A new project adopts the deploy app as docs/adopting.md says: pip install, INSTALLED_APPS, nothing more.

The project is made by ``django-admin startproject`` in a temporary folder; the app is pip-installed
from a copy of this checkout into a throwaway virtual environment that reuses the test environment's
packages (a .pth file), with ``--no-deps --no-build-isolation`` so that nothing is downloaded.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, scratch_database

# No test database: the test makes a PostgreSQL database of its own, named after the configured one.
pytestmark = pytest.mark.slow

MODELS = """
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)


class Book(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    title = models.CharField(max_length=200)
    published = models.DateField(null=True)
    data = models.JSONField(default=dict)
"""

FILL = """
import datetime as dt
import django
django.setup()
from shelf.models import Author, Book
ada = Author.objects.create(name="Ada ü")
Book.objects.create(author=ada, title='Notes, "quoted"', published=dt.date(1843, 10, 1), data={"k": [1, "é"]})
Book.objects.create(author=Author.objects.create(name="Grace"), title="COBOL\\nmanual", data={})
"""


def _run(args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def adopter_database():
    with scratch_database("adopter") as database:
        yield database


def test_a_fresh_project_that_installs_the_app_copies_and_verifies(tmp_path, adopter_database):
    # pip install of a copy of the checkout (pip writes build files next to the sources).
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(".git", ".venv*", "build", "node_modules", "__pycache__", "*.egg-info"),
    )
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, None)
    python = venv / "bin" / "python"
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, None).stdout.strip()
    )
    (site / "reuse-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(checkout)], tmp_path, env)
    probe = "import deploy, deploy.k8s.render as r; print(deploy.__file__, r.BUILTIN_TEMPLATES)"
    installed = _run([python, "-c", probe], tmp_path, env).stdout.split()
    assert installed[0].startswith(str(site)) and installed[1] == str(site / "deploy" / "k8s_templates")
    assert (site / "deploy" / "k8s_templates" / "app" / "deployment.yaml").is_file()
    # Every module of the app, not only those the steps below import (pyproject.toml lists the packages).
    modules = {path.relative_to(checkout) for path in (checkout / "deploy").rglob("*.py")}
    assert sorted(map(str, modules - {path.relative_to(site) for path in (site / "deploy").rglob("*.py")})) == []

    # A new project: startproject, one app of its own, "deploy" added to INSTALLED_APPS and nothing else.
    project = tmp_path / "mysite"
    project.mkdir()
    _run([python, "-m", "django", "startproject", "mysite", "."], project, env)
    _run([python, "manage.py", "startapp", "shelf"], project, env)
    (project / "shelf" / "models.py").write_text(MODELS)
    settings = project / "mysite" / "settings.py"
    text = settings.read_text().replace("INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "deploy",\n    "shelf",', 1)
    # Its own databases: SQLite as startproject made it, PostgreSQL when DATABASE_URL says so.
    settings.write_text(
        text
        + "\nimport os\nif os.environ.get('PG_NAME'):\n"
        + "    DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': os.environ['PG_NAME'],"
        + " 'USER': 'postgres', 'HOST': '127.0.0.1', 'PORT': 5432}}\n"
    )
    assert "sqlite_source" not in settings.read_text() and "SQLITE_SOURCE" not in settings.read_text()
    _run([python, "manage.py", "makemigrations", "shelf", "-v0"], project, env)
    _run([python, "manage.py", "migrate", "-v0"], project, env)
    _run(
        [python, "-c", FILL], project, {**env, "DJANGO_SETTINGS_MODULE": "mysite.settings", "PYTHONPATH": str(project)}
    )
    sqlite_file = project / "db.sqlite3"
    before = sqlite_file.read_bytes()

    name, _ = adopter_database
    pg = {**env, "PG_NAME": name}
    _run([python, "manage.py", "migrate", "-v0"], project, pg)
    copied = _run([python, "manage.py", "migrate_from_sqlite", "--verify", "--no-input"], project,
                  {**pg, "SQLITE_SOURCE": str(sqlite_file)})  # fmt: skip
    assert "Verified:" in copied.stdout, copied.stdout + copied.stderr
    assert "shelf.Book" in copied.stdout
    with psycopg.connect(adopter_database[1]) as db:
        rows = db.execute("SELECT b.title, a.name, b.data FROM shelf_book b JOIN shelf_author a ON a.id = b.author_id "
                          "ORDER BY b.id").fetchall()  # fmt: skip
    assert rows == [('Notes, "quoted"', "Ada ü", {"k": [1, "é"]}), ("COBOL\nmanual", "Grace", {})]
    assert sqlite_file.read_bytes() == before

    # Without SQLITE_SOURCE or --source: the message says what to set, no traceback.
    missing = _run([python, "manage.py", "migrate_from_sqlite"], project, pg, check=False)
    assert missing.returncode == 1 and "set SQLITE_SOURCE" in missing.stderr and "Traceback" not in missing.stderr
