#!/usr/bin/env bash
# Start the whole system for development: a private Redis, the API, the janitor and a demo pool.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec cargo run --quiet --bin tokenvault -- dev "$@"
