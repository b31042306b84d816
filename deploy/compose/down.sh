#!/usr/bin/env bash
# Stops and removes everything the compose cluster made, even after a crash or a half-finished start:
# its containers and network (found by compose's project label as well, in case compose itself cannot
# read the project) and the host-side cluster home. The images stay, so the next start is fast.
set -uo pipefail
source "$(dirname "$0")/common.sh"
compose down --remove-orphans --volumes --timeout 5 >/dev/null 2>&1
label=com.docker.compose.project=$project
containers=$(docker ps -aq --filter "label=$label")
[ -z "$containers" ] || docker rm -f -v $containers >/dev/null
networks=$(docker network ls -q --filter "label=$label")
[ -z "$networks" ] || docker network rm $networks >/dev/null
rm -rf "$PODNET_COMPOSE_HOME"
left=$(docker ps -aq --filter "label=$label"; docker network ls -q --filter "label=$label")
if [ -n "$left" ]; then
  echo "compose-down: could not remove: $left" >&2
  exit 1
fi
