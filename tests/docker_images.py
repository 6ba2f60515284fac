"""The Docker engine of the image tests, and the app's image built once per test run.

.ci/run starts an engine of its own (``DOCKER_HOST=unix:///var/run/docker-ci.sock``). The base image
(tests/docker/build-base-image.sh) is the same for every run and every clone, so it is kept between runs and
made under a machine-wide lock. The app's image is this clone's code: each run builds it under a tag of its own
(``django-app:test-<random>``, so two clones testing at once never run each other's code), once for all the
run's pytest-xdist workers (``made_once``), and removes the tag at the end of the run; the build's layers stay
in the engine's cache, so the next run's build only redoes the steps whose input changed.
"""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = "local/python:3.12-slim-bookworm"
TAG_FILE = "app-image-tag"  # in the run's shared temporary folder: the tag this run built


def docker_env():
    env = dict(os.environ)
    if "DOCKER_HOST" not in env and Path("/var/run/docker-ci.sock").exists():
        env["DOCKER_HOST"] = "unix:///var/run/docker-ci.sock"
    return env


def docker(*args, check=True, timeout=600):
    return subprocess.run(
        ["docker", *args], env=docker_env(), capture_output=True, text=True, check=check, timeout=timeout
    )


def engine_answers():
    return bool(shutil.which("docker")) and docker("info", check=False).returncode == 0


def build_base_image():
    subprocess.run(["bash", str(ROOT / "tests" / "docker" / "build-base-image.sh"), BASE], env=docker_env(), check=True)


def build_app_image(folder):
    """Build the app's image from the Dockerfile on the local base, under a new tag written into ``folder``."""
    build_base_image()
    tag = f"django-app:test-{uuid.uuid4().hex[:12]}"
    docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag, str(ROOT), timeout=1200)
    folder.mkdir()
    (folder / "tag").write_text(tag)


def app_image(tmp_path_factory):
    """This run's image of the app (built by the first worker that asks; the others wait for it)."""
    from tests.conftest import made_once

    if not engine_answers():
        pytest.skip("no Docker engine answers here: the image tests did not run (.ci/run starts one)")
    return (made_once(tmp_path_factory, TAG_FILE, build_app_image) / "tag").read_text()


def remove_run_image(basetemp):
    """Untag the image this run built (``--no-prune``: its layers stay as the next build's cache)."""
    made = Path(basetemp) / TAG_FILE / "tag"
    if made.exists():
        docker("rmi", "--no-prune", made.read_text(), check=False)
