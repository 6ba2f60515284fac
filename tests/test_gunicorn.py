"""The app under real gunicorn processes on 127.0.0.1."""

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.forkserver import run_python

pytestmark = pytest.mark.django_db(transaction=True)
REQUESTS_BY_VIEW = "django_http_requests_total_by_view_transport_method_total"


def _sample_sum(metrics_text, family_name, **labels):
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == family_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_sum_requests_over_all_workers(gunicorn_factory):
    requests = 60
    with gunicorn_factory(workers=3) as server:
        _, _, before = server.get("/metrics")
        start = _sample_sum(before.decode(), REQUESTS_BY_VIEW, view="catalog:home")
        for _ in range(requests):
            status, _headers, _ = server.get("/", {"Connection": "close"})
            assert status == 200
        status, _, body = server.get("/metrics")
        assert status == 200
        end = _sample_sum(body.decode(), REQUESTS_BY_VIEW, view="catalog:home")
        assert end - start == requests
        # Several workers really served: each writes its own counter file.
        pids = {line for line in server.log_lines() if '"Booting worker' in line}
        assert len(pids) == 3


def test_readiness_fails_when_the_database_is_unreachable(gunicorn_factory):
    with gunicorn_factory(DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere") as server:
        status, _, body = server.get("/readyz", {"Host": "10.0.0.7"})
        assert status == 503
        assert json.loads(body) == {"status": "fail", "checks": {"database": "unavailable", "cache": "ok"}}
        status, _, _ = server.get("/healthz", {"Host": "10.0.0.7"})
        assert status == 200


def test_probe_hosts_and_page_hosts(gunicorn_factory):
    with gunicorn_factory() as server:
        for path in ("/healthz", "/readyz"):
            assert server.get(path, {"Host": "10.0.0.7"})[0] == 200
        assert server.get("/", {"Host": "10.0.0.7"})[0] == 400
        assert server.get("/", {"Host": "app.example.com"})[0] == 200


def test_an_error_is_one_json_line_with_its_traceback(gunicorn_factory):
    with gunicorn_factory(CATALOG_ENABLE_BOOM="true") as server:
        status, _, _ = server.get("/boom/", {"X-Request-ID": "req-boom-1"})
        assert status == 500
    records = [json.loads(line) for line in server.log_lines()]
    with_traceback = [r for r in records if "Traceback" in json.dumps(r)]
    assert len(with_traceback) == 1
    record = with_traceback[0]
    assert record["level"] == "ERROR"
    assert record["logger"] == "django.request"
    assert record["request_id"] == "req-boom-1"
    assert "RuntimeError: boom" in record["exc_info"]
    assert {"timestamp", "message"} <= record.keys()
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert any(r["http"]["path"] == "/boom/" and r["http"]["status"] == 500 for r in access)


def test_pages_render_with_their_stylesheet(gunicorn_factory):
    with gunicorn_factory() as server:
        status, _, body = server.get("/products/")
        assert status == 200
        html = body.decode()
        start = html.index('href="/static/catalog/site.')
        href = html[start + len('href="') : html.index('"', start + len('href="'))]
        assert href != "/static/catalog/site.css"  # hashed name from the manifest
        status, headers, css = server.get(href)
        assert status == 200
        assert headers["Content-Type"].startswith("text/css")
        assert b"table.products" in css


def test_no_control_socket_in_the_home_folder_unless_asked_for(gunicorn_factory, tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    with gunicorn_factory(HOME=home, XDG_RUNTIME_DIR=runtime) as server:
        assert server.get("/healthz")[0] == 200
        assert list(home.iterdir()) == [] and list(runtime.iterdir()) == []
    socket_path = tmp_path / "gunicorn.ctl"
    with gunicorn_factory(HOME=home, XDG_RUNTIME_DIR=runtime, GUNICORN_CONTROL_SOCKET=socket_path):
        deadline = time.monotonic() + 10
        while not socket_path.is_socket() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket_path.is_socket()
        assert list(home.iterdir()) == []


def test_starting_removes_only_old_metric_files_from_the_metrics_folder(gunicorn_factory, tmp_path):
    """The master empties PROMETHEUS_MULTIPROC_DIR of earlier runs' metric files, and of nothing else."""
    metrics = tmp_path / "shared"
    (metrics / "keep-dir").mkdir(parents=True)
    (metrics / "keep-dir" / "notes.txt").write_text("mine")
    (metrics / "precious.txt").write_text("mine")
    (metrics / "counter_999999.db").write_bytes(b"stale")
    with gunicorn_factory(PROMETHEUS_MULTIPROC_DIR=metrics) as server:
        assert server.get("/healthz")[0] == 200
        assert (metrics / "precious.txt").read_text() == "mine"
        assert (metrics / "keep-dir" / "notes.txt").read_text() == "mine"
        assert not (metrics / "counter_999999.db").exists()


def test_an_empty_metrics_folder_setting_does_not_empty_the_current_folder(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR= (empty) meant Path(""), the current folder: `make serve` emptied the clone."""
    cwd = tmp_path / "clone"
    (cwd / ".git").mkdir(parents=True)
    (cwd / "manage.py").write_text("# mine")
    script = (
        "import os, runpy; ns = runpy.run_path(os.environ['CONF']); ns['on_starting'](None); "
        "print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"
    )
    env = dict(
        os.environ, PROMETHEUS_MULTIPROC_DIR="", PYTHONPATH=str(ROOT), CONF=str(ROOT / "project/gunicorn.conf.py")
    )
    done = run_python(["-c", script], env=env, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in cwd.iterdir()) == [".git", "manage.py"]
    used = Path(done.stdout.strip())
    assert used.is_absolute() and used.is_dir() and used.name.startswith("prometheus-multiproc-")
    used.rmdir()
