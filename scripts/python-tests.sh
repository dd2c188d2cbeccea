#!/usr/bin/env bash
# Runs the Python client's tests (clients/python) against a real `herald serve`.
#
# Creates a virtualenv in target/py-venv (once), installs the package (editable) and the
# pinned test requirements (only when they changed), builds the herald binary unless
# HERALD_BIN points at one, then runs pytest and exits with its status.
#   HERALD_BIN=/path/to/herald ./scripts/python-tests.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=target/py-venv
req=clients/python/requirements-test.txt
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-tests: $python is not installed (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi
mkdir -p target
if [ ! -x "$venv/bin/python" ]; then
    echo "== python: creating $venv"
    "$python" -m venv "$venv"
fi

# Reinstall only when the requirements or the package metadata changed.
stamp=$venv/.herald-installed
want=$(cat "$req" clients/python/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== python: installing test requirements and herald-client"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e clients/python
    echo "$want" >"$stamp"
fi

if [ -z "${HERALD_BIN:-}" ]; then
    echo "== python: cargo build -p herald"
    cargo build --quiet -p herald
    export HERALD_BIN=$root/target/debug/herald
fi

echo "== python: pytest (herald binary: $HERALD_BIN)"
junit=$root/target/pytest-junit.xml
rm -f "$junit"
cd clients/python
set +e
"$root/$venv/bin/python" -m pytest -p no:cacheprovider --junitxml="$junit" "$@"
status=$?
set -e
# One plain closing line for scripts/test.sh's summary ("python: N passed, N failed").
if [ -f "$junit" ]; then
    "$root/$venv/bin/python" - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
n = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(f"python skipped: {skipped}")
print(f"python: {n - failed - skipped} passed, {failed} failed")
PY
fi
exit "$status"
