#!/usr/bin/env bash
# Two builds of softrdma-perf against each other, interleaved A B B A (then
# B A A B) so that both see the same machine load; prints, per metric, the
# median [min..max] of each side and the ratio B/A. TAP rows need root.
#
#   bash benches/scripts/ab.sh OLD_BINARY NEW_BINARY [PAIRS]
#   ONLY='^mem' bash benches/scripts/ab.sh ...   # only the rows matching
#
# e.g. build the old commit in a worktree, copy its target/release/softrdma-perf
# aside, and compare it with this tree's.
set -uo pipefail
A=${1:?old softrdma-perf binary}
B=${2:?new softrdma-perf binary}
PAIRS=${3:-3}
TESTS=(
    "mem write_lat|write_lat -n 30000"
    "mem write_lat UC|write_lat -c UC -n 30000"
    "mem write_bw 64|write_bw -s 64 -D 1"
    "mem write_bw 1K|write_bw -s 1024 -m 4096 -D 1"
    "mem write_bw 4K|write_bw -s 4096 -m 4096 -D 1"
    "mem write_bw 64K|write_bw -s 65536 -m 4096 -D 1"
    "mem send_bw 64|send_bw -s 64 -D 1"
    "mem send_bw 64K|send_bw -s 65536 -m 4096 -D 1"
    "mem read_bw 64K|read_bw -s 65536 -m 4096 -D 1"
    "tap write_lat|write_lat -n 20000 --fabric tap"
    "tap write_lat UC|write_lat -c UC -n 20000 --fabric tap"
    "tap send_bw 64K|send_bw -s 65536 -m 4096 -D 1 --fabric tap"
    "tap write_bw 64K|write_bw -s 65536 -m 4096 -D 1 --fabric tap"
    "tap read_bw 64K|read_bw -s 65536 -m 4096 -D 1 --fabric tap"
)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) A=$A B=$B PAIRS=$PAIRS"
echo "# host: $("$B" host)"
for i in $(seq "$PAIRS"); do
    for t in "${TESTS[@]}"; do
        label=${t%%|*}
        [[ $label =~ ${ONLY:-.} ]] || continue
        read -r -a args <<< "${t#*|}"
        if (( i % 2 )); then order="A B B A"; else order="B A A B"; fi
        for side in $order; do
            bin=$A; [ "$side" = B ] && bin=$B
            row=$("$bin" "${args[@]}" 2>/dev/null | grep -E '^ [0-9]+ ' | tail -1)
            echo "$label|$side|$row" >> "$out"
        done
    done
done
# Latency rows: bytes iters t_min t_max t_typical t_avg t_stdev 99% 99.9%;
# bandwidth rows: bytes iters BW_peak BW_avg MsgRate.
awk -F'|' '
function med(s,   n, a, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    lo = a[1]; hi = a[n]
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    split($3, f, " ")
    if (length(f) == 0) next
    if ($1 ~ /lat/) { m["typical us"] = f[5]; m["99% us"] = f[8]; m["99.9% us"] = f[9] }
    else { m["BW avg MB/s"] = f[4]; m["Mpps"] = f[5] }
    for (k in m) { key = $1 " " k; v[key, $2] = v[key, $2] " " m[k]; keys[key] = 1 }
    delete m
}
END {
    for (key in keys) {
        ma = med(v[key, "A"]); la = lo; ha = hi
        mb = med(v[key, "B"]); lb = lo; hb = hi
        printf "%-34s A %10.3f [%.3f..%.3f]  B %10.3f [%.3f..%.3f]  B/A %.3f\n", key, ma, la, ha, mb, lb, hb, (ma ? mb / ma : 0)
    }
}' "$out" | sort
