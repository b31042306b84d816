#!/usr/bin/env bash
# Builds the image, starts deploy/docker-compose.yml, points the host's CLI at it and waits until every
# node is Ready and the cluster DNS answers. The host's cluster home is $PODNET_COMPOSE_HOME
# (default deploy/.home): kubeconfig and the cluster's credentials (pki/) there, and each node's state
# directory with its agent socket.
set -euo pipefail
source "$(dirname "$0")/common.sh"
nodes=$(grep -cE '^  node-[0-9]+:$' "$compose_file")

failed() {
  compose ps >&2
  compose logs --tail 25 >&2
  echo "compose cluster did not come up: $1 (take it down with deploy/compose/down.sh)" >&2
  exit 1
}

# As root, start a Docker engine when none answers (the Debian packages are installed when missing).
docker info >/dev/null 2>&1 || "$repo/deploy/compose/engine.sh" >/dev/null
"$repo/deploy/compose/build.sh"
mkdir -p "$PODNET_COMPOSE_HOME/nodes"
# The CA, certificates, tokens and kubeconfigs, made here and mounted read-only into every container.
$podnet compose credentials --home "$PODNET_COMPOSE_HOME" --nodes "$nodes" >/dev/null
compose up -d --no-build
$podnet compose wait --home "$PODNET_COMPOSE_HOME" --nodes "$nodes" --timeout "${PODNET_COMPOSE_TIMEOUT:-150}" &
waiter=$!
# A host whose process died exits (its launcher restarts nothing): stop waiting as soon as one has.
while kill -0 "$waiter" 2>/dev/null; do
  exited=$(docker ps -a --filter "label=com.docker.compose.project=$project" --filter status=exited --format '{{.Names}}')
  if [ -n "$exited" ]; then
    kill "$waiter" 2>/dev/null
    failed "exited: $exited"
  fi
  sleep 1
done
wait "$waiter" || failed "not Ready in time"
echo "compose cluster is up: export PODNET_HOME=$PODNET_COMPOSE_HOME (or KUBECONFIG=$PODNET_COMPOSE_HOME/kubeconfig)"
