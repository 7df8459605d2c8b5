#!/usr/bin/env bash
# The capacity model of docs/OPERATIONS.md, checked at 1 and 3 Redis primaries: calibrates the
# CPU a lease+release cycle costs Redis, vault-api and the load generator on one plain Redis,
# predicts cycles/s and each node's Redis CPU for a Redis Cluster of 1 and of 3 primaries, and
# measures both (benches/capacity.rs). Every process shares this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vault-api
cargo bench --bench capacity
