#!/usr/bin/env bash
# Live interop of `softrdma pingpong` with rdma-core's ibv_{rc,uc,ud,srq}_pingpong on
# Linux kernel rxe (Debian 12: kernel 6.1, rdma-core 44) in a QEMU guest.
#
#   interop/run.sh [--quick] [--filter REGEX] [--out DIR]
#
# Boots guest A of /work/shared/rxe-vm (10.77.0.11, fd77::11) alone, once per link MTU
# (1500: path MTU 1024; 9000: path MTU 4096), plugs a softrdma TAP (10.77.0.21, fd77::21,
# 02:53:52:44:77:21) into the guest's bridge br0, and runs every case: the tool in the
# guest as client and softrdma as server, and the other way round; GID index 1 (IPv4) and
# 2 (IPv6); sizes that cross the path MTU with pad bytes. Both sides use -c, and softrdma
# checks the length and every byte of every message it receives. Prints a results table;
# exits 1 if any case failed, 2 on a setup error, 3 if the only failures came from the
# guest's network stopping for good (the case it stopped in and those after it: STALL).
#
# Also: perftest in the guest against `softrdma-perf TEST server|client` (perftest's TCP
# exchange), softrdma as server and as client; softrdma-perf checks its own memory.
# Bandwidth tools at both link MTUs over the IPv4 GID: ib_{write,read,send}_bw
# (PERFTEST_SIZES, default 1001 20000), ib_atomic_bw FETCH_AND_ADD and CMP_AND_SWAP
# (atomic_fa, atomic_cs; 8 B), ib_write_bw -c UC (write_uc, PERFTEST_SIZES) and
# ib_send_bw -c UD (send_ud, PERFTEST_UD_SIZES, default "1001 mtu"); the RC ones
# (write_bw, read_bw, send_bw, atomic_fa, atomic_cs) over the IPv6 GID too. Latency tools
# at both link MTUs, IPv4 and IPv6: ib_{read,send,write}_lat (PERFTEST_SIZES), each end
# that prints perftest's latency table printing one. Bidirectional (-b)
# at both link MTUs, IPv4 and IPv6, RC: ib_{write,read,send}_bw (write_bi, read_bi, send_bi;
# PERFTEST_SIZES) and ib_atomic_bw FETCH_AND_ADD (atomic_bi); each end sends and checks
# what the other did to its memory. Two QPs (-q 2; *_q2) likewise. All sizes (-a -n 5:
# write_all, read_all, send_all; IPv4 and IPv6), all sizes both ways (-a -b -n 5:
# write_abi, read_abi, send_abi; IPv4), a duration (-D 2: write_dur and send_dur
# 65536 B over IPv4 and IPv6, atomic_dur; IPv4), a duration both ways (-D 2 -b:
# write_bdur, read_bdur 65536 B, atomic_bdur; IPv4) and -b --report-both (write_rb,
# PERFTEST_SIZES; IPv4). At link MTU 1500, IPv4: the latency tools with all sizes
# (-a -n 5: read_lat_a, send_lat_a, write_lat_a; a row per size), for a duration (-D 2,
# 64 B: read_lat_dur, send_lat_dur, write_lat_dur; perftest's duration row), and
# ib_write_lat -c UC, ib_send_lat -c UC and -c UD (write_lat_uc, send_lat_uc:
# PERFTEST_SIZES; send_lat_ud: PERFTEST_UD_SIZES). send_bw over UC and UD at both link
# MTUs, IPv4: ib_send_bw -c UC (send_uc, PERFTEST_SIZES), -a -n 5 (send_uc_all,
# send_ud_all), -b -n 200 (send_uc_bi 1001 B, send_ud_bi PERFTEST_UD_SIZES); and send_bw
# -b -D 2 (send_bdur, 65536 B, RC); two QPs over UD and UC (-q 2: send_ud_q2, -n 200,
# PERFTEST_UD_SIZES; write_uc_q2, PERFTEST_SIZES); a duration over UC and UD (-D 2:
# write_uc_dur 65536 B, send_ud_dur 1001 B).
# PERFTEST_ITERS iterations (default 1000).
#
# The full run: 104 ping-pong + 396 perftest cases = 500, two guest boots.
# --quick: RC (20003 B) both directions and UD (1001 B) both directions over IPv4, RC
#   over IPv6 once, perftest write_bw, read_bw, send_bw (20000 B) and atomic_bw
#   FETCH_AND_ADD both directions, write_lat (1001 B, softrdma serving), and -b:
#   write_bw both directions, send_bw (softrdma serving), read_bw and atomic_bw (softrdma
#   as client), send_lat -a (softrdma as client), at MTU 1024 (one guest boot, 20 cases).
# --filter REGEX: only the cases whose label matches (e.g. 'srq|ud').
# --out DIR: keep logs, captures and the table there (default: a fresh /tmp/interop.*).
#
# Env: RXE_VM (default: ../shared/rxe-vm beside the checkout, else /work/shared/rxe-vm,
#   else interop/rxe-vm — a copy of the shared scripts),
#   RXE_VM_DIR (image cache, default ~/.cache/rxe-vm; built when missing), SOFTRDMA
#   (a softrdma binary to use instead of `cargo build --release -p softrdma`), SOFTRDMA_PERF
#   (likewise for softrdma-perf), SOFTRDMA_ARGS
#   (more options for every softrdma run, e.g. --rxe-retry), RC_SIZES / UC_SIZES / SRQ_SIZES /
#   UD_SIZES (message sizes of the full run; "mtu" is the path MTU), ITERS_SMALL / ITERS_LARGE / ITERS_HUGE (iterations for sizes up to 4096,
#   up to 100000, beyond; default 200 / 50 / 5), NEGATIVE_CONTROL=1 (softrdma without -c: the
#   srd-client cases of rc, uc and ud must then FAIL, proving the guest-side check bites),
#   KEEP_CAPTURES=1 (keep whole frames in the captures of boots where every case passed;
#   by default those keep each frame's first 128 bytes: about 12 GB less for a full run).
# Needs root (network namespaces, TAP, QEMU).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
quick=0 filter="" out=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --filter) filter=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,64p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "${RXE_VM:-}" ]; then
  # The shared copy beside the checkout, else /work/shared, else the copy
  # kept in this repository (interop/rxe-vm) so a bare CI checkout works.
  RXE_VM=$repo/interop/rxe-vm
  [ -x /work/shared/rxe-vm/run-pair.sh ] && RXE_VM=/work/shared/rxe-vm
  [ -x "$repo/../shared/rxe-vm/run-pair.sh" ] && RXE_VM=$(cd "$repo/../shared/rxe-vm" && pwd)
fi
export RXE_VM_DIR=${RXE_VM_DIR:-$HOME/.cache/rxe-vm}
small_n=${ITERS_SMALL:-200} large_n=${ITERS_LARGE:-50} huge_n=${ITERS_HUGE:-5}
# Message sizes of the full run: 1 and 1001 (one packet, 3 pad bytes), 20003 (20 packets
# at MTU 1024, 5 at 4096; the last with 1 pad byte), 1048573 (1024 or 256 packets: AckReq
# every 64 and at most 128 unacknowledged; RC only, see docs/interop.md); UD: 1, 1001, MTU.
sizes_rc=${RC_SIZES:-"1 1001 20003 1048573"} sizes_uc=${UC_SIZES:-"1 1001 20003"}
sizes_srq=${SRQ_SIZES:-"1 1001 20003"} sizes_ud=${UD_SIZES:-"1 1001 mtu"}
# perftest (ib_{write,read,send,atomic}_bw, ib_{read,send,write}_lat against
# `softrdma-perf ... server|client`, the perftest TCP exchange): the bandwidth tools (RC,
# UC write_bw, UD send_bw) at both link MTUs over the IPv4 GID, the RC ones over IPv6 as
# well; the latency tools at link MTU 1500, IPv4; atomics are 8 bytes.
sizes_pt=${PERFTEST_SIZES:-"1001 20000"} pt_n=${PERFTEST_ITERS:-1000}
is_pt() { case $1 in write_bw|read_bw|send_bw|atomic_fa|atomic_cs|write_uc|send_uc|send_ud|read_lat|send_lat|write_lat|*_bi|*_q2|*_all|*_dur|*_lat_a|*_lat_uc|*_lat_ud|*_abi|*_bdur|*_rb|*_bw_e|*_lat_e|*_bi_e|atomic_e|send_ud_e) return 0 ;; esac; return 1; }
# perftest's binary and softrdma-perf's verb of a perftest case
pt_verb() { case $1 in atomic_fa|atomic_cs|atomic_bi|atomic_q2|atomic_bdur|atomic_e) echo atomic_bw ;; send_ud_e) echo send_bw ;; *_bw_e|*_lat_e) echo "${1%_e}" ;; *_bi_e) echo "${1%_bi_e}_bw" ;; *_bdur) echo "${1%_bdur}_bw" ;; *_rb) echo "${1%_rb}_bw" ;; write_uc|write_uc_q2|write_uc_dur) echo write_bw ;; send_ud|send_uc|send_ud_all|send_uc_all|send_ud_bi|send_uc_bi|send_ud_q2|send_ud_dur) echo send_bw ;; *_bi) echo "${1%_bi}_bw" ;; *_q2) echo "${1%_q2}_bw" ;; atomic_dur) echo atomic_bw ;; *_lat_a) echo "${1%_a}" ;; *_abi) echo "${1%_abi}_bw" ;; *_lat_uc|*_lat_ud) echo "${1%_u?}" ;; *_lat_dur) echo "${1%_dur}" ;; *_all|*_dur) echo "${1%_*}_bw" ;; *) echo "$1" ;; esac; }
sizes_pt_ud=${PERFTEST_UD_SIZES:-"1001 mtu"}
t_start=$(date +%s)

[ "$(id -u)" = 0 ] || { echo "interop/run.sh needs root" >&2; exit 2; }
[ -f "$RXE_VM_DIR/rootfs.img" ] || "$RXE_VM/build-image.sh"
if [ -z "${SOFTRDMA:-}" ]; then
  (cd "$repo" && cargo build --release -q -p softrdma)
  SOFTRDMA=${CARGO_TARGET_DIR:-$repo/target}/release/softrdma
fi
[ -x "$SOFTRDMA" ] || { echo "no softrdma binary at $SOFTRDMA" >&2; exit 2; }
if [ -z "${SOFTRDMA_PERF:-}" ]; then
  (cd "$repo" && cargo build --release -q -p benches --bin softrdma-perf)
  SOFTRDMA_PERF=${CARGO_TARGET_DIR:-$repo/target}/release/softrdma-perf
fi
[ -x "$SOFTRDMA_PERF" ] || { echo "no softrdma-perf binary at $SOFTRDMA_PERF" >&2; exit 2; }
out=${out:-$(mktemp -d /tmp/interop.XXXXXX)}
mkdir -p "$out"; out=$(cd "$out" && pwd)

ns=srdint$$ rp_pid="" host_pid=""
cleanup() {
  [ -z "$host_pid" ] || kill "$host_pid" 2>/dev/null || true
  if [ -n "$rp_pid" ]; then kill "$rp_pid" 2>/dev/null || true; wait "$rp_pid" 2>/dev/null || true; fi
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Cases: "tool softrdma-role gid path-mtu size iters", one list per link MTU.
cases_for() { # link_mtu
  local lmtu=$1 pmtu tool role gid size v
  pmtu=$([ "$lmtu" = 9000 ] && echo 4096 || echo 1024)
  if [ $quick = 1 ]; then
    echo "rc server 1 $pmtu 20003 $large_n"
    echo "rc client 1 $pmtu 20003 $large_n"
    echo "ud server 1 $pmtu 1001 $small_n"
    echo "ud client 1 $pmtu 1001 $small_n"
    echo "rc server 2 $pmtu 20003 $large_n"
    for tool in write_bw read_bw send_bw; do
      echo "$tool server 1 $pmtu 20000 $pt_n"
      echo "$tool client 1 $pmtu 20000 $pt_n"
    done
    echo "atomic_fa server 1 $pmtu 8 $pt_n"
    echo "atomic_fa client 1 $pmtu 8 $pt_n"
    echo "write_lat server 1 $pmtu 1001 $pt_n"
    echo "write_bi server 1 $pmtu 20000 $pt_n"
    echo "write_bi client 1 $pmtu 20000 $pt_n"
    echo "send_bi server 1 $pmtu 20000 $pt_n"
    echo "read_bi client 1 $pmtu 20000 $pt_n"
    echo "atomic_bi client 1 $pmtu 8 $pt_n"
    echo "send_lat_a client 1 $pmtu all 5"
    echo "rc_e server 1 $pmtu 1001 $small_n"
    echo "send_lat_e client 1 $pmtu 1001 $pt_n"
    return
  fi
  # perftest: every tool over the IPv4 GID (index 1), the latency tools' -a, UC and UD at
  # path MTU 1024 only; then the RC tools (and -a) over the IPv6 GID (index 2).
  local pt_v4="write_bw read_bw send_bw atomic_fa atomic_cs write_uc send_uc send_ud write_bi read_bi send_bi atomic_bi"
  pt_v4="$pt_v4 write_q2 read_q2 send_q2 atomic_q2 write_all read_all send_all write_dur atomic_dur send_dur"
  pt_v4="$pt_v4 write_abi read_abi send_abi write_bdur read_bdur atomic_bdur write_rb send_uc_all send_ud_all"
  pt_v4="$pt_v4 send_uc_bi send_ud_bi send_bdur send_ud_q2 write_uc_q2 write_uc_dur send_ud_dur"
  pt_v4="$pt_v4 read_lat send_lat write_lat"
  [ "$lmtu" = 1500 ] && pt_v4="$pt_v4 read_lat_a send_lat_a write_lat_a"
  [ "$lmtu" = 1500 ] && pt_v4="$pt_v4 write_lat_uc send_lat_uc send_lat_ud"
  [ "$lmtu" = 1500 ] && pt_v4="$pt_v4 write_lat_dur send_lat_dur read_lat_dur"
  for gid in 1 2; do
    for tool in $([ $gid = 1 ] && echo "$pt_v4" ||
      echo "write_bw read_bw send_bw atomic_fa atomic_cs write_bi read_bi send_bi atomic_bi write_q2 read_q2 send_q2 atomic_q2
        write_all read_all send_all read_lat send_lat write_lat write_dur send_dur"); do
      for role in server client; do
        case $tool in
          atomic_dur|atomic_bdur) echo "$tool $role $gid $pmtu 8 2s"; continue ;;
          *_bdur) echo "$tool $role $gid $pmtu 65536 2s"; continue ;;
          *_lat_dur) echo "$tool $role $gid $pmtu 64 2s"; continue ;;
          *_all|*_lat_a|*_abi) echo "$tool $role $gid $pmtu all 5"; continue ;;
          # Both ways over UC/UD: 200 messages, fewer than the receives each end posts
          # first (-r 512), so that a guest that cannot repost in time loses none.
          send_uc_bi) echo "$tool $role $gid $pmtu 1001 200"; continue ;;
          send_ud_bi|send_ud_q2) for size in $sizes_pt_ud; do echo "$tool $role $gid $pmtu ${size/mtu/$pmtu} 200"; done; continue ;;
          send_ud_dur) echo "$tool $role $gid $pmtu 1001 2s"; continue ;;
          *_dur) echo "$tool $role $gid $pmtu 65536 2s"; continue ;;
        esac
        if [ "${tool#atomic}" != "$tool" ]; then echo "$tool $role $gid $pmtu 8 $pt_n"; continue; fi
        v=sizes_pt; case $tool in send_ud|send_ud_bi|*_lat_ud) v=sizes_pt_ud ;; esac
        for size in ${!v}; do
          [ "$size" = mtu ] && size=$pmtu
          echo "$tool $role $gid $pmtu $size $pt_n"
        done
      done
    done
  done
  # Sleeping on CQ events (-e) on both ends: the ping-pong tools and the perftest tools
  # that take -e (not the WRITE ones, not with -D), at link MTU 1500, IPv4.
  if [ "$lmtu" = 1500 ]; then
    for role in server client; do
      for c in "rc_e 1001 $small_n" "rc_e 20003 $large_n" "uc_e 1001 $small_n" "ud_e 1001 $small_n" \
        "srq_e 1001 $small_n" "send_bw_e 20000 $pt_n" "read_bw_e 20000 $pt_n" "atomic_e 8 $pt_n" \
        "send_ud_e 1001 $pt_n" "send_lat_e 1001 $pt_n" "read_lat_e 1001 $pt_n" "send_bi_e 20000 $pt_n" \
        "read_bi_e 20000 $pt_n"; do
        set -- $c
        echo "$1 $role 1 $pmtu $2 $3"
      done
    done
  fi
  for tool in rc uc ud srq; do
    for gid in 1 2; do
      for role in server client; do
        v=sizes_$tool
        for size in ${!v}; do
          [ "$size" = mtu ] && size=$pmtu
          echo "$tool $role $gid $pmtu $size $( ( [ "$size" -gt 100000 ] && echo "$huge_n" ) ||
            ( [ "$size" -gt 4096 ] && echo "$large_n" ) || echo "$small_n")"
        done
      done
    done
  done
}
label() { # tool role gid pmtu size
  echo "$1 srd-$2 $([ "$3" = 1 ] && echo v4 || echo v6) mtu$4 s$5"
}
tool_args() { # tool gid pmtu size iters port
  if is_pt "$1"; then
    case $1 in
      atomic_fa) echo "-x $2 -F -n $5 -p $6 -m $3 -A FETCH_AND_ADD" ;;
      atomic_e) echo "-x $2 -F -n $5 -p $6 -m $3 -A FETCH_AND_ADD -e" ;;
      send_ud_e) echo "-x $2 -F -c UD -s $4 -n $5 -p $6 -m $3 -e" ;;
      *_bw_e|*_lat_e) echo "-x $2 -F -s $4 -n $5 -p $6 -m $3 -e" ;;
      *_bi_e) echo "-x $2 -F -s $4 -n $5 -p $6 -m $3 -b -e" ;;
      atomic_bi) echo "-x $2 -F -n $5 -p $6 -m $3 -A FETCH_AND_ADD -b" ;;
      atomic_q2) echo "-x $2 -F -n $5 -p $6 -m $3 -A FETCH_AND_ADD -q 2" ;;
      atomic_dur) echo "-x $2 -F -D 2 -p $6 -m $3 -A FETCH_AND_ADD" ;;
      atomic_bdur) echo "-x $2 -F -D 2 -b -p $6 -m $3 -A FETCH_AND_ADD" ;;
      *_bdur) echo "-x $2 -F -s $4 -D 2 -b -p $6 -m $3" ;;
      *_rb) echo "-x $2 -F -s $4 -n $5 -p $6 -m $3 -b --report-both" ;;
      send_uc_bi) echo "-x $2 -F -c UC -s $4 -n $5 -p $6 -m $3 -b" ;;
      send_ud_q2) echo "-x $2 -F -c UD -s $4 -n $5 -p $6 -m $3 -q 2" ;;
      send_ud_dur) echo "-x $2 -F -c UD -s $4 -D 2 -p $6 -m $3" ;;
      write_uc_dur) echo "-x $2 -F -c UC -s $4 -D 2 -p $6 -m $3" ;;
      write_uc_q2) echo "-x $2 -F -c UC -s $4 -n $5 -p $6 -m $3 -q 2" ;;
      send_ud_bi) echo "-x $2 -F -c UD -s $4 -n $5 -p $6 -m $3 -b" ;;
      send_uc_all) echo "-x $2 -F -c UC -a -n $5 -p $6 -m $3" ;;
      send_ud_all) echo "-x $2 -F -c UD -a -n $5 -p $6 -m $3" ;;
      *_all|*_lat_a) echo "-x $2 -F -a -n $5 -p $6 -m $3" ;;
      *_abi) echo "-x $2 -F -a -b -n $5 -p $6 -m $3" ;;
      *_dur) echo "-x $2 -F -s $4 -D 2 -p $6 -m $3" ;;
      *_q2) echo "-x $2 -F -s $4 -n $5 -p $6 -m $3 -q 2" ;;
      *_bi) echo "-x $2 -F -s $4 -n $5 -p $6 -m $3 -b" ;;
      atomic_cs) echo "-x $2 -F -n $5 -p $6 -m $3 -A CMP_AND_SWAP" ;;
      write_uc) echo "-x $2 -F -c UC -s $4 -n $5 -p $6 -m $3" ;;
      send_ud|*_lat_ud) echo "-x $2 -F -c UD -s $4 -n $5 -p $6 -m $3" ;;
      send_uc|*_lat_uc) echo "-x $2 -F -c UC -s $4 -n $5 -p $6 -m $3" ;;
      *) echo "-x $2 -F -s $4 -n $5 -p $6 -m $3" ;;
    esac
    return
  fi
  local a="-g $2 -s $4 -n $5 -p $6 -c"
  [ "${1%_e}" = ud ] || a="$a -m $3"
  [ "${1%_e}" = "$1" ] || a="$a -e"
  echo "$a"
}

# The guest's job: run the tool of each case in turn; results in case.I.{rc,log}.
guest_job() { # file, then case lines on stdin as "index tool role gid pmtu size iters"
  {
    cat <<'PRE'
# softrdma interop: one ibv_*_pingpong per case; softrdma (10.77.0.21) is on br0.
cli() { # log, tool command...: retry while the softrdma server is not listening yet
  local log=$1 rc i; shift
  for i in $(seq 300); do
    timeout 120 stdbuf -oL "$@" >"$log" 2>&1 && rc=0 || rc=$?
    grep -q "Couldn't connect to" "$log" || return $rc
    sleep 1
  done
  return $rc
}
uname -r; ibv_devinfo -d rxe0 | grep -E 'state|active_mtu'
PRE
    while read -r i tool role gid pmtu size iters; do
      local a; a=$(tool_args "$tool" "$gid" "$pmtu" "$size" "$iters" $((18515 + i)))
      echo "echo '== case $i: $(label "$tool" "$role" "$gid" "$pmtu" "$size")'"
      if is_pt "$tool"; then
        local bin; bin=ib_$(pt_verb "$tool")
        if [ "$role" = server ]; then
          echo "cli case.$i.log $bin -d rxe0 $a 10.77.0.1; echo \$? >case.$i.rc"
        else
          echo "timeout 150 stdbuf -oL $bin -d rxe0 $a >case.$i.log 2>&1; echo \$? >case.$i.rc"
        fi
      elif [ "$role" = server ]; then   # softrdma serves, the tool connects to br0's 10.77.0.1
        echo "cli case.$i.log ibv_${tool%_e}_pingpong $a 10.77.0.1; echo \$? >case.$i.rc"
      else
        echo "timeout 150 stdbuf -oL ibv_${tool%_e}_pingpong $a >case.$i.log 2>&1; echo \$? >case.$i.rc"
      fi
      echo "(ip -s link show eth0; cd /sys/class/infiniband/rxe0/ports/1/hw_counters && grep . *) >case.$i.counters 2>&1"
      echo "cat case.$i.log; echo \"== case $i rc=\$(cat case.$i.rc)\""
    done
    echo "exit 0"
  } >"$1"
}

# Whether the guest answers ping within 30 s. A busy emulated guest may drop a few pings;
# a stalled one answers none for good, so patience costs only the stalled case.
guest_answers() {
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt 30 ]; do
    ip netns exec "$ns" ping -c 1 -W 2 -q 10.77.0.11 >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

# Where a fresh guest starts over (dir/stalled) when the guest stopped in case N: at N, or
# at the case before it ($prev of host_side) when softrdma finished that one but the
# guest's console has no result for it (the guest stopped before it printed one).
mark_stalled() { # dir, case
  local from=$2
  if [ -n "$prev" ] && ! grep -aq "^== case $prev rc=" "$1/a.log" 2>/dev/null; then from=$prev; fi
  echo "$from" >"$1/stalled"
}

# Runs one case's softrdma command (output to host.N.log); after the first case (the guest
# is up by then) pings the guest every 10 s meanwhile and ends the case early if it has
# not answered for 30 s.
watched() { # case, dir, command...
  local i=$1 dir=$2 pid n=0; shift 2
  "$@" </dev/null >"$dir/host.$i.log" 2>&1 &
  pid=$!
  while [ "$i" != "$first_case" ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.2; n=$((n + 1))
    [ $((n % 50)) = 0 ] && kill -0 "$pid" 2>/dev/null || continue
    if ! guest_answers; then
      echo "  $(date +%T) the guest stopped answering ping during case $i: ending this boot"
      mark_stalled "$dir" "$i"
      kill "$pid" 2>/dev/null || true
      kill "$rp_pid" 2>/dev/null || true
      break
    fi
  done
  wait "$pid"
}

# softrdma's side of each case, in the guest's namespace, in the same order.
host_side() { # dir, case lines on stdin
  local dir=$1 i tool role gid pmtu size iters a lmtu first_case prev=""
  first_case=$(head -1 <<<"$2" | cut -d' ' -f1)
  while read -r i tool role gid pmtu size iters; do
    # The guest is gone, or stopped answering (below): nothing to talk to. (An ended
    # run-pair.sh stays a zombie until the main loop reaps it, so kill -0 alone won't do.)
    if [ -f "$dir/stalled" ] || ! kill -0 "$rp_pid" 2>/dev/null; then
      echo gone >"$dir/host.$i.rc"; continue
    fi
    # A guest that stalled between cases would leave this case waiting for it for minutes.
    if [ "$i" != "$first_case" ] && ! guest_answers; then
      echo "  $(date +%T) the guest stopped answering ping before case $i: ending this boot"
      mark_stalled "$dir" "$i"; kill "$rp_pid" 2>/dev/null || true
      echo gone >"$dir/host.$i.rc"; continue
    fi
    lmtu=$([ "$pmtu" = 4096 ] && echo 9000 || echo 1500)
    a=$(tool_args "$tool" "$gid" "$pmtu" "$size" "$iters" $((18515 + i)))
    # Negative control: without -c softrdma leaves page starts at 0x7b, which the tool's -c
    # check on a server must report ("invalid data in page 0"), failing the srd-client cases.
    [ "${NEGATIVE_CONTROL:-0}" = 1 ] && a=${a/ -c/}
    local dev="--netns $ns --tap srdpp0 --bridge br0 --addr 10.77.0.21/24 --addr fd77::21/64
      --mac 02:53:52:44:77:21 --link-mtu $lmtu --pcap $dir/case.$i.pcap --timeout 60 --wait 400 ${SOFTRDMA_ARGS:-}"
    if is_pt "$tool"; then
      local verb; verb=$(pt_verb "$tool")
      local pdev="--netns $ns --tap srdpp0 --bridge br0 --addr 10.77.0.21/24 --addr fd77::21/64
        --mac 02:53:52:44:77:21 --link-mtu $lmtu --wait 400"
      local peer=""; [ "$role" = client ] && peer=10.77.0.11
      # shellcheck disable=SC2086
      watched "$i" "$dir" timeout 500 "$SOFTRDMA_PERF" "$verb" "$role" $peer $a $pdev && rc=0 || rc=$?
    elif [ "$role" = server ]; then
      # shellcheck disable=SC2086
      watched "$i" "$dir" timeout 500 "$SOFTRDMA" pingpong "${tool%_e}" server $a $dev && rc=0 || rc=$?
    else
      # shellcheck disable=SC2086
      watched "$i" "$dir" timeout 500 "$SOFTRDMA" pingpong "${tool%_e}" client 10.77.0.11 $a $dev && rc=0 || rc=$?
    fi
    echo $rc >"$dir/host.$i.rc"
    echo "  $(date +%T) case $i $(label "$tool" "$role" "$gid" "$pmtu" "$size"): softrdma rc=$rc"
    # The emulated guest's network sometimes stops for good (its console then shows
    # "virtio_net ... NETDEV WATCHDOG: transmit queue 0 timed out"): every case after it
    # would wait out its timeouts. After a failed case, a guest that no longer answers
    # ping ends this boot; the run then exits 3 (docs/interop.md, "A stalled guest").
    if [ "$rc" != 0 ] && [ ! -f "$dir/stalled" ] && ! guest_answers; then
      echo "  $(date +%T) the guest stopped answering ping after case $i: ending this boot"
      mark_stalled "$dir" "$i"
      kill "$rp_pid" 2>/dev/null || true
    fi
    prev=$i
  done
}

results="$out/results.txt"
printf '%-5s %-8s %-4s %-5s %-6s %-6s %-7s %s\n' tool softrdma gid mtu size iters result note >"$results"
fails=0 total=0 stalled=0 fails_before_stall=0
for lmtu in 1500 9000; do
  [ $quick = 1 ] && [ $lmtu = 9000 ] && continue
  list=$(cases_for $lmtu | nl -v0 -w1 -s' ' | while read -r i rest; do
    set -- $rest; l=$(label "$1" "$2" "$3" "$4" "$5")
    if [ -z "$filter" ] || echo "$l" | grep -Eq "$filter"; then echo "$i $rest"; fi
  done)
  # A guest that stalls (see watched) is replaced: a fresh boot runs the case it stalled in
  # and the rest, up to twice per pass; what it got to before counts as measured.
  boot=1
  while [ -n "$list" ]; do
  fails_at_boot=$fails
  dir="$out/link$lmtu"; [ $boot = 1 ] || dir="$out/link$lmtu.boot$boot"
  mkdir -p "$dir"
  guest_job "$dir/job.sh" <<<"$list"
  echo "link MTU $lmtu: $(wc -l <<<"$list") cases; guest boot + run (logs: $dir)"
  t0=$(date +%s)
  RXE_VM_NS=$ns KEEP_NS=1 RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-3000} \
    "$RXE_VM/run-pair.sh" "$dir" "$dir/job.sh" none "$lmtu" >"$dir/run-pair.log" 2>&1 &
  rp_pid=$!
  for _ in $(seq 300); do ip -n "$ns" link show br0 >/dev/null 2>&1 && break; sleep 0.1; done
  ip -n "$ns" link show br0 >/dev/null 2>&1 || { cat "$dir/run-pair.log" >&2; exit 2; }
  # A bridge takes the lowest MAC of its ports unless given one: pin br0's, or each new
  # softrdma TAP may change it under the guest's ARP entry for 10.77.0.1 (the TCP peer).
  ip -n "$ns" link set br0 address "$(ip -n "$ns" -br link show br0 | awk '{print $3}')"
  host_side "$dir" "$list" <<<"$list" &
  host_pid=$!
  wait "$host_pid" || true; host_pid=""
  wait "$rp_pid" || true; rp_pid=""
  ip netns del "$ns" 2>/dev/null || true
  echo "  guest: $(grep -a 'guest a:' "$dir/run-pair.log" || echo 'no result'); $(( $(date +%s) - t0 )) s"
  stall_at=$(cat "$dir/stalled" 2>/dev/null || echo "")
  retry=""
  if [ -n "$stall_at" ] && [ $boot -lt 3 ]; then
    retry=$(awk -v k="$stall_at" '$1 >= k' <<<"$list")
    echo "  the guest stalled in case $stall_at: a fresh guest runs the $(wc -l <<<"$retry") cases from there"
  fi
  while read -r i tool role gid pmtu size iters; do
    [ -n "$retry" ] && [ "$i" -ge "$stall_at" ] && continue
    total=$((total + 1))
    # The guest's files come out of its disk after it shuts down; a boot ended early (a
    # stalled guest) leaves only its console, where the job printed each case too.
    if [ -f "$dir/a.out/case.$i.rc" ]; then
      grc=$(cat "$dir/a.out/case.$i.rc")
    else
      grc=$(sed -n "s/^== case $i rc=\([0-9]*\).*/\1/p" "$dir/a.log" 2>/dev/null | tail -1)
      grc=${grc:-none}
      mkdir -p "$dir/a.out"
      awk -v s="== case $i:" -v e="== case $i rc=" 'index($0, e) == 1 {exit} on {print} index($0, s) == 1 {on = 1}' \
        "$dir/a.log" >"$dir/a.out/case.$i.log" 2>/dev/null || true
    fi
    hrc=$(cat "$dir/host.$i.rc" 2>/dev/null || echo none)
    note=""
    # UD and UC have no recovery: perftest's ib_send_bw -c UD|UC server gives up after 60–120 s
    # without a message, prints "Total Received=N, Total Iters Required=M" and exits 17 (with
    # -a: ends the run at that size and exits 0). That is its report of what completed; the
    # case passes when N > 0 (the loss is noted).
    if [ -n "$stall_at" ] && [ "$i" -ge "$stall_at" ]; then
      fails=$((fails + 1)); stalled=1
      printf '%-5s %-8s %-4s %-5s %-6s %-6s %-7s %s\n' "$tool" "$role" "$([ "$gid" = 1 ] && echo v4 || echo v6)" \
        "$pmtu" "$size" "$iters" STALL "the guest stopped answering at case $stall_at" >>"$results"
      continue
    fi
    # The guest receives when softrdma is the client, and under -b always.
    lossy=0
    case ${tool%_all} in
      send_ud|send_uc|send_ud_q2) [ "$role" = client ] && lossy=1 ;;
      send_ud_bi|send_uc_bi) lossy=1 ;;
    esac
    if [ $lossy = 0 ]; then :
    elif [ "$grc" = 17 ]; then
      got=$(grep -ao 'Total Received=[0-9]*' "$dir/a.out/case.$i.log" 2>/dev/null | tr -dc 0-9 || true)
      if [ "${got:-0}" -gt 0 ]; then grc=0; note="lost: guest received $got of $iters"; fi
    elif [ "$grc" = 0 ] && grep -aq 'Did not get Message' "$dir/a.out/case.$i.log" 2>/dev/null; then
      # -a: perftest's receiver ends the run at the size that lost one (softrdma says which).
      note="lost: $(grep -ao 'Total Received=[0-9]*, Total Iters Required=[0-9]*' "$dir/a.out/case.$i.log" | tail -1)"
    fi
    if [ "$grc" = 0 ] && [ "$hrc" = 0 ] && ! grep -q "invalid data" "$dir/a.out/case.$i.log" 2>/dev/null \
       && grep -q ": PASS" "$dir/host.$i.log"; then
      res=PASS
      [ $boot = 1 ] || note="${note:+$note; }guest boot $boot (an earlier guest stalled)"
    else
      res=FAIL; fails=$((fails + 1)); fails_before_stall=$((fails_before_stall + 1))
      note="guest rc=$grc, softrdma rc=$hrc"
      g=$(grep -avE '^ *(local|remote) address' "$dir/a.out/case.$i.log" 2>/dev/null | grep -av '^$' | tail -1 || true)
      h=$(grep -a "FAIL\|softrdma pingpong:" "$dir/host.$i.log" 2>/dev/null | tail -1 || true)
      [ -z "$g" ] || note="$note; guest: $g"
      [ -z "$h" ] || note="$note; softrdma: $h"
    fi
    printf '%-5s %-8s %-4s %-5s %-6s %-6s %-7s %s\n' "$tool" "$role" "$([ "$gid" = 1 ] && echo v4 || echo v6)" \
      "$pmtu" "$size" "$iters" "$res" "$note" >>"$results"
  done <<<"$list"
  # A full run's bridge captures come to about 12 GB. A boot in which every case passed
  # keeps the first 128 bytes of each frame (Ethernet to RETH/AtomicETH: every header and
  # PSN, for Wireshark); a boot with a failure or a stall, or KEEP_CAPTURES=1, keeps them whole.
  if [ "$fails" = "$fails_at_boot" ] && [ -z "$stall_at" ] && [ "${KEEP_CAPTURES:-0}" != 1 ] \
     && command -v editcap >/dev/null; then
    for f in "$dir"/capture.pcap "$dir"/case.*.pcap; do
      { [ -s "$f" ] && editcap -s 128 "$f" "$f.snap" 2>/dev/null && mv "$f.snap" "$f"; } || rm -f "$f.snap"
    done
  fi
  list=$retry; boot=$((boot + 1))
  done
done
echo
cat "$results"
echo "$((total - fails))/$total passed in $(( $(date +%s) - t_start )) s; logs and captures in $out"
# Exit 3: every failure is a case at or after the point where the guest stopped answering
# (an emulator stall, not a verdict on softrdma; .ci/run boots a fresh guest once then).
if [ $stalled = 1 ] && [ $fails_before_stall = 0 ]; then exit 3; fi
[ $fails = 0 ] && [ $total -gt 0 ]
