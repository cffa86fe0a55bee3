# Shared settings and helpers of the local-cluster scripts (sourced, not run).
# Every path and address the cluster uses is defined here once.
# shellcheck shell=bash

K8S_VERSION="v1.34.4"

# Built binaries: cached per machine (outside any clone), keyed by version.
CLUSTER_CACHE="${MODELOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops-dask}"
CLUSTER_BIN="$CLUSTER_CACHE/cluster-$K8S_VERSION/bin"

# Runtime state of the one cluster this machine runs (certs, etcd, containerd, kubelet, logs, PIDs).
# Machine-wide, so a second clone's `make cluster-up` finds and reuses the running cluster. Kept short:
# containerd's and the kubelet's unix socket paths must fit in 108 bytes.
CLUSTER_STATE="${MODELOPS_CLUSTER_STATE:-/var/tmp/modelops-cluster}"
CLUSTER_RUN="$CLUSTER_STATE/run"      # <component>.pid, sockets
CLUSTER_LOGS="$CLUSTER_STATE/logs"    # <component>.log
CLUSTER_PKI="$CLUSTER_STATE/pki"
CLUSTER_KUBECONFIG="$CLUSTER_STATE/kubeconfig/admin.conf"
CONTAINERD_SOCKET="$CLUSTER_RUN/containerd.sock"
ETCD_PORT=12379   # +1 peer, +2 metrics; loopback only
# What up.sh starts, in the order down.sh stops them.
CLUSTER_COMPONENTS="local-path-provisioner kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd versitygw registry-bridge registry"

# Networking: everything stays on this machine. Pods live on a bridge this script creates; the node's
# IP is the bridge's own address (the kubelet refuses loopback as a node IP). No masquerade, no route
# or DNS forwarder off the machine.
CLUSTER_BRIDGE="${MODELOPS_CLUSTER_BRIDGE:-mops0}"
CLUSTER_POD_CIDR="10.88.0.0/16"
CLUSTER_NODE_IP="10.88.0.1"
CLUSTER_SERVICE_CIDR="10.96.0.0/16"
CLUSTER_API_SERVICE_IP="10.96.0.1"
CLUSTER_DNS_IP="10.96.0.10"
CLUSTER_API_PORT=6443
CLUSTER_NODE_NAME="modelops-node"

# The local OCI registry (CNCF distribution) on loopback; the cluster's containerd pulls from it.
REGISTRY_PORT="${MODELOPS_REGISTRY_PORT:-5000}"
REGISTRY="localhost:$REGISTRY_PORT"
# The same registry (a second process of the same binary, same storage) as the pods see it: on the
# bridge's own address, for what runs inside pods (workers pulling OCI bundles). An iptables chain
# admits connections to it from the bridge and from this machine (lo) only, none from other hosts.
REGISTRY_BRIDGE="$CLUSTER_NODE_IP:$REGISTRY_PORT"
REGISTRY_BRIDGE_CHAIN="MODELOPS-REGISTRY"

# The S3-compatible object store (versitygw, posix backend; cluster/objectstore.sh) for in-cluster
# studies and their results: on the bridge address, so pods and this machine reach it at one URL, with
# an iptables chain like the bridge registry's (connections from lo and the pod bridge only).
S3_PORT="${MODELOPS_S3_PORT:-7070}"
S3_ADDR="$CLUSTER_NODE_IP:$S3_PORT"
S3_ENDPOINT="http://$S3_ADDR"
S3_REGION="us-east-1"
S3_BUCKET="modelops-test"
S3_CHAIN="MODELOPS-S3"
S3_STATE="$CLUSTER_STATE/s3"          # 0700: data/ (the buckets) and credentials
S3_DATA="$S3_STATE/data"
# The root credentials, generated at the first start: two KEY=VALUE lines, AWS_ACCESS_KEY_ID=... and
# AWS_SECRET_ACCESS_KEY=... (mode 0600). versitygw gets them through its environment, never its command line.
S3_CREDENTIALS="$S3_STATE/credentials"

# NetworkPolicy enforcement: kube-network-policies (a DaemonSet, cluster/manifests/network-policies.yaml)
# gives the verdicts for the packets queued to NFQUEUE $NETPOL_QUEUE; two mangle-table chains queue the
# first packet of every connection of a pod (divert_to_enforcer): NETPOL_CHAIN_OUT on POSTROUTING (pod to
# pod, through Services too), NETPOL_CHAIN_IN on INPUT (pod to this machine: the API server, the
# registry and the object store on the bridge address).
NETPOL_QUEUE=100
NETPOL_CHAIN_OUT="MODELOPS-NETPOL-OUT"
NETPOL_CHAIN_IN="MODELOPS-NETPOL-IN"
NETPOL_METRICS_PORT=9080

# Dynamic PersistentVolumes: rancher's local-path-provisioner, as a process on this machine, with a
# default StorageClass (cluster/manifests/local-path.yaml); volumes are directories under this one.
LOCAL_PATH_DIR="$CLUSTER_STATE/local-path"
STORAGE_CLASS="local-path"

say() { printf 'cluster: %s\n' "$*" >&2; }
T0="${T0:-$(date +%s)}"
step() { say "[$(( $(date +%s) - T0 ))s] $*"; }

# Close every descriptor this script inherited beyond stdin, stdout and stderr (and bash's own 255):
# the daemons it starts outlive it and would hold them open, e.g. the lock of
# `flock /tmp/modelops-cluster-up.lock cluster/up.sh`, which then blocked every later `flock` until
# the cluster stopped.
close_inherited_fds() {
  local fd
  for fd in /proc/$$/fd/*; do
    fd="${fd##*/}"
    case "$fd" in 0 | 1 | 2 | 255) continue ;; esac
    eval "exec $fd>&-" 2>/dev/null || true
  done
}
die() { printf 'cluster: ERROR: %s\n' "$*" >&2; exit 1; }

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "no Go toolchain (go on PATH or /usr/local/go/bin/go): the cluster's components are built with it"
  fi
}

# pid_of NAME: the recorded PID of a component this project started, if that process still runs the
# binary it was started with (a PID reused by another process after a reboot or kill is not ours).
pid_of() {
  local f="$CLUSTER_RUN/$1.pid" pid exe
  [ -f "$f" ] || return 1
  read -r pid exe <"$f" || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] || return 1
  local state; state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)"
  [ "$state" != Z ] || return 1
  echo "$pid"
}

# --- configuration files and manifests (cluster/config/, cluster/manifests/) -------------------------
# render TEMPLATE NAME=VALUE...: the template with each @NAME@ replaced by VALUE, on stdout; fails naming
# any @NAME@ left unreplaced (a template and its caller that drifted apart).
render() {
  local template="$1" text pair; shift
  text="$(cat "$template")" || die "cannot read $template"
  for pair in "$@"; do text="${text//@${pair%%=*}@/${pair#*=}}"; done
  local left; left="$( (grep -o '@[A-Z_]*@' <<<"$text" || true) | sort -u | tr '\n' ' ')"
  [ -z "$left" ] || die "$template: no value given for ${left% }"
  printf '%s\n' "$text"
}

# One kubectl for the scripts, on the cluster's admin kubeconfig. KUBECTL_REQUEST_TIMEOUT (e.g. 10s)
# bounds each request (down.sh: a dying API server must not stall the teardown).
kubectl() {
  "$CLUSTER_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" \
    ${KUBECTL_REQUEST_TIMEOUT:+--request-timeout="$KUBECTL_REQUEST_TIMEOUT"} "$@"
}

# --- processes (up.sh, objectstore.sh, down.sh) -------------------------------------------------------
# start NAME BINARY ARGS...: start a component detached (own session) unless the recorded one runs.
# Variables the caller puts before `start` reach the daemon's environment (e.g. credentials).
start() {
  local name="$1" bin="$2"; shift 2
  local exe; exe="$(readlink -f "$(command -v "$bin")")" || die "$bin not found"
  if pid_of "$name" >/dev/null; then step "$name already running (pid $(pid_of "$name"))"; return; fi
  mkdir -p "$CLUSTER_RUN" "$CLUSTER_LOGS"
  # Not a process group leader here (no job control), so setsid execs in place: $! is the daemon.
  setsid "$exe" "$@" >>"$CLUSTER_LOGS/$name.log" 2>&1 </dev/null &
  echo "$! $exe" >"$CLUSTER_RUN/$name.pid"
  step "started $name (pid $!, log $CLUSTER_LOGS/$name.log)"
}

# restart_if_args_changed NAME BINARY ARGS...: stop the recorded NAME if it runs with another command
# line than BINARY ARGS (so that `start` then starts it with these); a running one with the same is kept.
restart_if_args_changed() {
  local name="$1" bin="$2"; shift 2
  local pid; pid="$(pid_of "$name")" || return 0
  local want; want="$(printf '%s\0' "$(readlink -f "$(command -v "$bin")")" "$@" | sha256sum)"
  [ "$(sha256sum <"/proc/$pid/cmdline")" = "$want" ] && return 0
  step "$name runs with another command line: restarting it"
  stop_component "$name"
}

# wait_for WHAT SECONDS COMPONENT CMD...: poll CMD; fail with the component's log if it dies or times out.
wait_for() {
  local what="$1" secs="$2" comp="$3"; shift 3
  local i
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # Alive by PID alone here: right after `start`, the process may not have exec'd its binary yet.
    if [ -n "$comp" ] && ! kill -0 "$(cut -d' ' -f1 "$CLUSTER_RUN/$comp.pid")" 2>/dev/null; then
      tail -n 25 "$CLUSTER_LOGS/$comp.log" >&2 || true
      die "$comp exited while waiting for $what (log: $CLUSTER_LOGS/$comp.log)"
    fi
    sleep 0.5
  done
  [ -n "$comp" ] && tail -n 25 "$CLUSTER_LOGS/$comp.log" >&2
  die "timed out after ${secs}s waiting for $what"
}

STOPPED=()  # name:pid of every process stopped by stop_component (down.sh checks they are gone)
# stop_component NAME: TERM, then KILL after 10 s; only the recorded process. Removes the record.
stop_component() {
  local name="$1" pid
  if pid="$(pid_of "$name")"; then
    STOPPED+=("$name:$pid")
    kill -TERM "$pid" 2>/dev/null || true
    local i; for ((i = 0; i < 40; i++)); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; say "killed $name (pid $pid) after 10 s"
    else say "stopped $name (pid $pid)"; fi
  fi
  rm -f "$CLUSTER_RUN/$name.pid"
}

# --- ports on the bridge address -----------------------------------------------------------------------
# The bridge address is this host's own, so without a guard any host routing 10.88.0.0/16 here could
# reach what listens on it. guard_bridge_port CHAIN PORT admits connections to $CLUSTER_NODE_IP:PORT from
# the pod bridge and from this machine (lo) only (idempotent); unguard_bridge_port CHAIN PORT removes it.
guard_bridge_port() {
  local c="$1" port="$2"
  local match=(-d "$CLUSTER_NODE_IP/32" -p tcp --dport "$port" -j "$c")
  if iptables -C INPUT "${match[@]}" 2>/dev/null && iptables -C "$c" -j DROP 2>/dev/null; then return; fi
  iptables -N "$c" 2>/dev/null || iptables -F "$c" || die "cannot make the iptables chain $c"
  iptables -A "$c" -i lo -j RETURN && iptables -A "$c" -i "$CLUSTER_BRIDGE" -j RETURN && iptables -A "$c" -j DROP \
    || die "cannot fill the iptables chain $c"
  iptables -C INPUT "${match[@]}" 2>/dev/null || iptables -I INPUT 1 "${match[@]}" \
    || die "cannot add the jump to $c to the INPUT chain"
}

unguard_bridge_port() {
  local c="$1" port="$2"
  iptables -S "$c" >/dev/null 2>&1 || return 0
  while iptables -D INPUT -d "$CLUSTER_NODE_IP/32" -p tcp --dport "$port" -j "$c" 2>/dev/null; do :; done
  iptables -F "$c" 2>/dev/null
  iptables -X "$c" 2>/dev/null
  return 0
}

# --- NetworkPolicy enforcement (up.sh, down.sh) -----------------------------------------------------
# divert_to_enforcer: queue the first packet of each connection from or to a pod to the enforcer
# (idempotent). As upstream's own rules do: not traffic of root's processes on this machine (the
# kubelet's probes, the API server's service proxy), nor that of the node's address (host-network pods);
# with no enforcer listening, queued packets are dropped (fail closed, upstream's default).
divert_to_enforcer() {
  local q=(-j NFQUEUE --queue-num "$NETPOL_QUEUE") new=(-m conntrack --ctstate NEW)
  iptables -t mangle -N "$NETPOL_CHAIN_OUT" 2>/dev/null || iptables -t mangle -F "$NETPOL_CHAIN_OUT"
  iptables -t mangle -A "$NETPOL_CHAIN_OUT" -m owner --uid-owner 0 -j RETURN
  iptables -t mangle -A "$NETPOL_CHAIN_OUT" -s "$CLUSTER_NODE_IP/32" -j RETURN
  iptables -t mangle -A "$NETPOL_CHAIN_OUT" -d "$CLUSTER_NODE_IP/32" -j RETURN
  iptables -t mangle -A "$NETPOL_CHAIN_OUT" -s "$CLUSTER_POD_CIDR" "${new[@]}" "${q[@]}"
  iptables -t mangle -A "$NETPOL_CHAIN_OUT" -d "$CLUSTER_POD_CIDR" "${new[@]}" "${q[@]}" \
    || die "cannot fill the iptables chain $NETPOL_CHAIN_OUT"
  iptables -t mangle -N "$NETPOL_CHAIN_IN" 2>/dev/null || iptables -t mangle -F "$NETPOL_CHAIN_IN"
  iptables -t mangle -A "$NETPOL_CHAIN_IN" -s "$CLUSTER_NODE_IP/32" -j RETURN
  iptables -t mangle -A "$NETPOL_CHAIN_IN" -s "$CLUSTER_POD_CIDR" "${new[@]}" "${q[@]}" \
    || die "cannot fill the iptables chain $NETPOL_CHAIN_IN"
  iptables -t mangle -C POSTROUTING -j "$NETPOL_CHAIN_OUT" 2>/dev/null || iptables -t mangle -A POSTROUTING -j "$NETPOL_CHAIN_OUT"
  iptables -t mangle -C INPUT -j "$NETPOL_CHAIN_IN" 2>/dev/null || iptables -t mangle -A INPUT -j "$NETPOL_CHAIN_IN" \
    || die "cannot add the jumps to the enforcer's chains"
}

undivert_from_enforcer() {
  local hook chain
  for hook in POSTROUTING:"$NETPOL_CHAIN_OUT" INPUT:"$NETPOL_CHAIN_IN"; do
    chain="${hook#*:}"
    iptables -t mangle -S "$chain" >/dev/null 2>&1 || continue
    while iptables -t mangle -D "${hook%%:*}" -j "$chain" 2>/dev/null; do :; done
    iptables -t mangle -F "$chain" 2>/dev/null
    iptables -t mangle -X "$chain" 2>/dev/null
  done
  return 0
}

# enforcer_listening: true when a process is bound to NFQUEUE $NETPOL_QUEUE (first column of the kernel's table).
enforcer_listening() {
  awk -v q="$NETPOL_QUEUE" '$1 == q {found = 1} END {exit !found}' /proc/net/netfilter/nfnetlink_queue 2>/dev/null
}

# port_refuses ADDR PORT: true when nothing accepts a TCP connection there (within 2 s).
port_refuses() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  ! timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}
