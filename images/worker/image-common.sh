# Shared by scripts/build-image.sh and scripts/build-image-offline.sh (sourced; expects ROOT).
IMAGE_NAME="${IMAGE_NAME:-modelops-dask}"
CONTEXT="${ROOT}/.cache/image-build/context"

say() { echo "build-image: $*" >&2; }
die() { echo "build-image: ERROR: $*" >&2; exit 1; }

require_engine() {
  command -v docker >/dev/null 2>&1 || die "no docker CLI on PATH (run scripts/docker-engine.sh start)"
  docker info >/dev/null 2>&1 || die "no Docker engine answers 'docker info' (run scripts/docker-engine.sh start)"
}

project_version() {
  python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "${ROOT}/pyproject.toml"
}

prepare_context() {
  bash "${ROOT}/images/worker/build-context.sh" "$CONTEXT"
}

# build_image BASE [extra docker build args...]   (BASE empty: the Dockerfile's default)
build_image() {
  local base="$1"; shift
  local version revision created
  version="$(project_version)"
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ "$revision" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="${revision}-dirty"
  fi
  # The commit time, not the build time: an unchanged tree gives an unchanged image.
  created="$(git -C "$ROOT" log -1 --format=%cI 2>/dev/null || echo unknown)"
  local args=(--build-arg "VERSION=${version}" --build-arg "REVISION=${revision}" --build-arg "CREATED=${created}")
  [ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=${base}")
  say "docker build ${IMAGE_NAME}:${version} (base ${base:-Dockerfile default}) $*"
  local log="${ROOT}/.cache/image-build/docker-build.log"
  # The classic builder is used when no buildx plugin exists (as here); both read this Dockerfile.
  if ! docker build "${args[@]}" "$@" -t "${IMAGE_NAME}:${version}" -t "${IMAGE_NAME}:dev" \
      -f "${CONTEXT}/Dockerfile" "$CONTEXT" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "docker build failed (log: ${log})"
  fi
  local size
  size="$(docker image inspect --format '{{.Size}}' "${IMAGE_NAME}:${version}")"
  say "built ${IMAGE_NAME}:${version} and ${IMAGE_NAME}:dev ($(awk -v s="$size" 'BEGIN{printf "%.0f MB", s/1e6}'), revision ${revision})"
}
