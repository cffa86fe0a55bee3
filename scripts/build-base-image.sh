#!/usr/bin/env bash
# Build the offline base image: a Debian bookworm minbase root made by debootstrap, imported into the
# local Docker engine. No registry is needed (see shared/DESIGN.md, machine facts).
#
# Prints the image reference on stdout (last line); everything else goes to stderr.
# Idempotent: an image already built from the same recipe is reused, whatever day it was built on.
# Environment: BASE_SUITE (bookworm), BASE_MIRROR (default: the Debian mirror this machine's own apt
# sources name for that suite, as an air-gapped site has configured it), BASE_TAG (force a tag),
# BASE_REBUILD=1 (build even if an image from this recipe exists).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SUITE="${BASE_SUITE:-bookworm}"

# The mirror of the machine's apt sources that serves $SUITE (deb822 .sources files or one-line
# sources.list entries), never a security or updates archive.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (uri != "" && has) { print uri; exit } uri = ""; has = 0; next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
      END { if (uri != "" && has) print uri }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i < NF; i++) if ($i !~ /^\[/ && $(i+1) == suite) { print $i; exit } }'
}
MIRROR="${BASE_MIRROR:-$(apt_mirror | head -n 1 || true)}"
REPO="modelops-base"
# python3 + venv for the runtime, ca-certificates for TLS clients, tini as PID 1 (zombie reaping).
PACKAGES="python3,python3-venv,ca-certificates,tini"
CACHE="${ROOT}/.cache/base-image"

say() { echo "build-base-image: $*" >&2; }
die() { echo "build-base-image: ERROR: $*" >&2; exit 1; }

[ -n "$MIRROR" ] || die "no Debian mirror for suite ${SUITE} in this machine's apt sources (/etc/apt/sources.list*): set BASE_MIRROR"
docker info >/dev/null 2>&1 || die "no Docker engine answers 'docker info' (run scripts/docker-engine.sh start)"

# The recipe's identity: changing the suite, the mirror's suite or the package list gives a new image.
RECIPE="suite=${SUITE} variant=minbase packages=${PACKAGES} script=v1"
RECIPE_ID="$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)"

if [ -z "${BASE_REBUILD:-}" ]; then
  existing="$(docker images --filter "label=org.modelops.base.recipe=${RECIPE_ID}" \
    --format '{{.Repository}}:{{.Tag}}' | grep "^${REPO}:" | sort | tail -n 1 || true)"
  if [ -n "$existing" ]; then
    say "reusing ${existing} (recipe ${RECIPE_ID})"
    echo "$existing"
    exit 0
  fi
fi

if [ "$(id -u)" -ne 0 ]; then
  # debootstrap, chroot and reading the root filesystem back (e.g. /etc/shadow) need root.
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    say "not root: building the base image under sudo"
    exec sudo -n --preserve-env=BASE_SUITE,BASE_MIRROR,BASE_TAG,BASE_REBUILD,PATH bash "$0" "$@"
  fi
  die "debootstrap needs root (run as root, or where passwordless sudo works)"
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

TAG="${BASE_TAG:-${SUITE}-$(date -u +%Y%m%d)}"
ROOTFS="${CACHE}/rootfs-${RECIPE_ID}"
mkdir -p "$CACHE"
if [ ! -f "${ROOTFS}/.complete" ]; then
  rm -rf "$ROOTFS"
  say "debootstrap ${SUITE} (minbase + ${PACKAGES}) into ${ROOTFS}"
  start=$(date +%s)
  debootstrap --variant=minbase --include="${PACKAGES}" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"${CACHE}/debootstrap.log" 2>&1 || { tail -n 30 "${CACHE}/debootstrap.log" >&2; die "debootstrap failed (log: ${CACHE}/debootstrap.log)"; }
  say "debootstrap took $(( $(date +%s) - start ))s"
  # Trim what a runtime image never needs: package caches, apt lists, docs, man pages, locales.
  rm -rf "${ROOTFS}"/var/cache/apt/archives/*.deb "${ROOTFS}"/var/lib/apt/lists/* \
    "${ROOTFS}"/usr/share/doc/* "${ROOTFS}"/usr/share/man/* "${ROOTFS}"/usr/share/info/* \
    "${ROOTFS}"/var/log/*.log "${ROOTFS}"/var/cache/debconf/*-old
  find "${ROOTFS}/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
  # Same apt source as the official Debian images, so an online child image can apt-get install.
  echo "deb ${MIRROR} ${SUITE} main" >"${ROOTFS}/etc/apt/sources.list"
  touch "${ROOTFS}/.complete"
fi

PYVER="$(chroot "$ROOTFS" python3 -c 'import platform; print(platform.python_version())')"
say "importing ${REPO}:${TAG} (python ${PYVER})"
tar --numeric-owner --exclude=./.complete -C "$ROOTFS" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.modelops.base.recipe=${RECIPE_ID}" \
  --change "LABEL org.modelops.base.python=${PYVER}" \
  --change "LABEL org.opencontainers.image.base.name=debian:${SUITE}" \
  --change "LABEL org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  - "${REPO}:${TAG}" >/dev/null
say "built ${REPO}:${TAG} ($(docker image inspect --format '{{.Size}}' "${REPO}:${TAG}" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "${REPO}:${TAG}"
