//! `softrdma-perf`: perftest-style benchmarks of softrdma, and the physical
//! baselines of the machine they run on. See docs/benchmarks.md.
//!
//! ```text
//! softrdma-perf write_bw -s 65536 -n 5000 -m 4096 [--fabric memory|tap]
//! softrdma-perf write_lat -s 2 -n 10000
//! softrdma-perf raw_bw -s 4096 -D 3 --fabric tap
//! softrdma-perf scale_qps -n 100000
//! ```

use std::process::ExitCode;
use std::time::Duration;

use benches::baseline;
use benches::fabric::{self, Devices, FabricKind};
use benches::loaded;
use benches::perf::{run_bw, run_lat, runnable, PerfConfig, Test};
use benches::report::{bw_header, bw_line, cq_events_line, lat_header, lat_line, preempted_line, Report, LINE};
use benches::scale;
use clap::{Args, Parser, Subcommand, ValueEnum};
use verbs_api::{Mtu, QpType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Conn {
    #[value(name = "RC", alias = "rc")]
    Rc,
    #[value(name = "UC", alias = "uc")]
    Uc,
    #[value(name = "UD", alias = "ud")]
    Ud,
}

/// The deepest send or receive queue the tools ask for (`-t`, `-r`).
const MAX_DEPTH: u32 = 16384;
/// The largest payload of a RoCE packet (IB MTU 4096): what `raw_bw` sends
/// at most, and by default.
const RAW_MAX: usize = 4096;
/// The device's `max_inline_data`.
const MAX_INLINE: u32 = softrdma::verbs::MAX_INLINE;

/// perftest's flags, as far as they mean something here.
#[derive(Debug, Clone, Args)]
struct Common {
    /// Message size in bytes [default: as perftest, 65536 for the bandwidth
    /// tests and 2 for the latency tests; under UD, at most the MTU].
    #[arg(short = 's', long = "size")]
    size: Option<usize>,
    /// Run every size from 2 to 2^23.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Iterations (per QP for bandwidth tests). Default: 5000 for bandwidth, 1000 for latency.
    #[arg(short = 'n', long = "iters")]
    iters: Option<u64>,
    /// Run for this many seconds instead of a number of iterations.
    #[arg(short = 'D', long = "duration")]
    duration: Option<f64>,
    /// Number of QPs.
    #[arg(short = 'q', long = "qp", default_value_t = 1)]
    qps: usize,
    /// Send queue depth (outstanding work requests per QP).
    #[arg(short = 't', long = "tx-depth", default_value_t = 128)]
    tx_depth: u32,
    /// Receive queue depth.
    #[arg(short = 'r', long = "rx-depth", default_value_t = 512)]
    rx_depth: u32,
    /// A completion every N work requests (perftest's -Q).
    #[arg(short = 'Q', long = "cq-mod", default_value_t = 100)]
    cq_mod: u32,
    /// IB path MTU: 256, 512, 1024, 2048 or 4096 (the link MTU follows).
    #[arg(short = 'm', long = "mtu", default_value_t = 1024)]
    mtu: usize,
    /// Connection type.
    #[arg(short = 'c', long = "connection", value_enum, default_value = "RC")]
    conn: Conn,
    /// QP timeout exponent: local ACK timeout 4.096 us * 2^N (perftest's -u).
    #[arg(short = 'u', long = "qp-timeout", default_value_t = 14)]
    qp_timeout: u8,
    /// Busy-poll interval of the devices in µs (0: off, every frame through
    /// the receive thread). Default: the device's (200 µs on more than one CPU).
    /// raw_bw/raw_lat spin on their links unless this is 0 (or on one CPU).
    #[arg(long = "busy-poll")]
    busy_poll: Option<u64>,
    /// How long (µs) the devices' receive threads keep polling an idle link
    /// after a batch before they sleep (0: sleep at once). Default: the
    /// link's (5 µs on a TAP, 50 µs on the in-memory fabric; 0 on one CPU).
    #[arg(long = "rx-linger")]
    rx_linger: Option<u64>,
    /// How long (µs) the devices' polls hold a plain ACK back so that the
    /// application's answer takes it along in one write (0: the next poll
    /// sends it). Default 5.
    #[arg(long = "ack-hold")]
    ack_hold: Option<u64>,
    /// Each device of the run writes every frame it sends or receives to
    /// DIR/NAME.pcap (bench0.pcap, bench1.pcap…), for Wireshark. The capture
    /// costs time per frame.
    #[arg(long = "pcap", value_name = "DIR")]
    pcap: Option<std::path::PathBuf>,
    /// TAPs with virtio-net headers and UDP segmentation offload: runs of
    /// one flow's frames cross the kernel in one write (and one read) —
    /// the default — or, `off`, one frame per write(2)/read(2).
    #[arg(long = "tap-offload", value_enum, default_value = "on")]
    tap_offload: OnOff,
    /// raw_bw/raw_lat: IPv4/UDP frames to port 4791, which take RoCEv2's
    /// path through the bridges' netfilter hooks, instead of EtherType 0x88b5.
    #[arg(long = "udp")]
    udp: bool,
    /// Largest message sent inline.
    #[arg(short = 'I', long = "inline_size", default_value_t = 0)]
    inline: u32,
    /// Bandwidth tests: both ends stream towards each other at once; the
    /// row is the sum of both directions (perftest's -b).
    #[arg(short = 'b', long = "bidirectional")]
    bidirectional: bool,
    /// Latency tests, both ends in one process: after the table, where a
    /// turn's time went, step by step (the link's writes, the peer's read,
    /// softrdma's work). Needs a build with the `turn-trace` feature
    /// (benches/scripts/turn_trace.sh).
    #[arg(long = "turn-trace")]
    turn_trace: bool,
    /// Sleep on CQ events (completion channels) instead of polling the
    /// CQs. Not with the WRITE tests or -D, as perftest.
    #[arg(short = 'e', long = "events")]
    events: bool,
    /// perftest TCP mode with -b: after the summed row, this end's and the
    /// peer's rows on their own ("Local results", "Remote results"), as
    /// perftest's --report-both prints them (one size only: not with -a).
    #[arg(long = "report-both")]
    report_both: bool,
    /// Bandwidth in Gb/sec instead of MB/sec.
    #[arg(long = "report_gbits")]
    report_gbits: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long = "out_json", value_name = "FILE")]
    out_json: Option<std::path::PathBuf>,
    /// raw_bw only: self-clocked, a credit frame back every N frames and at
    /// most -t frames beyond the last credit (0: blast without flow control).
    #[arg(long = "credit", default_value_t = 0)]
    credit: u64,
    /// raw_bw only: frames handed to the link per call. With --udp on TAPs
    /// with offload, a burst crosses the kernel as one UDP GSO write, as a
    /// run of one RDMA message's frames does (16 = a 64 KiB message at MTU
    /// 4096). Default: 16 with --udp and --tap-offload on, else 1.
    #[arg(long = "burst")]
    burst: Option<usize>,
    /// raw_bw only: hand each burst to the link in two calls, its first N
    /// frames and the rest. `--burst 16 --split 2` makes the TAP writes a
    /// 64 KiB RDMA WRITE at MTU 4096 makes: its FIRST packet, 16 bytes
    /// longer for the RETH, cannot lead a UDP GSO run of the shorter
    /// packets after it, so the message goes in runs of 2 and 14.
    #[arg(long = "split", default_value_t = 0)]
    split: usize,
    /// raw_lat only: each turn sends a 64-byte ACK frame after the answer,
    /// and a side answers once both came — RC write_lat's frames per turn.
    #[arg(long)]
    acks: bool,
    /// raw_lat only: like --acks, but the ACK has the answer's headers and
    /// goes to the link with it at once — with --udp on TAPs with offload,
    /// in one UDP GSO write, as softrdma sends an answer and the ACK held
    /// back for it. The floor of RC write_lat on that path.
    #[arg(long)]
    acks_at_once: bool,
    /// memcpy_xcore_bw only: one copy instead of two — the sending thread
    /// hands over each chunk's place in the source and the receiving
    /// thread copies it from there (a fabric with no frame buffer).
    #[arg(long)]
    pull: bool,
    /// Latency tests and raw_lat: leave the two threads where the scheduler
    /// puts them, instead of one on each of the first two CPUs allowed.
    #[arg(long = "no-pin")]
    no_pin: bool,
    /// Where the two ends run.
    #[arg(long = "fabric", value_enum, default_value = "memory")]
    fabric: FabricKind,
    /// perftest TCP mode (every test): `server` (listen on -p) or `client
    /// HOST`; the other end is perftest's ib_* tool of the same test or
    /// another softrdma-perf. Without it both ends run in this process.
    #[arg(value_parser = ["server", "client"])]
    role: Option<String>,
    /// perftest TCP mode: the server to connect to.
    host: Option<String>,
    /// perftest TCP mode: TCP port of the out-of-band exchange.
    #[arg(short = 'p', long = "port", default_value_t = benches::oob::PORT)]
    port: u16,
    /// Local GID index: in perftest TCP mode 1 is the first --addr; with
    /// both ends here 1 is IPv4 (10.98.0.N), 2 IPv6 (fd98::N), 0 link-local.
    #[arg(short = 'x', long = "gid-index", default_value_t = 1)]
    gid_index: u32,
    /// Accepted for perftest compatibility (CPU frequency check); ignored.
    #[arg(short = 'F', long = "CPU-freq")]
    cpu_freq: bool,
    /// Accepted for perftest compatibility (device name); ignored.
    #[arg(short = 'd', long = "ib-dev")]
    ib_dev: Option<String>,
    /// atomic_bw: FETCH_AND_ADD or CMP_AND_SWAP.
    #[arg(short = 'A', long = "atomic_type", default_value = "FETCH_AND_ADD", value_parser = ["FETCH_AND_ADD", "CMP_AND_SWAP"])]
    atomic_type: String,
    /// perftest TCP mode: network namespace of the TAP and the socket.
    #[arg(long)]
    netns: Option<String>,
    /// perftest TCP mode: TAP interface name.
    #[arg(long, default_value = "srdpf0")]
    tap: String,
    /// perftest TCP mode: make the TAP a port of this bridge (in --netns).
    #[arg(long)]
    bridge: Option<String>,
    /// perftest TCP mode: the device's addresses (GID 1, 2, ... in order).
    #[arg(long = "addr", value_name = "CIDR")]
    addrs: Vec<String>,
    /// perftest TCP mode: the device's MAC address.
    #[arg(long)]
    mac: Option<String>,
    /// perftest TCP mode: link MTU of the TAP (default: follows -m).
    #[arg(long = "link-mtu")]
    link_mtu: Option<usize>,
    /// perftest TCP mode: client: retry the connect this long; server: wait
    /// this long for a client (0: forever). Seconds.
    #[arg(long, default_value_t = 0)]
    wait: u64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// RDMA WRITE bandwidth (ib_write_bw).
    #[command(name = "write_bw")]
    WriteBw(Common),
    /// RDMA READ bandwidth (ib_read_bw).
    #[command(name = "read_bw")]
    ReadBw(Common),
    /// SEND bandwidth (ib_send_bw).
    #[command(name = "send_bw")]
    SendBw(Common),
    /// FETCH_AND_ADD bandwidth (ib_atomic_bw).
    #[command(name = "atomic_bw")]
    AtomicBw(Common),
    /// RDMA WRITE ping-pong latency (ib_write_lat), half round trip.
    #[command(name = "write_lat")]
    WriteLat(Common),
    /// SEND ping-pong latency (ib_send_lat), half round trip.
    #[command(name = "send_lat")]
    SendLat(Common),
    /// RDMA READ latency (ib_read_lat), whole round trip.
    #[command(name = "read_lat")]
    ReadLat(Common),
    /// Raw Ethernet frames one way through the same links, no RDMA: frames as
    /// long as RoCE packets with -s payload bytes (at most, and by default,
    /// 4096); bandwidth in payload bytes.
    #[command(name = "raw_bw")]
    RawBw(Common),
    /// Raw Ethernet ping-pong through the same links (-s frame bytes, default 64).
    #[command(name = "raw_lat")]
    RawLat(Common),
    /// memcpy between two -s byte buffers.
    #[command(name = "memcpy_bw")]
    MemcpyBw(Common),
    /// -s byte messages in -m byte chunks copied by one thread into buffers
    /// handed to another, which copies them out: the in-memory fabric's
    /// physical limit (two copies and a cross-CPU hand-off per packet).
    #[command(name = "memcpy_xcore_bw")]
    MemcpyXcoreBw(Common),
    /// RC RDMA WRITE on the deterministic simulator: the transport alone.
    #[command(name = "sim_bw")]
    SimBw(Common),
    /// The `post_send` call time, and the time to its completion, of -s byte
    /// RC WRITEs on one QP while another thread streams 1 MiB WRITEs on a
    /// second QP of the same device (no perftest equivalent); µs, not halved.
    #[command(name = "post_loaded")]
    PostLoaded(Common),
    /// Create -n RC QPs on one device; memory and time per QP.
    #[command(name = "scale_qps")]
    ScaleQps(Common),
    /// -n devices (namespaces with --fabric tap), pairs doing write_bw.
    #[command(name = "scale_ns")]
    ScaleNs(Common),
    /// Which machine this is: CPU model, vendor, family and model, the
    /// flags that pick the ICRC's path, and the CPU count (one line, as the
    /// bench scripts' headers and the JSON facts give it).
    #[command(name = "host")]
    Host,
}

impl Cmd {
    fn common(&self) -> Option<&Common> {
        use Cmd::*;
        match self {
            WriteBw(c) | ReadBw(c) | SendBw(c) | AtomicBw(c) | WriteLat(c) | SendLat(c) | ReadLat(c) | RawBw(c)
            | RawLat(c) | MemcpyBw(c) | MemcpyXcoreBw(c) | SimBw(c) | PostLoaded(c) | ScaleQps(c) | ScaleNs(c) => {
                Some(c)
            }
            Host => None,
        }
    }

    /// The verbs test this command runs, if it is one.
    fn verbs_test(&self) -> Option<Test> {
        Some(match self {
            Cmd::WriteBw(_) => Test::WriteBw,
            Cmd::ReadBw(_) => Test::ReadBw,
            Cmd::SendBw(_) => Test::SendBw,
            Cmd::AtomicBw(_) => Test::AtomicBw,
            Cmd::WriteLat(_) => Test::WriteLat,
            Cmd::SendLat(_) => Test::SendLat,
            Cmd::ReadLat(_) => Test::ReadLat,
            _ => return None,
        })
    }

    /// Whether the test runs both ways with `-b`.
    fn runs_both_ways(&self) -> bool {
        matches!(self, Cmd::WriteBw(_) | Cmd::ReadBw(_) | Cmd::SendBw(_) | Cmd::AtomicBw(_))
    }
}

#[derive(Debug, Parser)]
#[command(name = "softrdma-perf", version, about = "perftest-style benchmarks for softrdma")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The sizes to run: every power of two with `-a`, else `-s` or `default`.
fn sizes(c: &Common, default: usize) -> Vec<usize> {
    if c.all {
        (1..=23).map(|k| 1usize << k).collect()
    } else {
        vec![c.size.unwrap_or(default)]
    }
}

/// A verbs test's sizes, checked before anything runs. Under UD, as
/// perftest's `check_mtu`: `-a` stops at the MTU, and the default size
/// becomes the MTU (with a notice), while an explicit larger `-s` is an
/// error.
fn verbs_sizes(t: Test, c: &Common, cfg: &PerfConfig) -> Result<Vec<usize>, String> {
    let mtu = cfg.mtu.bytes();
    let mut sizes = sizes(c, if t.is_bw() { 65536 } else { 2 });
    if cfg.conn == QpType::Ud {
        if c.all {
            sizes.retain(|&s| s <= mtu);
        } else if c.size.is_none() && sizes[0] > mtu {
            eprintln!(" Max msg size in UD is MTU {mtu}\n Changing to this MTU");
            sizes = vec![mtu];
        }
    }
    for &size in &sizes {
        runnable(t, cfg, size)?;
    }
    Ok(sizes)
}

/// The flags every subcommand reads, checked before it runs: a value that
/// would measure nothing, or not what was asked, is refused with the flag
/// named (never clamped in silence).
fn check_common(c: &Common) -> Result<(), String> {
    if c.iters == Some(0) {
        return Err("-n must be at least 1".into());
    }
    if c.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        return Err("-D must be a positive number of seconds".into());
    }
    for (flag, v) in [("-t", c.tx_depth), ("-r", c.rx_depth)] {
        if v == 0 || v > MAX_DEPTH {
            return Err(format!("{flag} must be 1..={MAX_DEPTH}"));
        }
    }
    if c.inline > MAX_INLINE {
        return Err(format!("-I {}: the device takes at most {MAX_INLINE} bytes inline (max_inline_data)", c.inline));
    }
    if c.report_both && (c.role.is_none() || !c.bidirectional) {
        return Err("--report-both: perftest TCP mode (server|client) with -b only".into());
    }
    Ok(())
}

fn perf_config(c: &Common, default_iters: u64) -> Result<PerfConfig, String> {
    let mtu = Mtu::from_bytes(c.mtu).ok_or_else(|| format!("bad MTU {} (256|512|1024|2048|4096)", c.mtu))?;
    if c.qps == 0 || c.qps > 4096 {
        return Err("-q must be 1..=4096".into());
    }
    // In one process both devices have GIDs 0 (link-local), 1 (IPv4) and
    // 2 (IPv6); in perftest mode the device has one per --addr.
    let gid_index = u8::try_from(c.gid_index)
        .ok()
        .filter(|&g| c.role.is_some() || g <= 2)
        .ok_or_else(|| format!("bad GID index {} (-x 0|1|2 with both ends here)", c.gid_index))?;

    Ok(PerfConfig {
        iters: c.iters.unwrap_or(default_iters),
        duration: c.duration.map(Duration::from_secs_f64),
        qps: c.qps,
        tx_depth: c.tx_depth,
        rx_depth: c.rx_depth,
        mtu,
        conn: match c.conn {
            Conn::Rc => QpType::Rc,
            Conn::Uc => QpType::Uc,
            Conn::Ud => QpType::Ud,
        },
        inline: c.inline,
        cq_mod: c.cq_mod.max(1),
        timeout: c.qp_timeout.min(31),
        gid_index,
        bidirectional: c.bidirectional,
        events: c.events,
    })
}

fn banner(title: &str, c: &Common, extra: &[(&str, String)]) {
    println!("{LINE}");
    if c.bidirectional {
        // As perftest names its duplex runs.
        println!("                    {}", title.replace(" BW Test", " Bidirectional BW Test"));
    } else {
        println!("                    {title}");
    }
    if c.events {
        // perftest: " Test with events. Using <device>_comp<vector>".
        println!(" Test with events. Using a completion channel per CQ");
    }
    match &c.role {
        Some(_) => println!(" Device         : softrdma (TAP {}, perftest TCP mode)", c.tap),
        None => println!(" Device         : softrdma ({} fabric)", c.fabric.name()),
    }
    println!(" Connection type : {:?}\t\tNumber of qps   : {}", c.conn, c.qps);
    println!(" Mtu             : {}[B]\t\tLink MTU        : {}[B]", c.mtu, fabric::link_mtu_for(c.mtu));
    println!(" TX depth        : {}\t\tCQ Moderation   : {}", c.tx_depth, c.cq_mod.min(c.tx_depth));
    println!(" Max inline data : {}[B]", c.inline);
    if c.bidirectional {
        println!(" Bidirectional   : ON (rates are the sums of both directions)");
    }
    for (k, v) in extra {
        println!(" {k:<16}: {v}");
    }
    println!("{LINE}");
}

fn machine_facts(r: &mut Report) {
    let cpu = benches::host::CpuFacts::this_machine();
    r.fact("cpu", &cpu.model_name);
    r.fact("cpu_id", cpu.id());
    r.fact("cpu_crc_flags", cpu.crc_flags.join(" "));
    r.fact("nproc", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    // Only the latency tests (and raw_lat) pin their threads.
    if r.test.ends_with("_lat") {
        let pinned = benches::pin::pair().map_or("no".to_string(), |(a, b)| format!("cpu {a} and cpu {b}"));
        r.fact("latency_threads_pinned", pinned);
    }
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        r.fact("loadavg", l.trim());
    }
}

fn common_params(r: &mut Report, c: &Common) {
    r.param("fabric", c.fabric.name());
    r.param("connection", format!("{:?}", c.conn));
    r.param("qps", c.qps);
    r.param("mtu", c.mtu);
    r.param("tx_depth", c.tx_depth);
    r.param("cq_mod", c.cq_mod);
    r.param("inline", c.inline);
    r.param("bidirectional", c.bidirectional);
    r.param("events", c.events);
    if let Some(d) = c.duration {
        r.param("duration_s", d);
    }
}

fn finish(r: &mut Report, c: &Common) -> Result<(), String> {
    machine_facts(r);
    if let Some(p) = &c.out_json {
        std::fs::write(p, r.to_json()).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}

/// perftest TCP mode: one end of the test, the other end over TCP.
fn oob_test(t: Test, name: &str, c: &Common) -> Result<(), String> {
    use benches::oob::{run_cli, DevPlace, OobConfig};
    let cfg = perf_config(c, 5000)?;
    let size = verbs_sizes(t, c, &cfg)?[0];
    let role = c.role.as_deref().unwrap_or("server");
    let host = match role {
        "client" => Some(c.host.clone().ok_or("client needs the server's HOST")?),
        _ => None,
    };
    let oc = OobConfig {
        test: t,
        conn: cfg.conn,
        size,
        iters: cfg.iters,
        mtu: cfg.mtu,
        gid_idx: c.gid_index,
        tx_depth: cfg.tx_depth,
        rx_depth: cfg.rx_depth,
        timeout: cfg.timeout,
        cmp_swap: c.atomic_type == "CMP_AND_SWAP",
        stall: Duration::from_secs(60),
        duplex: c.bidirectional,
        qps: c.qps as u32,
        all: c.all,
        duration: c.duration.map(Duration::from_secs_f64),
        events: c.events,
    };
    benches::oob::validate(&oc)?;
    let place = DevPlace {
        netns: c.netns.clone(),
        tap: c.tap.clone(),
        bridge: c.bridge.clone(),
        addrs: c.addrs.clone(),
        mac: c.mac.clone(),
        link_mtu: c.link_mtu.unwrap_or(fabric::link_mtu_for(cfg.mtu.bytes())),
        offload: c.tap_offload == OnOff::On,
    };
    let title = if t == Test::AtomicBw { format!("Atomic {} BW Test", c.atomic_type) } else { t.title().to_string() };
    banner(&title, c, &[("Mode", format!("perftest TCP, {role}, port {}", c.port))]);
    let r = run_cli(&oc, &place, host.as_deref(), c.port, Duration::from_secs(c.wait));
    match r {
        Ok(r) => {
            println!(" peer version {}, MTU {}", r.peer_version, r.mtu);
            for (who, dests) in [("local ", &r.local), ("remote", &r.remote)] {
                for d in dests {
                    println!(
                        " {who} address: QPN {:#08x} PSN {:#08x} OUT {:#04x} RKey {:#010x} VAddr {:#018x} GID {}",
                        d.qpn, d.psn, d.out_reads, d.rkey, d.vaddr, d.gid
                    );
                }
            }
            let line = |who: &str, b: &benches::oob::BwReport| {
                println!(
                    " {who} report: {} bytes x {} iterations, BW peak {:.2} MB/s, BW average {:.2} MB/s, {:.6} Mpps",
                    b.size, b.iters, b.bw_peak, b.bw_avg, b.msg_rate
                )
            };
            let mbs = (1u64 << 20) as f64;
            let row = |b: &benches::oob::BwReport| benches::report::BwRow {
                bytes: b.size,
                iterations: b.iters,
                peak_bps: b.bw_peak * mbs,
                avg_bps: b.bw_avg * mbs,
                msg_rate: b.msg_rate * 1e6,
                notes: Vec::new(),
            };
            let mut json = Report::new(name);
            let table = |rows: &[benches::oob::BwReport], json: &mut Report| {
                println!("{LINE}");
                println!("{}", bw_header(c.report_gbits));
                for b in rows {
                    println!("{}", bw_line(&row(b), c.report_gbits));
                    json.bw.push(row(b));
                }
                println!("{LINE}");
            };
            match (c.bidirectional, &r.mine) {
                (true, Some(mine)) => {
                    line("local ", mine);
                    if !r.peer_rows.is_empty() {
                        line("remote", &r.report);
                    }
                    // perftest's print_full_bw_report under -b: this end's size and
                    // iterations, the rates of both ends added; with -a a row per size.
                    // Where no report came (send_bw -b -D; a peer that ended the
                    // run), this end's own row, as perftest prints it then.
                    let sums: Vec<_> = r
                        .rows
                        .iter()
                        .enumerate()
                        .map(|(k, m)| match r.peer_rows.get(k) {
                            Some(p) => benches::oob::BwReport {
                                bw_peak: m.bw_peak + p.bw_peak,
                                bw_avg: m.bw_avg + p.bw_avg,
                                msg_rate: m.msg_rate + p.msg_rate,
                                ..*m
                            },
                            None => *m,
                        })
                        .collect();
                    table(&sums, &mut json);
                    // perftest's --report-both: its RUN_REGULAR path only.
                    if c.report_both && !c.all {
                        for (who, rows) in [("Local", &r.rows), ("Remote", &r.peer_rows)] {
                            println!("\n {who} results: ");
                            table(rows, &mut Report::new(name));
                        }
                    }
                }
                // This end sent: its rows (with -a, one per size), as perftest's client prints them.
                (false, Some(_)) if t.is_bw() => table(&r.rows, &mut json),
                _ if t.is_bw() => line("client", &r.report),
                // perftest's -D report of a latency test (print_report_lat_duration).
                _ if let Some(l) = &r.lat_dur => {
                    println!("{LINE}");
                    println!("{}", benches::report::lat_dur_header());
                    println!("{}", benches::report::lat_dur_line(l));
                    println!("{LINE}");
                    json.lat_dur.push(*l);
                }
                // read_lat's server only serves, as perftest's prints no table.
                _ if r.lat.is_empty() => println!(" (this end measures nothing: the client reads)"),
                _ => {
                    // perftest's table, a row per size, from its own statistics.
                    println!("{LINE}");
                    println!("{}", lat_header());
                    for l in &r.lat {
                        println!("{}", lat_line(l));
                    }
                    println!("{LINE}");
                    json.lat = r.lat.clone();
                }
            }
            println!(" completions here: {}; check: {}; TAP offload: {}", r.completions, r.check, r.offload);
            if let Some(n) = r.cq_events {
                println!(" CQ events slept on (-e): {n}");
            }
            println!(" device counters: {}", r.counted);
            println!("{LINE}");
            json.param("mode", format!("perftest TCP, {role}"));
            json.param("connection", format!("{:?}", c.conn));
            json.param("qps", c.qps);
            json.param("mtu", r.mtu);
            json.param("bidirectional", c.bidirectional);
            json.param("events", c.events);
            json.param("peer_version", &r.peer_version);
            if let Some(n) = r.cq_events {
                json.fact("cq_events", n);
            }
            json.fact("check", &r.check);
            json.fact("check_ok", r.check_ok);
            json.fact("tap_offload", r.offload);
            json.fact("device_counters", &r.counted);
            finish(&mut json, c)?;
            let verdict = if r.check_ok { "PASS" } else { "FAIL" };
            println!("softrdma-perf {} {role}: {verdict}", t.title());
            if r.check_ok {
                Ok(())
            } else {
                Err(format!("check failed: {}", r.check))
            }
        }
        Err(e) => {
            println!("softrdma-perf {} {role}: FAIL: {e}", t.title());
            Err(e)
        }
    }
}

fn verbs_test(t: Test, name: &str, c: &Common) -> Result<(), String> {
    if c.role.is_some() {
        return oob_test(t, name, c);
    }
    let cfg = perf_config(c, if t.is_bw() { 5000 } else { 1000 })?;
    let sizes = verbs_sizes(t, c, &cfg)?;
    let devs = Devices::new(c.fabric, 2, fabric::link_mtu_for(cfg.mtu.bytes())).map_err(|e| format!("devices: {e}"))?;
    let (a, b) = (devs.context(0), devs.context(1));
    let mut r = Report::new(name);
    common_params(&mut r, c);
    let mut extra = icrc_lines(&mut r);
    if c.fabric == FabricKind::Tap {
        extra.push(("TAP offload", devs.devices[0].offload().as_str().to_string()));
    }
    banner(t.title(), c, &extra);
    if t.is_bw() {
        println!("{}", bw_header(c.report_gbits));
    } else {
        println!("{}", lat_header());
    }
    // A failed run says what each device saw: most of what there is to know.
    let counted = |e: String| {
        let each: Vec<String> =
            devs.devices.iter().map(|d| format!("\n device {}: {}", d.name(), benches::oob::counted(d))).collect();
        format!("{e}{}", each.concat())
    };
    let mut traced = Vec::new();
    for size in sizes {
        if t.is_bw() {
            let row = run_bw(t, &a, &b, &cfg, size).map_err(counted)?;
            println!("{}", bw_line(&row, c.report_gbits));
            r.bw.push(row);
            if t == Test::AtomicBw {
                break;
            }
        } else {
            if c.turn_trace {
                // Only this size's turns: not the set-up's stamps nor an earlier size's.
                let _ = softrdma::turn_trace::take();
            }
            let row = run_lat(t, &a, &b, &cfg, size).map_err(counted)?;
            println!("{}", lat_line(&row));
            r.lat.push(row);
            if c.turn_trace {
                let title = format!("{name} {:?} {size} B", cfg.conn);
                match benches::turn::breakdown(&softrdma::turn_trace::take()) {
                    Some(b) => {
                        traced.extend(b.lines(&title));
                        b.facts(&format!("turn_trace_{size}"), &mut r);
                    }
                    None => traced.push(format!(" Turn trace, {title}: no turns were stamped")),
                }
            }
        }
    }
    println!("{LINE}");
    for l in &traced {
        println!("{l}");
    }
    print_preempted(&r);
    device_facts(&mut r, &devs);
    drop(devs);
    finish(&mut r, c)
}

/// Under a latency table: how often its spinning threads lost their CPU.
fn print_preempted(r: &Report) {
    if let Some(line) = preempted_line(&r.lat) {
        println!("{line}");
    }
    if let Some(line) = cq_events_line(&r.bw, &r.lat) {
        println!("{line}");
    }
}

/// What the devices and the fabric counted, as JSON facts.
fn device_facts(r: &mut Report, devs: &Devices) {
    for (i, d) in devs.devices.iter().enumerate() {
        let (dc, ec, qc) = d.counters();
        r.fact(&format!("dev{i}_tx_frames"), dc.tx_frames);
        r.fact(&format!("dev{i}_rx_frames"), dc.rx_frames);
        r.fact(&format!("dev{i}_rx_polled"), dc.rx_polled);
        r.fact(&format!("dev{i}_rx_rescued"), dc.rx_rescued);
        r.fact(&format!("dev{i}_busy_poll_suspensions"), dc.busy_poll_suspensions);
        r.fact(&format!("dev{i}_tx_acks_deferred"), dc.tx_acks_deferred);
        r.fact(&format!("dev{i}_tx_acks_joined"), dc.tx_acks_joined);
        r.fact(&format!("dev{i}_acks_built_ahead"), qc.acks_built_ahead);
        r.fact(&format!("dev{i}_requests_built_ahead"), qc.requests_built_ahead);
        r.fact(&format!("dev{i}_tx_payloads_lent"), dc.tx_payloads_lent);
        r.fact(&format!("dev{i}_rx_icrc_checked_by_link"), dc.rx_icrc_checked_by_link);
        r.fact(
            &format!("dev{i}_rx_dropped"),
            ec.rx_icrc_err + ec.rx_malformed + ec.rx_unknown_qp + ec.rx_wrong_transport + ec.rx_bad_pkey,
        );
        r.fact(&format!("dev{i}_retransmitted"), qc.retransmitted_pkts);
        r.fact(&format!("dev{i}_rnr_naks_sent"), qc.send_rnr_err);
        r.fact(&format!("dev{i}_no_wqe_drops"), qc.rcv_no_wqe_drops);
        // After the run: a kernel that refused UDP GSO writes shows here.
        r.fact(&format!("dev{i}_offload"), d.offload().as_str());
    }
    if let Some(f) = &devs.fabric {
        r.fact("fabric_overflowed", f.stats().overflowed);
        r.fact("fabric_lent", f.stats().lent);
    }
    thread_facts(r);
}

/// Each thread's CPU time while the devices still run (benches::threads):
/// `thread_<name>` = "run_ms/wait_ms/user_ms/sys_ms".
fn thread_facts(r: &mut Report) {
    for t in benches::threads::this_process() {
        let v = format!("{}/{}/{}/{}", t.run_ns / 1_000_000, t.wait_ns / 1_000_000, t.user_ms(), t.sys_ms());
        r.fact(&format!("thread_{}", t.name), v);
    }
}

fn post_loaded_test(c: &Common) -> Result<(), String> {
    let cfg = perf_config(c, 2000)?;
    if cfg.conn != QpType::Rc {
        return Err("post_loaded runs RC only".into());
    }
    let devs = Devices::new(c.fabric, 2, fabric::link_mtu_for(cfg.mtu.bytes())).map_err(|e| format!("devices: {e}"))?;
    let (a, b) = (devs.context(0), devs.context(1));
    let mut r = Report::new("post_loaded");
    common_params(&mut r, c);
    let stream = format!("{} B RDMA WRITEs, {} posted, on a second QP", loaded::STREAM_BYTES, loaded::STREAM_DEPTH);
    banner("post_send under a streaming thread", c, &[("Stream", stream)]);
    println!("{}", lat_header());
    for size in sizes(c, 65536) {
        let (post, done, streamed) = loaded::post_loaded(&a, &b, &cfg, size)?;
        println!("{}   post_send call", lat_line(&post));
        println!("{}   post to completion", lat_line(&done));
        r.fact(&format!("stream_msgs_{size}"), streamed);
        r.lat.push(post);
        r.lat.push(done);
    }
    println!("{LINE}");
    for (i, d) in devs.devices.iter().enumerate() {
        let (dc, ec, qc) = d.counters();
        println!(
            " dev{i}: tx {} rx {} retransmitted {} ICRC errors {}",
            dc.tx_frames, dc.rx_frames, qc.retransmitted_pkts, ec.rx_icrc_err
        );
    }
    device_facts(&mut r, &devs);
    drop(devs);
    finish(&mut r, c)
}

/// Picks this process's ICRC engine (as a device would) and records it and
/// what the choice measured (none when `SOFTRDMA_ICRC` forced it): the
/// banner lines and the JSON facts.
fn icrc_lines(r: &mut Report) -> Vec<(&'static str, String)> {
    let icrc = format!("{:?}", softrdma::icrc_engine::choose()).to_lowercase();
    r.fact("icrc_engine", &icrc);
    let mut lines = vec![("ICRC engine", icrc)];
    if let Some((simd, table)) = softrdma::icrc_engine::measured() {
        // Each trial hashed 32 × 1 100 bytes.
        let per_kib = |d: Duration| d.as_nanos() as f64 * 1024.0 / (32.0 * 1100.0);
        let (simd, table) = (per_kib(simd), per_kib(table));
        r.fact("icrc_ns_per_kib_simd", format!("{simd:.0}"));
        r.fact("icrc_ns_per_kib_table", format!("{table:.0}"));
        lines.push(("ICRC timing", format!("simd {simd:.0} ns/KiB, table {table:.0} ns/KiB")));
    }
    lines
}

/// A memcpy baseline over the sizes of the command line.
fn memcpy_test(
    name: &str,
    title: &str,
    c: &Common,
    row: impl Fn(usize) -> benches::report::BwRow,
) -> Result<(), String> {
    let sizes = sizes(c, 65536);
    if sizes.contains(&0) {
        return Err("-s must be at least 1".into());
    }
    let mut r = Report::new(name);
    banner(title, c, &[]);
    println!("{}", bw_header(c.report_gbits));
    for size in sizes {
        let row = row(size);
        println!("{}", bw_line(&row, c.report_gbits));
        r.bw.push(row);
    }
    println!("{LINE}");
    finish(&mut r, c)
}

/// How the raw baselines wait for frames, for their banners.
fn raw_polling() -> String {
    if baseline::spins() { "spinning (as the devices busy-poll)" } else { "sleeping in the link between frames" }.into()
}

fn run(cli: Cli) -> Result<(), String> {
    if let Some(us) = cli.cmd.common().and_then(|c| c.busy_poll) {
        fabric::set_busy_poll((us > 0).then(|| Duration::from_micros(us)));
    }
    if let Some(c) = cli.cmd.common() {
        fabric::set_tap_offload(c.tap_offload == OnOff::On);
    }
    if let Some(dir) = cli.cmd.common().and_then(|c| c.pcap.clone()) {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("softrdma-perf: --pcap {}: {e}", dir.display());
            std::process::exit(2);
        }
        fabric::set_pcap_dir(dir);
    }
    if let Some(us) = cli.cmd.common().and_then(|c| c.ack_hold) {
        fabric::set_ack_hold(Duration::from_micros(us));
    }
    if let Some(us) = cli.cmd.common().and_then(|c| c.rx_linger) {
        fabric::set_rx_linger(Duration::from_micros(us));
    }
    baseline::set_udp_frames(cli.cmd.common().is_some_and(|c| c.udp));
    // The raw baselines poll as the devices do: spinning unless busy
    // polling is off (`--busy-poll 0`, or one CPU).
    let busy_poll_off = cli.cmd.common().and_then(|c| c.busy_poll) == Some(0);
    baseline::set_spin(!busy_poll_off && softrdma::busy_poll::multi_cpu());
    if let Some(c) = cli.cmd.common() {
        check_common(c)?;
        if c.bidirectional && !cli.cmd.runs_both_ways() {
            return Err("-b: only write_bw, read_bw, send_bw and atomic_bw run both ways".into());
        }
        if c.turn_trace {
            if !softrdma::turn_trace::ENABLED {
                return Err("--turn-trace: this build has no turn trace; build with `--features turn-trace` \
                            (benches/scripts/turn_trace.sh)"
                    .into());
            }
            if cli.cmd.verbs_test().is_none_or(|t| t.is_bw()) || c.role.is_some() {
                return Err("--turn-trace: the latency tests with both ends in one process only".into());
            }
        }
        if c.events {
            let t = cli.cmd.verbs_test().ok_or("-e: the verbs tests only (they have CQs to sleep on)")?;
            if let Some(why) = benches::events::refusal(t, c.duration.is_some()) {
                return Err(format!("-e: {}", why.trim()));
            }
        }
        // Only spinning threads are pinned: a pinned thread that sleeps is
        // woken on its own CPU, out of idle (≈ 30 µs a wake-up in this
        // VM), where an unpinned one is woken on the waker's.
        // With -e the threads sleep on CQ events: not pinned either.
        benches::pin::set_enabled(!c.no_pin && !busy_poll_off && !c.events && softrdma::busy_poll::multi_cpu());
    }
    match cli.cmd {
        Cmd::Host => {
            let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
            println!("{}", benches::host::CpuFacts::this_machine().line(cpus));
            Ok(())
        }
        Cmd::WriteBw(c) => verbs_test(Test::WriteBw, "write_bw", &c),
        Cmd::ReadBw(c) => verbs_test(Test::ReadBw, "read_bw", &c),
        Cmd::SendBw(c) => verbs_test(Test::SendBw, "send_bw", &c),
        Cmd::AtomicBw(c) => verbs_test(Test::AtomicBw, "atomic_bw", &c),
        Cmd::WriteLat(c) => verbs_test(Test::WriteLat, "write_lat", &c),
        Cmd::SendLat(c) => verbs_test(Test::SendLat, "send_lat", &c),
        Cmd::ReadLat(c) => verbs_test(Test::ReadLat, "read_lat", &c),
        Cmd::RawBw(c) => {
            let mut sizes = sizes(&c, RAW_MAX);
            match c.size {
                Some(s) if s > RAW_MAX && !c.all => {
                    return Err(format!("raw_bw -s {s}: a RoCE packet carries at most {RAW_MAX} bytes"))
                }
                _ => sizes.retain(|&s| s <= RAW_MAX),
            }
            let mut r = Report::new("raw_bw");
            common_params(&mut r, &c);
            let frames = c.burst.unwrap_or(if c.udp && c.tap_offload == OnOff::On { 16 } else { 1 });
            let burst = baseline::Burst { frames, split: c.split };
            let handed = match burst.halves() {
                Some((a, b)) => format!("{} frames per burst, in two calls: {a} + {b}", burst.count()),
                None => format!("{} frames per call", burst.count()),
            };
            r.param("split", c.split);
            banner(
                "Raw Ethernet BW Test (no RDMA)",
                &c,
                &[("Frame", "RoCE-sized: payload + 58 B".into()), ("Receiver", raw_polling()), ("Sender", handed)],
            );
            println!("{}", bw_header(c.report_gbits));
            let iters = c.iters.unwrap_or(100_000);
            let dur = c.duration.map(Duration::from_secs_f64);
            for size in sizes {
                let row = baseline::raw_bw(c.fabric, size, iters, dur, c.credit, c.tx_depth as u64, burst)?;
                println!("{}", bw_line(&row, c.report_gbits));
                r.bw.push(row);
            }
            println!("{LINE}");
            finish(&mut r, &c)
        }
        Cmd::RawLat(c) => {
            let mut r = Report::new("raw_lat");
            common_params(&mut r, &c);
            let len = c.size.map_or(64, |s| s.max(60));
            let turn = match (c.acks, c.acks_at_once) {
                (_, true) => baseline::Turn::AnswerAndAckAtOnce,
                (true, false) => baseline::Turn::AnswerThenAck,
                (false, false) => baseline::Turn::Answer,
            };
            banner(
                "Raw Ethernet Latency Test (no RDMA)",
                &c,
                &[
                    ("Frame", format!("{len} B")),
                    (
                        "Turn",
                        match turn {
                            baseline::Turn::Answer => "answer",
                            baseline::Turn::AnswerThenAck => "answer, then a 64 B ACK (RC's frames)",
                            baseline::Turn::AnswerAndAckAtOnce => "answer and ACK in one hand-over (RC's frames)",
                        }
                        .into(),
                    ),
                    ("Receivers", raw_polling()),
                ],
            );
            println!("{}", lat_header());
            let row = baseline::raw_lat(c.fabric, len, c.iters.unwrap_or(10_000), turn)?;
            println!("{}", lat_line(&row));
            r.lat.push(row);
            println!("{LINE}");
            print_preempted(&r);
            finish(&mut r, &c)
        }
        Cmd::MemcpyBw(c) => memcpy_test("memcpy_bw", "memcpy BW (no RDMA)", &c, |size| {
            let iters = c.iters.unwrap_or(((1u64 << 33) / size as u64).clamp(1000, 1_000_000));
            baseline::memcpy_bw(size, iters, c.duration.map(Duration::from_secs_f64))
        }),
        Cmd::MemcpyXcoreBw(c) => {
            if c.mtu == 0 {
                return Err("-m (the chunk a thread hands over) must be at least 1".into());
            }
            let title = if c.pull {
                "memcpy across threads in MTU chunks, one copy: the receiver pulls from the source (no RDMA)"
            } else {
                "memcpy across threads in MTU chunks (no RDMA)"
            };
            memcpy_test("memcpy_xcore_bw", title, &c, |size| {
                let iters = c.iters.unwrap_or(((1u64 << 32) / size as u64).clamp(100, 1_000_000));
                if c.pull {
                    baseline::memcpy_pull_bw(size, c.mtu, iters)
                } else {
                    baseline::memcpy_xcore_bw(size, c.mtu, iters)
                }
            })
        }
        Cmd::SimBw(c) => {
            let cfg = perf_config(&c, 20_000)?;
            let mut r = Report::new("sim_bw");
            common_params(&mut r, &c);
            // The same ICRC engine a device would pick on this CPU.
            banner("RC RDMA WRITE on the simulator (transport only)", &c, &icrc_lines(&mut r));
            println!("{}", bw_header(c.report_gbits));
            for size in sizes(&c, 65536) {
                let (row, pkts) = baseline::sim_bw(size, cfg.iters, cfg.mtu, cfg.tx_depth)?;
                println!("{}   frames/msg {:.2}", bw_line(&row, c.report_gbits), pkts);
                r.bw.push(row);
            }
            println!("{LINE}");
            finish(&mut r, &c)
        }
        Cmd::PostLoaded(c) => post_loaded_test(&c),
        Cmd::ScaleQps(c) => {
            let n = c.iters.unwrap_or(100_000) as usize;
            let mut r = scale::scale_qps(n, 2000)?;
            for (k, v) in &r.facts {
                println!("{k:<34} {v}");
            }
            finish(&mut r, &c)
        }
        Cmd::ScaleNs(c) => {
            let n = c.iters.unwrap_or(16) as usize;
            let size = c.size.unwrap_or(4096);
            let mut r = scale::scale_ns(c.fabric, n, 100, size, c.qp_timeout)?;
            for (k, v) in &r.facts {
                println!("{k:<34} {v}");
            }
            finish(&mut r, &c)?;
            let bad = |k: &str| r.facts.iter().any(|(f, v)| f == k && v != "0");
            if bad("pairs_failed") || bad("namespaces_left") {
                return Err("some pairs failed or namespaces were left behind".into());
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Ctrl-C in a TAP run must not leave its namespaces behind.
    if let Err(e) = softrdma::backend::netns_reaper::delete_on_signals() {
        eprintln!("softrdma-perf: {e}; an interrupted TAP run may leave network namespaces behind");
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("softrdma-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
