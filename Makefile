# Everything runs from the project's virtual environment, made on first use
# from the hashed locks in requirements/ with Python 3.12: uv (pinned in
# requirements/bootstrap.lock, installed by pip into .venv-bootstrap) creates
# and fills it, or pip where uv cannot be had. requirements/envs.py does both.
PYTHON312 ?= $(firstword $(wildcard /root/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .venv-tools
ENVS := $(PYTHON312) requirements/envs.py
LOCKS := requirements/bootstrap.lock requirements/dev.lock requirements/tools.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCKS) requirements/*.txt | md5sum | cut -c1-12)
# INSTALLER=pip forces the fallback; INSTALLER=uv fails rather than fall back.
INSTALLER ?= auto
DEMO_DB := build/demo.sqlite3
DEMO_ROWS ?= 20000
DEMO_PG_ADMIN_URL ?= postgres://postgres@127.0.0.1:5432/postgres
DEMO_PG_DB ?= demo
DEMO_PG_URL ?= postgres://postgres@127.0.0.1:5432/$(DEMO_PG_DB)

.PHONY: venv lock demo serve test test-fast lint format bench rehearse docs docs-serve sandbox clean

venv: $(STAMP)

# The requirements files are in the stamp too: a pin changed without `make lock` stops here, naming the package.
$(STAMP): $(LOCKS) requirements/envs.py
	$(ENVS) sync --installer $(INSTALLER) $(VENV)=requirements/dev.lock $(TOOLS)=requirements/tools.lock
	rm -f $(VENV)/.installed-* && touch $@

## lock: compile requirements/*.txt into the hashed requirements/*.lock (UPGRADE=1: newest versions allowed).
lock:
	$(ENVS) lock $(if $(UPGRADE),--upgrade)

## demo: the main job on this machine; ends by itself.
demo: venv
	mkdir -p build
	rm -f $(DEMO_DB)
	DEBUG=true DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DB) $(PY) manage.py migrate --verbosity 0
	DEBUG=true DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DB) $(PY) manage.py seed_demo --rows $(DEMO_ROWS)
	@echo "Demo SQLite database: $(DEMO_DB). Copying it into PostgreSQL ($(DEMO_PG_URL)) and proving the copy:"
	psql "$(DEMO_PG_ADMIN_URL)" -qtc "SELECT 1 FROM pg_database WHERE datname = '$(DEMO_PG_DB)'" | grep -q 1 \
		|| psql "$(DEMO_PG_ADMIN_URL)" -qc "CREATE DATABASE \"$(DEMO_PG_DB)\""
	DEBUG=true DATABASE_URL=$(DEMO_PG_URL) $(PY) manage.py migrate --verbosity 0
	DEBUG=true DATABASE_URL=$(DEMO_PG_URL) $(PY) manage.py migrate_from_sqlite --source $(DEMO_DB) --truncate --no-input --verify
	DEBUG=true $(PY) manage.py k8s_deploy --render --output build/k8s
	@echo "Serve the copy with:  DEBUG=true DATABASE_URL=$(DEMO_PG_URL) make serve"

## serve: gunicorn with the repo's configuration on 127.0.0.1:$${PORT:-8000}.
serve: venv
	$(PY) manage.py collectstatic --noinput --verbosity 0
	GUNICORN_BIND=127.0.0.1:$${PORT:-8000} $(VENV)/bin/gunicorn -c project/gunicorn.conf.py project.wsgi

## test: the whole suite on $(PYTEST_WORKERS) pytest-xdist workers, each with its own PostgreSQL test
## database (test_<name>_gw<N>) and Redis database (REDIS_URL's number + N); prints its wall time.
## One worker more than the cores: many tests wait (for gunicorn, Docker, PostgreSQL) and a third worker fills the
## waits, while an idle run keeps both cores 98% busy, so a fourth only adds contention (idle, 1,008 tests: 2 workers
## 332 s, 3 workers 293 s, 4 workers 316 to 320 s). Tests marked slow start first (tests/conftest.py).
PYTEST_WORKERS ?= 3
TIMED = start=$$(date +%s); $(1); status=$$?; \
	echo "make $@: $$(( $$(date +%s) - start )) s of wall time on $(PYTEST_WORKERS) workers"; exit $$status
test: venv
	@$(call TIMED,PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=25)

## test-fast: the edit loop's subset, under a minute: rendering, wiring, validation, the commands without a
## cluster, settings, the SQLite copy, health, the docs; only these files (a new file is not in it until named
## here), and not their tests marked slow (each of those takes more than a few seconds) nor docker.
TEST_FAST_FILES := test_k8s_render test_k8s_wiring test_k8s_validate test_k8s_deploy_command test_policy \
	test_settings test_hostile_settings test_migrate_from_sqlite test_health test_docs test_grafana \
	test_staff_access test_catalog test_maintenance test_router test_suite
test-fast: venv
	@$(call TIMED,PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup \
		-m "not slow and not docker" $(foreach name,$(TEST_FAST_FILES),tests/$(name).py))

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## docs: regenerate the reference pages from the code, then build the site strictly into build/site.
docs: venv
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) manage.py deploy_docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

## docs-serve: the site with live reload on http://127.0.0.1:$${DOCS_PORT:-8001}/ (this machine only).
docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:$${DOCS_PORT:-8001}

## sandbox: the training course's cluster, a fake Kubernetes API server on 127.0.0.1 (Ctrl-C stops it).
sandbox: venv
	$(PY) -m tests.fake_apiserver --dir build/sandbox

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v pgloader >/dev/null || (apt-get update -qq && apt-get install -y -qq pgloader)
	$(PY) bench/serving.py
	$(PY) bench/migration.py
	$(PY) bench/image_size.py
	$(PY) bench/setup_time.py --cold
	$(PY) bench/rehearse.py --rows 1000000
	$(PY) bench/rehearse.py --rows 10000000

# The cut-over rehearsed on this machine (bench/rehearse.py): ROWS=100000 by default.
ROWS ?= 100000
rehearse: venv
	$(PY) bench/rehearse.py --rows $(ROWS)

clean:
	rm -rf build staticfiles .pytest_cache .ruff_cache
