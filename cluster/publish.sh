#!/usr/bin/env bash
# Publishes this clone's worker image and chart to the local cluster's OCI registry, as a platform
# team publishes them to theirs, and writes .cluster/env for users and tests:
#
#   image  scripts/build-image-offline.sh -> docker push $REGISTRY/modelops-dask:<version>
#          (pods pull it by digest, so a rebuilt image is never mistaken for a cached one)
#   chart  helm package charts/modelops-dask -> helm push oci://$REGISTRY/charts
#
# Needs the cluster's registry running (cluster/up.sh, or cluster/kind-up.sh) and the chart tools
# (make tools). Environment: PUBLISH_KUBECONFIG and PUBLISH_KUBECTL for a cluster other than the local
# one (kind-up.sh sets them), PUBLISH_POD_REGISTRY (the registry's address as pods reach it, written
# as REGISTRY_BRIDGE; default: the local cluster's $REGISTRY_BRIDGE), PUBLISH_STORAGE_CLASS (the other
# cluster's default StorageClass, written as STORAGE_CLASS), MODELOPS_REGISTRY_PORT (cluster/lib.sh).
# For the local cluster it also names its object store (S3_*) and StorageClass; for another cluster no
# S3_* (none is set up there), and consumers must treat their absence as "no object store".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"
close_inherited_fds  # a Docker engine started below must not hold the caller's lock

HELM="$ROOT/.tools/bin/helm"
ENV_FILE="$ROOT/.cluster/env"
[ -x "$HELM" ] || die "$HELM is missing (make tools)"
KUBECONFIG_FOR_ENV="${PUBLISH_KUBECONFIG:-$CLUSTER_KUBECONFIG}"
KUBECTL_FOR_ENV="${PUBLISH_KUBECTL:-$CLUSTER_BIN/kubectl}"
curl -sf -o /dev/null "http://$REGISTRY/v2/" || die "no OCI registry answers at http://$REGISTRY/v2/ (make cluster-up)"
# The same registry as pods reach it (workers pulling OCI bundles): the local cluster's bridge registry,
# or PUBLISH_POD_REGISTRY for another cluster (kind: the registry container's name and port); "" = none.
if [ -n "${PUBLISH_KUBECONFIG:-}" ]; then POD_REGISTRY="${PUBLISH_POD_REGISTRY:-}"
else
  POD_REGISTRY="${PUBLISH_POD_REGISTRY-$REGISTRY_BRIDGE}"
  [ -z "$POD_REGISTRY" ] || curl -sf -o /dev/null "http://$POD_REGISTRY/v2/" \
    || die "no OCI registry answers at http://$POD_REGISTRY/v2/, the registry for pods (make cluster-up starts it)"
fi
# The object store and the default StorageClass: the local cluster's (up.sh made them), or for another
# cluster its StorageClass only.
S3_LINES=""
if [ -n "${PUBLISH_KUBECONFIG:-}" ]; then STORAGE_CLASS_FOR_ENV="${PUBLISH_STORAGE_CLASS:-}"
else
  STORAGE_CLASS_FOR_ENV="$STORAGE_CLASS"
  curl -s -o /dev/null "$S3_ENDPOINT/" || die "no object store answers at $S3_ENDPOINT (cluster/objectstore.sh start)"
  [ -s "$S3_CREDENTIALS" ] || die "the object store's credentials file $S3_CREDENTIALS is missing (cluster/objectstore.sh start makes it)"
  S3_LINES="# The object store (versitygw): from this machine and from pods alike. S3_CREDENTIALS_FILE holds two
# KEY=VALUE lines, AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... (root's, mode 0600); path-style URLs.
export S3_ENDPOINT=$S3_ENDPOINT
export S3_REGION=$S3_REGION
export S3_BUCKET=$S3_BUCKET
export S3_CREDENTIALS_FILE=$S3_CREDENTIALS"
fi

version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"

# --- image ---
bash "$ROOT/scripts/docker-engine.sh" start
bash "$ROOT/scripts/build-image-offline.sh"
repo="$REGISTRY/modelops-dask"
docker tag "modelops-dask:$version" "$repo:$version"
docker push -q "$repo:$version" >/dev/null || die "docker push $repo:$version failed"
digest="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$repo:$version" \
  | grep -F "$repo@" | head -n 1 | cut -d@ -f2)"
[ -n "$digest" ] || die "no digest recorded for $repo:$version after the push"
say "pushed $repo:$version ($digest)"

# --- chart ---
# Published as <version>-local.<content hash>: clones with different charts never overwrite each
# other's in the shared registry, and the same files always give the same version.
pkg="$(mktemp -d)"
trap 'rm -rf "$pkg"' EXIT
base_version="$(awk '$1 == "version:" {print $2; exit}' "$ROOT/charts/modelops-dask/Chart.yaml" | tr -d '"')"
content="$(cd "$ROOT/charts" && find modelops-dask -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
chart_version="$base_version-local.$content"
"$HELM" package "$ROOT/charts/modelops-dask" --version "$chart_version" --destination "$pkg" >/dev/null
"$HELM" push "$pkg/modelops-dask-$chart_version.tgz" "oci://$REGISTRY/charts" --plain-http >/dev/null 2>"$pkg/push.log" \
  || { cat "$pkg/push.log" >&2; die "helm push to oci://$REGISTRY/charts failed"; }
say "pushed oci://$REGISTRY/charts/modelops-dask:$chart_version"

# --- .cluster/env ---
mkdir -p "$(dirname "$ENV_FILE")"
cat >"$ENV_FILE.tmp" <<EOF
# Written by make cluster-up: source it to point kubectl and helm at the local cluster.
export KUBECONFIG=$KUBECONFIG_FOR_ENV
export KUBECTL=$KUBECTL_FOR_ENV
export PATH=$(dirname "$KUBECTL_FOR_ENV"):$ROOT/.tools/bin:\$PATH
export REGISTRY=$REGISTRY
export REGISTRY_BRIDGE=$POD_REGISTRY
export IMAGE=$repo@$digest
export IMAGE_REPOSITORY=$repo
export IMAGE_TAG=$version
export IMAGE_DIGEST=$digest
export CHART=oci://$REGISTRY/charts/modelops-dask
export CHART_VERSION=$chart_version
EOF
{
  [ -z "$STORAGE_CLASS_FOR_ENV" ] || echo "export STORAGE_CLASS=$STORAGE_CLASS_FOR_ENV"
  [ -z "$S3_LINES" ] || echo "$S3_LINES"
} >>"$ENV_FILE.tmp"
mv -f "$ENV_FILE.tmp" "$ENV_FILE"
grep '^export' "$ENV_FILE"
cat <<EOF

Local cluster ready. For example:
  source .cluster/env
  helm install sims "\$CHART" --version "\$CHART_VERSION" --plain-http -n sims --create-namespace \\
    -f values/cold.yaml -f values/local.yaml \\
    --set image.repository="\$IMAGE_REPOSITORY" --set image.digest="\$IMAGE_DIGEST"
EOF
