#!/usr/bin/env bash
# The chart's README parameters table checked against values.yaml (scripts/helm-docs.sh --check),
# then ct lint of the chart, with the chart-version increment checked against the main branch wherever
# the clone has a git remote to compare with (CI, a developer clone); a clone without a remote (an
# exported tarball, this machine's work tree) lints without that check and says so.
#
#   scripts/ct-lint.sh            # PATH/HELM_PLUGINS as `make chart-lint` sets them
#   CT_REMOTE=upstream CT_TARGET_BRANCH=main scripts/ct-lint.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REMOTE="${CT_REMOTE:-origin}"
TARGET="${CT_TARGET_BRANCH:-main}"
cd "$ROOT"
# The parameters table of charts/modelops-dask/README.md must match values.yaml (helm-docs).
bash "$ROOT/scripts/helm-docs.sh" --check
if git remote get-url "$REMOTE" >/dev/null 2>&1; then
  git fetch --quiet "$REMOTE" "$TARGET"
  exec ct lint --config ct.yaml --all --check-version-increment --remote "$REMOTE" --target-branch "$TARGET"
fi
echo "ct-lint: no git remote '$REMOTE': linting without the chart version increment check" >&2
exec ct lint --config ct.yaml --all
