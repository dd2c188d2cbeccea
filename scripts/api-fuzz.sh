#!/usr/bin/env bash
# Property-based API testing: schemathesis generates requests from /api/openapi.json of a
# real `herald serve` and checks that no answer is a 5xx, and that every status code,
# content type and body conforms to the document. Bounded by API_FUZZ_SECONDS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${API_FUZZ_SECONDS:-60}
venv=.venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "== installing schemathesis into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"
fi
bin=target/debug/herald
[ -x "$bin" ] || cargo build -p herald --quiet
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="hrld_apifuzzadmin_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
HERALD_ADMIN_TOKEN=$token HERALD_LOG=error "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$data/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "http://127.0.0.1:$port/readyz" 2>/dev/null && break
    sleep 0.1
done
set +e
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-time "$seconds" --workers 2 --seed 1 --no-color >target/api-fuzz.log 2>&1
status=$?
set -e
grep -E "generated|passed|failures|Failures|❌|🚫" target/api-fuzz.log | tail -8 || true
cases=$(grep -oE '[0-9]+ generated' target/api-fuzz.log | grep -oE '[0-9]+' | tail -1 || echo 0)
if [ "$status" -eq 0 ]; then
    echo "schemathesis: $cases passed, 0 failed"
else
    echo "schemathesis: FAILED (see target/api-fuzz.log)"
    tail -40 target/api-fuzz.log
    echo "schemathesis: 0 passed, 1 failed"
fi
kill -0 $pid 2>/dev/null || { echo "herald died during the API fuzzing:"; cat "$data/serve.log"; exit 1; }
exit "$status"
