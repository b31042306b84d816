#!/usr/bin/env bash
# Builds the image podnet:local from deploy/Dockerfile. The base is python:3.11-slim when it is present or can
# be pulled; otherwise (or with PODNET_OFFLINE=1) a Debian base made by base-image.sh with no registry at all.
# podnet's dependencies come from a wheelhouse built here (cached), so the build needs no PyPI either.
set -euo pipefail
source "$(dirname "$0")/common.sh"
python=${PYTHON:-$repo/.venv/bin/python}

base=${PODNET_BASE_IMAGE:-}
if [ -z "$base" ]; then
  if [ "${PODNET_OFFLINE:-0}" != 1 ] && { docker image inspect python:3.11-slim >/dev/null 2>&1 \
       || timeout 120 docker pull -q python:3.11-slim >/dev/null 2>&1; }; then
    base=python:3.11-slim
  else
    "$repo/deploy/compose/base-image.sh" podnet-base:local
    base=podnet-base:local
  fi
fi
etcd_base=${PODNET_ETCD_BASE_IMAGE:-}
[ -n "$etcd_base" ] || { [ "$base" = podnet-base:local ] && etcd_base=$base || etcd_base=debian:bookworm-slim; }

# The wheelhouse: binary wheels fit the image's Python only when this Python has the same version.
rm -rf "$repo/build/compose-wheels"
if "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  key=$(cat "$repo/pyproject.toml" "$repo/setup.py" | sha256sum | cut -c1-16)
  wheels=$cache/wheels-$key
  if [ ! -f "$wheels/.complete" ]; then
    rm -rf "$wheels" && mkdir -p "$wheels"
    "$python" -m pip wheel -q -w "$wheels" "setuptools>=68" wheel "$repo" >"$cache/pip-wheel.log" 2>&1 \
      || { tail -20 "$cache/pip-wheel.log" >&2; exit 1; }
    rm -f "$wheels"/podnet-*.whl  # podnet itself is installed from the sources in the build context
    touch "$wheels/.complete"
  fi
  mkdir -p "$repo/build"
  cp -a "$wheels" "$repo/build/compose-wheels"
fi

echo "build: podnet:local from $base (etcd from $etcd_base)" >&2
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -q -f "$repo/deploy/Dockerfile" -t podnet:local \
  --build-arg BASE_IMAGE="$base" --build-arg ETCD_BASE_IMAGE="$etcd_base" "$repo" >/dev/null
rm -rf "$repo/build/compose-wheels"
# The image a rebuild replaced, and the etcd stage's, are left untagged: remove them.
docker image prune -f --filter label=org.podnet.build=compose >/dev/null
