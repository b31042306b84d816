# Sourced by the deploy/compose scripts: where things are, and how to call compose.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
compose_file=$repo/deploy/docker-compose.yml
cache=${PODNET_COMPOSE_CACHE:-/var/cache/podnet-compose}
export PODNET_COMPOSE_HOME=${PODNET_COMPOSE_HOME:-$repo/deploy/.home}
podnet=${PODNET:-$repo/.venv/bin/podnet}
project=${COMPOSE_PROJECT_NAME:-podnet}

compose() {
  if command -v docker-compose >/dev/null; then
    docker-compose -p "$project" -f "$compose_file" "$@"
  else
    docker compose -p "$project" -f "$compose_file" "$@"
  fi
}
