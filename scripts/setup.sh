#!/usr/bin/env bash
# Installs what tokenvault needs on a fresh Debian/Ubuntu machine: redis-server (the vault's
# engine, also started privately by tests and `tokenvault dev`), haproxy (the load balancer the
# deployment tests put in front of several replicas), Python for schemathesis (the API fuzz test)
# and the Python client's tests, chromium with its driver (the dashboard's browser test), promtool
# (the alert rules' tests), iproute2 (network namespaces for the regions test) and a C toolchain for crates that build C. Rust itself comes from rustup (https://rustup.rs) if
# cargo is missing.
# `setup.sh dev` installs only what `scripts/dev.sh` needs (no haproxy, no schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=1
[ "${1:-}" = "dev" ] && for_tests=0

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
# setpriv: the tests' shared redis-server dies with its test process (--pdeathsig).
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ "$for_tests" = 1 ]; then
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3 python3-venv)
  # Debian installs haproxy in /usr/sbin, which a non-root PATH may lack.
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  # The dashboard's browser test (clients/python/tests/test_dashboard.py).
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  # The regions test puts each region in a network namespace (as root; on loopback otherwise).
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Redis Functions (the vault's atomic operations) need Redis 7.0 or later.
redis_major=$(redis-server --version | sed -n 's/.*v=\([0-9]*\)\..*/\1/p')
if [ "${redis_major:-0}" -lt 7 ]; then
  echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') is too old: tokenvault needs Redis 7.0 or later (Debian 12, Ubuntu 24.04, or packages.redis.io)" >&2
  exit 1
fi

# The Debian packages start a system-wide redis on 6379 (and haproxy with its stock config, where
# systemd runs); tokenvault never uses them (tests and dev mode start their own on free ports),
# so leave them as the packages set them up.

# schemathesis (the API fuzz test, tests/e2e/fuzz.rs) lives in a virtualenv of its own in the
# checkout, pinned, so the system Python is left alone.
# The same virtualenv holds the Python client (clients/python, installed editable) and what its
# tests use: pytest, requests, httpx, Scrapy — pinned in tests/python-requirements.txt.
SCHEMATHESIS_VERSION=4.32.5
venv=.venv-tests
if [ "$for_tests" = 1 ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  # Reinstalled when the pins, the package's build or the gRPC contract change (its stubs are
  # generated from proto/ when it is installed): a stamp of those files' content.
  stamp="$venv/.python-requirements.sha256"
  want=$(sha256sum tests/python-requirements.txt clients/python/pyproject.toml \
    clients/python/setup.py proto/tokenvault/v1/*.proto | sha256sum | cut -c1-64)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the Python client and its test requirements into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python-requirements.txt \
      -e 'clients/python[grpc]'
    echo "$want" > "$stamp"
  fi
fi

# promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/e2e/monitoring.rs). It comes
# out of Debian's prometheus package without installing the package, so no Prometheus server is
# set up as a system service on a developer's machine.
if [ "$for_tests" = 1 ] && [ ! -x .tools/bin/promtool ]; then
  echo "extracting promtool from Debian's prometheus package into .tools/bin"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  tmp=$(mktemp -d)
  chmod 777 "$tmp"
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p .tools/bin
  cp "$tmp/x/usr/bin/promtool" .tools/bin/promtool
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
