#!/usr/bin/env bash
# Makes the machine's Postgres ready for the test suite: starts the local cluster if it is
# installed but stopped, waits for it, and drops the databases earlier test runs left
# behind (every test creates a fresh `herald_t_*` database). Prints the URL to use.
# Usage: eval "$(scripts/postgres.sh)"   → exports HERALD_TEST_POSTGRES_URL
set -euo pipefail
url="${HERALD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
        if ! pg_ctlcluster "$version" main status >/dev/null 2>&1; then
            echo "starting Postgres $version" >&2
            pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
        fi
    done
fi

if command -v psql >/dev/null 2>&1; then
    for _ in $(seq 1 30); do
        psql "$url" -Atqc 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
    if ! psql "$url" -Atqc 'SELECT 1' >/dev/null 2>&1; then
        echo "Postgres at $url does not answer" >&2
        exit 1
    fi
    for db in $(psql "$url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'herald\_t\_%'"); do
        psql "$url" -Atqc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
    done
fi
echo "export HERALD_TEST_POSTGRES_URL='$url'"
