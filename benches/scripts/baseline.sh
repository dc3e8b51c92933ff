#!/usr/bin/env bash
# The performance baseline of docs/benchmarks.md: every measurement REPS times
# (default 5), printing the median and the range. Needs root for the TAP rows.
#
#   bash benches/scripts/baseline.sh [REPS] > baseline.txt
#
# Uses target/release/softrdma-perf (or $PERF); build it first with
#   cargo build --release -p benches --bin softrdma-perf
set -uo pipefail
REPS=${1:-5}
PERF=${PERF:-${CARGO_TARGET_DIR:-target}/release/softrdma-perf}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4g [%.4g..%.4g]", m, a[1], a[NR]}'; }

# bw LABEL ARGS...: median of BW average (MB/s) and MsgRate (Mpps) of the last table row.
bw() {
    local label=$1; shift
    local avg=() rate=() fails=0
    for _ in $(seq "$REPS"); do
        local line
        line=$("$PERF" "$@" 2>/dev/null | grep -E '^ [0-9]+ ' | tail -1)
        [ -n "$line" ] || { fails=$((fails + 1)); continue; }
        avg+=("$(echo "$line" | awk '{print $4}')")
        rate+=("$(echo "$line" | awk '{print $5}')")
    done
    printf '%-44s BW avg MB/s %-28s MsgRate Mpps %s\n' "$label" "$(printf '%s\n' "${avg[@]}" | median)" "$(printf '%s\n' "${rate[@]}" | median)"
    echo "    softrdma-perf $*$([ "$fails" = 0 ] || echo "   ($fails of $REPS runs FAILED)")"
}

# lat LABEL ARGS...: median of t_typical and of the 99% percentile (usec).
lat() {
    local label=$1; shift
    local typ=() p99=() mn=() fails=0
    for _ in $(seq "$REPS"); do
        local line
        line=$("$PERF" "$@" 2>/dev/null | grep -E '^ [0-9]+ ' | tail -1)
        [ -n "$line" ] || { fails=$((fails + 1)); continue; }
        mn+=("$(echo "$line" | awk '{print $3}')")
        typ+=("$(echo "$line" | awk '{print $5}')")
        p99+=("$(echo "$line" | awk '{print $8}')")
    done
    printf '%-44s t_typical us %-28s t_min us %-28s p99 us %s\n' "$label" "$(printf '%s\n' "${typ[@]}" | median)" "$(printf '%s\n' "${mn[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)"
    echo "    softrdma-perf $*$([ "$fails" = 0 ] || echo "   ($fails of $REPS runs FAILED)")"
}

echo "# $(date -u +%FT%TZ) $("$PERF" host) REPS=$REPS"
echo "# load before: $(cat /proc/loadavg)"

bw  "memcpy 64 KiB"                        memcpy_bw -s 65536 -D 1
bw  "memcpy 4 KiB"                         memcpy_bw -s 4096 -D 1
bw  "memcpy across threads 64 KiB / 4096"   memcpy_xcore_bw -s 65536 -m 4096 -n 50000
bw  "the same, one copy (--pull)"          memcpy_xcore_bw -s 65536 -m 4096 -n 50000 --pull
bw  "sim RC write 4 KiB MTU 4096"          sim_bw -s 4096 -m 4096 -n 50000
bw  "sim RC write 64 KiB MTU 4096"         sim_bw -s 65536 -m 4096 -n 5000
bw  "mem raw frames 4096 B payload"        raw_bw -s 4096 -D 2
bw  "mem raw frames 4096 B, self-clocked"  raw_bw -s 4096 -D 2 --credit 16
lat "mem raw ping-pong 64 B"               raw_lat -n 20000
bw  "mem write_bw 64 KiB MTU 4096"         write_bw -s 65536 -m 4096 -D 2
bw  "mem write_bw 64 KiB MTU 4096 no bpoll" write_bw -s 65536 -m 4096 -D 2 --busy-poll 0
bw  "mem write_bw 64 KiB MTU 1024"         write_bw -s 65536 -m 1024 -D 2
bw  "mem read_bw 64 KiB MTU 4096"          read_bw -s 65536 -m 4096 -D 2
bw  "mem send_bw 64 KiB MTU 4096"          send_bw -s 65536 -m 4096 -D 2
bw  "mem write_bw 4 KiB MTU 4096"          write_bw -s 4096 -m 4096 -D 2
bw  "mem write_bw 64 B"                    write_bw -s 64 -D 2
bw  "mem write_bw 4 KiB MTU 4096 UC"       write_bw -s 4096 -m 4096 -D 2 -c UC
bw  "mem send_bw 1 KiB UD"                 send_bw -s 1024 -D 2 -c UD
bw  "mem atomic_bw"                        atomic_bw -D 2
bw  "mem write_bw 64 KiB MTU 4096 -q 4"    write_bw -s 65536 -m 4096 -D 2 -q 4
lat "mem write_lat 2 B"                    write_lat -s 2 -n 20000
lat "mem write_lat 2 B no busy poll"       write_lat -s 2 -n 20000 --busy-poll 0
lat "mem write_lat 2 B UC"                 write_lat -s 2 -n 20000 -c UC
lat "mem send_lat 2 B"                     send_lat -s 2 -n 20000
lat "mem read_lat 2 B"                     read_lat -s 2 -n 20000
if [ "$(id -u)" = 0 ]; then
    # 0x88b5 frames skip the bridges' netfilter hooks; the IPv4/UDP rows
    # (--udp) go the way RoCEv2's frames go, in bursts of 16 unless noted
    # (two UDP GSO writes each, 15 + 1: a write carries at most 64 KiB).
    bw  "tap raw 0x88b5 frames 4096 B payload" raw_bw -s 4096 -D 3 --fabric tap
    bw  "tap raw IPv4/UDP 4096 B, writes of 15+1" raw_bw -s 4096 -D 3 --udp --fabric tap
    bw  "tap raw IPv4/UDP 4096 B, 2+14 per write" raw_bw -s 4096 -D 3 --udp --split 2 --fabric tap
    bw  "tap raw IPv4/UDP 4096 B, 1 per write" raw_bw -s 4096 -D 3 --udp --burst 1 --fabric tap
    lat "tap raw 0x88b5 ping-pong 64 B"    raw_lat -n 20000 --fabric tap
    lat "tap raw IPv4/UDP ping-pong 64 B"  raw_lat -n 20000 --udp --fabric tap
    lat "tap raw IPv4/UDP ping-pong + ACK in one write" raw_lat -n 20000 --udp --acks-at-once --fabric tap
    bw  "tap write_bw 64 KiB MTU 4096"     write_bw -s 65536 -m 4096 -D 3 --fabric tap
    bw  "tap write_bw 64 KiB MTU 1024"     write_bw -s 65536 -m 1024 -D 3 --fabric tap
    bw  "tap read_bw 64 KiB MTU 4096"      read_bw -s 65536 -m 4096 -D 3 --fabric tap
    bw  "tap send_bw 64 KiB MTU 4096"      send_bw -s 65536 -m 4096 -D 3 --fabric tap
    bw  "tap write_bw 4 KiB MTU 4096"      write_bw -s 4096 -m 4096 -D 3 --fabric tap
    bw  "tap write_bw 64 B"                write_bw -s 64 -D 3 --fabric tap
    bw  "tap atomic_bw"                    atomic_bw -D 3 --fabric tap
    lat "tap write_lat 2 B"                write_lat -s 2 -n 20000 --fabric tap
    lat "tap write_lat 2 B UC"             write_lat -s 2 -n 20000 -c UC --fabric tap
    lat "tap write_lat 2 B no busy poll"   write_lat -s 2 -n 20000 --fabric tap --busy-poll 0
    lat "tap send_lat 2 B"                 send_lat -s 2 -n 20000 --fabric tap
    lat "tap read_lat 2 B"                 read_lat -s 2 -n 20000 --fabric tap
fi
echo "# load after: $(cat /proc/loadavg)"
