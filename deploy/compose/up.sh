#!/usr/bin/env bash
# Builds the image, starts deploy/docker-compose.yml, points the host's CLI at it and waits until every
# node is Ready and the cluster DNS answers. The host's cluster home is $PODNET_COMPOSE_HOME
# (default deploy/.home): kubeconfig there, and each node's state directory with its agent socket.
set -euo pipefail
source "$(dirname "$0")/common.sh"
nodes=$(grep -cE '^  node-[0-9]+:$' "$compose_file")
if [ -z "${PODNET_TOKEN:-}" ]; then
  PODNET_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
export PODNET_TOKEN

"$repo/deploy/compose/build.sh"
mkdir -p "$PODNET_COMPOSE_HOME/nodes"
compose up -d --no-build
$podnet compose kubeconfig --home "$PODNET_COMPOSE_HOME" --token "$PODNET_TOKEN" >/dev/null
if ! $podnet compose wait --home "$PODNET_COMPOSE_HOME" --nodes "$nodes" --timeout "${PODNET_COMPOSE_TIMEOUT:-150}"; then
  compose ps >&2
  compose logs --tail 20 >&2
  exit 1
fi
echo "compose cluster is up: export PODNET_HOME=$PODNET_COMPOSE_HOME (or KUBECONFIG=$PODNET_COMPOSE_HOME/kubeconfig)"
