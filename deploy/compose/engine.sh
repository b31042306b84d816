#!/usr/bin/env bash
# Makes a Docker engine answer on this machine (root): installs Debian's docker.io, docker-compose and
# debootstrap when they are missing and starts dockerd when no engine answers. Prints "started PID" when it
# started dockerd (so whoever asked can stop it again), "running" when an engine already answered.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || { echo "engine: needs root" >&2; exit 1; }
"$repo/deploy/install-debs.sh" docker.io docker-compose debootstrap
if docker info >/dev/null 2>&1; then
  echo running
  exit 0
fi
mkdir -p "$cache"
setsid dockerd >"$cache/dockerd.log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "started $pid"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
echo "engine: dockerd did not start; last lines of $cache/dockerd.log:" >&2
tail -15 "$cache/dockerd.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
