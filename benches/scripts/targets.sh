#!/usr/bin/env bash
# The three targets of issue 7, measured as interleaved pairs so that both
# sides of each ratio see the same machine load (on a shared 2-core machine
# the load moves by 2x within a minute):
#   1. tap write_bw 64 KiB, MTU 4096  vs  tap raw frames with 4096 B payload,
#      blasted (1a) and self-clocked with a credit frame every 16 (1b)
#   2. memory-fabric write_bw 64 KiB  vs  memcpy 64 KiB (2a), and vs the
#      fabric's physical limit: two copies and a cross-thread hand-off per
#      4096-byte chunk (memcpy_xcore_bw, 2b), or one copy by the receiving
#      thread out of the source (--pull, 2c: a fabric that leaves payloads
#      in the MR, as a NIC's DMA does)
#   3. tap write_lat 2 B (half RTT)   vs  tap raw ping-pong 64 B (half RTT)
# Raw frames are EtherType 0x88b5 (1a, 1b, 3) and, as RoCEv2's own frames are,
# IPv4/UDP to port 4791 (1c, 3b: `--udp`), which the bridges' netfilter hooks
# process and the 0x88b5 frames skip. The raw baselines spin on their links
# as the devices busy-poll; 1d and 3c compare with raw baselines that sleep
# in poll(2) between frames (`--busy-poll 0`), the baseline of earlier stops.
# 3d divides RC write_lat by a raw ping-pong with RC's frames per turn (the
# answer, then a 64 B ACK; `raw_lat --acks`): the RDMA work alone. 3e is
# write_lat over UC, which sends no ACKs, against the plain raw ping-pong.
# 3f divides RC write_lat by a raw ping-pong whose turn is the answer and an
# ACK handed to the link at once (`raw_lat --acks-at-once`: one UDP GSO
# write on these TAPs), as softrdma sends an answer and the ACK it held back
# for it since stop 21: RC's floor on this path.
# Since stop 19 the TAPs use UDP segmentation offload (`--tap-offload on`):
# 1c's raw IPv4/UDP stream hands the TAP 16 frames per call (`--burst 16`),
# which go in two UDP GSO writes, 15 + 1, since one write carries at most
# 64 KiB of IP packet; 1e compares with one frame per write(2) (`--burst 1`),
# the raw stream of stops up to 18. 1f compares with the raw stream in the
# writes a 64 KiB WRITE at MTU 4096 takes (`--split 2`: 2 + 14 frames, since
# the FIRST packet's RETH cannot lead a GSO run of the shorter packets after
# it): RoCE's floor on this path, as 3f is for latency.
# Prints every pair and the median ratio.  Needs root (TAP).
#
#   bash benches/scripts/targets.sh [PAIRS]
set -uo pipefail
PAIRS=${1:-7}
PERF=${PERF:-${CARGO_TARGET_DIR:-target}/release/softrdma-perf}

row() { "$PERF" "$@" 2>/dev/null | grep -E '^ [0-9]+ ' | tail -1; }
med() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f [%.3f..%.3f]", m, a[1], a[NR]}'; }

echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) PAIRS=$PAIRS"
echo "# host: $("$PERF" host)"
r1=() r1b=() r1c=() r1d=() r1e=() r1f=() r2=() r2b=() r2c=() r3=() r3b=() r3c=() r3d=() r3e=() r3f=()
for i in $(seq "$PAIRS"); do
    raw=$(row raw_bw -s 4096 -D 2 --fabric tap | awk '{print $4}')
    rdma=$(row write_bw -s 65536 -m 4096 -D 2 --fabric tap | awk '{print $4}')
    r1+=("$(awk -v a="$rdma" -v b="$raw" 'BEGIN {print a/b}')")
    rawc=$(row raw_bw -s 4096 -D 2 --credit 16 --fabric tap | awk '{print $4}')
    r1b+=("$(awk -v a="$rdma" -v b="$rawc" 'BEGIN {print a/b}')")
    rawu=$(row raw_bw -s 4096 -D 2 --udp --fabric tap | awk '{print $4}')
    r1c+=("$(awk -v a="$rdma" -v b="$rawu" 'BEGIN {print a/b}')")
    rawus=$(row raw_bw -s 4096 -D 2 --udp --fabric tap --busy-poll 0 | awk '{print $4}')
    r1d+=("$(awk -v a="$rdma" -v b="$rawus" 'BEGIN {print a/b}')")
    rawu1=$(row raw_bw -s 4096 -D 2 --udp --burst 1 --fabric tap | awk '{print $4}')
    r1e+=("$(awk -v a="$rdma" -v b="$rawu1" 'BEGIN {print a/b}')")
    rawu2=$(row raw_bw -s 4096 -D 2 --udp --split 2 --fabric tap | awk '{print $4}')
    r1f+=("$(awk -v a="$rdma" -v b="$rawu2" 'BEGIN {print a/b}')")
    mc=$(row memcpy_bw -s 65536 -D 1 | awk '{print $4}')
    mem=$(row write_bw -s 65536 -m 4096 -D 2 | awk '{print $4}')
    r2+=("$(awk -v a="$mem" -v b="$mc" 'BEGIN {print a/b}')")
    xc=$(row memcpy_xcore_bw -s 65536 -m 4096 -n 50000 | awk '{print $4}')
    r2b+=("$(awk -v a="$mem" -v b="$xc" 'BEGIN {print a/b}')")
    xp=$(row memcpy_xcore_bw -s 65536 -m 4096 -n 50000 --pull | awk '{print $4}')
    r2c+=("$(awk -v a="$mem" -v b="$xp" 'BEGIN {print a/b}')")
    rl=$(row raw_lat -n 5000 --fabric tap | awk '{print $5}')
    wl=$(row write_lat -s 2 -n 5000 --fabric tap | awk '{print $5}')
    r3+=("$(awk -v a="$wl" -v b="$rl" 'BEGIN {print a/b}')")
    rlu=$(row raw_lat -n 5000 --udp --fabric tap | awk '{print $5}')
    r3b+=("$(awk -v a="$wl" -v b="$rlu" 'BEGIN {print a/b}')")
    rlus=$(row raw_lat -n 5000 --udp --fabric tap --busy-poll 0 | awk '{print $5}')
    r3c+=("$(awk -v a="$wl" -v b="$rlus" 'BEGIN {print a/b}')")
    rla=$(row raw_lat -n 5000 --udp --acks --fabric tap | awk '{print $5}')
    r3d+=("$(awk -v a="$wl" -v b="$rla" 'BEGIN {print a/b}')")
    rlo=$(row raw_lat -n 5000 --udp --acks-at-once --fabric tap | awk '{print $5}')
    r3f+=("$(awk -v a="$wl" -v b="$rlo" 'BEGIN {print a/b}')")
    wlu=$(row write_lat -c UC -s 2 -n 5000 --fabric tap | awk '{print $5}')
    r3e+=("$(awk -v a="$wlu" -v b="$rlu" 'BEGIN {print a/b}')")
    echo "pair $i: tap write_bw $rdma / raw $raw / raw-credit $rawc / raw-udp $rawu / raw-udp sleeping $rawus / raw-udp 1 per write $rawu1 / raw-udp 2+14 $rawu2 MB/s | mem write_bw $mem / memcpy $mc / xcore $xc / xcore pull $xp MB/s | tap write_lat $wl / raw half-RTT $rl / raw-udp $rlu / raw-udp sleeping $rlus / raw-udp+acks $rla / raw-udp+acks at once $rlo / UC write_lat $wlu us | load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "1a. tap write_bw 64K / raw TAP frames, blasted      (target >= 0.80): $(printf '%s\n' "${r1[@]}" | med)"
echo "1b. tap write_bw 64K / raw TAP frames, self-clocked (target >= 0.80): $(printf '%s\n' "${r1b[@]}" | med)"
echo "1c. tap write_bw 64K / raw TAP IPv4/UDP frames, blasted (target >= 0.80): $(printf '%s\n' "${r1c[@]}" | med)"
echo "1d. tap write_bw 64K / raw TAP IPv4/UDP frames, receiver sleeping (earlier stops' baseline): $(printf '%s\n' "${r1d[@]}" | med)"
echo "1e. tap write_bw 64K / raw TAP IPv4/UDP frames, one per write(2) (stops up to 18): $(printf '%s\n' "${r1e[@]}" | med)"
echo "1f. tap write_bw 64K / raw TAP IPv4/UDP frames in a 64 KiB WRITE's two writes, 2 + 14 (RoCE's floor on this path): $(printf '%s\n' "${r1f[@]}" | med)"
echo "2a. mem write_bw 64K / memcpy 64K    (target >= 0.50): $(printf '%s\n' "${r2[@]}" | med)"
echo "2b. mem write_bw 64K / memcpy_xcore_bw 64K (two copies + hand-off): $(printf '%s\n' "${r2b[@]}" | med)"
echo "2c. mem write_bw 64K / memcpy_xcore_bw --pull 64K (one copy: a fabric that leaves payloads in the MR): $(printf '%s\n' "${r2c[@]}" | med)"
echo "3. tap write_lat 2B / raw half RTT   (target <= 1.50): $(printf '%s\n' "${r3[@]}" | med)"
echo "3b. tap write_lat 2B / raw IPv4/UDP half RTT (target <= 1.50): $(printf '%s\n' "${r3b[@]}" | med)"
echo "3c. tap write_lat 2B / raw IPv4/UDP half RTT, echo sleeping (earlier stops' baseline): $(printf '%s\n' "${r3c[@]}" | med)"
echo "3d. tap write_lat 2B / raw IPv4/UDP half RTT with RC's ACK frame per turn (the RDMA work alone): $(printf '%s\n' "${r3d[@]}" | med)"
echo "3e. tap write_lat 2B over UC / raw IPv4/UDP half RTT (target <= 1.50): $(printf '%s\n' "${r3e[@]}" | med)"
echo "3f. tap write_lat 2B / raw IPv4/UDP half RTT with answer and ACK in one write (RC's floor since stop 21): $(printf '%s\n' "${r3f[@]}" | med)"
