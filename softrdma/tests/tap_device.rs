//! The device on real TAPs in real network namespaces (root; in CI a skip
//! is a failure): every opcode between two namespaces, the device answers
//! ping (IPv4 and IPv6) from its namespace, and the pcap it wrote decodes in
//! tshark's InfiniBand dissector without a malformed packet.

use std::process::Command;

use softrdma::require_root;
use softrdma::testbed::{Testbed, TestbedOptions};

fn tshark_available() -> bool {
    match Command::new("tshark").arg("-v").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("tshark missing in CI (.ci/run installs it)");
            }
            eprintln!("skipped tshark check: tshark not installed");
            false
        }
    }
}

#[test]
fn every_opcode_between_two_namespaces_ping_and_tshark() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("srd-tap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("dev");
    let bed = Testbed::tap(2, &TestbedOptions { pcap_prefix: Some(prefix.clone()), ..Default::default() })
        .expect("TAP testbed");
    let ctx = bed.contexts();
    let report = softrdma::demo::run(&ctx[0], &ctx[1]).expect("traffic between namespaces");
    assert_eq!(report.lines.len(), 7);

    for i in 0..2 {
        let ns = bed.netns_of(i).unwrap().to_string();
        for target in [format!("10.99.0.{}", i + 1), format!("fd99::{}", i + 1)] {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-c", "2", "-W", "2", &target])
                .output()
                .unwrap();
            assert!(out.status.success(), "ping {target} from {ns}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
    let (dc, ec, _) = bed.devices[0].counters();
    assert!(dc.rx_host_frames > 0 && ec.rx_icrc_err == 0);
    drop(bed);

    let pcap = format!("{}-0.pcap", prefix.display());
    let decoded = Command::new(env!("CARGO_BIN_EXE_softrdma")).args(["decode", &pcap]).output().unwrap();
    assert!(decoded.status.success(), "softrdma decode: {}", String::from_utf8_lossy(&decoded.stdout));
    if tshark_available() {
        // RPC-over-RDMA's heuristic dissector claims 0- and 1-byte SENDs and
        // then calls them malformed; it is not the InfiniBand dissector.
        let out = Command::new("tshark")
            .args(["-r", &pcap, "--disable-protocol", "rpcordma", "-qz", "expert"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("Malformed"), "tshark expert info:\n{text}");
        let out = Command::new("tshark").args(["-r", &pcap, "-T", "fields", "-e", "frame.protocols"]).output().unwrap();
        let protos = String::from_utf8_lossy(&out.stdout);
        assert!(protos.lines().filter(|l| l.contains("infiniband")).count() > 1000, "tshark sees InfiniBand");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Over IPv6 a device whose TAP has virtio-net headers leaves each frame's
/// UDP checksum to the kernel (checksum offload). Device 0 has such a TAP,
/// device 1 a plain one: device 1 gets every frame with the checksum the
/// kernel finished, and its parser verifies it (a frame whose checksum did
/// not verify would be dropped, and the demo would fail); device 0's own
/// capture holds finished checksums (`softrdma decode` verifies each one).
#[test]
fn ipv6_checksums_left_to_the_kernel_arrive_finished() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("srd-tap6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("dev");
    let o = TestbedOptions { pcap_prefix: Some(prefix.clone()), plain_taps: vec![1], ..Default::default() };
    let bed = Testbed::tap(2, &o).expect("TAP testbed");
    assert_eq!(bed.devices[0].offload(), softrdma::link::Offload::Uso);
    assert_eq!(bed.devices[1].offload(), softrdma::link::Offload::Off);
    let ctx = bed.contexts();
    let report = softrdma::demo::run_on_gid(&ctx[0], &ctx[1], 2).expect("traffic over IPv6");
    assert_eq!(report.lines.len(), 7);
    for d in &bed.devices {
        let (dc, ec, _) = d.counters();
        assert!(dc.rx_frames > 1000, "{dc:?}");
        assert_eq!(ec.rx_malformed + ec.rx_icrc_err, 0, "{ec:?}");
    }
    drop(bed);
    for i in 0..2 {
        let pcap = format!("{}-{i}.pcap", prefix.display());
        let decoded = Command::new(env!("CARGO_BIN_EXE_softrdma")).args(["decode", &pcap]).output().unwrap();
        let text = String::from_utf8_lossy(&decoded.stdout);
        assert!(decoded.status.success(), "softrdma decode {pcap}: {text}");
        assert!(
            text.contains("IPv6") || text.contains("fd99"),
            "the capture is IPv6: {}",
            &text[..text.len().min(2000)]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
