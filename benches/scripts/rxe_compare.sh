#!/usr/bin/env bash
# Kernel rxe's ib_write_bw against softrdma-perf write_bw inside the same QEMU
# guest session (software-emulated CPU: only the ratio means anything).
#
#   benches/scripts/rxe_compare.sh [SIZE] [ITERS]     (root; default 65536 2000)
#
# Both run without a wire: ib_write_bw server and client on rxe0 (rxe's
# internal loopback), softrdma-perf both ends in one process on the
# in-memory fabric; both at IB MTU 1024 (the guest's link MTU is 1500).
# softrdma runs twice: with the ICRC engine it picks itself (softrdma::icrc_engine;
# the table under TCG) and with SOFTRDMA_ICRC=simd; the ratio is of the first.
set -euo pipefail
size=${1:-65536} iters=${2:-2000}
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
cat >"$out/job.sh" <<JOB
#!/bin/sh
ib_write_bw -d rxe0 -x 1 -F -m 1024 -s $size -n $iters >/tmp/srv.log 2>&1 &
sleep 3
echo "== kernel rxe"
ib_write_bw -d rxe0 -x 1 -F -m 1024 -s $size -n $iters 10.77.0.11 2>&1 | tail -4
wait
echo "== softrdma"
/host/softrdma-perf write_bw -s $size -m 1024 -n $iters >/tmp/srd.log 2>&1
grep 'ICRC engine' /tmp/srd.log; tail -3 /tmp/srd.log
echo "== softrdma, ICRC by SIMD folding (SOFTRDMA_ICRC=simd)"
SOFTRDMA_ICRC=simd /host/softrdma-perf write_bw -s $size -m 1024 -n $iters 2>&1 | tail -3
JOB
chmod +x "$out/job.sh"
RXE_VM_SHARE=$share RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-900} "$RXE_VM/run-pair.sh" "$out" "$out/job.sh" none 1500 >"$out/run-pair.log" 2>&1 || true
sed -n '/== kernel rxe/,/== guest done/p' "$out/a.log" | grep -v '^== guest done'
rxe=$(sed -n '/== kernel rxe/,/== softrdma/p' "$out/a.log" | awk -v s="$size" '$1 == s {print $4}' | tail -1)
srd=$(sed -n '/== softrdma/,/== softrdma, ICRC/p' "$out/a.log" | awk -v s="$size" '$1 == s {print $4}' | tail -1)
echo "BW average MB/s: kernel rxe ${rxe:-?}, softrdma ${srd:-?}"
if [ -n "${rxe:-}" ] && [ -n "${srd:-}" ]; then
  awk -v a="$srd" -v b="$rxe" 'BEGIN { printf "softrdma / kernel rxe = %.2f\n", a / b }'
else
  echo "could not read both results; logs in $out" >&2
  exit 1
fi
