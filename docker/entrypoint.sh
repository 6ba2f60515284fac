#!/usr/bin/env bash
# Prepare what a read-only root filesystem cannot hold, then become the command.
set -o errexit -o pipefail -o nounset

mkdir -p "${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus-multiproc}"
exec "$@"
