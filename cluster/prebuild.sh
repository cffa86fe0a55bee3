#!/usr/bin/env bash
# Builds the cluster's pinned binaries (cluster/build.sh: Kubernetes, KEDA, ...) in the background while
# `make test` runs the tiers that need no cluster, so that on a fresh machine the long Go builds overlap
# with those tests instead of following them. The build runs at the lowest CPU priority (nice 19): the
# tests, which are timed by nothing but their own deadlines, keep the cores they need. With everything
# cached (a machine that built once) the build is done in seconds.
#
#   cluster/prebuild.sh start   start it (only where this machine can run the cluster); records its PID
#   cluster/prebuild.sh wait    wait for it (cluster/test-tier.sh does, before up.sh builds anything itself);
#                               fails with the build's log tail when the build failed
#   cluster/prebuild.sh stop    stop it by its recorded PID (make test does when a tier before fails)
# Nothing recorded (never started, already waited for): wait and stop do nothing.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"

DIR="$CLUSTER_CACHE/prebuild"
PID_FILE="$DIR/build.pid"   # "PID START_TIME": the start time (from /proc) tells a reused PID apart
RC_FILE="$DIR/build.rc"
LOG="$DIR/build.log"

started_at() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

running() {  # the recorded build, when its process is still the one recorded
  [ -f "$PID_FILE" ] || return 1
  local pid start
  read -r pid start <"$PID_FILE"
  [ -n "$pid" ] && [ "$(started_at "$pid")" = "$start" ]
}

case "${1:-}" in
  start)
    if running; then say "prebuild: a build is already running (PID $(cut -d' ' -f1 "$PID_FILE"))"; exit 0; fi
    if ! bash "$HERE/up.sh" --check >/dev/null 2>&1; then exit 0; fi  # test-tier.sh says why the cluster cannot run
    mkdir -p "$DIR" && rm -f "$RC_FILE"
    setsid nice -n 19 bash -c 'bash "$1" >"$2" 2>&1; echo $? >"$3"' prebuild "$HERE/build.sh" "$LOG" "$RC_FILE" \
      </dev/null >/dev/null 2>&1 &
    pid=$!
    echo "$pid $(started_at "$pid")" >"$PID_FILE"
    say "prebuild: building the cluster's binaries in the background (PID $pid, nice 19, log $LOG)"
    ;;
  wait)
    [ -f "$PID_FILE" ] || exit 0
    t0=$(date +%s)
    while running; do sleep 2; done
    rm -f "$PID_FILE"
    rc="$(cat "$RC_FILE" 2>/dev/null || echo missing)"
    if [ "$rc" != 0 ]; then
      tail -n 30 "$LOG" >&2
      die "the background build of the cluster's binaries failed (exit $rc; log $LOG)"
    fi
    say "prebuild: the cluster's binaries are built (waited $(( $(date +%s) - t0 ))s)"
    ;;
  stop)
    if running; then
      read -r pid _ <"$PID_FILE"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
      say "prebuild: stopped the background build (PID $pid)"
    fi
    rm -f "$PID_FILE"
    ;;
  *) die "usage: cluster/prebuild.sh start|wait|stop" ;;
esac
