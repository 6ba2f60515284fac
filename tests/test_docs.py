"""The documentation cannot drift from the code."""

import re
import shutil
import subprocess
from pathlib import Path
from uuid import uuid4

import pytest
from django.core.management import get_commands, load_command_class

from deploy import docs
from deploy.conf import describe_settings, load_config
from deploy.k8s import observability

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TEXTS = {p: p.read_text() for p in [*DOCS.rglob("*.md"), ROOT / "README.md"]}


@pytest.mark.slow
def test_generated_reference_pages_match_the_code():
    stale = docs.stale(DOCS)
    assert stale == [], f"run 'python manage.py deploy_docs' to regenerate {stale}"


def test_the_configuration_reference_lists_every_setting():
    text = (DOCS / "reference" / "configuration.md").read_text()
    for row in describe_settings():
        assert f"| `{row['name']}` |" in text
        # Settings with no environment variable (the environments themselves) show a dash.
        assert (
            f"`{row['env']}`" in text if row["env"] else re.search(rf"\| `{row['name']}` \| \w+ \| [^|]+ \| — \|", text)
        )


MANAGE = re.compile(r"manage\.py ([a-z0-9_]+)((?: +(?:--[a-z][a-z-]*|[^\s`|;&]+))*)")


def _mentions():
    for path, text in TEXTS.items():
        for match in MANAGE.finditer(text):
            command, rest = match.group(1), match.group(2)
            options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest)
            yield path.relative_to(ROOT), command, options


def test_every_command_and_option_the_docs_mention_exists():
    commands = get_commands()
    problems = []
    seen = 0
    for path, command, options in _mentions():
        seen += 1
        if command == "help" and not options:  # manage.py help: Django's own, not a command module
            continue
        if command not in commands:
            problems.append(f"{path}: manage.py {command} does not exist")
            continue
        parser = load_command_class(commands[command], command).create_parser("manage.py", command)
        known = {o for action in parser._actions for o in action.option_strings}
        problems += [f"{path}: manage.py {command} has no option {o}" for o in options if o not in known]
    assert seen > 30
    assert problems == []


def test_the_mention_checker_catches_a_wrong_option():
    sample = "run `python manage.py k8s_deploy --rendr` and `python manage.py migrate_from_sqlit`"
    found = [(m.group(1), re.findall(r"--[a-z-]+", m.group(2))) for m in MANAGE.finditer(sample)]
    assert found == [("k8s_deploy", ["--rendr"]), ("migrate_from_sqlit", [])]


def test_every_alert_links_to_a_runbook_section_that_exists():
    runbooks = (DOCS / "runbooks.md").read_text()
    anchors = set(re.findall(r"\{#([a-z0-9-]+)\}", runbooks))
    for mode in ({}, {"postgres_mode": "external", "postgres_host": "db", "postgres_cidr": "10.0.0.0/16"}):
        for group in observability.alert_rules(load_config(mode, environ={})):
            for rule in group["rules"]:
                anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
                assert anchor in anchors, f"{rule['alert']} links to #{anchor}, which docs/runbooks.md lacks"


def test_training_modules_have_goals_exercises_expected_results_and_a_self_check():
    modules = sorted((DOCS / "training").glob("0*.md"))
    assert len(modules) == 6
    for module in modules:
        text = module.read_text()
        for part in ("**Goals**", "## Exercises", "xpected", "## Self-check"):
            assert part in text, f"{module.name} lacks {part}"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("mkdocs", path=str(ROOT / ".venv" / "bin")), reason="mkdocs not installed")
def test_mkdocs_builds_the_site_in_strict_mode(tmp_path):
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "mkdocs"), "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Browsable from files: pages are NAME.html and links name them (a folder link opens a listing, not a page).
    assert (tmp_path / "runbooks.html").exists() and not (tmp_path / "runbooks").exists()
    home = (tmp_path / "index.html").read_text()
    assert 'href="quickstart.html"' in home and 'href="training/index.html"' in home
    links = re.findall(r'href="([^"#:?]+)"', (tmp_path / "training" / "03-deploy-and-rollback.html").read_text())
    broken = [link for link in links if not (tmp_path / "training" / link).resolve().is_file()]
    assert broken == []
    # Every alert's default runbook link names a page of the built site and a section id on it.
    runbooks = (tmp_path / "runbooks.html").read_text()
    for group in observability.alert_rules(load_config({}, environ={})):
        for rule in group["rules"]:
            page, anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)
            assert page.rsplit("/", 1)[1] == "runbooks.html", rule["annotations"]["runbook_url"]
            assert f'id="{anchor}"' in runbooks, f"{rule['alert']}: no section #{anchor} in the built runbooks.html"


def _block_after(text, heading):
    section = text.split(heading, 1)[1]
    return re.search(r"```sh\n(.*?)\n```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_the_quick_start_runs_as_written_on_a_fresh_database(tmp_path, django_db_setup, django_db_blocker):
    """The step-by-step block, in a shell with only .venv on PATH (as activated), on databases of its own."""
    import psycopg
    from django.db import connection

    text = (DOCS / "quickstart.md").read_text()
    assert ". .venv/bin/activate" in _block_after(text, "## Running the commands of these pages")
    block = _block_after(text, "## Your own SQLite database, step by step")
    name = f"{connection.settings_dict['NAME']}_quickstart"  # test_h5_gw0_quickstart: nobody else's
    script = block.replace("build/", f"{tmp_path}/").replace("/mine", f"/{name}").replace(" mine\n", f" {name}\n")
    assert script.count(name) == 6 and "build/" not in script
    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    with django_db_blocker.unblock(), psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    try:
        env = {"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
        result = subprocess.run(
            ["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert re.search(r"Verified: \d+ tables identical", result.stdout)
        assert "--render: no cluster was asked, nothing was applied." in result.stdout
        assert (tmp_path / "k8s-mine" / "kustomization.yaml").exists()
        with psycopg.connect(admin.rsplit("/", 1)[0] + f"/{name}") as conn:
            assert conn.execute("SELECT count(*) FROM catalog_product").fetchone()[0] == 500
    finally:
        with django_db_blocker.unblock(), psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_page_runs_commands_the_one_documented_way():
    """`python manage.py …` with .venv activated (docs/quickstart.md says how, once); no other spelling."""
    # Another way to run a project command; `django-admin startproject` (a new project) and uv's
    # `--python .venv/bin/python` (which environment to install into) run none.
    other = re.compile(
        r"(?:\.venv/bin/python(?!\s+NAME)|\./manage\.py|django-admin(?!\s+startproject)|python3 manage\.py"
        r"|\$\(PY\) manage\.py)"
    )
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path, text in TEXTS.items() for m in other.finditer(text)]
    assert found == []
    assert ". .venv/bin/activate" in (DOCS / "quickstart.md").read_text()
    assert "quickstart.md#running-the-commands-of-these-pages" in (ROOT / "README.md").read_text()


KUBECTL_KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet",
                 "service": "Service", "svc": "Service", "cronjob": "CronJob", "pvc": "PersistentVolumeClaim",
                 "secret": "Secret", "configmap": "ConfigMap", "hpa": "HorizontalPodAutoscaler"}  # fmt: skip


def test_every_object_a_kubectl_command_of_the_docs_names_is_rendered():
    """`kubectl -n NS … kind/name` in the docs must name an object of the default render in that namespace (the
    runbook once sent the operator to statefulset/django-app-alertmanager, a Deployment named alertmanager)."""
    from deploy.conf import DeploySecrets
    from deploy.k8s.render import render_manifests

    manifests = render_manifests(load_config({}, environ={}), DeploySecrets("k", "p", "r", "s"))
    rendered = {(m["metadata"].get("namespace"), m["kind"], m["metadata"]["name"]) for m in manifests}
    # Objects the docs install from someone else's manifest, not the render: CloudNativePG's release manifest
    # (cnpg-1.30.0.yaml, docs/high-availability.md#installing-the-operator) makes this Deployment.
    rendered |= {("cnpg-system", "Deployment", "cnpg-controller-manager")}
    # The Barman Cloud plugin's release manifest (v0.14.0, docs/high-availability.md#the-wal-archive-and-base-backups-
    # barman-cloud-plugin) makes this one, in the operator's namespace.
    rendered |= {("cnpg-system", "Deployment", "barman-cloud")}
    # The cloudnative-pg mode's objects, and the Services its operator makes (the drill port-forwards the -rw one).
    from deploy.k8s import cnpg

    for m in render_manifests(
        load_config({"postgres_mode": "cloudnative-pg"}, environ={}), DeploySecrets("k", "p", "r", "s")
    ):
        made = cnpg.made_services(m) if cnpg.is_cluster(m) else []
        rendered |= {(o["metadata"].get("namespace"), o["kind"], o["metadata"]["name"]) for o in [m, *made]}
    kinds = "|".join(KUBECTL_KINDS)
    command = re.compile(rf"kubectl -n ([a-z0-9-]+)\b[^`\n]*?\b({kinds})/([a-z0-9-]+)\b(?![<-])")
    wrong = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path, text in TEXTS.items()
        for match in command.finditer(text)
        if (match.group(1), KUBECTL_KINDS[match.group(2)], match.group(3)) not in rendered
    ]
    assert wrong == [], "kubectl commands naming objects the stack does not render:\n" + "\n".join(wrong)


def test_the_rds_drill_pod_spec_is_written_as_valid_json_and_its_command_counts_both_databases(tmp_path):
    """high-availability.md's RDS drill, the file's writing and the container's command run as written.

    The query used to span three lines: written into rds-drill.json by the heredoc it made a JSON string with line
    breaks, which no JSON reader (kubectl's --overrides) accepts. Two databases of the local PostgreSQL stand for
    the live and the restored instance (TLS off, the superuser for the app's user).
    """
    import json

    import psycopg

    text = TEXTS[DOCS / "high-availability.md"]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "cat > rds-drill.json" in b)
    script = "\n".join(line for line in block.splitlines() if line.startswith("COUNT="))
    script += "\n" + block[block.index("cat > rds-drill.json <<EOF") : block.index("\nEOF\n") + 5]
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    live, drill = (f"rds_drill_{side}_{uuid4().hex[:8]}" for side in ("live", "restored"))
    try:
        for name, rows in ((live, 3), (drill, 2)):
            admin.execute(f"CREATE DATABASE {name}")
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True) as db:
                db.execute("CREATE TABLE catalog_order (id int); CREATE TABLE catalog_tag (id int)")
                db.execute(f"INSERT INTO catalog_order SELECT generate_series(1, {rows})")
        env = {"PATH": "/usr/bin:/bin", "LIVE": f"127.0.0.1 -d {live}", "DRILL": f"127.0.0.1 -d {drill}"}
        subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, check=True)
        spec = json.loads((tmp_path / "rds-drill.json").read_text())["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        command = spec["containers"][0]["command"]
        assert command[:2] == ["bash", "-c"] and "PGSSLMODE=require PGUSER=app PGDATABASE=app" in command[2]
        local = command[2].replace("PGSSLMODE=require PGUSER=app PGDATABASE=app", "PGSSLMODE=disable PGUSER=postgres")
        ran = subprocess.run(["bash", "-c", local], input="unused\n", capture_output=True, text=True)
        assert ran.returncode == 1 and ran.stdout.splitlines() == [
            "1c1",
            "< catalog_order|3",
            "---",
            "> catalog_order|2",
        ]
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{drill}", autocommit=True) as db:
            db.execute("INSERT INTO catalog_order VALUES (3)")
        ran = subprocess.run(["bash", "-c", local], input="unused\n", capture_output=True, text=True)
        assert ran.returncode == 0 and ran.stdout == "same counts\n", ran
    finally:
        for name in (live, drill):
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
