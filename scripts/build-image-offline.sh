#!/usr/bin/env bash
# Build the worker image with no network inside the build: a debootstrap-made base image
# (scripts/build-base-image.sh), a wheelhouse prepared on the host (images/worker/build-context.sh) and
# `docker build --network none`. Tags modelops-dask:<version> and modelops-dask:dev.
# Idempotent and quick on re-runs: the base image and the wheelhouse are reused, and Docker's layer
# cache holds every layer whose inputs did not change.
# Environment: IMAGE_NAME (modelops-dask), BASE_IMAGE (skip debootstrap and use this image).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=images/worker/image-common.sh
source "${ROOT}/images/worker/image-common.sh"

require_engine
started=$(date +%s)
base="${BASE_IMAGE:-$(bash "${ROOT}/scripts/build-base-image.sh" | tail -n 1)}"
[ -n "$base" ] || die "no base image"
prepare_context
build_image "$base" --network none
say "offline build took $(( $(date +%s) - started ))s"
