#!/usr/bin/env bash
# The in-memory fabric's write_bw against memcpy of the same size, by
# message size (issue 7's "in-memory fabric >= 50 % of memcpy bandwidth"
# names no size). A 64 KiB memcpy runs within one CPU's L1/L2, at a rate no
# hand-off between two threads can reach; from a few MiB on, source and
# destination leave the private caches and memcpy runs at the rate of the
# shared cache or of memory, as the fabric's copies do. Each pair runs the
# fabric, memcpy and memcpy_xcore_bw (two copies and a hand-off per 4 KiB
# chunk, no RDMA) back to back; median [min..max] of the pairs' ratios.
# No root needed.
#
#   bash benches/scripts/fabric_sizes.sh [PAIRS] [SIZES...]
set -uo pipefail
PAIRS=${1:-3}
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(65536 1048576 4194304 16777216 67108864 268435456)
PERF=${PERF:-${CARGO_TARGET_DIR:-target}/release/softrdma-perf}

row() { "$PERF" "$@" 2>/dev/null | grep -E '^ [0-9]+ ' | tail -1; }
med() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f [%.3f..%.3f]", m, a[1], a[NR]}'; }

echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) PAIRS=$PAIRS; $("$PERF" host); L2 $(lscpu | awk '/^L2 cache/ {print $3, $4}'), L3 $(lscpu | awk '/^L3 cache/ {print $3, $4}')"
for s in "${SIZES[@]}"; do
    rm_=() rx=() mems=()
    # About 3 GB per memcpy_xcore_bw run, whatever the size.
    n=$(( 3200000000 / s )); [ "$n" -ge 8 ] || n=8
    for i in $(seq "$PAIRS"); do
        mem=$(row write_bw -s "$s" -m 4096 -D 2 | awk '{print $4}')
        mc=$(row memcpy_bw -s "$s" -D 1 | awk '{print $4}')
        xc=$(row memcpy_xcore_bw -s "$s" -m 4096 -n "$n" | awk '{print $4}')
        mems+=("$mem")
        rm_+=("$(awk -v a="$mem" -v b="$mc" 'BEGIN {print a/b}')")
        rx+=("$(awk -v a="$mem" -v b="$xc" 'BEGIN {print a/b}')")
        echo "size $s pair $i: mem write_bw $mem / memcpy $mc / xcore $xc MB/s | load $(cut -d' ' -f1 /proc/loadavg)"
    done
    echo "size $s: write_bw MB/s $(printf '%s\n' "${mems[@]}" | med); / memcpy (target >= 0.50) $(printf '%s\n' "${rm_[@]}" | med); / memcpy_xcore_bw $(printf '%s\n' "${rx[@]}" | med)"
done
