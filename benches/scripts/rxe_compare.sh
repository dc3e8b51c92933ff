#!/usr/bin/env bash
# Kernel rxe's ib_write_bw against softrdma-perf write_bw inside the same QEMU
# guest session (software-emulated CPU: only the ratio means anything).
#
#   benches/scripts/rxe_compare.sh [SIZE] [ITERS] [ROUNDS] [BOOTS]
#       (root; default 65536 2000 5 1)
#
# Both run without a wire: ib_write_bw server and client on rxe0 (rxe's
# internal loopback), softrdma-perf both ends in one process on the
# in-memory fabric; both at IB MTU 1024 (the guest's link MTU is 1500).
# Each boot runs ROUNDS rounds of (kernel rxe, softrdma) back to back and one
# softrdma run with SOFTRDMA_ICRC=simd at the end. A round's ratio is
# softrdma / kernel rxe of that round; the script prints every round and the
# median over all rounds of all boots. Why rounds and boots: under TCG both
# numbers move by ±10 % from run to run (address-space layout: QEMU finds
# translated blocks by a hash of the guest address) and kernel rxe by about
# as much from boot to boot.
#
# LINK_ORDERS=N also links N more binaries whose text sections lld shuffles
# (--shuffle-sections, seeds 1..N) and runs each of them in every round
# after the normal one. Under TCG the placement of code alone moves guest
# write_bw by up to ±20 % on some hosts (docs/benchmarks-history.md, "What stop 17
# changed"), so the median over link orders is the placement-proof figure.
# Needs lld, Rust's default linker on x86_64 Linux.
#
# BINARIES="PATH ..." runs these prebuilt softrdma-perf binaries too, in
# every round after the tree's (named softrdma-perf.b1, .b2, ...): two builds
# compared in one guest session.
set -euo pipefail
size=${1:-65536} iters=${2:-2000} rounds=${3:-5} boots=${4:-1}
repo=$(cd "$(dirname "$0")/../.." && pwd)
RXE_VM=${RXE_VM:-$repo/interop/rxe-vm}
[ -x /work/shared/rxe-vm/run-pair.sh ] && RXE_VM=/work/shared/rxe-vm
[ -x "$repo/../shared/rxe-vm/run-pair.sh" ] && RXE_VM=$(cd "$repo/../shared/rxe-vm" && pwd)
export RXE_VM_DIR=${RXE_VM_DIR:-$HOME/.cache/rxe-vm}
[ -f "$RXE_VM_DIR/rootfs.img" ] || "$RXE_VM/build-image.sh"
(cd "$repo" && cargo build --release -q -p benches --bin softrdma-perf)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/softrdma-perf"
share=$(mktemp -d) out=$(mktemp -d)
trap 'rm -rf "$share"' EXIT
cp "$bin" "$share/"
orders=${LINK_ORDERS:-0} variants=softrdma-perf
for seed in $(seq "$orders"); do
  (cd "$repo" && cargo rustc --release -q -p benches --bin softrdma-perf -- -C "link-arg=-Wl,--shuffle-sections=.text.*=$seed")
  cp "$bin" "$share/softrdma-perf.s$seed"; variants="$variants softrdma-perf.s$seed"
done
i=0
for b in ${BINARIES:-}; do
  i=$((i + 1)); cp "$b" "$share/softrdma-perf.b$i"; variants="$variants softrdma-perf.b$i"
done
# Leave the tree's binary as the normal build.
[ "$orders" -gt 0 ] && (cd "$repo" && cargo build --release -q -p benches --bin softrdma-perf)
cat >"$out/job.sh" <<JOB
#!/bin/sh
for r in \$(seq $rounds); do
  ib_write_bw -d rxe0 -x 1 -F -m 1024 -s $size -n $iters >/tmp/srv.log 2>&1 &
  sleep 3
  echo "== kernel rxe, round \$r"
  ib_write_bw -d rxe0 -x 1 -F -m 1024 -s $size -n $iters 10.77.0.11 2>&1 | tail -2 | head -1
  wait
  for v in $variants; do
    echo "== softrdma \$v, round \$r"
    /host/\$v write_bw -s $size -m 1024 -n $iters --out_json /tmp/srd.json >/tmp/srd.log 2>&1
    grep 'ICRC' /tmp/srd.log; tail -2 /tmp/srd.log | head -1
    # How the devices took their frames (polls, rescues: docs/design.md, "Busy polling").
    echo "   \$(grep -o '"dev[01]_\\(rx_frames\\|rx_polled\\|rx_rescued\\|busy_poll_suspensions\\)": "[0-9]*' /tmp/srd.json | tr -d '"' | tr '\\n' ' ')"
  done
done
echo "== softrdma, ICRC by SIMD folding (SOFTRDMA_ICRC=simd)"
SOFTRDMA_ICRC=simd /host/softrdma-perf write_bw -s $size -m 1024 -n $iters 2>&1 | tail -2 | head -1
JOB
chmod +x "$out/job.sh"
echo "# host: $("$bin" host)"
for b in $(seq "$boots"); do
  mkdir -p "$out/boot$b"
  RXE_VM_SHARE=$share RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-900} "$RXE_VM/run-pair.sh" "$out/boot$b" "$out/job.sh" none 1500 >"$out/boot$b/run-pair.log" 2>&1 || true
  echo "== boot $b"
  sed -n '/== kernel rxe, round 1/,/== guest done/p' "$out/boot$b/a.log" | grep -v '^== guest done' || true
done
# Per round: the BW average column of the line that starts with the size.
awk -v s="$size" '
  /^== kernel rxe, round/ { who = "rxe"; v["rxe"] = 0; next }
  /^== softrdma .*round/  { who = "srd"; name = $3; sub(/,$/, "", name); round = $5; next }
  /^== /                  { who = ""; next }
  who != "" && $1 == s    { v[who] = $4; if (who == "srd" && v["rxe"] > 0) { q = v["srd"] / v["rxe"]; r[n++] = q; if (!(name in runs)) names++; per[name, runs[name]++] = q; printf "round %s, %s: kernel rxe %s MB/s, softrdma %s MB/s, ratio %.2f\n", round, name, v["rxe"], v["srd"], q } }
  function median(a, k,   i, j, t) {
    for (i = 0; i < k; i++) for (j = i + 1; j < k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (k % 2) ? a[int(k / 2)] : (a[k / 2 - 1] + a[k / 2]) / 2
  }
  END {
    if (n == 0) { print "could not read both results" > "/dev/stderr"; exit 1 }
    for (b in runs) if (names > 1) {
      for (i = 0; i < runs[b]; i++) y[i] = per[b, i]
      printf "%s: median %.2f over %d runs\n", b, median(y, runs[b]), runs[b]
    }
    m = median(r, n)
    printf "softrdma / kernel rxe: median %.2f over %d runs [%.2f..%.2f]\n", m, n, r[0], r[n - 1]
  }' $(for b in $(seq "$boots"); do echo "$out/boot$b/a.log"; done) || { echo "logs in $out" >&2; exit 1; }
echo "logs in $out"
