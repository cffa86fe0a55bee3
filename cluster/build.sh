#!/usr/bin/env bash
# Builds the binaries the local cluster runs, once per pinned version, into a cache outside the clone
# (so a second clone on the same machine reuses them):
#
#   $CACHE/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
#                                        from cluster/tools/kubernetes/go.mod (Go module proxy)
#   $CACHE/bin/coredns                   from cluster/tools/coredns/go.mod
#   $CACHE/bin/registry                  CNCF distribution, from cluster/tools/registry/go.mod
#   $CACHE/bin/pause                     cluster/pause (the pod sandbox's one process)
#   $CACHE/bin/versitygw                 S3-compatible object store, from cluster/tools/versitygw/go.mod;
#                                        needs no root and no cluster (the unit tier starts private ones)
#   $CACHE/bin/local-path-provisioner    dynamic PersistentVolumes on the node, from
#                                        cluster/tools/local-path-provisioner/go.mod
#   $CACHE/bin/kube-network-policies     the NetworkPolicy enforcer (a DaemonSet of the cluster), from
#                                        cluster/tools/kube-network-policies/go.mod
#   $CACHE/bin/{keda-operator,keda-adapter}, $CACHE/bin/keda-crds/*.yaml
#                                        KEDA's operator and external-metrics API server, and its CRDs, from
#                                        the module pinned by cluster/tools/keda/keda.pin (built inside a copy
#                                        of that module: its go.mod has replace directives)
#
# A binary is rebuilt only when the go.mod/go.sum that pin it change (a stamp beside it records their
# hash). go.mod/go.sum are never rewritten (-mod=readonly): they are the pins.
# Usage: cluster/build.sh [component...]   (default: all). Prints the bin directory on the last line.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"

GO="$(find_go)"
mkdir -p "$CLUSTER_BIN"

stamp_of() {  # stamp_of MODULE_DIR -> hash of the pins (and, for pause, its source)
  find "$1" -maxdepth 1 -type f \( -name 'go.*' -o -name '*.go' \) | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16
}

up_to_date() {  # up_to_date STAMP BINARY...
  local s="$1" b; shift
  for b in "$@"; do
    [ -x "$CLUSTER_BIN/$b" ] && [ "$(cat "$CLUSTER_BIN/.$b.stamp" 2>/dev/null)" = "$s" ] || return 1
  done
}

go_build() {  # go_build MODULE_DIR LDFLAGS PKG...   (all packages in one go invocation: shared compile work)
  local dir="$1" ld="$2"; shift 2
  local out; out="$(mktemp -d "$CLUSTER_BIN/.build.XXXXXX")"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false" \
     nice -n 5 "$GO" build -ldflags "-s -w $ld" -o "$out/" "$@") || { rm -rf "$out"; die "go build in $dir failed"; }
  local f; for f in "$out"/*; do mv -f "$f" "$CLUSTER_BIN/"; done
  rmdir "$out"
}

build_kubernetes() {
  local mod="$HERE/tools/kubernetes" v="$K8S_VERSION" s; s="$(stamp_of "$mod")"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  if up_to_date "$s" "${bins[@]}"; then say "kubernetes $v: cached"; return; fi
  grep -q "k8s.io/kubernetes $v\$" "$mod/go.mod" || die "cluster/tools/kubernetes/go.mod does not pin k8s.io/kubernetes $v"
  local minor; minor="$(echo "${v#v}" | cut -d. -f2)"
  # Without these, every component reports v0.0.0-master and kubectl warns about version skew.
  local ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  say "building kubernetes $v (${bins[*]}); from a cold Go cache this takes ~15 min on 2 cores"
  local t0; t0=$(date +%s)
  go_build "$mod" "$ld" "${bins[@]/#/k8s.io/kubernetes/cmd/}"
  for p in "${bins[@]}"; do echo "$s" >"$CLUSTER_BIN/.$p.stamp"; done
  say "kubernetes $v built in $(( $(date +%s) - t0 ))s"
}

build_one() {  # build_one NAME MODULE_DIR PKG [LDFLAGS]   (go names the binary NAME after the package)
  local name="$1" mod="$2" pkg="$3" ld="${4:-}" s; s="$(stamp_of "$mod")"
  if up_to_date "$s" "$name"; then say "$name: cached"; return; fi
  say "building $name ($pkg)"
  local t0; t0=$(date +%s)
  go_build "$mod" "$ld" "$pkg"
  # go names a binary after its package's last element: sigs.k8s.io/kube-network-policies/cmd gives `cmd`.
  [ "${pkg##*/}" = "$name" ] || [ "$pkg" = . ] || mv -f "$CLUSTER_BIN/${pkg##*/}" "$CLUSTER_BIN/$name"
  [ -x "$CLUSTER_BIN/$name" ] || die "go build of $pkg gave no $name"
  echo "$s" >"$CLUSTER_BIN/.$name.stamp"
  say "$name built in $(( $(date +%s) - t0 ))s"
}

# pinned_version MODULE_DIR MODULE: the version of MODULE its go.mod requires (for -X version strings).
pinned_version() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$1/go.mod"
}

# build_keda: KEDA's module (version and h1: sum from cluster/tools/keda/keda.pin) from the Go module proxy,
# checked against the pinned sum, copied to a writable place and built there with its own go.mod/go.sum
# (-mod=readonly: its pins); its CRDs (config/crd/bases) are kept beside the binaries for up.sh.
build_keda() {
  local pin="$HERE/tools/keda/keda.pin" s mod v sum
  s="$(sha256sum "$pin" | cut -c1-16)"
  mod="$(sed -n 's/^module=//p' "$pin")"; v="$(sed -n 's/^version=//p' "$pin")"; sum="$(sed -n 's/^sum=//p' "$pin")"
  if [ -z "$mod" ] || [ -z "$v" ] || [ -z "$sum" ]; then die "$pin must set module=, version= and sum="; fi
  if up_to_date "$s" keda-operator keda-adapter && [ -f "$CLUSTER_BIN/keda-crds/.stamp" ] \
      && [ "$(cat "$CLUSTER_BIN/keda-crds/.stamp")" = "$s" ]; then say "keda $v: cached"; return; fi
  say "building keda $v (operator, metrics API server); from a cold Go cache this takes ~20 min on 2 cores"
  local t0; t0=$(date +%s)
  local info dir got
  # Outside any module (GOFLAGS=-mod=... would not apply), so `go mod download` resolves the module itself.
  info="$(cd / && GOFLAGS='' "$GO" mod download -json "$mod@$v")" || die "go mod download $mod@$v failed: $info"
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")"
  got="$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$info")"
  [ "$got" = "$sum" ] || die "$mod@$v: the module's sum is $got, $pin pins $sum"
  [ -d "$dir" ] || die "$mod@$v: go mod download gave no directory ($info)"
  local src; src="$(mktemp -d "$CLUSTER_BIN/.keda-src.XXXXXX")"
  cp -r "$dir/." "$src/" || die "cannot copy $dir to $src"
  chmod -R u+w "$src"
  # Its dependencies (all of them: the operator links every scaler) before the build, so a slow proxy is
  # told apart from a slow compile.
  (cd "$src" && GOFLAGS=-mod=readonly nice -n 5 "$GO" mod download) || { rm -rf "$src"; die "go mod download in $mod@$v failed"; }
  go_build "$src" "-X $mod/version.Version=${v#v} -X $mod/version.GitCommit=$v" ./cmd/operator ./cmd/adapter
  mv -f "$CLUSTER_BIN/operator" "$CLUSTER_BIN/keda-operator"
  mv -f "$CLUSTER_BIN/adapter" "$CLUSTER_BIN/keda-adapter"
  rm -rf "$CLUSTER_BIN/keda-crds"; mkdir -p "$CLUSTER_BIN/keda-crds"
  cp "$src"/config/crd/bases/*.yaml "$CLUSTER_BIN/keda-crds/" || die "$mod@$v has no config/crd/bases"
  rm -rf "$src"
  echo "$s" >"$CLUSTER_BIN/.keda-operator.stamp"; echo "$s" >"$CLUSTER_BIN/.keda-adapter.stamp"
  echo "$s" >"$CLUSTER_BIN/keda-crds/.stamp"
  say "keda $v built in $(( $(date +%s) - t0 ))s"
}

ALL="kubernetes coredns registry pause versitygw local-path-provisioner kube-network-policies keda"
want="${*:-$ALL}"
for c in $want; do
  case "$c" in
    kubernetes) build_kubernetes ;;
    coredns) build_one coredns "$HERE/tools/coredns" github.com/coredns/coredns ;;
    registry) build_one registry "$HERE/tools/registry" github.com/distribution/distribution/v3/cmd/registry ;;
    pause) build_one pause "$HERE/pause" . ;;
    versitygw)
      v="$(pinned_version "$HERE/tools/versitygw" github.com/versity/versitygw)"
      [ -n "$v" ] || die "cluster/tools/versitygw/go.mod does not require github.com/versity/versitygw"
      build_one versitygw "$HERE/tools/versitygw" github.com/versity/versitygw/cmd/versitygw "-X main.Version=$v" ;;
    local-path-provisioner)
      build_one local-path-provisioner "$HERE/tools/local-path-provisioner" github.com/rancher/local-path-provisioner ;;
    kube-network-policies)
      build_one kube-network-policies "$HERE/tools/kube-network-policies" sigs.k8s.io/kube-network-policies/cmd ;;
    keda) build_keda ;;
    *) die "unknown component '$c' (allowed: $ALL)" ;;
  esac
done
echo "$CLUSTER_BIN"
