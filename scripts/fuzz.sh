#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 20 s each; FUZZ_SECONDS to change).
# Installs cargo-fuzz if missing. Stable Rust: RUSTC_BOOTSTRAP lets cargo-fuzz pass its
# coverage flags; no sanitizer (that needs a nightly runtime), debug assertions on.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none -O -a
passed=0
failed=0
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    # The template budget target proves memory stays bounded: a tight limit, and programs
    # of up to 64 steps from the first run on.
    extra=(-rss_limit_mb=2048)
    [ "$target" = template_budget ] && extra=(-rss_limit_mb=512 -max_len=64 -len_control=0)
    if cargo fuzz run -s none -O -a "$target" -- -max_total_time="$seconds" -timeout=10 "${extra[@]}" \
        >"target/fuzz-$target.log" 2>&1; then
        runs=$(grep -oE '^Done [0-9]+ runs' "target/fuzz-$target.log" | grep -oE '[0-9]+' || echo "?")
        echo "fuzz $target: $runs runs, no crash"
        passed=$((passed + 1))
    else
        echo "fuzz $target: FAILED — see fuzz/target/fuzz-$target.log and fuzz/artifacts/$target/"
        grep -E "panicked|ERROR|SUMMARY" "target/fuzz-$target.log" | head -5 || true
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
