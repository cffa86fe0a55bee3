#!/usr/bin/env bash
# Stops the local cluster that cluster/up.sh started, by the PIDs it recorded, and removes what it
# made on the host: pod sandboxes and their mounts, the bridge, kube-proxy's iptables chains, the
# guards of the bridge registry and the object store, the diversion to the NetworkPolicy enforcer,
# the sysctl it changed. Cluster data (etcd, registry, images, the object store's buckets, local-path
# volumes) stays for the next `up` unless --reset.
#
#   cluster/down.sh                  stop everything, keep data
#   cluster/down.sh --reset          also delete all cluster state (etcd, registry, images, certs)
#   cluster/down.sh --leftovers-only clear what a cluster whose processes died left behind (used by up.sh)
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"

MODE="${1:-stop}"
case "$MODE" in stop|--reset|--leftovers-only) ;; *) die "usage: $0 [--reset|--leftovers-only]" ;; esac
[ "$(id -u)" -eq 0 ] || die "cluster/down.sh needs root (it unmounts and deletes the pod bridge)"
[ -d "$CLUSTER_STATE" ] || { say "no cluster state at $CLUSTER_STATE: nothing to stop"; exit 0; }

KUBECTL_REQUEST_TIMEOUT=10s   # lib.sh's kubectl: a dying API server must not stall the teardown
ctr_k8s() { ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"; }

# stop_component NAME (cluster/lib.sh): TERM, then KILL after 10 s; only the recorded process.

# Pods first, while the kubelet runs: it tears each down (CNI DEL frees the veth and the IP, volumes
# are unmounted). Controllers stop first so that nothing recreates them; their objects stay in etcd.
remove_pods() {
  pid_of kube-apiserver >/dev/null && pid_of kubelet >/dev/null || return 0
  stop_component kube-controller-manager
  stop_component kube-scheduler
  kubectl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1
  local i; for ((i = 0; i < 120; i++)); do
    [ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ] && break; sleep 0.5
  done
  say "pods removed ($(ctr_k8s tasks ls -q 2>/dev/null | wc -l) containers left)"
}

# Containers the kubelet did not remove, then the shims (containerd records each shim's PID).
remove_containers() {
  if pid_of containerd >/dev/null; then
    local t c
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    sleep 1
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks delete -f "$t" >/dev/null 2>&1; done
    for c in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers delete "$c" >/dev/null 2>&1; done
  fi
  stop_component containerd
  local f pid
  for f in "$CLUSTER_STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    # Only a shim of this containerd: its command line names this cluster's socket.
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONTAINERD_SOCKET"; then
      kill -KILL "$pid" 2>/dev/null && say "stopped shim (pid $pid)"
    fi
  done
}

# kube-proxy's chains (KUBE-*), in every table, with the rules that jump to them.
remove_iptables() {
  [ -x "$CLUSTER_BIN/kube-proxy" ] && "$CLUSTER_BIN/kube-proxy" --cleanup >/dev/null 2>&1
  local ipt table chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null 2>&1 || continue
    for table in filter nat mangle; do
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -S 2>/dev/null | awk -v c="$chain" '$1 == "-A" && / -j / { for (i = 1; i < NF; i++) if ($i == "-j" && $(i+1) == c) print }' \
          | while read -r rule; do eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null; done
        "$ipt" -t "$table" -F "$chain" 2>/dev/null
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null
      done
    done
  done
}

remove_host_changes() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$CLUSTER_STATE/" | sort -r); do umount -l "$m" 2>/dev/null; done
  ip link show "$CLUSTER_BRIDGE" >/dev/null 2>&1 && ip link delete "$CLUSTER_BRIDGE" && say "deleted bridge $CLUSTER_BRIDGE"
  if [ -f "$CLUSTER_RUN/sysctl.saved" ]; then
    sysctl -qw net.ipv4.ip_forward="$(cat "$CLUSTER_RUN/sysctl.saved")"; rm -f "$CLUSTER_RUN/sysctl.saved"
  fi
  # The pod network's address leases: every pod is gone.
  rm -rf "$CLUSTER_STATE/cni/ipam"
}

# What must be gone afterwards; anything left is named and makes the exit status non-zero.
verify_clean() {
  local left=() entry pid f
  for entry in "${STOPPED[@]}"; do
    pid="${entry#*:}"
    [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && left+=("process ${entry%%:*} ($pid)")
  done
  for f in "$CLUSTER_STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$f" ] && pid="$(cat "$f")" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONTAINERD_SOCKET" \
      && left+=("shim $pid")
  done
  ip link show "$CLUSTER_BRIDGE" >/dev/null 2>&1 && left+=("bridge $CLUSTER_BRIDGE")
  findmnt -rn -o TARGET | grep -qF "$CLUSTER_STATE/" && left+=("mounts under $CLUSTER_STATE")
  iptables-save 2>/dev/null | grep -q '^:KUBE-' && left+=("iptables KUBE-* chains")
  local c; for c in "$REGISTRY_BRIDGE_CHAIN" "$S3_CHAIN"; do
    iptables -S "$c" >/dev/null 2>&1 && left+=("iptables chain $c")
  done
  for c in "$NETPOL_CHAIN_OUT" "$NETPOL_CHAIN_IN"; do
    iptables -t mangle -S "$c" >/dev/null 2>&1 && left+=("iptables mangle chain $c")
  done
  if [ ${#left[@]} -gt 0 ]; then die "left behind: ${left[*]}"; fi
}

if [ "$MODE" != --leftovers-only ]; then
  # Before the pods go: it would start helper pods for claims deleted meanwhile.
  stop_component local-path-provisioner
  remove_pods
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_component "$n"; done
fi
remove_containers
remove_iptables
undivert_from_enforcer
stop_component versitygw
stop_component registry-bridge
stop_component registry
unguard_bridge_port "$S3_CHAIN" "$S3_PORT"
unguard_bridge_port "$REGISTRY_BRIDGE_CHAIN" "$REGISTRY_PORT"
remove_host_changes
rm -f "$CLUSTER_RUN"/*.pid
if [ "$MODE" = --reset ]; then
  rm -rf "$CLUSTER_STATE"
  # The few host paths this kubelet and libcni use whatever their configuration says.
  rm -rf /var/lib/kubelet/device-plugins /var/lib/cni/results
  rmdir /var/lib/kubelet /var/lib/cni 2>/dev/null
  say "cluster state deleted"
fi
verify_clean
# This clone's .cluster/env (publish.sh) names the stopped cluster: without its bridge, the API server's
# address would be routed off this machine by anything that still read the file. One naming another
# cluster (kind) stays.
env_file="$(cd "$HERE/.." && pwd)/.cluster/env"
if [ -f "$env_file" ] && grep -qxF "export KUBECONFIG=$CLUSTER_KUBECONFIG" "$env_file"; then
  rm -f "$env_file" && say "removed $env_file (it named this cluster)"
fi
say "cluster stopped; nothing of it is left running"
