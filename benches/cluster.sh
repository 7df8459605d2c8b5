#!/usr/bin/env bash
# One Redis against a 3-primary Redis Cluster, same load: `vaultctl check` with 30 pools and 16
# workers for 20 s against one vault-api replica (release builds). Prints the checker's operations
# per second and each Redis node's CPU over the run. Every process shares this machine's cores.
# Needs `cargo build --release --workspace --bins`.
set -euo pipefail
cd "$(dirname "$0")/.."
D=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu() { redis-cli -p "$1" info cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}'; }
target/release/vaultctl keys generate --out "$D/k1.pem" >/dev/null 2>&1
TOKEN=$(target/release/vaultctl token mint --signing-key "$D/k1.pem" --sub bench --scopes admin --ttl 1h 2>/dev/null)
export TV_MASTER_KEY=$(openssl rand -base64 32) TV_SIGNING_KEYS="$D" RUST_LOG=warn

# $1 label, $2 TV_REDIS_URL, $3... the Redis ports to watch
measure() {
  local label=$1 url=$2; shift 2
  local api; api=$(free_port)
  TV_REDIS_URL=$url TV_LISTEN_ADDR=127.0.0.1:$api TV_MAX_CONNECTIONS_PER_ADDR=4096 \
    target/release/vault-api >"$D/api-$label.log" 2>&1 & local pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  declare -A before
  for p in "$@"; do before[$p]=$(cpu "$p"); done
  local out; out=$(target/release/vaultctl check --urls "http://127.0.0.1:$api" --token "$TOKEN" \
    --pools 30 --tokens 10 --workers 16 --duration 20s --seed 1)
  local ops; ops=$(echo "$out" | awk '/^operations:/ {print $2}')
  local per=""
  for p in "$@"; do per="$per $(python3 -c "print(round(($(cpu "$p")-${before[$p]})/20*100,1))")%"; done
  echo "$label: $(python3 -c "print(round($ops/20))") operations/s, $(echo "$out" | grep '^violations'), Redis CPU per node:$per"
  kill $pid; wait $pid 2>/dev/null || true
}

P=$(free_port); mkdir -p "$D/single"
redis-server --port "$P" --save "" --appendonly no --dir "$D/single" --daemonize yes >/dev/null
sleep 0.5
measure "one Redis" "redis://127.0.0.1:$P" "$P"
redis-cli -p "$P" shutdown nosave >/dev/null 2>&1 || true

PORTS=()
for i in 1 2 3; do
  p=$(free_port); PORTS+=("$p"); mkdir -p "$D/c$i"
  redis-server --port "$p" --save "" --appendonly no --dir "$D/c$i" --daemonize yes \
    --cluster-enabled yes --cluster-config-file nodes.conf >/dev/null
done
sleep 0.5
redis-cli --cluster create $(printf "127.0.0.1:%s " "${PORTS[@]}") --cluster-yes >/dev/null
for _ in $(seq 100); do redis-cli -p "${PORTS[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
measure "3-primary cluster" "redis+cluster://$(printf "127.0.0.1:%s," "${PORTS[@]}" | sed 's/,$//')" "${PORTS[@]}"
for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
rm -rf "$D"
