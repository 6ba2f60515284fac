# The app's image: the locked runtime installed by uv in a builder stage, a slim
# runtime without compilers or installers, a non-root user, gunicorn started
# with exec so signals reach it.
#
#   docker build -t django-app:1.0.0 .
#   docker build --build-arg EXTRA_CA_CERT="$(cat proxy-ca.crt)" ...   # behind a TLS-intercepting proxy
# checkov:skip=CKV_DOCKER_7: BASE_IMAGE defaults to the fixed tag python:3.12-slim-bookworm; the ARG lets the tests use a locally built equivalent
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG EXTRA_CA_CERT=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# An extra CA for the build only (off by default); it never reaches the runtime stage.
RUN if [ -n "$EXTRA_CA_CERT" ]; then \
        printf '%s\n' "$EXTRA_CA_CERT" > /usr/local/share/ca-certificates/build-extra.crt \
        && update-ca-certificates >/dev/null; \
    fi
COPY requirements/bootstrap.lock requirements/base.lock /tmp/requirements/
# The runtime's lock, the one the development environment's dev.lock holds too, installed by
# uv (itself from its hashed lock) with every hash required: the image runs the same files.
# A virtual environment without pip; the runtime copies only the installed packages
# (no wheels, no caches, no .pyc).
ENV UV_NO_CACHE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt python -m pip install --no-cache-dir --no-deps --require-hashes \
        --target /opt/uv -r /tmp/requirements/bootstrap.lock \
    && /opt/uv/bin/uv venv --quiet --no-config --python /usr/local/bin/python3.12 /opt/venv \
    && /opt/uv/bin/uv pip sync --quiet --no-config --require-hashes --python /opt/venv/bin/python \
        /tmp/requirements/base.lock \
    # The Kubernetes client's asyncio twin (41 MB) is never imported here.
    && rm -rf /opt/venv/lib/python3.12/site-packages/kubernetes/aio

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    STATIC_ROOT=/app/staticfiles \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    GUNICORN_BIND=0.0.0.0:8000 \
    GUNICORN_WORKER_TMP_DIR=/tmp
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY . .
# Hashed static files in the image: the app serves them (WhiteNoise) when no volume is mounted.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=sqlite:////tmp/unused.sqlite3 REDIS_URL=redis://127.0.0.1:6379/0 \
    python manage.py collectstatic --noinput --verbosity 0 \
    && chmod 0755 /app/docker/entrypoint.sh
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["gunicorn", "--config", "project/gunicorn.conf.py", "project.wsgi"]
