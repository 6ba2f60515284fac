"""The test suite's own machinery (tests/conftest.py): what keeps `make test` short must not change what runs."""

import os
import sys
import threading
import time

import pytest

from tests.conftest import _database_rank, made_once


def test_made_once_makes_once_for_callers_that_ask_together(tmp_path_factory):
    made, paths, errors = [], [], []

    def make(path):
        made.append(path)
        time.sleep(0.05)  # long enough for the other callers to be waiting on the lock
        path.write_text("seeded")

    def ask():
        try:
            paths.append(made_once(tmp_path_factory, "made-once-probe", make))
        except Exception as exc:
            errors.append(exc)

    tmp_path_factory.getbasetemp()  # made on first use, and not thread-safe: made here, as a fixture would have
    callers = [threading.Thread(target=ask) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert errors == [] and len(made) == 1
    assert len(set(paths)) == 1 and paths[0].read_text() == "seeded"
    assert not made[0].exists(), "made under a temporary name, then renamed: a caller never sees half of it"


def test_made_once_leaves_nothing_half_made_when_making_fails(tmp_path_factory):
    def fail(path):
        path.write_text("half")
        raise RuntimeError("seed failed")

    with pytest.raises(RuntimeError, match="seed failed"):
        made_once(tmp_path_factory, "made-once-failing", fail)
    # The next caller makes it again, from nothing.
    path = made_once(tmp_path_factory, "made-once-failing", lambda p: p.write_text("whole"))
    assert path.read_text() == "whole"


def test_slow_tests_come_first_and_flushing_tests_after_rolled_back_ones(request):
    """This run's own collection, as the hook ordered it (every xdist worker holds the whole collection)."""
    order = []
    for item in request.session.items:
        rank, slow = _database_rank(item), item.get_closest_marker("slow") is not None
        docker = item.get_closest_marker("docker") is not None
        # Slow ones without a database, the Docker ones first; rolled back (as pytest-django orders them); flushed;
        # the rest.
        order.append((0, not docker) if rank == 2 and slow else (3, False) if rank == 2 else (1 + rank, not slow))
    assert order == sorted(order)


def test_the_tests_processes_reuse_bytecode_compiled_once():
    """The virtualenv's packages are compiled at install, and the processes the tests start may write the rest."""
    import importlib.util

    import django.db.models.query
    import kubernetes.client.api_client

    assert "PYTHONDONTWRITEBYTECODE" not in os.environ and not sys.dont_write_bytecode
    assert sys.pycache_prefix is None, "bytecode is read where `make venv` compiled it"
    for module in (django.db.models.query, kubernetes.client.api_client):
        assert os.path.isfile(importlib.util.cache_from_source(module.__file__)), module.__name__


def test_xdist_groups_keep_their_tests_on_one_worker(request):
    """Under ``--dist loadgroup`` a grouped test's id ends in ``@<group>``: what the scheduler groups by."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run with --dist loadgroup")
    https = [item for item in request.session.items if item.path.name == "test_https_exposure.py"]
    assert all(item.get_closest_marker("xdist_group") for item in https), "the HTTPS tests are grouped"
    grouped = [item for item in request.session.items if item.get_closest_marker("xdist_group")]
    if not grouped:  # make test-fast, or one file
        pytest.skip("no grouped test in this selection")
    for item in grouped:
        assert item.nodeid.endswith("@" + item.get_closest_marker("xdist_group").args[0]), item.nodeid
