#!/usr/bin/env bash
# Runs every cargo-fuzz target of this folder for a bounded time each and exits
# non-zero if one crashes (the crashing input is left in fuzz/artifacts/<target>/).
#
#   fuzz/run-ci.sh [SECONDS]      # default 60 per target
#
# Uses the nightly toolchain (with AddressSanitizer) when rustup has one,
# otherwise stable with `-s none` (no sanitizer; the target crate forbids
# unsafe code, so the oracle's assertions are what matters).
set -euo pipefail

secs="${1:-60}"
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzzing on nightly (AddressSanitizer)"
    fuzz=(cargo +nightly fuzz)
    opts=()
else
    echo "fuzzing on stable (no sanitizer)"
    # -s none needs no unstable flag with cargo-fuzz 0.13; RUSTC_BOOTSTRAP
    # covers versions that pass one anyway.
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    opts=(-s none)
fi

status=0
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    if ! "${fuzz[@]}" build "${opts[@]}" "$target"; then
        echo "FAILED: fuzz target $target does not build" >&2
        status=1
        continue
    fi
    echo "== $target: ${secs}s"
    # -timeout: one input taking over 10 s counts as a hang (a failure).
    if ! "${fuzz[@]}" run "${opts[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1; then
        echo "FAILED: fuzz target $target crashed (input in fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit "$status"
