#!/usr/bin/env bash
# Installs what the fault suite (crates/herald/tests/faults.rs) needs beyond Rust: strace,
# whose fault injection makes fsync fail with EIO. The private Postgres the suite starts
# comes from the installed Postgres server binaries (initdb, pg_ctl), and the disk-full
# scenario mounts a tmpfs, which needs root. Idempotent and quick when all is present;
# the suite itself skips a scenario loudly when its tool is missing, except in CI.
set -euo pipefail

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# apt-get update only when an install fails without it (fresh machine, empty lists).
apt_install() {
    command -v apt-get >/dev/null || return 1
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
        sudo_if_needed apt-get update -qq >/dev/null &&
            sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    }
}

if ! command -v strace >/dev/null 2>&1; then
    echo "== installing strace (apt), for the fsync fault injection"
    apt_install strace || echo "== cannot install strace: the fsync scenario will skip (fail in CI)" >&2
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "== no Postgres server binaries (initdb, pg_ctl): the private-Postgres scenarios will skip (fail in CI)" >&2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "== not root: the disk-full scenario (tmpfs mount) will skip" >&2
fi
