#!/usr/bin/env bash
# The chart's parameters table (charts/modelops-dask/README.md, "Parameters") generated from the
# `# --` comments of values.yaml by helm-docs, which is pinned by scripts/helm-docs/go.mod + go.sum
# and built from the Go module proxy of this machine's `go env` (nothing here names a proxy).
#
#   scripts/helm-docs.sh           # rewrite charts/modelops-dask/README.md from README.md.gotmpl
#   scripts/helm-docs.sh --check   # exit 1 naming the file when the README is stale (make chart-lint)
#
# The binary is cached as .tools/bin/helm-docs beside the other chart tools and rebuilt only when the
# pins change (a stamp beside it records their hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/scripts/helm-docs"
BIN="$ROOT/.tools/bin"
CHART="${HELM_DOCS_CHART:-$ROOT/charts/modelops-dask}"   # another copy of the chart: tests
README="$CHART/README.md"
TEMPLATE="README.md.gotmpl"

log() { printf 'helm-docs: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  ""|--check) ;;
  *) die "unknown argument '$1' (usage: scripts/helm-docs.sh [--check])" ;;
esac

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "go not found (PATH or /usr/local/go/bin/go): it builds the pinned helm-docs"
  fi
}

build() {
  local stamp have
  stamp="$(cat "$PINS/go.mod" "$PINS/go.sum" | sha256sum | cut -c1-16)"
  have="$(cat "$BIN/.helm-docs.stamp" 2>/dev/null || true)"
  if [ -x "$BIN/helm-docs" ] && [ "$have" = "$stamp" ]; then
    return
  fi
  local go out
  go="$(find_go)"
  mkdir -p "$BIN"
  out="$(mktemp -d "$BIN/.helm-docs.XXXXXX")"
  log "building $(awk '$1 ~ /norwoodj\/helm-docs$/ {print $1, $2}' "$PINS/go.mod") with $("$go" version | cut -d' ' -f3)"
  # -mod=readonly: go.mod/go.sum are the pins, never rewritten by the build.
  (cd "$PINS" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false" \
     nice -n 5 "$go" build -ldflags "-s -w" -o "$out/helm-docs" github.com/norwoodj/helm-docs/cmd/helm-docs) \
    || { rm -rf "$out"; die "go build of helm-docs failed"; }
  mv -f "$out/helm-docs" "$BIN/helm-docs"
  rmdir "$out"
  echo "$stamp" >"$BIN/.helm-docs.stamp"
}

build
args=(--chart-search-root "$CHART" --template-files "$TEMPLATE" --sort-values-order file)
if [ "${1:-}" = "--check" ]; then
  fresh="$(mktemp)"
  trap 'rm -f "$fresh"' EXIT
  "$BIN/helm-docs" "${args[@]}" --dry-run --log-level error >"$fresh"
  if ! diff -u "$README" "$fresh" >&2; then
    die "${README#"$ROOT"/} is stale (values.yaml or $TEMPLATE changed): run scripts/helm-docs.sh and commit it"
  fi
  log "${README#"$ROOT"/} is up to date"
else
  "$BIN/helm-docs" "${args[@]}" --log-level warning
  log "wrote ${README#"$ROOT"/}"
fi
