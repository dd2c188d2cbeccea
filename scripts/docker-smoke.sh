#!/usr/bin/env bash
# Builds the Docker image and runs it where a Docker daemon answers: one container on
# SQLite (healthy by its HEALTHCHECK, an admin token that works, data in the volume), then
# the compose file's `cluster` profile (Postgres and two nodes sharing HERALD_MASTER_KEY:
# a destination created on one node is read on the other). Where no daemon answers it says
# so and skips; it never installs or starts one. Ends with `docker: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0
failed=0
tag="herald:smoke-$$"
project="herald-smoke-$$"
container=""
compose=()

summary() { echo "docker: $passed passed, $failed failed"; }
check() {
    local what="$1"
    shift
    if "$@"; then
        echo "ok     $what"
        passed=$((passed + 1))
    else
        echo "FAILED $what"
        failed=$((failed + 1))
    fi
}

if ! command -v docker >/dev/null 2>&1; then
    echo "*** SKIPPED the Docker smoke test: the docker client is not installed ***"
    summary
    exit 0
fi
if ! docker info >/dev/null 2>&1; then
    echo "*** SKIPPED the Docker smoke test: no Docker daemon answers here (docker info failed) ***"
    summary
    exit 0
fi
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
fi

cleanup() {
    [ -n "$container" ] && docker rm -f -v "$container" >/dev/null 2>&1
    if [ "${#compose[@]}" -gt 0 ]; then
        "${compose[@]}" -p "$project" --profile cluster down -v >/dev/null 2>&1
    fi
    docker image rm "$tag" >/dev/null 2>&1
}
trap cleanup EXIT

# Waits up to $2 seconds for container $1 to be reported healthy by its HEALTHCHECK.
healthy() {
    local deadline=$(($(date +%s) + $2)) state
    while [ "$(date +%s)" -lt "$deadline" ]; do
        state="$(docker inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null)"
        [ "$state" = healthy ] && return 0
        sleep 1
    done
    echo "  $1 is ${state:-gone}; its log:"
    docker logs "$1" 2>&1 | tail -20 | sed 's/^/  /'
    return 1
}
token_of() { docker logs "$1" 2>/dev/null | sed -n 's/^Admin token (shown once; keep it safe): //p' | head -1; }
port_of() { docker port "$1" 8080/tcp | head -1 | sed 's/.*://'; }

check "docker build" docker build --build-arg HERALD_BUILD_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" -t "$tag" .
check "the image runs as a non-root user" bash -c "[ \"\$(docker run --rm --entrypoint id $tag -u)\" != 0 ]"

container="$(docker run -d -p 127.0.0.1::8080 "$tag")"
check "a container on SQLite becomes healthy (HEALTHCHECK: herald healthcheck)" healthy "$container" 90
port="$(port_of "$container")"
token="$(token_of "$container")"
check "its first start prints an admin token that works" \
    bash -c "curl -fsS -H 'Authorization: Bearer $token' http://127.0.0.1:$port/api/v1/tokens | grep -q admin"
check "the store is in the volume /var/lib/herald" docker exec "$container" test -s /var/lib/herald/herald.db

if [ "${#compose[@]}" -eq 0 ]; then
    echo "*** SKIPPED the compose cluster: neither docker compose nor docker-compose is installed ***"
else
    export HERALD_MASTER_KEY
    HERALD_MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
    check "docker compose --profile cluster up (Postgres and two nodes)" \
        "${compose[@]}" -p "$project" --profile cluster up -d --build postgres node1 node2
    n1="$("${compose[@]}" -p "$project" ps -q node1)"
    n2="$("${compose[@]}" -p "$project" ps -q node2)"
    check "node1 becomes healthy" healthy "$n1" 120
    check "node2 becomes healthy" healthy "$n2" 120
    t="$(token_of "$n1")"
    [ -n "$t" ] || t="$(token_of "$n2")"
    p1="$(port_of "$n1")"
    p2="$(port_of "$n2")"
    check "a destination created on node1 is read on node2 (one database, one master key)" \
        bash -c "curl -fsS -X PUT -H 'Authorization: Bearer $t' http://127.0.0.1:$p1/api/v1/destinations/smoke \
                     -d '{\"kind\": \"webhook\", \"url\": \"https://example.com/hook\"}' >/dev/null &&
                 curl -fsS -H 'Authorization: Bearer $t' http://127.0.0.1:$p2/api/v1/destinations/smoke | grep -q smoke"
fi

summary
[ "$failed" -eq 0 ]
