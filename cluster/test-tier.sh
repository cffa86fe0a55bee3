#!/usr/bin/env bash
# The real-cluster tier of `make test`: brings the local cluster up (unless one already runs), publishes
# this clone's image and chart to its registry, runs tests/cluster and tests/registry (bundles in that
# registry), and brings down what it brought up,
# also when tests fail. On a machine that cannot run a cluster (not root, no cgroups) the tests skip
# with that reason; with MODELOPS_CLUSTER_REQUIRED=1 (as .ci/run sets) that is a failure instead.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"

required() { case "${MODELOPS_CLUSTER_REQUIRED:-}" in 1|true|yes) return 0 ;; *) return 1 ;; esac; }

started_here=0
bring_down() { [ "$started_here" = 1 ] && bash "$HERE/down.sh" && bash "$ROOT/scripts/docker-engine.sh" stop; }
trap bring_down EXIT

export MODELOPS_CLUSTER_UNAVAILABLE=""
t0=$(date +%s)
bash "$HERE/prebuild.sh" wait || exit 1  # make test's background build of the binaries, if one runs
if ! why="$(bash "$HERE/up.sh" --check 2>&1)"; then
  MODELOPS_CLUSTER_UNAVAILABLE="this machine cannot run the local cluster: ${why#cluster: ERROR: }"
else
  pid_of kube-apiserver >/dev/null || started_here=1
  if ! bash "$HERE/up.sh" || ! bash "$HERE/publish.sh"; then
    say "the local cluster did not come up (logs: $CLUSTER_LOGS)"
    exit 1
  fi
fi
say "cluster tier set-up took $(( $(date +%s) - t0 ))s"
if [ -n "$MODELOPS_CLUSTER_UNAVAILABLE" ]; then
  say "$MODELOPS_CLUSTER_UNAVAILABLE"
  required && { say "MODELOPS_CLUSTER_REQUIRED=1: failing"; exit 1; }
fi
"$ROOT/.venv/bin/python" -m pytest "$ROOT/tests/cluster" "$ROOT/tests/registry" -rs
