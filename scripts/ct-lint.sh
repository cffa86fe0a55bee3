#!/usr/bin/env bash
# ct lint of the chart, with the chart-version increment checked against the main branch wherever
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
if git remote get-url "$REMOTE" >/dev/null 2>&1; then
  git fetch --quiet "$REMOTE" "$TARGET"
  exec ct lint --config ct.yaml --all --check-version-increment --remote "$REMOTE" --target-branch "$TARGET"
fi
echo "ct-lint: no git remote '$REMOTE': linting without the chart version increment check" >&2
exec ct lint --config ct.yaml --all
