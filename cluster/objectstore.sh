#!/usr/bin/env bash
# The local cluster's S3-compatible object store: versitygw (posix backend, data under $S3_DATA) on
# $S3_ENDPOINT, the pod bridge's address, so pods and this machine reach it at the same URL. An iptables
# chain ($S3_CHAIN) admits connections from the bridge and this machine (lo) only. Root credentials are
# generated at the first start into $S3_CREDENTIALS (0600, KEY=VALUE lines AWS_ACCESS_KEY_ID=... and
# AWS_SECRET_ACCESS_KEY=...) and reach versitygw through its environment, not its command line. The
# bucket $S3_BUCKET is made at every start if it is missing. Data survives a stop and a start.
#
#   cluster/objectstore.sh start    start it (what cluster/up.sh does: it calls objectstore_start)
#   cluster/objectstore.sh stop     stop it by its recorded PID; returns once its port refuses connections
#   cluster/objectstore.sh status   "running (pid N) on ADDR" (exit 0) or "stopped" (exit 3)
#
# Root; the cluster's bridge must exist (make cluster-up). Sourced by up.sh for objectstore_start.
# shellcheck shell=bash

OBJECTSTORE_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$OBJECTSTORE_HERE/lib.sh"

# The root credentials, made once (random, never printed). Written under umask 077, then renamed.
s3_credentials() {
  [ -s "$S3_CREDENTIALS" ] && return
  local access secret
  access="MOPS$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
  secret="$(head -c 30 /dev/urandom | base64 | tr '+/' '-_')"
  { [ ${#access} -eq 20 ] && [ ${#secret} -eq 40 ]; } || die "could not generate the object store's credentials"
  (umask 077 && printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$access" "$secret" >"$S3_CREDENTIALS.tmp") \
    || die "cannot write $S3_CREDENTIALS"
  mv -f "$S3_CREDENTIALS.tmp" "$S3_CREDENTIALS"
  step "generated the object store's root credentials in $S3_CREDENTIALS"
}

s3_request() { python3 "$OBJECTSTORE_HERE/s3-request.py" --credentials "$S3_CREDENTIALS" --region "$S3_REGION" "$@"; }

objectstore_start() {
  [ "$(id -u)" -eq 0 ] || die "the object store needs root (its iptables guard; it runs with the cluster's)"
  [ -x "$CLUSTER_BIN/versitygw" ] || die "$CLUSTER_BIN/versitygw is missing (bash cluster/build.sh versitygw)"
  ip -o -4 addr show dev "$CLUSTER_BRIDGE" 2>/dev/null | grep -qF " $CLUSTER_NODE_IP/" \
    || die "no bridge $CLUSTER_BRIDGE with $CLUSTER_NODE_IP, where the object store listens (make cluster-up)"
  mkdir -p "$S3_DATA"; chmod 700 "$S3_STATE"
  s3_credentials
  guard_bridge_port "$S3_CHAIN" "$S3_PORT"
  if ! pid_of versitygw >/dev/null; then
    port_refuses "$CLUSTER_NODE_IP" "$S3_PORT" \
      || die "something that is not the recorded versitygw already listens on $S3_ADDR"
    local key value access="" secret=""
    while IFS='=' read -r key value; do
      case "$key" in AWS_ACCESS_KEY_ID) access="$value" ;; AWS_SECRET_ACCESS_KEY) secret="$value" ;; esac
    done <"$S3_CREDENTIALS"
    { [ -n "$access" ] && [ -n "$secret" ]; } || die "$S3_CREDENTIALS lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY"
    # Environment, not flags: a command line is readable by every user in `ps`.
    ROOT_ACCESS_KEY="$access" ROOT_SECRET_KEY="$secret" \
      start versitygw "$CLUSTER_BIN/versitygw" --port "$S3_ADDR" --region "$S3_REGION" posix "$S3_DATA"
  else
    step "versitygw already running (pid $(pid_of versitygw))"
  fi
  wait_for "the object store on $S3_ENDPOINT" 30 versitygw curl -s -o /dev/null "$S3_ENDPOINT/"
  if ! s3_request HEAD "$S3_ENDPOINT/$S3_BUCKET" 2>/dev/null; then
    s3_request PUT "$S3_ENDPOINT/$S3_BUCKET" </dev/null >/dev/null || die "cannot create the bucket $S3_BUCKET on $S3_ENDPOINT"
    step "created bucket $S3_BUCKET"
  fi
}

objectstore_stop() {
  [ "$(id -u)" -eq 0 ] || die "stopping the object store needs root (it runs as root)"
  stop_component versitygw
  local i
  for ((i = 0; i < 40; i++)); do port_refuses "$CLUSTER_NODE_IP" "$S3_PORT" && return 0; sleep 0.25; done
  die "$S3_ADDR still accepts connections after versitygw stopped (not the recorded process?)"
}

objectstore_status() {
  local pid
  if pid="$(pid_of versitygw)"; then echo "running (pid $pid) on $S3_ENDPOINT"; return 0; fi
  echo "stopped"; return 3
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start) close_inherited_fds; objectstore_start ;;
    stop) objectstore_stop ;;
    status) objectstore_status ;;
    *) die "usage: $0 start|stop|status" ;;
  esac
fi
