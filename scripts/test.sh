#!/usr/bin/env bash
# Run every test: unit tests, script edge cases and end-to-end tests against real redis-server
# processes and the real binaries (the harness starts its own Redis servers on free ports).
#
#   scripts/test.sh [--busy] [cargo test arguments...]
#
# --busy (or TV_TEST_BUSY=1) runs the suite the way a shared machine does: a CPU hog spins on
# one core for the length of the run (killed when the run ends, and after 2 h at most). The
# suite must pass like that too: no test may depend on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

busy="${TV_TEST_BUSY:-0}"
args=()
for a in "$@"; do
  if [ "$a" = "--busy" ]; then busy=1; else args+=("$a"); fi
done

bash scripts/setup.sh
# The end-to-end tests spawn the vault-api and janitor binaries: build them first.
cargo build --workspace --bins

log=$(mktemp)
hog=""
cleanup() {
  [ -n "$hog" ] && kill "$hog" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
if [ "$busy" = 1 ]; then
  pin=()
  command -v taskset >/dev/null 2>&1 && pin=(taskset -c 0)
  "${pin[@]}" timeout 7200 bash -c 'while :; do :; done' &
  hog=$!
  echo "busy mode: a CPU hog (pid $hog) spins on ${pin:+core 0 of }$(nproc) cores for the run"
fi

started=$(date +%s)
set +e
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast ${args[@]+"${args[@]}"} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))

# Time per test binary, slowest first (cargo prints "Running <source> (<binary>)" or
# "Doc-tests <crate>" before each binary's tests, and "finished in N s" in its result line),
# then one closing line over every binary.
awk '
  /^ *Running / {
    name = $NF; gsub(/[()]/, "", name); sub(/^.*\//, "", name); sub(/-[0-9a-f]+$/, "", name)
    name = ($2 == "unittests") ? name " (unit tests of " $3 ")" : name " (" $2 ")"
    next
  }
  /^ *Doc-tests / { name = "doc-tests " $2; next }
  /^test result:/ {
    t = ""
    for (i = 1; i <= NF; i++) if ($i == "in") { t = $(i+1); sub(/s$/, "", t) }
    if (t + 0 >= 1) printf "  %7.1f s  %s\n", t, name
  }' "$log" | sort -rn > "$log.times"
if [ -s "$log.times" ]; then echo "time per test binary (1 s or more):"; cat "$log.times"; fi
rm -f "$log.times"
awk -v elapsed="$elapsed" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed, in %d min %d s\n", p, f, elapsed / 60, elapsed % 60 }' "$log"
exit "$rc"
