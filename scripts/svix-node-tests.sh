#!/usr/bin/env bash
# Drives Herald's Svix-compatible API (/api/v1/app…, /api/v1/event-type…) with the official
# npm `svix` SDK (pinned in tests/svix-node/package-lock.json), under node's built-in test
# runner. Installs what is missing (idempotent, quick when present), starts a real
# `herald serve` on a free loopback port with a fresh data directory, and runs
# tests/svix-node/svix.test.mjs against it; its webhook receivers are node http servers on
# 127.0.0.1. HERALD_BIN picks the binary (default target/debug/herald, built if missing).
# Closing line: `svix-node: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fail() {
    echo "svix-node: $1" >&2
    echo "svix-node: 0 passed, 1 failed"
    exit 1
}

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get update only when an install fails without it (fresh machine, empty lists).
apt_install() {
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
        sudo_if_needed apt-get update -qq >/dev/null &&
            sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    }
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "== installing nodejs and npm (apt)"
    apt_install nodejs npm || fail "cannot install nodejs and npm"
fi

want=$(node -e 'console.log(require("./tests/svix-node/package-lock.json").packages["node_modules/svix"].version)')
have=$(node -e 'try { console.log(require("./tests/svix-node/node_modules/svix/package.json").version) } catch { console.log("") }')
if [ "$want" != "$have" ]; then
    echo "== installing svix $want (npm ci)"
    (cd tests/svix-node && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
fi

herald_bin="${HERALD_BIN:-$root/target/debug/herald}"
if [ ! -x "$herald_bin" ]; then
    echo "== building herald"
    cargo build -q -p herald || fail "cargo build failed"
    [ -x "$herald_bin" ] || fail "no herald binary at $herald_bin"
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/herald-svix-node.XXXXXX")
herald_pid=""
cleanup() {
    if [ -n "$herald_pid" ]; then
        kill "$herald_pid" 2>/dev/null || true
        wait "$herald_pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

admin="hrld_svixnodeadmin_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
env -u HERALD_CONFIG -u HERALD_DATABASE_URL \
    HERALD_ADMIN_TOKEN="$admin" HERALD_ALLOW_NETWORKS="127.0.0.0/8" HERALD_LOG=warn \
    "$herald_bin" serve --listen 127.0.0.1:0 --data-dir "$data/data" \
    >"$data/herald.out" 2>"$data/herald.err" &
herald_pid=$!
url=""
for _ in $(seq 1 300); do
    url=$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$data/herald.out" 2>/dev/null | head -1 || true)
    [ -n "$url" ] && break
    kill -0 "$herald_pid" 2>/dev/null || { cat "$data/herald.err" >&2; fail "herald exited early"; }
    sleep 0.1
done
[ -n "$url" ] || fail "herald did not start within 30 s"
echo "== herald serving at $url (svix $want, node $(node --version))"

# The spec reporter for people on stdout; TAP to a file for the counts.
set +e
HERALD_URL="$url" HERALD_ADMIN_TOKEN="$admin" \
    node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$data/results.tap" \
    tests/svix-node/svix.test.mjs
status=$?
set -e
passed=$(awk '/^# pass [0-9]+$/ { n = $3 } END { print n + 0 }' "$data/results.tap" 2>/dev/null || echo 0)
failed=$(awk '/^# fail [0-9]+$/ { n = $3 } END { print n + 0 }' "$data/results.tap" 2>/dev/null || echo 0)
# A run that failed without a failing test (the file did not load, node crashed) counts one.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$status" -eq 0 ] && [ "$passed" -eq 0 ]; then
    echo "svix-node: no test ran" >&2
    failed=1
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "-- herald's log (last 30 lines):" >&2
    tail -n 30 "$data/herald.err" >&2 || true
fi
echo "svix-node: $passed passed, $failed failed"
exit "$status"
