#!/usr/bin/env bash
# Prepare the worker image's build context (used by scripts/build-image.sh and build-image-offline.sh).
#
#   images/worker/build-context.sh CONTEXT_DIR
#
# 1. images/worker/requirements.lock pins every runtime dependency (direct and transitive) with the
#    sha256 of its wheel (format and checks: images/worker/lockfile.py). Its first line records a hash
#    of pyproject's dependency declarations; when they change (or hashes are missing), the lock is
#    resolved again on the host, from the index the machine's pip configuration names, the wheels
#    are downloaded and hashed, and the file is rewritten: commit it.
# 2. The wheelhouse (cp311, manylinux x86_64 wheels of exactly the lock, hashes verified) is downloaded into
#    .cache/image-build/wheelhouse-<lock hash>/ and reused until the lock changes.
# 3. The modelops-dask wheel is built from the work tree (SOURCE_DATE_EPOCH = last commit time, so an
#    unchanged tree gives identical bytes and Docker's layer cache holds).
# 4. CONTEXT_DIR gets wheels/, dist/, examples/ and the Dockerfile, nothing else (no .git, no .venv).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CONTEXT="${1:?usage: build-context.sh CONTEXT_DIR}"
LOCK="${ROOT}/images/worker/requirements.lock"
CACHE="${ROOT}/.cache/image-build"
PY_TAG="${IMAGE_PYTHON_VERSION:-3.11}"

say() { echo "build-context: $*" >&2; }
die() { echo "build-context: ERROR: $*" >&2; exit 1; }

if [ -x "${ROOT}/.venv/bin/python" ]; then PY="${ROOT}/.venv/bin/python"; else PY="$(command -v python3)"; fi
"$PY" -m pip --version >/dev/null 2>&1 || die "no pip for ${PY}"

LOCKTOOL="${ROOT}/images/worker/lockfile.py"
"$PY" -c 'import packaging' 2>/dev/null || die "${PY} lacks the 'packaging' module (pip install packaging)"

# Wheels for the image's interpreter and glibc (bookworm: 2.36), whatever the host is. pip does not
# expand manylinux_2_X tags to older glibc versions itself: name every one up to 2.36. The index is
# whatever the machine's pip configuration names (pip.conf, PIP_INDEX_URL, PIP_FIND_LINKS): nothing here.
platforms=(--platform any --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
download() {  # download DEST pip-args...: the image's binary wheels, exactly what is named, no deps
  local dest="$1"; shift
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$dest" \
    --python-version "$PY_TAG" --implementation cp --abi "cp${PY_TAG/./}" --abi abi3 --abi none \
    "${platforms[@]}" "$@"
}

if ! why="$("$PY" "$LOCKTOOL" check "${ROOT}/pyproject.toml" "$LOCK" 2>&1)"; then
  say "${why#lockfile.py: }"
  say "resolving ${LOCK#"$ROOT"/} again (pip index from this machine's pip configuration)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # Keep today's pins where pyproject still allows them (LOCK_UPGRADE=1 resolves everything afresh):
  # a change to one dependency should not silently move all the others.
  resolved=0
  if [ -f "$LOCK" ] && [ "${LOCK_UPGRADE:-0}" != 1 ]; then
    grep -E '^[A-Za-z0-9]' "$LOCK" | sed 's/[ \\].*//' >"${work}/previous.txt" || true
    if "$PY" -m pip install --quiet --dry-run --ignore-installed --report "${work}/report.json" \
        -c "${work}/previous.txt" "${ROOT}[worker]" 2>"${work}/constrained.log"; then
      resolved=1
    else
      say "today's pins no longer fit pyproject: resolving without them"
    fi
  fi
  if [ "$resolved" = 0 ]; then
    "$PY" -m pip install --quiet --dry-run --ignore-installed --report "${work}/report.json" "${ROOT}[worker]" \
      || die "resolving the dependencies failed"
  fi
  "$PY" "$LOCKTOOL" pins "${work}/report.json" >"${work}/pins.txt"
  mkdir -p "${work}/wheels"
  download "${work}/wheels" -r "${work}/pins.txt" || die "pip download of the resolved wheels failed"
  # The hashes come from the wheels just downloaded for the image's platform (not the host's).
  count="$("$PY" "$LOCKTOOL" write "${ROOT}/pyproject.toml" "${work}/wheels" "$LOCK")" || die "writing the lock failed"
  "$PY" "$LOCKTOOL" check "${ROOT}/pyproject.toml" "$LOCK" >/dev/null || die "the lock just written fails its own check"
  say "wrote ${LOCK#"$ROOT"/} (${count} packages, sha256 each); commit it"
fi

lock_hash="$(sha256sum "$LOCK" | cut -c1-16)"
WHEELHOUSE="${CACHE}/wheelhouse-${lock_hash}"
if [ ! -f "${WHEELHOUSE}/.complete" ]; then
  say "downloading the wheelhouse for cp${PY_TAG/./} manylinux x86_64 into ${WHEELHOUSE#"$ROOT"/}"
  rm -rf "$WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  # --require-hashes: a wheel whose bytes differ from the lock's sha256 stops the build here.
  download "$WHEELHOUSE" --require-hashes -r "$LOCK" || die "pip download of the wheelhouse failed"
  cp "$LOCK" "${WHEELHOUSE}/requirements.lock"
  touch "${WHEELHOUSE}/.complete"
  # Older wheelhouses are build outputs of earlier locks.
  find "$CACHE" -maxdepth 1 -name 'wheelhouse-*' ! -path "$WHEELHOUSE" -exec rm -rf {} +
else
  say "reusing wheelhouse ${WHEELHOUSE#"$ROOT"/}"
fi

DIST="${CACHE}/dist"
rm -rf "$DIST"
mkdir -p "$DIST"
SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 315532800)"
export SOURCE_DATE_EPOCH
"$PY" -m pip wheel --quiet --no-deps -w "$DIST" "$ROOT" >"${CACHE}/wheel.log" 2>&1 \
  || { cat "${CACHE}/wheel.log" >&2; die "building the modelops-dask wheel failed"; }
rm -rf "${ROOT}/build"  # setuptools' scratch dir in the work tree

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT"
cp -al "$WHEELHOUSE" "${CONTEXT}/wheels" 2>/dev/null || cp -a "$WHEELHOUSE" "${CONTEXT}/wheels"
rm -f "${CONTEXT}/wheels/.complete"
cp -a "$DIST" "${CONTEXT}/dist"
mkdir -p "${CONTEXT}/examples"
tar -C "${ROOT}/examples" --exclude=__pycache__ --exclude='*.pyc' -cf - . | tar -C "${CONTEXT}/examples" -xf -
cp "${ROOT}/images/worker/Dockerfile" "${CONTEXT}/Dockerfile"
say "context ready: $(ls "${CONTEXT}/wheels" | grep -c '\.whl$') wheels + $(ls "${CONTEXT}/dist")"
