#!/usr/bin/env bash
# Brings up a single-node Kubernetes on this machine as plain processes, or reuses the one running:
#
#   containerd + runc (Debian)  <- kubelet (CRI)       pods on bridge $CLUSTER_BRIDGE, pulled from:
#   registry (CNCF distribution) on 127.0.0.1:$REGISTRY_PORT, storage under $CLUSTER_STATE/registry
#   registry-bridge: the same binary and storage on $REGISTRY_BRIDGE, for pods (OCI bundles);
#                    iptables admits only the bridge's and this machine's own connections to it
#   versitygw: an S3-compatible object store on $S3_ENDPOINT (posix backend under $S3_STATE), guarded
#              the same way; cluster/objectstore.sh (which starts it here too) stops and restarts it
#   etcd (Debian) on 127.0.0.1  <- kube-apiserver on $CLUSTER_NODE_IP:6443 <- controller-manager,
#                                  scheduler, kubelet, kube-proxy (iptables), CoreDNS (a Deployment),
#                                  local-path-provisioner (PersistentVolumes; default StorageClass),
#                                  kube-network-policies (a DaemonSet: NetworkPolicies enforced, each
#                                  pod's new connections queued to it over NFQUEUE), KEDA (operator and
#                                  external-metrics API server, behind the aggregation layer)
#
# Kubernetes' own components, CoreDNS, versitygw, local-path-provisioner, kube-network-policies and KEDA are built from the Go module proxy by cluster/build.sh
# (cached outside the clone). Every process started is recorded as "PID EXE" in
# $CLUSTER_RUN/<name>.pid and stopped by cluster/down.sh through that record only.
# Nothing routes off the machine: the bridge has no masquerade, pods get no default route and no
# upstream DNS, etcd listens on loopback, the registry on loopback and (for pods) on the bridge only.
# Usage: cluster/up.sh   (root). Environment: see cluster/lib.sh (MODELOPS_CLUSTER_STATE, ...).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"

# shellcheck source=cluster/objectstore.sh
source "$HERE/objectstore.sh"

# --- prerequisites: fail early, naming what is missing -------------------------------------------
check_machine() {
  [ "$(id -u)" -eq 0 ] || die "the local cluster needs root (containerd, the pod bridge, iptables); run as root"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] \
    || die "no cgroup filesystem with a memory controller under /sys/fs/cgroup: the kubelet cannot run pods"
  command -v ip >/dev/null 2>&1 || die "no 'ip' command (Debian package iproute2)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null \
    || die "the kernel has no overlay filesystem: containerd's overlayfs snapshotter needs it"
}

# Debian packages: containerd + runc, etcd, the CNI plugins, iptables and conntrack for kube-proxy,
# busybox-static for the image of local-path-provisioner's helper pods.
BUSYBOX=/bin/busybox
ensure_packages() {
  local missing=() c
  for c in containerd runc etcd iptables conntrack openssl curl; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ -x /usr/lib/cni/bridge ] || missing+=(cni-plugins)
  [ -x "$BUSYBOX" ] || missing+=(busybox-static)
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  step "installing Debian packages for: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends containerd runc etcd-server containernetworking-plugins \
    iptables conntrack openssl curl busybox-static >/dev/null \
    || die "apt-get install of containerd runc etcd-server containernetworking-plugins iptables conntrack busybox-static failed"
  for c in containerd runc etcd iptables conntrack; do command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"; done
  [ -x "$BUSYBOX" ] || die "$BUSYBOX still missing after apt-get install busybox-static"
}

# --- processes: start, wait_for (cluster/lib.sh) ----------------------------------------------------
# A cluster whose processes all died (machine restarted, session ended) leaves mounts, a bridge and
# stale records behind: clear them before starting afresh. Cluster data (etcd, images) is kept.
clear_dead_cluster() {
  local n alive=0
  for n in $CLUSTER_COMPONENTS; do pid_of "$n" >/dev/null && alive=1; done
  [ "$alive" = 0 ] || return 0
  ls "$CLUSTER_RUN"/*.pid >/dev/null 2>&1 || return 0
  step "no component of the previous cluster runs: clearing its leftovers"
  "$HERE/down.sh" --leftovers-only
}

# --- certificates and kubeconfigs (openssl) -----------------------------------------------------------
issue_cert() {  # issue_cert NAME SUBJECT [SUBJECT_ALT_NAMES]
  local name="$1" subj="$2" sans="${3:-}" ext
  [ -f "$CLUSTER_PKI/$name.crt" ] && return
  ext="$(mktemp)"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$CLUSTER_PKI/$name.key" -subj "$subj" \
    -out "$CLUSTER_PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$CLUSTER_PKI/$name.csr" -CA "$CLUSTER_PKI/ca.crt" -CAkey "$CLUSTER_PKI/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$ext" -out "$CLUSTER_PKI/$name.crt" 2>/dev/null
  rm -f "$ext" "$CLUSTER_PKI/$name.csr"
}

write_kubeconfig() {  # write_kubeconfig FILE CERT_NAME
  local file="$1" cert="$2"
  mkdir -p "$(dirname "$file")"
  render "$HERE/config/kubeconfig.yaml" NODE_IP="$CLUSTER_NODE_IP" API_PORT="$CLUSTER_API_PORT" USER="$cert" \
    CA_DATA="$(base64 -w0 "$CLUSTER_PKI/ca.crt")" CERT_DATA="$(base64 -w0 "$CLUSTER_PKI/$cert.crt")" \
    KEY_DATA="$(base64 -w0 "$CLUSTER_PKI/$cert.key")" >"$file.tmp"
  chmod 600 "$file.tmp"; mv -f "$file.tmp" "$file"
}

make_pki() {
  mkdir -p "$CLUSTER_PKI"; chmod 700 "$CLUSTER_PKI"
  if [ ! -f "$CLUSTER_PKI/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$CLUSTER_PKI/ca.key" -subj "/CN=modelops-local-ca" \
      -days 3650 -sha256 -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$CLUSTER_PKI/ca.crt" 2>/dev/null
    openssl genrsa -out "$CLUSTER_PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$CLUSTER_PKI/sa.key" -pubout -out "$CLUSTER_PKI/sa.pub" 2>/dev/null
  fi
  issue_cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$CLUSTER_NODE_IP,IP:$CLUSTER_API_SERVICE_IP"
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  issue_cert admin "/O=system:masters/CN=modelops-admin"
  issue_cert controller-manager "/CN=system:kube-controller-manager"
  issue_cert scheduler "/CN=system:kube-scheduler"
  issue_cert kubelet "/O=system:nodes/CN=system:node:$CLUSTER_NODE_NAME"
  issue_cert kube-proxy "/CN=system:kube-proxy"
  # Its own identity, bound by cluster/manifests/local-path.yaml to what it needs (not system:masters).
  issue_cert local-path-provisioner "/CN=modelops:local-path-provisioner"
  make_front_proxy_pki
  local c
  for c in admin controller-manager scheduler kubelet kube-proxy local-path-provisioner; do
    write_kubeconfig "$CLUSTER_STATE/kubeconfig/$c.conf" "$c"
  done
}

# The aggregation layer's own CA and the API server's client certificate signed by it: the API server
# presents it when it proxies a request to an extension API server (KEDA's external-metrics API), which
# trusts the CA through the configmap kube-system/extension-apiserver-authentication and reads the caller
# from the X-Remote-* headers. A CA of its own, not ca.crt: a certificate of ca.crt must not be able to
# pass as the front proxy.
make_front_proxy_pki() {
  local p="$CLUSTER_PKI"
  if [ ! -f "$p/front-proxy-ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$p/front-proxy-ca.key" -subj "/CN=modelops-front-proxy-ca" \
      -days 3650 -sha256 -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$p/front-proxy-ca.crt" 2>/dev/null || die "cannot make the front proxy's CA"
  fi
  [ -f "$p/front-proxy-client.crt" ] && return
  local ext; ext="$(mktemp)"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$p/front-proxy-client.key" -subj "/CN=front-proxy-client" \
    -out "$p/front-proxy-client.csr" 2>/dev/null
  openssl x509 -req -in "$p/front-proxy-client.csr" -CA "$p/front-proxy-ca.crt" -CAkey "$p/front-proxy-ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$ext" -out "$p/front-proxy-client.crt" 2>/dev/null \
    || die "cannot issue the front proxy's client certificate"
  rm -f "$ext" "$p/front-proxy-client.csr"
}

# --- network -------------------------------------------------------------------------------------------
make_bridge() {
  ip link show "$CLUSTER_BRIDGE" >/dev/null 2>&1 || ip link add "$CLUSTER_BRIDGE" type bridge
  local addrs; addrs="$(ip -o -4 addr show dev "$CLUSTER_BRIDGE")"
  [[ "$addrs" == *" $CLUSTER_NODE_IP/"* ]] || ip addr add "$CLUSTER_NODE_IP/16" dev "$CLUSTER_BRIDGE"
  ip link set "$CLUSTER_BRIDGE" up
  # Forwarding between pods through the host (a Service's DNAT) and bridged traffic seen by iptables
  # (kube-proxy's rules). The previous values are restored by down.sh.
  [ -f "$CLUSTER_RUN/sysctl.saved" ] || sysctl -n net.ipv4.ip_forward >"$CLUSTER_RUN/sysctl.saved"
  sysctl -qw net.ipv4.ip_forward=1
  if [ ! -f /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    modprobe br_netfilter 2>/dev/null || die "bridged pod traffic is invisible to iptables (no br_netfilter): Services would not work"
  fi
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  mkdir -p "$CLUSTER_STATE/cni/net.d" "$CLUSTER_STATE/cni/ipam"
  # Pods get routes to the pod and service networks only: no default route, nothing leaves the machine.
  render "$HERE/config/cni.conflist" BRIDGE="$CLUSTER_BRIDGE" STATE="$CLUSTER_STATE" POD_CIDR="$CLUSTER_POD_CIDR" \
    NODE_IP="$CLUSTER_NODE_IP" SERVICE_CIDR="$CLUSTER_SERVICE_CIDR" >"$CLUSTER_STATE/cni/net.d/10-modelops.conflist"
}

# --- containerd and the registry -----------------------------------------------------------------------
start_containerd() {
  local d="$CLUSTER_STATE/containerd"
  mkdir -p "$d/certs.d/$REGISTRY"
  render "$HERE/config/containerd-hosts.toml" REGISTRY="$REGISTRY" >"$d/certs.d/$REGISTRY/hosts.toml"
  render "$HERE/config/containerd.toml" DIR="$d" SOCKET="$CONTAINERD_SOCKET" PAUSE_IMAGE="$PAUSE_IMAGE" \
    STATE="$CLUSTER_STATE" >"$d/config.toml"
  start containerd containerd --config "$d/config.toml"
  wait_for "containerd" 30 containerd ctr --address "$CONTAINERD_SOCKET" version
}

# registry_config FILE ADDR: the registry's configuration (config/registry.yml), listening on ADDR.
registry_config() {
  mkdir -p "$CLUSTER_STATE/registry/data"
  render "$HERE/config/registry.yml" DATA="$CLUSTER_STATE/registry/data" ADDR="$2" >"$1"
}

start_registry() {
  registry_config "$CLUSTER_STATE/registry/config.yml" "127.0.0.1:$REGISTRY_PORT"
  start registry "$CLUSTER_BIN/registry" serve "$CLUSTER_STATE/registry/config.yml"
  wait_for "the registry on $REGISTRY" 30 registry curl -sf "http://$REGISTRY/v2/"
}

# The registry for pods: same binary, same storage, on the bridge address (make_bridge made it).
# Containerd keeps pulling from $REGISTRY; workers pull OCI bundles from $REGISTRY_BRIDGE.
start_registry_bridge() {
  guard_bridge_port "$REGISTRY_BRIDGE_CHAIN" "$REGISTRY_PORT"
  registry_config "$CLUSTER_STATE/registry/config-bridge.yml" "$REGISTRY_BRIDGE"
  start registry-bridge "$CLUSTER_BIN/registry" serve "$CLUSTER_STATE/registry/config-bridge.yml"
  wait_for "the registry for pods on $REGISTRY_BRIDGE" 30 registry-bridge curl -sf "http://$REGISTRY_BRIDGE/v2/"
}

# The cluster's own images (pause, CoreDNS, the NetworkPolicy enforcer, KEDA's two): one static binary each, built into an image by the Docker
# engine with no network and pushed to the local registry, where containerd pulls them like any other.
push_system_images() {
  local name bin ctx
  for name in pause coredns kube-network-policies keda-operator keda-adapter; do
    local ref="$REGISTRY/modelops-cluster/$name:$(cat "$CLUSTER_BIN/.$name.stamp")"
    if curl -sf -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY/v2/modelops-cluster/$name/manifests/${ref##*:}"; then continue; fi
    ctx="$(mktemp -d)"; cp "$CLUSTER_BIN/$name" "$ctx/$name"
    printf 'FROM scratch\nCOPY %s /%s\nENTRYPOINT ["/%s"]\n' "$name" "$name" "$name" >"$ctx/Dockerfile"
    docker build -q --network none -t "$ref" "$ctx" >"$CLUSTER_LOGS/image-build.log" 2>&1 \
      || { cat "$CLUSTER_LOGS/image-build.log" >&2; die "docker build of $ref failed"; }
    rm -rf "$ctx"
    docker push -q "$ref" >/dev/null || die "docker push $ref failed"
    step "pushed $ref"
  done
}

# The image of local-path-provisioner's helper pods (they make and remove the volume directories):
# Debian's static busybox and the few commands its scripts run, built with no network like the above.
push_helper_image() {
  local tag; tag="$(sha256sum "$BUSYBOX" | cut -c1-16)"
  HELPER_IMAGE="$REGISTRY/modelops-cluster/local-path-helper:$tag"
  if curl -sf -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$REGISTRY/v2/modelops-cluster/local-path-helper/manifests/$tag"; then return; fi
  local ctx c; ctx="$(mktemp -d)"
  mkdir "$ctx/bin"; cp "$BUSYBOX" "$ctx/bin/busybox"
  for c in sh mkdir rm rmdir chmod ls cat; do ln -s busybox "$ctx/bin/$c"; done
  printf 'FROM scratch\nCOPY bin/ /bin/\nENTRYPOINT ["/bin/sh"]\n' >"$ctx/Dockerfile"
  docker build -q --network none -t "$HELPER_IMAGE" "$ctx" >"$CLUSTER_LOGS/image-build.log" 2>&1 \
    || { cat "$CLUSTER_LOGS/image-build.log" >&2; die "docker build of $HELPER_IMAGE failed"; }
  rm -rf "$ctx"
  docker push -q "$HELPER_IMAGE" >/dev/null || die "docker push $HELPER_IMAGE failed"
  step "pushed $HELPER_IMAGE"
}

# --- the control plane ---------------------------------------------------------------------------------
start_etcd() {
  start etcd etcd --name modelops --data-dir "$CLUSTER_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "modelops=http://127.0.0.1:$((ETCD_PORT + 1))" --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))"
  wait_for "etcd" 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_control_plane() {
  local p="$CLUSTER_PKI" k="$CLUSTER_STATE/kubeconfig"
  # shellcheck disable=SC2054  # the commas are inside flag values (Node,RBAC)
  local apiserver_args=(--etcd-servers="http://127.0.0.1:$ETCD_PORT"
    --bind-address="$CLUSTER_NODE_IP" --advertise-address="$CLUSTER_NODE_IP" --secure-port="$CLUSTER_API_PORT"
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt"
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key"
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" --authorization-mode=Node,RBAC
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" --kubelet-client-key="$p/apiserver-kubelet-client.key"
    --kubelet-preferred-address-types=InternalIP --enable-admission-plugins=NodeRestriction
    --allow-privileged=true --profiling=false --cert-dir="$CLUSTER_STATE/apiserver"
    # The aggregation layer (KEDA's external-metrics API, an APIService): the front proxy's CA and client
    # certificate (make_front_proxy_pki); requests go to the extension server's endpoints, not its Service IP.
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group
    --requestheader-extra-headers-prefix=X-Remote-Extra-
    --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key"
    --enable-aggregator-routing=true)
  # A running API server started with other flags (an older up.sh: no aggregation layer) is restarted.
  restart_if_args_changed kube-apiserver "$CLUSTER_BIN/kube-apiserver" "${apiserver_args[@]}"
  start kube-apiserver "$CLUSTER_BIN/kube-apiserver" "${apiserver_args[@]}"
  wait_for "kube-apiserver /readyz" 120 kube-apiserver \
    curl -sf --cacert "$p/ca.crt" "https://$CLUSTER_NODE_IP:$CLUSTER_API_PORT/readyz"
  start kube-controller-manager "$CLUSTER_BIN/kube-controller-manager" --kubeconfig="$k/controller-manager.conf" \
    --authentication-kubeconfig="$k/controller-manager.conf" --authorization-kubeconfig="$k/controller-manager.conf" \
    --bind-address=127.0.0.1 --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --use-service-account-credentials=true --leader-elect=false --cluster-name=modelops-local --profiling=false \
    --flex-volume-plugin-dir="$CLUSTER_STATE/kubelet-plugins"
  start kube-scheduler "$CLUSTER_BIN/kube-scheduler" --kubeconfig="$k/scheduler.conf" \
    --authentication-kubeconfig="$k/scheduler.conf" --authorization-kubeconfig="$k/scheduler.conf" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  local k="$CLUSTER_STATE/kubeconfig"
  : >"$CLUSTER_STATE/resolv.conf"   # pods get cluster DNS only, no upstream resolver
  render "$HERE/config/kubelet.yaml" PKI="$CLUSTER_PKI" NODE_IP="$CLUSTER_NODE_IP" SOCKET="$CONTAINERD_SOCKET" \
    STATE="$CLUSTER_STATE" DNS_IP="$CLUSTER_DNS_IP" >"$CLUSTER_STATE/kubelet.yaml"
  mkdir -p "$CLUSTER_STATE/pod-logs" "$CLUSTER_STATE/kubelet-plugins"
  start kubelet "$CLUSTER_BIN/kubelet" --config="$CLUSTER_STATE/kubelet.yaml" --kubeconfig="$k/kubelet.conf" \
    --root-dir="$CLUSTER_STATE/kubelet" --cert-dir="$CLUSTER_STATE/kubelet-pki" \
    --node-ip="$CLUSTER_NODE_IP" --hostname-override="$CLUSTER_NODE_NAME"
  start kube-proxy "$CLUSTER_BIN/kube-proxy" --kubeconfig="$k/kube-proxy.conf" --hostname-override="$CLUSTER_NODE_NAME" \
    --proxy-mode=iptables --cluster-cidr="$CLUSTER_POD_CIDR" --nodeport-addresses="$CLUSTER_POD_CIDR" \
    --conntrack-max-per-core=0 --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
  wait_for "node $CLUSTER_NODE_NAME Ready" 120 kubelet node_ready
}

node_ready() {
  kubectl get node "$CLUSTER_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

# The NetworkPolicy enforcer: its DaemonSet first, then, once it listens on its queue, the diversion of
# pods' new connections to it (lib.sh: divert_to_enforcer). Before CoreDNS: from then on every pod's
# connections are decided by the NetworkPolicies in force.
start_network_policy_enforcer() {
  local image
  image="$REGISTRY/modelops-cluster/kube-network-policies:$(cat "$CLUSTER_BIN/.kube-network-policies.stamp")"
  render "$HERE/manifests/network-policies.yaml" IMAGE="$image" QUEUE="$NETPOL_QUEUE" METRICS_PORT="$NETPOL_METRICS_PORT" \
      VERBOSITY="${MODELOPS_NETPOL_VERBOSITY:-0}" | kubectl apply -f - >/dev/null || die "kubectl apply of cluster/manifests/network-policies.yaml failed"
  # A changed manifest replaces the running pod: wait for the new one, not the old one's queue.
  kubectl -n kube-system rollout status daemonset/kube-network-policies --timeout=120s >/dev/null \
    || die "the NetworkPolicy enforcer's DaemonSet did not roll out within 120 s"
  local i
  for ((i = 0; i < 240; i++)); do
    enforcer_listening && break
    sleep 0.5
  done
  if ! enforcer_listening; then
    kubectl -n kube-system describe pods -l k8s-app=kube-network-policies >&2
    kubectl -n kube-system logs -l k8s-app=kube-network-policies --tail=30 >&2
    die "the NetworkPolicy enforcer does not listen on NFQUEUE $NETPOL_QUEUE after 120 s"
  fi
  divert_to_enforcer
  step "NetworkPolicies enforced (kube-network-policies on NFQUEUE $NETPOL_QUEUE)"
}

start_dns() {
  render "$HERE/manifests/coredns.yaml" COREDNS_IMAGE="$COREDNS_IMAGE" DNS_IP="$CLUSTER_DNS_IP" \
    | kubectl apply -f - >/dev/null
  # An answer, not a Ready condition: after a restart that is read back, stale, from etcd.
  local i
  for ((i = 0; i < 180; i++)); do
    python3 "$HERE/dns-answers.py" "$CLUSTER_DNS_IP" kubernetes.default.svc.cluster.local && return 0
    sleep 1
  done
  kubectl -n kube-system describe pods -l k8s-app=kube-dns >&2
  die "CoreDNS did not become ready within 180 s"
}

# Dynamic PersistentVolumes: the provisioner runs here as a process (its own kubeconfig, bound by RBAC
# to what it needs); its configuration (paths, setup/teardown scripts, helper pod) is the ConfigMap of
# manifests/local-path.yaml, which also makes the StorageClass $STORAGE_CLASS the default.
start_local_path_provisioner() {
  mkdir -p "$LOCAL_PATH_DIR"; chmod 711 "$LOCAL_PATH_DIR"
  local applied
  applied="$(render "$HERE/manifests/local-path.yaml" HELPER_IMAGE="$HELPER_IMAGE" LOCAL_PATH_DIR="$LOCAL_PATH_DIR" \
      STORAGE_CLASS="$STORAGE_CLASS" | kubectl apply -f -)" \
    || die "kubectl apply of cluster/manifests/local-path.yaml failed"
  # It reads its ConfigMap once, at start: a changed one (another helper image, new scripts) needs a restart.
  if pid_of local-path-provisioner >/dev/null; then
    if grep -q '^configmap/local-path-config configured' <<<"$applied"; then
      step "local-path-provisioner's configuration changed: restarting it"
      stop_component local-path-provisioner
    else
      step "local-path-provisioner already running (pid $(pid_of local-path-provisioner))"; return
    fi
  fi
  local log="$CLUSTER_LOGS/local-path-provisioner.log" from=1
  [ -f "$log" ] && from=$(( $(stat -c %s "$log") + 1 ))   # this start's lines only: the log is appended to
  start local-path-provisioner "$CLUSTER_BIN/local-path-provisioner" start \
    --kubeconfig "$CLUSTER_STATE/kubeconfig/local-path-provisioner.conf" --namespace local-path-storage \
    --configmap-name local-path-config --service-account-name local-path-helper --helper-image "$HELPER_IMAGE" \
    --provisioner-name rancher.io/local-path
  # shellcheck disable=SC2016  # expanded by the inner bash
  wait_for "local-path-provisioner's controller" 60 local-path-provisioner \
    bash -c 'tail -c "+$1" "$2" | grep -q "Started provisioner controller"' _ "$from" "$log"
}

# KEDA (cluster/manifests/keda.yaml): its CRDs (from its module, kept by build.sh beside the binaries;
# server-side, as the ScaledJob CRD is too large for the last-applied annotation), then the operator and
# the metrics server; ready when the APIService v1beta1.external.metrics.k8s.io is Available (the API
# server reaches the metrics server through the aggregation layer with the operator's CA).
start_keda() {
  kubectl apply --server-side --force-conflicts --field-manager=modelops-cluster -f "$CLUSTER_BIN/keda-crds/" >/dev/null \
    || die "kubectl apply of KEDA's CRDs ($CLUSTER_BIN/keda-crds) failed"
  kubectl wait --for=condition=Established --timeout=60s -f "$CLUSTER_BIN/keda-crds/" >/dev/null \
    || die "KEDA's CRDs were not established within 60 s"
  render "$HERE/manifests/keda.yaml" \
      OPERATOR_IMAGE="$REGISTRY/modelops-cluster/keda-operator:$(cat "$CLUSTER_BIN/.keda-operator.stamp")" \
      ADAPTER_IMAGE="$REGISTRY/modelops-cluster/keda-adapter:$(cat "$CLUSTER_BIN/.keda-adapter.stamp")" \
    | kubectl apply -f - >/dev/null || die "kubectl apply of cluster/manifests/keda.yaml failed"
  local d
  for d in keda-operator keda-metrics-apiserver; do
    kubectl -n keda rollout status "deployment/$d" --timeout=240s >/dev/null || {
      kubectl -n keda describe pods -l "app=$d" >&2; kubectl -n keda logs -l "app=$d" --tail=30 >&2
      die "KEDA's $d did not become ready within 240 s"; }
  done
  kubectl wait --for=condition=Available --timeout=120s apiservice/v1beta1.external.metrics.k8s.io >/dev/null || {
    kubectl get apiservice v1beta1.external.metrics.k8s.io -o yaml >&2
    die "the APIService v1beta1.external.metrics.k8s.io (KEDA's metrics server) is not Available after 120 s"; }
  step "KEDA $(keda_version) ready: keda-operator and keda-metrics-apiserver running in namespace keda," \
    "APIService v1beta1.external.metrics.k8s.io Available"
}

keda_version() { sed -n 's/^version=//p' "$HERE/tools/keda/keda.pin"; }

build_binaries() {
  step "building (or reusing) the cluster's binaries"
  "$HERE/build.sh" >/dev/null
  PAUSE_IMAGE="$REGISTRY/modelops-cluster/pause:$(cat "$CLUSTER_BIN/.pause.stamp")"
  COREDNS_IMAGE="$REGISTRY/modelops-cluster/coredns:$(cat "$CLUSTER_BIN/.coredns.stamp")"
}

start_docker_engine() { bash "$HERE/../scripts/docker-engine.sh" start; }

# phase STEP: run one step of main; if up.sh fails anywhere inside it, the last line names the step.
PHASE=""
phase() { PHASE="$1"; "$1"; }
report_failed_phase() {
  local rc=$?
  [ "$rc" -eq 0 ] || [ -z "$PHASE" ] || say "cluster/up.sh failed in step $PHASE (exit $rc); logs: $CLUSTER_LOGS"
}

main() {
  close_inherited_fds
  check_machine
  [ "${1:-}" = --check ] && return 0
  trap report_failed_phase EXIT
  phase ensure_packages
  mkdir -p "$CLUSTER_RUN" "$CLUSTER_LOGS"
  local s
  for s in clear_dead_cluster build_binaries make_pki make_bridge start_registry start_registry_bridge \
      objectstore_start start_docker_engine push_system_images push_helper_image start_containerd start_etcd \
      start_control_plane start_node start_network_policy_enforcer start_dns start_local_path_provisioner start_keda; do
    phase "$s"
  done
  PHASE=""
  step "cluster ready: export KUBECONFIG=$CLUSTER_KUBECONFIG"
}

# Sourced (the tests do, to try one function), it only defines; run, it brings the cluster up.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
