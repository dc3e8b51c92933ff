#!/usr/bin/env bash
# Where a softrdma-perf run spends its emulated CPU under QEMU's TCG, per frame.
#
#   benches/scripts/tcg/profile.sh FRAMES -- SUBCOMMAND ARGS...
#   e.g. profile.sh 25600 -- write_bw -s 65536 -m 1024 -n 400
#        (400 messages of 64 frames each)
#
# Needs qemu-user (apt install qemu-user) and gcc; runs the release binary on
# one CPU, as the 1-vCPU kernel-rxe guest does. See docs/benchmarks.md,
# "Kernel rxe in the same guest".
set -euo pipefail
frames=$1; shift; [ "${1:-}" = -- ] && shift
here=$(cd "$(dirname "$0")" && pwd) repo=$(cd "$here/../../.." && pwd)
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-user (apt install qemu-user)" >&2; exit 2; }
(cd "$repo" && cargo build --release -q -p benches --bin softrdma-perf)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/softrdma-perf"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -shared -fPIC -O2 -o "$work/tbcount.so" "$here/tbcount.c"
TBCOUNT_OUT="$work/counts" taskset -c 0 qemu-x86_64 -cpu max -plugin "$work/tbcount.so" "$bin" "$@" >/dev/null
# The op log of a run a tenth as long: enough to see every hot block once.
short=(); for a in "$@"; do short+=("$a"); done
for i in "${!short[@]}"; do
  if [ "${short[$i]}" = -n ] && [ -n "${short[$((i + 1))]:-}" ]; then short[$((i + 1))]=$(( (${short[$((i + 1))]} + 9) / 10 )); fi
done
taskset -c 0 qemu-x86_64 -cpu max -d in_asm,op_opt -D "$work/op.log" "$bin" "${short[@]}" >/dev/null
python3 "$here/profile.py" "$work/counts" "$work/op.log" "$frames"
