#!/usr/bin/env bash
# Build the worker image on the official slim Python base (pulled from its registry; the runtime stage
# may apt-get install tini). The Python packages still come only from the host-built wheelhouse.
# Tags modelops-dask:<version> and modelops-dask:dev. Where no registry is reachable use
# scripts/build-image-offline.sh. Environment: IMAGE_NAME (modelops-dask), BASE_IMAGE (override),
# BUILD_NETWORK (docker build --network, e.g. host on an engine started without a bridge).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=images/worker/image-common.sh
source "${ROOT}/images/worker/image-common.sh"

require_engine
started=$(date +%s)
prepare_context
net=()
[ -n "${BUILD_NETWORK:-}" ] && net=(--network "$BUILD_NETWORK")
# BASE_IMAGE empty: the Dockerfile's default ARG BASE_IMAGE.
build_image "${BASE_IMAGE:-}" "${net[@]}"
say "build took $(( $(date +%s) - started ))s"
