#!/usr/bin/env bash
# Runs every check and test Herald has: formatting, lints, the whole test suite (Rust unit,
# integration, crash and cluster tests, on SQLite and the machine's Postgres; the fault
# suite against a private Postgres, a small tmpfs and strace's fsync injection), the Python
# client's tests against real Django/DRF, sentry-sdk and apprise, the dashboard in a real
# headless Chromium, the Svix-compatible API driven by the official npm svix SDK, the release
# packages (the .deb installed on this machine and run),
# bounded fuzzing of the parsers, and property-based testing of the HTTP API against its
# OpenAPI document. This is the README's test command and what CI
# (.ci/run) calls. FAST=1 skips the two fuzzing stages.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
mkdir -p target
log=target/test-output.log
: >"$log"
status=0

# The Postgres store and cluster tests run against the machine's Postgres (started here if
# installed but stopped); without one they skip loudly, except in CI, where they must run.
if [ -z "${HERALD_TEST_POSTGRES_URL:-}" ]; then
    if pg_env="$(./scripts/postgres.sh)"; then
        eval "$pg_env"
    elif [ -n "${CI:-}" ]; then
        echo "CI needs Postgres for the store and cluster tests, and none answers" >&2
        exit 1
    else
        echo "== no Postgres answers: the Postgres store and cluster tests will be SKIPPED"
    fi
fi
[ -n "${HERALD_TEST_POSTGRES_URL:-}" ] && echo "== Postgres tests on $HERALD_TEST_POSTGRES_URL"

./scripts/fault-tools.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
set +e
cargo test --workspace --no-fail-fast -- --nocapture 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e

echo "== python client tests (clients/python: client, Airflow, Django/DRF, sentry-sdk, apprise)"
set +e
HERALD_BIN="$(pwd)/target/debug/herald" ./scripts/python-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e

echo "== browser tests (dashboard in headless Chromium)"
set +e
./scripts/browser-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e

echo "== svix node SDK (tests/svix-node: the npm svix package against herald)"
set +e
HERALD_BIN="$(pwd)/target/debug/herald" ./scripts/svix-node-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e

echo "== package (scripts/package.sh, then the .deb installed with dpkg -i and run; a release build)"
set +e
./scripts/package-test.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e

if [ "${FAST:-0}" != "1" ]; then
    echo "== fuzzing (cargo fuzz)"
    ./scripts/fuzz.sh 2>&1 | tee -a "$log" || status=1
    echo "== API property testing (schemathesis)"
    ./scripts/api-fuzz.sh 2>&1 | tee -a "$log" || status=1
fi

echo "== results"
grep -E "^(fault|crash test|cluster test|cluster audit chain|claims|group commit|rate limit|breaker|fast destination)[ :(]" "$log" || true
# One closing line for the whole run: every test runner's counts added up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     /^(fuzz|schemathesis|browser|python|package|svix-node): [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
