#!/usr/bin/env bash
# Where a latency turn's time goes, step by step: builds softrdma-perf with
# the `turn-trace` feature (stamps at fixed stages of the device's path;
# softrdma/src/turn_trace.rs) into its own target directory, so the
# benchmark build stays untraced, then runs write_lat over RC and UC and
# prints each run's table and its breakdown (docs/benchmarks-history.md, "What
# stop 35 changed and measured"). TAP runs need root; without it, the memory fabric.
#
#   bash benches/scripts/turn_trace.sh [ITERATIONS] [-- EXTRA softrdma-perf ARGS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS=${1:-20000}
shift || true
[ "${1:-}" = "--" ] && shift
TARGET=${TURN_TRACE_TARGET:-${CARGO_TARGET_DIR:-target}/turn-trace}
CARGO_TARGET_DIR=$TARGET cargo build --release -q -p benches --features turn-trace --bin softrdma-perf
fabric=memory
[ "$(id -u)" = 0 ] && fabric=tap
for conn in RC UC; do
    "$TARGET/release/softrdma-perf" write_lat -c "$conn" -s 2 -n "$ITERS" --fabric "$fabric" --turn-trace "$@" |
        grep -E '^ ?(#bytes|[0-9]+ |Turn trace| |Round trip)'
done
