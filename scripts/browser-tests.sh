#!/usr/bin/env bash
# Drives the dashboard (/ui) in a real headless Chromium: Debian's `chromium` package,
# controlled by playwright-core (Node; pinned in tests/browser/package-lock.json). Installs
# what is missing (idempotent, quick when present), builds herald, starts a real
# `herald serve` on a free loopback port with a fresh data directory, and runs
# tests/browser/dashboard.test.mjs and tests/browser/portal.test.mjs (the customer portal)
# against it. Screenshots go to target/browser-screenshots/.
# Closing line: `browser: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fail() {
    echo "browser: $1" >&2
    echo "browser: 0 passed, 1 failed"
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

if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (apt)"
    apt_install chromium || fail "cannot install Debian's chromium package"
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "== installing nodejs and npm (apt)"
    apt_install nodejs npm || fail "cannot install nodejs and npm"
fi

want=$(node -e 'console.log(require("./tests/browser/package-lock.json").packages["node_modules/playwright-core"].version)')
have=$(node -e 'try { console.log(require("./tests/browser/node_modules/playwright-core/package.json").version) } catch { console.log("") }')
if [ "$want" != "$have" ]; then
    echo "== installing playwright-core $want (npm ci)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
fi

echo "== building herald"
cargo build -q -p herald || fail "cargo build failed"

data=$(mktemp -d "${TMPDIR:-/tmp}/herald-browser.XXXXXX")
herald_pid=""
cleanup() {
    if [ -n "$herald_pid" ]; then
        kill "$herald_pid" 2>/dev/null || true
        wait "$herald_pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

admin="hrld_browseradmin_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
env -u HERALD_CONFIG -u HERALD_DATABASE_URL \
    HERALD_ADMIN_TOKEN="$admin" HERALD_ALLOW_NETWORKS="127.0.0.0/8" HERALD_LOG=warn \
    "$root/target/debug/herald" serve --listen 127.0.0.1:0 --data-dir "$data/data" \
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
echo "== herald serving at $url"

shots="$root/target/browser-screenshots"
rm -rf "$shots"
mkdir -p "$shots"
set +e
HERALD_URL="$url" HERALD_ADMIN_TOKEN="$admin" SCREENSHOTS="$shots" \
    node tests/browser/dashboard.test.mjs
status=$?
# The customer portal's story runs against the same Herald (its own tenants and tokens).
HERALD_URL="$url" HERALD_ADMIN_TOKEN="$admin" SCREENSHOTS="$shots" \
    node tests/browser/portal.test.mjs || status=1
set -e
if [ "$status" -ne 0 ]; then
    echo "-- herald's log (last 30 lines):" >&2
    tail -n 30 "$data/herald.err" >&2 || true
fi
exit "$status"
