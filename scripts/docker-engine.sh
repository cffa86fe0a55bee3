#!/usr/bin/env bash
# Start a local Docker engine for the container tests and image builds (idempotent).
#
#   scripts/docker-engine.sh start    install docker.io if dockerd is missing, start dockerd, wait for it
#   scripts/docker-engine.sh status   exit 0 when `docker info` answers
#   scripts/docker-engine.sh stop     stop the dockerd this script started (pid file)
#
# The engine runs with --bridge=none --iptables=false: containers use --network host only, so all
# traffic stays on 127.0.0.1 (see shared/DESIGN.md, machine facts). The storage driver is overlay2
# when the kernel and the filesystem under the data root allow it, else vfs (slow, but works anywhere).
# Environment: DOCKERD_LOG (log file), DOCKERD_STORAGE_DRIVER (force a driver),
# DOCKERD_WAIT_SECONDS (default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_DIR="${ROOT}/.cache/docker-engine"
LOG="${DOCKERD_LOG:-${STATE_DIR}/dockerd.log}"
PIDFILE="${STATE_DIR}/dockerd.pid"
WAIT="${DOCKERD_WAIT_SECONDS:-60}"

die() { echo "docker-engine: ERROR: $*" >&2; exit 1; }
say() { echo "docker-engine: $*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

# A live (not zombie) dockerd with this pid.
dockerd_alive() {
  local pid="$1"
  [ -n "$pid" ] && [ -r "/proc/${pid}/stat" ] || return 1
  [ "$(cat "/proc/${pid}/comm" 2>/dev/null)" = dockerd ] || return 1
  local state
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/${pid}/stat" 2>/dev/null)"
  [ "$state" != Z ] && [ "$state" != X ]
}

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "dockerd is not installed and installing docker.io needs root (run as root or install docker.io)"
  command -v apt-get >/dev/null 2>&1 || die "dockerd is not installed and there is no apt-get to install docker.io"
  say "installing docker.io with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  # docker.io only: the daemon, containerd and runc. No recommends (no cgroupfs-mount, no git/xz extras).
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null || die "apt-get install docker.io failed"
  command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is not on PATH"
}

install_client() {
  command -v docker >/dev/null 2>&1 || die "no docker CLI on PATH (docker.io should have installed /usr/bin/docker)"
}

# overlay2 needs the overlay filesystem and a data root on a filesystem that supports it (not overlay itself).
pick_storage_driver() {
  if [ -n "${DOCKERD_STORAGE_DRIVER:-}" ]; then
    echo "${DOCKERD_STORAGE_DRIVER}"; return
  fi
  local data_root=/var/lib/docker
  mkdir -p "$data_root"
  local fstype
  fstype="$(stat -f -c %T "$data_root" 2>/dev/null || echo unknown)"
  if grep -qw overlay /proc/filesystems && [ "$fstype" != "overlayfs" ]; then
    # Prove it: mount a tiny overlay under the data root.
    local t
    t="$(mktemp -d "${data_root}/.overlay-probe.XXXXXX")"
    mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
    if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
      umount "$t/m"; rm -rf "$t"; echo overlay2; return
    fi
    rm -rf "$t"
  fi
  echo vfs
}

start() {
  if engine_up; then
    say "engine already running ($(docker info --format '{{.ServerVersion}} {{.Driver}}' 2>/dev/null))"
    return 0
  fi
  if docker info 2>&1 | grep -qi "permission denied"; then
    die "a Docker engine runs but this user may not use its socket (join the docker group, or run as root)"
  fi
  install_engine
  install_client
  mkdir -p "$STATE_DIR"
  if [ -f "$PIDFILE" ] && dockerd_alive "$(cat "$PIDFILE")"; then
    say "dockerd (pid $(cat "$PIDFILE")) is starting; waiting"
  else
    [ "$(id -u)" -eq 0 ] || die "starting dockerd needs root"
    local driver
    driver="$(pick_storage_driver)"
    say "starting dockerd (storage driver ${driver}), log: ${LOG}"
    # A stale socket or pid file of a dead daemon would stop dockerd from starting.
    if [ -S /var/run/docker.sock ] && ! engine_up; then rm -f /var/run/docker.sock; fi
    if [ -f /var/run/docker.pid ] && ! dockerd_alive "$(cat /var/run/docker.pid)"; then rm -f /var/run/docker.pid; fi
    # setsid: the daemon outlives this script and the make/pytest process group that started it.
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
      --storage-driver="${driver}" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  fi
  local i
  for ((i = 0; i < WAIT * 2; i++)); do
    if engine_up; then
      say "engine up: $(docker info --format 'server {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}' 2>/dev/null)"
      return 0
    fi
    if ! dockerd_alive "$(cat "$PIDFILE")"; then
      tail -n 30 "$LOG" >&2 || true
      die "dockerd exited during start-up (log above, full log: ${LOG})"
    fi
    sleep 0.5
  done
  tail -n 30 "$LOG" >&2 || true
  die "dockerd did not answer 'docker info' within ${WAIT}s (log: ${LOG})"
}

stop() {
  if [ -f "$PIDFILE" ] && dockerd_alive "$(cat "$PIDFILE")"; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$PIDFILE"
    say "stopped dockerd (pid ${pid})"
  else
    say "no dockerd started by this script is running"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) if engine_up; then docker info --format '{{.ServerVersion}} {{.Driver}}'; else echo "not running" >&2; exit 1; fi ;;
  *) die "usage: $0 start|stop|status" ;;
esac
