#!/usr/bin/env bash
# Redis CPU spent by a janitor and a refresher (release builds, default settings) on 5,000 idle
# pools: what the sweeps cost when nothing is due. Needs `cargo build --release --workspace --bins`.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
D=$(mktemp -d)
redis-server --port $PORT --save "" --appendonly no --dir $D --daemonize yes >/dev/null
sleep 0.5
# 5000 idle pools straight into Redis (config hash + name), as the vault writes them.
python3 - <<PY
import subprocess
cmds=[]
for i in range(5000):
    cmds.append(f'HSET "tv:{{p{i}}}:cfg" frozen 0 lease_ttl_s 60 created_at 1\n')
    cmds.append(f'SADD tv:pools p{i}\n')
open('$D/pools.txt','w').write(''.join(cmds))
PY
redis-cli -p $PORT < $D/pools.txt > /dev/null
export TV_REDIS_URL=redis://127.0.0.1:$PORT TV_MASTER_KEY=$(openssl rand -base64 32) RUST_LOG=warn
target/release/janitor > /dev/null 2>&1 & J=$!
target/release/refresher > /dev/null 2>&1 & R=$!
sleep 3
c0=$(redis-cli -p $PORT info cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
sleep 10
c1=$(redis-cli -p $PORT info cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
echo "redis cpu over 10 s with 5000 idle pools, janitor + refresher at defaults: $(python3 -c "print(round(($c1-$c0)/10*100,1))") %"
kill $J $R; redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true
rm -rf "$D"
