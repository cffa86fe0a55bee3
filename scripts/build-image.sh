#!/usr/bin/env bash
# Build the worker image on the official slim Python base (pulled from its registry; the runtime stage
# may apt-get install tini). The Python packages still come only from the host-built wheelhouse.
# Tags modelops-dask:<version> and modelops-dask:dev. Where no registry is reachable use
# scripts/build-image-offline.sh. Environment: IMAGE_NAME (modelops-dask), BASE_IMAGE (override).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=images/worker/image-common.sh
source "${ROOT}/images/worker/image-common.sh"

require_engine
started=$(date +%s)
prepare_context
if [ -n "${BASE_IMAGE:-}" ]; then
  build_image "$BASE_IMAGE"
else
  build_image ""  # the Dockerfile's default ARG BASE_IMAGE
fi
say "build took $(( $(date +%s) - started ))s"
