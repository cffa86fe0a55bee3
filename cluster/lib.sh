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
CLUSTER_COMPONENTS="kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd registry-bridge registry"

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

say() { printf 'cluster: %s\n' "$*" >&2; }

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
