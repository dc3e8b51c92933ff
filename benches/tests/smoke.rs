//! Runs every `softrdma-perf` subcommand briefly (tiny sizes and iteration
//! counts) so that CI exercises them; no timing assertions. The TAP runs
//! need root (`require_root!`).

use std::process::Command;

use softrdma::testbed::ScratchDir;

fn perf(args: &[&str]) -> String {
    perf_env(args, &[])
}

fn perf_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_softrdma-perf"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run softrdma-perf");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "softrdma-perf {}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn has_row(out: &str, bytes: &str) -> bool {
    out.lines().any(|l| l.split_whitespace().next() == Some(bytes))
}

#[test]
fn bandwidth_tests_on_the_memory_fabric() {
    for t in ["write_bw", "read_bw", "send_bw"] {
        let out = perf(&[t, "-s", "4096", "-n", "40", "-t", "16", "-Q", "8"]);
        assert!(out.contains("BW average[MB/sec]"), "{out}");
        assert!(has_row(&out, "4096"), "{out}");
    }
    let out = perf(&["atomic_bw", "-n", "40", "--report_gbits"]);
    assert!(out.contains("BW average[Gb/sec]") && has_row(&out, "8"), "{out}");
    let out = perf(&["write_bw", "-c", "UC", "-s", "3000", "-n", "20", "-q", "2", "-m", "2048", "-I", "64"]);
    assert!(has_row(&out, "3000"), "{out}");
    let out = perf(&["send_bw", "-c", "UD", "-s", "256", "-n", "20", "-I", "256"]);
    assert!(has_row(&out, "256"), "{out}");
    // IPv6 GIDs (2) and the link-local one (0), as perftest's -x picks them.
    for x in ["0", "2"] {
        let out = perf(&["send_bw", "-c", "UD", "-s", "256", "-n", "20", "-x", x]);
        assert!(has_row(&out, "256"), "-x {x}: {out}");
        let out = perf(&["read_bw", "-s", "8192", "-n", "20", "-x", x]);
        assert!(has_row(&out, "8192"), "-x {x}: {out}");
    }
    let out = perf(&["write_bw", "-s", "64", "-D", "0.2"]);
    assert!(has_row(&out, "64"), "{out}");
}

/// perftest's -e: every test perftest runs with events sleeps on its
/// completion channels, and says how many CQ events it took.
#[test]
fn events_instead_of_polling() {
    for args in [
        &["read_bw", "-s", "4096", "-n", "200", "-t", "16"][..],
        &["send_bw", "-s", "4096", "-n", "200", "-t", "16"],
        &["send_bw", "-c", "UD", "-s", "512", "-n", "200", "-t", "16", "-b"],
        &["atomic_bw", "-n", "200", "-t", "16"],
        &["send_lat", "-s", "2", "-n", "200"],
        &["read_lat", "-s", "64", "-n", "200"],
    ] {
        let out = perf(&[args, &["-e"]].concat());
        assert!(out.contains(" Test with events."), "{args:?}: {out}");
        let line = out.lines().find(|l| l.starts_with(" CQ events slept on (-e): ")).unwrap_or_else(|| panic!("{out}"));
        let n: u64 = line.rsplit(": ").next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        assert!(n > 0, "{args:?}: {line}");
    }
    // Without -e, no events and no such line.
    let out = perf(&["send_lat", "-s", "2", "-n", "50"]);
    assert!(!out.contains("CQ events") && !out.contains("Test with events"), "{out}");
}

/// perftest's -b: both ends stream at once and the row counts both
/// directions. Every test's JSON must count twice the messages of one
/// direction, and each direction's target must hold what its peer sent
/// (`verified`): for atomics, each end's counter must hold exactly its
/// peer's fetch-adds, which fails if either end's results land on it.
#[test]
fn bidirectional_runs_both_ways() {
    let dir = ScratchDir::new("softrdma-perf-bidir").unwrap();
    let json = dir.join("b.json");
    let j = json.to_str().unwrap();
    for (args, received) in [
        (&["write_bw", "-s", "4096", "-n", "40", "-q", "2"][..], false),
        (&["read_bw", "-s", "4096", "-n", "40", "-q", "2"], false),
        (&["send_bw", "-s", "4096", "-n", "40", "-q", "2"], true),
        (&["atomic_bw", "-n", "40", "-q", "2"], false),
        (&["write_bw", "-c", "UC", "-s", "3000", "-n", "40", "-q", "2"], false),
    ] {
        let mut a = args.to_vec();
        a.extend(["-b", "-t", "16", "-Q", "8", "--out_json", j]);
        let out = perf(&a);
        assert!(out.contains("Bidirectional   : ON"), "{out}");
        assert!(out.contains("Bidirectional BW Test"), "{out}");
        let got = std::fs::read_to_string(&json).unwrap();
        assert!(got.contains("\"bidirectional\": \"true\""), "{args:?}: {got}");
        assert!(got.contains("\"messages\": \"160\""), "{args:?}: both directions, 2 QPs, 40 each: {got}");
        assert!(got.contains("\"verified\": \"true\""), "{args:?}: {got}");
        if received {
            assert!(got.contains("\"received\": \"160\""), "{args:?}: {got}");
        }
    }
}

/// What perftest refuses, the tool refuses before it runs anything, with
/// the reason and a failing exit status; a run that would measure nothing
/// (a UD message larger than the MTU) is one of them.
#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, why) in [
        (&["send_lat", "-c", "UD", "-s", "5000"][..], "max message size in UD cannot be greater than the MTU (1024"),
        (&["send_bw", "-c", "UD", "-s", "4097", "-m", "4096"], "greater than the MTU (4096"),
        (&["read_lat", "-c", "UD"], "RDMA READ needs RC"),
        (&["read_bw", "-c", "UC"], "RDMA READ needs RC"),
        (&["atomic_bw", "-c", "UC"], "atomics need RC"),
        (&["write_bw", "-c", "UD"], "RDMA WRITE needs RC or UC"),
        (&["send_bw", "-I", "100000"], "at most 512 bytes inline"),
        (&["write_bw", "-n", "0"], "-n must be at least 1"),
        (&["write_bw", "-D", "0"], "-D must be a positive number"),
        (&["write_bw", "-t", "0"], "-t must be 1..=16384"),
        (&["write_bw", "-m", "333"], "bad MTU 333"),
        (&["write_bw", "-q", "0"], "-q must be 1..=4096"),
        (&["write_bw", "-x", "3"], "bad GID index 3"),
        (&["memcpy_bw", "-s", "0"], "-s must be at least 1"),
        (&["memcpy_xcore_bw", "-s", "0"], "-s must be at least 1"),
        (&["memcpy_xcore_bw", "-m", "0"], "-m (the chunk a thread hands over) must be at least 1"),
        (&["raw_bw", "-s", "100000"], "a RoCE packet carries at most 4096 bytes"),
        (&["raw_lat", "-n", "0"], "-n must be at least 1"),
        (&["scale_qps", "-n", "0"], "-n must be at least 1"),
        (&["write_lat", "-b"], "-b: only write_bw, read_bw, send_bw and atomic_bw run both ways"),
        (&["raw_bw", "-b"], "-b: only write_bw"),
        (&["atomic_bw", "-a", "server"], "-a in perftest TCP mode: write_bw, read_bw, send_bw, write_lat"),
        (&["write_lat", "-a", "-D", "1", "server"], "-a in perftest TCP mode"),
        (&["write_bw", "--report-both", "-b"], "--report-both: perftest TCP mode"),
        (&["write_bw", "--report-both", "server"], "--report-both: perftest TCP mode"),
        (&["write_bw", "-e"], "-e: Events feature not available on WRITE verb"),
        (&["write_lat", "-e", "server"], "-e: Events feature not available on WRITE verb"),
        (&["send_bw", "-e", "-D", "1"], "-e: Duration mode doesn't work with events."),
        (&["raw_bw", "-e"], "-e: the verbs tests only"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_softrdma-perf")).args(args).output().expect("run softrdma-perf");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{args:?} succeeded:\n{stdout}");
        assert!(stderr.contains(why), "{args:?}: stderr lacks {why:?}:\n{stderr}");
        assert!(!stdout.contains("#bytes"), "{args:?} printed a table before refusing:\n{stdout}");
    }
}

/// The latency tests run with their threads left to the scheduler too, and
/// the JSON says which was done; bandwidth tests pin nothing and say nothing.
#[test]
fn latency_without_pinning() {
    let dir = ScratchDir::new("srd-pin").expect("temp dir");
    let json = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let fact = |file: &str| {
        let text = std::fs::read_to_string(file).expect("JSON written");
        let at = text.find("\"latency_threads_pinned\": ")?;
        text[at..].split(',').next().map(String::from)
    };
    // Linux says how often a thread was preempted; the row carries the count.
    let preempted = |file: &str| {
        let text = std::fs::read_to_string(file).expect("JSON written");
        let at = text.find("\"preempted\": ")? + "\"preempted\": ".len();
        text[at..].split(['}', ',']).next()?.trim().parse::<u64>().ok()
    };
    let (unpinned, raw, bw) = (json("lat.json"), json("raw.json"), json("bw.json"));
    let out = perf(&["write_lat", "-s", "2", "-n", "50", "--no-pin", "--out_json", &unpinned]);
    assert!(has_row(&out, "2"), "{out}");
    assert_eq!(fact(&unpinned).as_deref(), Some("\"latency_threads_pinned\": \"no\""), "{out}");
    assert!(preempted(&unpinned).is_some() && out.contains("Spinning threads preempted"), "{out}");
    let out = perf(&["raw_lat", "-n", "50", "--no-pin", "--out_json", &raw]);
    assert!(has_row(&out, "64"), "{out}");
    assert_eq!(fact(&raw).as_deref(), Some("\"latency_threads_pinned\": \"no\""), "{out}");
    assert!(preempted(&raw).is_some() && out.contains("Spinning threads preempted"), "{out}");
    let out = perf(&["write_bw", "-s", "64", "-n", "20", "--out_json", &bw]);
    assert!(has_row(&out, "64"), "{out}");
    assert_eq!(fact(&bw), None, "a bandwidth test pins nothing");
}

/// As perftest: the latency tests default to 2 bytes, and under UD the
/// default size becomes the MTU (with a notice) and `-a` stops at it.
#[test]
fn default_sizes_follow_perftest() {
    let out = perf(&["write_lat", "-n", "20"]);
    assert!(has_row(&out, "2"), "{out}");
    let out = perf(&["send_bw", "-c", "UD", "-n", "20"]);
    assert!(has_row(&out, "1024"), "{out}");
    let out = perf(&["send_bw", "-c", "UD", "-a", "-n", "5", "-m", "512"]);
    assert!(has_row(&out, "512") && !has_row(&out, "1024"), "{out}");
}

/// Both ICRC engines carry real traffic end to end (every frame is
/// verified on receipt, and the tool checks the data), and the banner says
/// which one ran.
#[test]
fn both_icrc_engines_carry_traffic() {
    for engine in ["table", "simd"] {
        for t in ["write_bw", "read_bw"] {
            let out = perf_env(&[t, "-s", "3000", "-n", "30", "-m", "1024"], &[("SOFTRDMA_ICRC", engine)]);
            assert!(has_row(&out, "3000"), "{engine} {t}: {out}");
            let shown = out.lines().find(|l| l.contains("ICRC engine")).unwrap_or_default();
            assert!(shown.trim_end().ends_with(engine), "{engine}: {shown}");
            assert!(!out.contains("ICRC timing"), "a forced engine was not measured: {out}");
        }
    }
    // Chosen by measuring, the banner shows what was measured.
    let out = perf(&["write_bw", "-s", "3000", "-n", "30", "-m", "1024"]);
    let timing = out.lines().find(|l| l.contains("ICRC timing")).unwrap_or_default();
    assert!(timing.contains("simd") && timing.contains("table") && timing.contains("ns/KiB"), "{out}");
}

#[test]
fn latency_tests_on_the_memory_fabric() {
    for t in ["write_lat", "send_lat", "read_lat"] {
        let out = perf(&[t, "-s", "2", "-n", "20"]);
        assert!(out.contains("t_typical[usec]") && has_row(&out, "2"), "{out}");
    }
    let out = perf(&["send_lat", "-c", "UD", "-s", "100", "-n", "10"]);
    assert!(has_row(&out, "100"), "{out}");
    let out = perf(&["post_loaded", "-s", "2", "-n", "20"]);
    assert!(out.contains("post_send call") && out.contains("post to completion"), "{out}");
}

/// `--pcap DIR`: each device's frames, sent and received, in a pcap file of
/// its own; a write_lat of 20 rounds (and its warm-up) puts at least 40
/// WRITEs and their ACKs in each.
#[test]
fn each_device_writes_a_pcap() {
    let dir = ScratchDir::new("srpcap").unwrap();
    let out = perf(&["write_lat", "-s", "2", "-n", "20", "--pcap", dir.path().to_str().unwrap()]);
    assert!(has_row(&out, "2"), "{out}");
    for dev in ["bench0", "bench1"] {
        let b = std::fs::read(dir.join(format!("{dev}.pcap"))).unwrap_or_default();
        // The pcap magic (either byte order), then records of 16-byte headers and frames of 62
        // (ACK) or 78 (2-byte WRITE) bytes.
        assert!(b.len() > 24 + 80 * (16 + 62), "{dev}: {} bytes", b.len());
        let magic = [0xa1, 0xb2, 0xc3, 0xd4];
        assert!(b[..4] == magic || b[..4].iter().rev().eq(magic.iter()), "{dev}: pcap magic {:02x?}", &b[..4]);
    }
}

#[test]
fn all_sizes_and_json() {
    let dir = ScratchDir::new("softrdma-perf-smoke").unwrap();
    let json = dir.join("w.json");
    let out = perf(&["write_bw", "-a", "-n", "3", "-t", "4", "--out_json", json.to_str().unwrap()]);
    for k in 1..=23 {
        assert!(has_row(&out, &(1u64 << k).to_string()), "size {}: {out}", 1u64 << k);
    }
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(j.starts_with("{\"test\": \"write_bw\"") && j.contains("\"bytes\": 8388608"), "{j}");
    // The host's CPU, beyond a guest's bare model name (benches::host).
    let cpu = benches::host::CpuFacts::this_machine();
    assert!(j.contains(&format!("\"cpu_id\": \"{}\"", cpu.id())), "{j}");
    assert!(j.contains("\"cpu_crc_flags\": \""), "{j}");
    // Where the CPU time went, per thread, read while the devices ran
    // (benches::threads): the application's thread did the work.
    let app = j.split("\"thread_softrdma-perf\": \"").nth(1).and_then(|r| r.split('/').next()).unwrap_or("");
    assert!(app.parse::<u64>().is_ok_and(|ms| ms > 0), "{j}");
    assert!(j.contains("\"thread_bench0-rx\": \"") && j.contains("\"thread_bench1-timer\": \""), "{j}");
}

/// `softrdma-perf host`: the line the bench scripts put in their headers.
#[test]
fn host_names_the_cpu() {
    let out = perf(&["host"]);
    let cpu = benches::host::CpuFacts::this_machine();
    assert!(out.trim_end().ends_with(" CPUs") && out.contains(&cpu.id()), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn baselines_and_scale_without_root() {
    let out = perf(&["raw_bw", "-s", "1024", "-n", "2000"]);
    assert!(has_row(&out, "1024"), "{out}");
    let out = perf(&["raw_bw", "-s", "1024", "-n", "2000", "--credit", "8", "-t", "32"]);
    assert!(has_row(&out, "1024"), "{out}");
    let out = perf(&["raw_lat", "-n", "50"]);
    assert!(has_row(&out, "64"), "{out}");
    if softrdma::busy_poll::multi_cpu() {
        assert!(out.contains("spinning"), "the raw baselines poll as the devices do: {out}");
    }
    let out = perf(&["raw_lat", "-n", "50", "--busy-poll", "0"]);
    assert!(has_row(&out, "64") && out.contains("sleeping"), "{out}");
    let out = perf(&["raw_lat", "-n", "50", "--acks"]);
    assert!(has_row(&out, "64") && out.contains("RC's frames"), "{out}");
    let out = perf(&["raw_lat", "-n", "50", "--acks-at-once"]);
    assert!(has_row(&out, "64") && out.contains("in one hand-over"), "{out}");
    let out = perf(&["memcpy_bw", "-s", "65536", "-n", "100"]);
    assert!(has_row(&out, "65536"), "{out}");
    let out = perf(&["memcpy_xcore_bw", "-s", "65536", "-m", "4096", "-n", "100"]);
    assert!(has_row(&out, "65536"), "{out}");
    let out = perf(&["memcpy_xcore_bw", "-s", "65536", "-m", "4096", "-n", "100", "--pull"]);
    assert!(has_row(&out, "65536") && out.contains("pull"), "{out}");
    let out = perf(&["sim_bw", "-s", "4096", "-m", "4096", "-n", "100"]);
    assert!(has_row(&out, "4096"), "{out}");
    let out = perf(&["scale_qps", "-n", "500"]);
    assert!(out.contains("bytes_per_qp"), "{out}");
    let out = perf(&["scale_ns", "-n", "4"]);
    assert!(out.contains("pairs_ok") && out.contains("namespaces_left"), "{out}");
}

#[test]
fn tap_fabric() {
    softrdma::require_root!();
    let out = perf(&["write_bw", "--fabric", "tap", "-s", "8192", "-n", "20", "-m", "4096"]);
    assert!(has_row(&out, "8192") && out.contains("TAP offload     : uso"), "{out}");
    // READ responses and SENDs also leave in UDP GSO runs; and without
    // offload, one frame per write(2).
    let out = perf(&["read_bw", "--fabric", "tap", "-s", "65536", "-n", "20", "-m", "4096", "-q", "2"]);
    assert!(has_row(&out, "65536"), "{out}");
    let out = perf(&["send_bw", "--fabric", "tap", "-s", "65536", "-n", "20", "-m", "4096"]);
    assert!(has_row(&out, "65536"), "{out}");
    // Over IPv6 (GID 2) too.
    let out = perf(&["write_bw", "--fabric", "tap", "-s", "65536", "-n", "20", "-m", "4096", "-x", "2"]);
    assert!(has_row(&out, "65536"), "{out}");
    let out = perf(&["write_bw", "--fabric", "tap", "-s", "65536", "-n", "20", "-m", "4096", "--tap-offload", "off"]);
    assert!(has_row(&out, "65536") && out.contains("TAP offload     : off"), "{out}");
    let out = perf(&["write_lat", "--fabric", "tap", "-s", "2", "-n", "20"]);
    assert!(has_row(&out, "2"), "{out}");
    let out = perf(&["post_loaded", "--fabric", "tap", "-s", "2", "-n", "20"]);
    assert!(out.contains("post_send call") && out.contains("retransmitted 0"), "{out}");
    let out = perf(&["raw_bw", "--fabric", "tap", "-s", "4096", "-n", "2000"]);
    assert!(has_row(&out, "4096"), "{out}");
    let out = perf(&["raw_lat", "--fabric", "tap", "-n", "50"]);
    assert!(has_row(&out, "64"), "{out}");
    let out = perf(&["raw_lat", "--fabric", "tap", "--udp", "--acks", "-n", "50"]);
    assert!(has_row(&out, "64"), "{out}");
    let out = perf(&["raw_lat", "--fabric", "tap", "--udp", "--acks-at-once", "-n", "50"]);
    assert!(has_row(&out, "64") && out.contains("in one hand-over"), "{out}");
    let out = perf(&["raw_bw", "--fabric", "tap", "--udp", "-s", "4096", "-n", "2000", "--busy-poll", "0"]);
    assert!(has_row(&out, "4096") && out.contains("sleeping"), "{out}");
    let out = perf(&["raw_bw", "--fabric", "tap", "--udp", "-s", "4096", "-n", "2000", "--split", "2"]);
    assert!(has_row(&out, "4096") && out.contains("in two calls: 2 + 14"), "{out}");
    let out = perf(&["scale_ns", "--fabric", "tap", "-n", "4"]);
    assert!(out.contains("namespaces_left                    0"), "{out}");
}

/// perftest's TCP mode between two softrdma-perf processes, each with its
/// own device on its own TAP in one namespace's bridge (root): the server's
/// TAP without offload, the client's with it; both check their memory, and
/// each says how its TAP took the frames. Under `-b` both send, and both
/// print the same row: the sum of the two reports they exchanged. With `-q`
/// each QP has its own message in the exchange. The latency tests print
/// perftest's table on both ends (`-a` over UD: a row per size up to the
/// MTU), and `--out_json` holds its rows.
#[test]
fn perftest_mode_between_two_processes_on_taps() {
    softrdma::require_root!();
    use softrdma::backend::netns::{self, unique_name, NetNs};
    use std::process::Stdio;
    let ns = NetNs::create(&unique_name("srpf")).unwrap();
    let n = Some(ns.name());
    netns::bridge(n, "br0").unwrap();
    netns::add_addr(n, "br0", "10.88.0.1/24").unwrap();
    for ifname in ["br0", "lo"] {
        netns::link_up(n, ifname).unwrap();
    }
    let port = (20000 + std::process::id() % 20000).to_string();
    let bin = env!("CARGO_BIN_EXE_softrdma-perf");
    let common = ["-p", &port, "--netns", ns.name(), "--bridge", "br0", "-s", "65536", "-n", "200", "--wait", "20"];
    for (test, v6, more) in [
        ("write_bw", false, &[][..]),
        ("read_bw", true, &[]),
        ("send_bw", false, &[]),
        ("send_bw", false, &["-b"]),
        ("atomic_bw", true, &["-b", "-q", "2", "--report-both"]),
        ("write_bw", false, &["-q", "3"]),
        ("send_lat", false, &["-a", "-c", "UD"]),
        ("send_bw", false, &["-a", "-c", "UD"]),
        ("write_lat", true, &[]),
        ("write_lat", false, &["-D", "1"]),
        ("send_bw", false, &["-D", "1"]),
        ("send_bw", false, &["-b", "-D", "1"]),
        ("send_bw", false, &["-e"]),
        ("send_lat", false, &["-e"]),
    ] {
        // read_bw over IPv6 (GID 2, each device's second address): the
        // client's checksums are left to the kernel, the server's are not.
        let (gid, sa, ca) = if v6 {
            ("2", vec!["10.88.0.21/24", "fd88::21/64"], vec!["10.88.0.22/24", "fd88::22/64"])
        } else {
            ("1", vec!["10.88.0.21/24"], vec!["10.88.0.22/24"])
        };
        let addrs = |a: Vec<&'static str>| a.into_iter().flat_map(|x| ["--addr", x]).collect::<Vec<_>>();
        let server = Command::new(bin)
            .args([test, "server", "--tap", "srpfs", "--tap-offload", "off", "-x", gid])
            .args(addrs(sa))
            .args(common)
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir = ScratchDir::new(&format!("srpf-{test}")).unwrap();
        let json = dir.join("client.json");
        let client = Command::new(bin)
            .args([test, "client", "10.88.0.1", "--tap", "srpfc", "-x", gid])
            .arg("--out_json")
            .arg(&json)
            .args(addrs(ca))
            .args(common)
            .args(more)
            .output()
            .unwrap();
        let server = server.wait_with_output().unwrap();
        let (so, co) = (String::from_utf8_lossy(&server.stdout), String::from_utf8_lossy(&client.stdout));
        let (se, ce) = (String::from_utf8_lossy(&server.stderr), String::from_utf8_lossy(&client.stderr));
        assert!(server.status.success() && so.contains(": PASS"), "{test} server:\n{so}{se}");
        assert!(client.status.success() && co.contains(": PASS"), "{test} client:\n{co}{ce}");
        assert!(so.contains("TAP offload: off"), "{so}");
        assert!(co.contains("TAP offload: uso"), "{co}");
        // -e: both ends wait for completions, and slept on CQ events.
        if more.contains(&"-e") {
            let events = |o: &str| {
                let l = o.lines().find(|l| l.starts_with(" CQ events slept on (-e): "))?;
                l.rsplit(": ").next()?.parse::<u64>().ok()
            };
            assert!(events(&co).is_some_and(|n| n > 0), "{test} -e client:\n{co}");
            assert!(events(&so).is_some_and(|n| n > 0), "{test} -e server:\n{so}");
        }
        let qps = more.iter().position(|&a| a == "-q").map_or(1, |k| more[k + 1].parse::<usize>().unwrap());
        assert_eq!(so.matches("remote address").count(), qps, "{so}");
        // send_bw -b -D: no report crosses, each end prints its own row (below).
        if more.contains(&"-b") && !more.contains(&"-D") {
            let row = |o: &str| o.lines().skip_while(|l| !l.contains("#bytes")).nth(1).map(str::to_owned);
            let (sr, cr) = (row(&so), row(&co));
            assert!(sr.is_some() && sr == cr, "{test} -b: the summed rows differ:\n{so}\n{co}");
            assert!(so.contains("remote report") && co.contains("remote report"), "{so}\n{co}");
            if more.contains(&"--report-both") {
                // Then each end's own row and its peer's, each under its header:
                // the local row of one end is the remote row of the other.
                let block = |o: &str, who: &str| {
                    let row = o.lines().skip_while(|l| !l.contains(who)).nth(3).map(str::to_owned);
                    assert!(row.as_ref().is_some_and(|r| r.trim_start().starts_with("8 ")), "{who}:\n{o}");
                    row
                };
                assert_eq!(block(&so, "Local results"), block(&co, "Remote results"), "{so}\n{co}");
                assert_eq!(block(&so, "Remote results"), block(&co, "Local results"), "{so}\n{co}");
            }
        }
        let written = std::fs::read_to_string(&json).unwrap_or_default();
        if more.contains(&"-D") {
            // Each end stops on its own clock and prints its own row: a latency
            // test perftest's -D row, send_bw the bandwidth row (the server's of
            // what it received), with however many iterations the second held.
            let header = if test.ends_with("_lat") { "tps average" } else { "#bytes" };
            for o in [&so, &co] {
                let row: Vec<String> = o
                    .lines()
                    .skip_while(|l| !l.contains(header))
                    .nth(1)
                    .map(|l| l.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default();
                let iters: u64 = row.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                assert!(row.first().map(String::as_str) == Some("65536") && iters > 10, "{test} -D:\n{o}");
            }
            let key = if test.ends_with("_lat") { "\"lat_duration\": [{\"bytes\": 65536" } else { "\"bw\": [{" };
            assert!(written.contains(key), "{test} -D --out_json:\n{written}");
        } else if more.contains(&"-a") {
            // A row per size up to the MTU over UD, on each end: the
            // latency tests' table, send_bw's sender each size's -n
            // messages and its receiver what arrived of them.
            let (header, last) = if test.ends_with("_lat") { ("t_typical[usec]", 9) } else { ("#bytes", 5) };
            let sizes: Vec<String> = (1..=10).map(|i| (1u32 << i).to_string()).collect();
            for (end, o) in [("server", &so), ("client", &co)] {
                let rows: Vec<Vec<&str>> = o
                    .lines()
                    .skip_while(|l| !l.contains(header))
                    .skip(1)
                    .take_while(|l| !l.starts_with("---"))
                    .map(|l| l.split_whitespace().collect())
                    .collect();
                let got: Vec<&str> = rows.iter().map(|r| r[0]).collect();
                assert_eq!(got, sizes, "{test} {more:?} {end}:\n{o}");
                let all_sent = test.ends_with("_lat") || end == "client";
                assert!(rows.iter().all(|r| r.len() == last && (r[1] == "200" || !all_sent)), "{test} {end}:\n{o}");
            }
            let key = if test.ends_with("_lat") { "\"lat\": [{\"bytes\": 2" } else { "\"bw\": [{\"bytes\": 2" };
            assert!(written.contains(key), "{test} -a --out_json:\n{written}");
            assert!(written.contains("\"check_ok\": \"true\""), "{written}");
        } else if test.ends_with("_lat") {
            // perftest's table on each end, -n times.
            for o in [&so, &co] {
                let rows: Vec<Vec<&str>> = o
                    .lines()
                    .skip_while(|l| !l.contains("t_typical[usec]"))
                    .skip(1)
                    .take_while(|l| !l.starts_with("---"))
                    .map(|l| l.split_whitespace().collect())
                    .collect();
                let got: Vec<&str> = rows.iter().map(|r| r[0]).collect();
                assert_eq!(got, ["65536"], "{test} {more:?}:\n{o}");
                assert!(rows.iter().all(|r| r.len() == 9 && r[1] == "200"), "{test}:\n{o}");
            }
            assert!(!written.contains("\"lat\": [{\"bytes\": 2"), "{written}");
            assert!(written.contains("\"check_ok\": \"true\""), "{written}");
        } else {
            assert!(written.contains("\"bw\": [{\"bytes\": "), "{test} --out_json:\n{written}");
            // Every end that sent prints its row; send_bw's server too, of what it received.
            let (size, iters) = (if test == "atomic_bw" { 8 } else { 65536 }, 200 * qps);
            let row = |o: &str| {
                o.lines().any(|l| l.split_whitespace().take(2).eq([size.to_string(), iters.to_string()].iter()))
            };
            assert!(row(&co), "{test} {more:?} client:\n{co}");
            if test == "send_bw" {
                assert!(row(&so), "{test} {more:?} server:\n{so}");
            }
        }
    }
    ns.delete().unwrap();
}

/// The namespaces whose names carry process `pid`'s number
/// (`netns::unique_name`: PREFIX, pid, `x`, counter).
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let tag = format!("{pid}x");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(&tag))
        .map(String::from)
        .collect()
}

/// Ctrl-C (SIGINT) or `kill` (SIGTERM) in the middle of a TAP run deletes
/// the hub and link namespaces the run created, and the tool exits with
/// 128 + the signal's number, as a shell reports the death by that signal.
#[test]
fn an_interrupted_tap_run_deletes_its_namespaces() {
    softrdma::require_root!();
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_softrdma-perf"))
            .args(["write_lat", "-s", "2", "-n", "1000000000", "--fabric", "tap"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run softrdma-perf");
        let pid = child.id();
        // Should the tool fail to, the test still deletes what it made.
        struct Sweep(u32);
        impl Drop for Sweep {
            fn drop(&mut self) {
                for n in namespaces_of(self.0) {
                    let _ = Command::new("ip").args(["netns", "delete", &n]).status();
                }
            }
        }
        let _sweep = Sweep(pid);
        let t = std::time::Instant::now();
        // A hub and two link namespaces; the run is under way once the
        // last is made (and then runs for hours unless interrupted).
        while namespaces_of(pid).len() < 3 {
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "no namespaces after 30 s");
            assert!(child.try_wait().expect("try_wait").is_none(), "softrdma-perf ended early");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let killed = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
        assert!(killed.success());
        let t = std::time::Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if t.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{sig}: softrdma-perf still running 30 s after the signal");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sig}: {stderr}");
        assert!(stderr.contains("deleted 3 network namespace"), "{sig}: {stderr}");
        assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{sig} left namespaces behind");
    }
}

#[test]
fn the_turn_trace_is_refused_where_it_cannot_run() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_softrdma-perf")).args(args).output().expect("run");
    let out = run(&["write_bw", "-n", "10", "--turn-trace"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if softrdma::turn_trace::ENABLED {
        assert!(err.contains("the latency tests with both ends in one process only"), "{err}");
    } else {
        assert!(err.contains("build with `--features turn-trace`"), "{err}");
        let out = run(&["write_lat", "-n", "10", "--turn-trace"]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no turn trace"));
    }
}
