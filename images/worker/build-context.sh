#!/usr/bin/env bash
# Prepare the worker image's build context (used by scripts/build-image.sh and build-image-offline.sh).
#
#   images/worker/build-context.sh CONTEXT_DIR
#
# 1. images/worker/requirements.lock pins every runtime dependency (direct and transitive). Its first
#    line records a hash of pyproject's dependencies; when they change, the lock is resolved again
#    (on the host, from PyPI) and the file is rewritten: commit it.
# 2. The wheelhouse (cp311, manylinux x86_64 wheels of exactly the lock) is downloaded on the host into
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

deps_hash="$("$PY" - "${ROOT}/pyproject.toml" <<'PYEOF'
import hashlib, json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
key = {"dependencies": sorted(project.get("dependencies", [])), "requires-python": project.get("requires-python")}
# the image installs the `worker` extra too (Dask's /metrics and dashboard)
key["worker"] = sorted(project.get("optional-dependencies", {}).get("worker", []))
print(hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16])
PYEOF
)"

if ! head -n 1 "$LOCK" 2>/dev/null | grep -q "pyproject-deps ${deps_hash}"; then
  say "pyproject dependencies changed (or no lock): resolving ${LOCK#"$ROOT"/}"
  report="$(mktemp)"
  "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$report" "${ROOT}[worker]" \
    || die "resolving the dependencies failed"
  "$PY" - "$report" "$deps_hash" "$LOCK" <<'PYEOF'
import json, sys
report, deps_hash, lock = sys.argv[1:]
rows = sorted(
    (i["metadata"]["name"].lower(), i["metadata"]["version"])
    for i in json.load(open(report))["install"]
    if i["metadata"]["name"].lower() != "modelops-dask"
)
with open(lock, "w") as f:
    f.write(f"# pyproject-deps {deps_hash}: resolved by images/worker/build-context.sh; commit this file\n")
    f.write("# Every runtime dependency of modelops-dask in the worker image, pinned.\n")
    f.writelines(f"{name}=={version}\n" for name, version in rows)
PYEOF
  rm -f "$report"
  say "wrote ${LOCK#"$ROOT"/} ($(grep -vc '^#' "$LOCK") packages); commit it"
fi

lock_hash="$(sha256sum "$LOCK" | cut -c1-16)"
WHEELHOUSE="${CACHE}/wheelhouse-${lock_hash}"
if [ ! -f "${WHEELHOUSE}/.complete" ]; then
  say "downloading the wheelhouse for cp${PY_TAG/./} manylinux x86_64 into ${WHEELHOUSE#"$ROOT"/}"
  rm -rf "$WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  # Binary wheels only, for the image's interpreter and glibc (bookworm: 2.36), whatever the host is.
  # pip does not expand manylinux_2_X tags to older glibc versions itself: name every one up to 2.36.
  platforms=(--platform any --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELHOUSE" \
    --python-version "$PY_TAG" --implementation cp --abi "cp${PY_TAG/./}" --abi abi3 --abi none \
    "${platforms[@]}" -r "$LOCK" \
    || die "pip download of the wheelhouse failed"
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
