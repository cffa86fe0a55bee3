#!/usr/bin/env bash
# The same end-to-end suite on kind, where kind can pull its node image (a GitHub runner; not these
# machines, see ../shared/DESIGN.md): a kind cluster whose containerd pulls from a registry container
# published on 127.0.0.1:$MODELOPS_REGISTRY_PORT, then cluster/publish.sh writes .cluster/env for it.
#   bash cluster/kind-up.sh            # needs docker, kind and kubectl on PATH, and make venv tools
#   bash cluster/kind-up.sh --delete   # removes the kind cluster and the registry container
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export MODELOPS_REGISTRY_PORT="${MODELOPS_REGISTRY_PORT:-5001}"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"

NAME="${KIND_CLUSTER_NAME:-modelops-e2e}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
REGISTRY_IMAGE="registry:3.0.0"   # the CNCF distribution registry, as built for the local cluster
REGISTRY_CONTAINER="$NAME-registry"

for c in docker kind kubectl; do command -v "$c" >/dev/null 2>&1 || die "$c is not on PATH"; done
if [ "${1:-}" = --delete ]; then
  kind delete cluster --name "$NAME" || true
  docker rm -f "$REGISTRY_CONTAINER" >/dev/null 2>&1 || true
  exit 0
fi

if [ -z "$(docker ps -q --filter "name=^${REGISTRY_CONTAINER}\$")" ]; then
  docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --name "$REGISTRY_CONTAINER" "$REGISTRY_IMAGE" >/dev/null
fi
if ! kind get clusters | grep -qx "$NAME"; then
  kind create cluster --name "$NAME" --image "$NODE_IMAGE" --wait 120s --config - <<EOC
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
EOC
fi
# Inside the nodes, localhost:PORT (the name the pods use) is the registry container on kind's network.
docker network connect kind "$REGISTRY_CONTAINER" 2>/dev/null || true
for node in $(kind get nodes --name "$NAME"); do
  docker exec "$node" mkdir -p "/etc/containerd/certs.d/$REGISTRY"
  printf '[host."http://%s:5000"]\n  capabilities = ["pull", "resolve"]\n' "$REGISTRY_CONTAINER" \
    | docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/$REGISTRY/hosts.toml"
done
mkdir -p "$ROOT/.cluster"
kind get kubeconfig --name "$NAME" >"$ROOT/.cluster/kind-kubeconfig"
# Worker pods pulling OCI bundles reach the registry container by its address on kind's network, which
# this (Linux) host reaches too: the tests push there and name bundles by it (REGISTRY_BRIDGE).
POD_REGISTRY_IP="$(docker inspect -f '{{(index .NetworkSettings.Networks "kind").IPAddress}}' "$REGISTRY_CONTAINER")"
[ -n "$POD_REGISTRY_IP" ] || die "the registry container $REGISTRY_CONTAINER has no address on kind's network"
# Storage: kind ships rancher's local-path-provisioner with its default StorageClass "standard" (hostPath
# volumes, world-writable directories), so STORAGE_CLASS names that one.
# No object store here, so .cluster/env gets no S3_* and the tests that need one skip. What a kind run
# would need (unverified: kind cannot pull its node image on this machine): versitygw in a container on
# kind's network like the registry container (posix backend on a volume, root credentials through its
# environment from a 0600 file), its address on that network as S3_ENDPOINT (this Linux host reaches it
# too), the bucket made with cluster/s3-request.py, and publish.sh taught to write S3_* for it.
PUBLISH_KUBECONFIG="$ROOT/.cluster/kind-kubeconfig" PUBLISH_KUBECTL="$(command -v kubectl)" \
  PUBLISH_POD_REGISTRY="$POD_REGISTRY_IP:5000" PUBLISH_STORAGE_CLASS=standard bash "$HERE/publish.sh"
