#!/usr/bin/env bash
# Builds the image podnet's Dockerfile starts from without pulling anything from an image registry: a
# Debian root filesystem made by debootstrap from the same Debian mirror apt uses here, imported as
# podnet-base:local. It holds what python:3.11-slim gives (python3 with venv) plus etcd-server, iproute2
# and dig, so the Dockerfile's install steps find them present. The root filesystem is cached.
# Usage (root): deploy/compose/base-image.sh [IMAGE]
set -euo pipefail
image=${1:-podnet-base:local}
cache=${PODNET_COMPOSE_CACHE:-/var/cache/podnet-compose}
suite=${PODNET_DEBIAN_SUITE:-bookworm}
packages=python3,python3-venv,etcd-server,iproute2,bind9-dnsutils,ca-certificates,procps

mirror() {
  # The first Debian mirror apt is configured with (deb822 .sources or one-line .list).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                          | awk '{print $2}' | grep -v security | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
rootfs=$cache/rootfs-$suite
if [ ! -f "$rootfs/.complete" ]; then
  command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed" >&2; exit 1; }
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  echo "base-image: debootstrap $suite from $(mirror) into $rootfs" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$(mirror)" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # Keep the image small: the package cache and lists are not needed at run time.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  touch "$rootfs/.complete"
fi
echo "base-image: importing $rootfs as $image" >&2
tar -C "$rootfs" --exclude=./.complete -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$image" >/dev/null
