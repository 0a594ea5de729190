#!/usr/bin/env bash
# A 3-node Quiver cluster on this machine, for trying cluster mode: one command.
#
#   examples/local-cluster.sh [DIR]        (default DIR: quiver-cluster)
#
# Builds the release binary if it is missing, then starts three `quiver serve --db-type
# cluster` nodes on loopback (clients on 127.0.0.1:7611-7613, peers on 7601-7603, HTTP on
# 7681-7683), each with its data directory under DIR, one generated secret (DIR/secret) and
# one client certificate (node 1 generates it; the others serve the same, so a client trusts
# DIR/node1/tls/ca.pem for all three). It waits until they agree on a leader, prints how to
# reach them, and stops them all (SIGTERM) on Ctrl-C. Restarting it reuses DIR: the nodes
# come back with their data.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-quiver-cluster}
quiver=${QUIVER_BIN:-$root/target/release/quiver}
if [[ ! -x $quiver ]]; then
  (cd "$root" && cargo build --release -p quiver-server)
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ ! -s $dir/secret ]]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$dir/secret")
fi
members=1=127.0.0.1:7601/127.0.0.1:7611,2=127.0.0.1:7602/127.0.0.1:7612,3=127.0.0.1:7603/127.0.0.1:7613
pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping the nodes"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

start() {
  local i=$1
  shift
  QUIVER_CLUSTER_SECRET_FILE="$dir/secret" "$quiver" serve --db-type cluster \
    --node-id "$i" --initial-members "$members" --peer-listen "127.0.0.1:760$i" \
    --listen "127.0.0.1:761$i" --http "127.0.0.1:768$i" --data-dir "$dir/node$i" "$@" \
    >> "$dir/node$i.log" 2>&1 &
  pids+=($!)
}

start 1
tls="$dir/node1/tls"
for _ in $(seq 100); do [[ -s $tls/server.key ]] && break; sleep 0.1; done
[[ -s $tls/server.key ]] || { echo "node 1 did not start: see $dir/node1.log" >&2; exit 1; }
start 2 --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"
start 3 --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"

for _ in $(seq 100); do
  if "$quiver" cluster status --http 127.0.0.1:7681 --json 2>/dev/null | grep -q '"leader": [0-9]'; then
    break
  fi
  sleep 0.2
done
for i in 1 2 3; do "$quiver" cluster status --http "127.0.0.1:768$i" | head -1; done
cat <<EOF

Three nodes are running (logs in $dir/node*.log). In another shell:

  export QUIVER_SERVER=127.0.0.1:7611,127.0.0.1:7612,127.0.0.1:7613
  export QUIVER_CA=$tls/ca.pem
  $quiver append acct-1 --type Deposited --data '{"amount":10}'
  $quiver read acct-1
  $quiver cluster status --http 127.0.0.1:7681

Kill the leader (kill -9 its pid: $(printf '%s ' "${pids[@]}")) and keep writing. Ctrl-C stops all three.
EOF
wait
