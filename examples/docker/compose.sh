#!/usr/bin/env bash
# Runs Quiver's compose files with whichever Compose this machine has.
#
#   examples/docker/compose.sh cluster          # start the 3-node cluster, wait, show it
#   examples/docker/compose.sh single           # start one node, wait, show it
#   examples/docker/compose.sh KIND ARGS...     # any compose command: ps, logs -f, kill
#                                               # quiver2, start quiver2, down -v, ...
#
# Before anything else it makes sure KIND.env exists next to the compose file, writing one
# with fresh random values if not (QUIVER_TOKEN, and for a cluster QUIVER_CLUSTER_SECRET):
# the file is the only place they are kept, readable by its owner only. Compose v2 (`docker
# compose`) is used when present, else v1 (`docker-compose`). The project name is
# quiver-KIND unless QUIVER_PROJECT says otherwise; QUIVER_COMPOSE_EXTRA names an override
# file merged on top of compose.KIND.yml. The image must exist: build.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() {
  echo "usage: $0 single|cluster [COMPOSE ARGS...]   (no ARGS: start, wait until healthy, show)" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
kind=$1
shift
case $kind in
  single | cluster) ;;
  *) usage ;;
esac
file=$here/compose.$kind.yml
# The compose files read ${QUIVER_ENV_FILE:-KIND.env}; a test points it at a file of its own.
env_file=$(realpath -m "${QUIVER_ENV_FILE:-$here/$kind.env}")
export QUIVER_ENV_FILE=$env_file
project=${QUIVER_PROJECT:-quiver-$kind}

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
compose+=(-f "$file")
# An override file of your own (real certificates mounted, other ports, ...), merged on top.
if [[ -n ${QUIVER_COMPOSE_EXTRA:-} ]]; then
  compose+=(-f "$QUIVER_COMPOSE_EXTRA")
fi
compose+=(-p "$project")

# 32 random bytes as 64 hex digits: no character an env file or a shell treats specially.
random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

if [[ ! -s $env_file ]]; then
  (
    umask 077
    {
      echo "# Written by examples/docker/compose.sh; keep it private. Every node reads it."
      echo "QUIVER_TOKEN=$(random_hex)"
      if [[ $kind == cluster ]]; then
        echo "QUIVER_CLUSTER_SECRET=$(random_hex)"
      fi
    } > "$env_file"
  )
  echo "wrote $env_file (a random token$([[ $kind == cluster ]] && echo " and cluster secret"))" >&2
fi

# A copy of the example file still holding its placeholders would start nodes whose token
# and secret anyone can read in the repository.
if grep -q 'replace-with' "$env_file"; then
  echo "$env_file still holds the placeholder values of $kind.env.example: replace them" >&2
  exit 1
fi

if [[ $# -gt 0 ]]; then
  exec "${compose[@]}" "$@"
fi

# No arguments: start, wait (bounded) until Docker reports every container healthy, show.
"${compose[@]}" up -d
mapfile -t ids < <("${compose[@]}" ps -q)
deadline=$((SECONDS + ${QUIVER_WAIT_SECS:-90}))
while :; do
  unhealthy=0
  for id in "${ids[@]}"; do
    state=$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo missing)
    [[ $state == healthy ]] || unhealthy=$((unhealthy + 1))
  done
  [[ $unhealthy -eq 0 ]] && break
  if ((SECONDS >= deadline)); then
    echo "$unhealthy of ${#ids[@]} containers not healthy after ${QUIVER_WAIT_SECS:-90} s; logs:" >&2
    "${compose[@]}" logs --tail 20 >&2 || true
    exit 1
  fi
  sleep 1
done
for id in "${ids[@]}"; do
  name=$(docker inspect -f '{{.Name}}' "$id")
  echo "== ${name#/}"
  if [[ $kind == cluster ]]; then
    docker exec "$id" /quiver cluster status --http 127.0.0.1:7602 | head -3
  else
    docker exec "$id" /quiver status --server 127.0.0.1:7600
  fi
done
"${compose[@]}" ps
