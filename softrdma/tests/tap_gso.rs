//! Root-only: UDP segmentation offload on TAPs (`TapConfig::vnet_hdr`).
//!
//! One namespace, one bridge, three TAPs: A writes, B (virtio-net headers,
//! USO) and C (plain frames) both receive, since the frames go to a MAC the
//! bridge has not learnt and it floods them. The frames are one RDMA WRITE
//! message as kernel rxe sent it (`rc-write-8k.pcap`: first, six middles,
//! last), renumbered with consecutive IPv4 identifications as a QP here
//! numbers them, with their ICRCs recomputed.
//!
//! Checked: A writes the message in one `write(2)`, which the kernel carries
//! as one packet to B (B's TX counter moves by one) and cuts into the eight
//! frames for C; B hands back every frame byte for byte (UDP checksum zero,
//! as rxe sends it), C the same frames with the UDP checksum the kernel
//! computed, which verifies; every ICRC verifies. A run broken in the middle
//! (a gap in the identifications) still arrives whole, in order, and so
//! does a run of small frames that a receive buffer holds whole.
//!
//! Without root this prints `skipped: REASON` (and fails under `CI=true`).

mod common;

use common::tx_packets;
use std::path::Path;
use std::time::{Duration, Instant};

use smoltcp::wire::EthernetAddress;
use softrdma::backend::netns::{self, unique_name, NetNs};
use softrdma::backend::tap::{open_tap_named, TapConfig};
use softrdma::capture::read_frames;
use softrdma::link::Link;
use transport::wire::ip::Ipv6Repr;
use transport::wire::udp::{UdpChecksum, UdpRepr};
use transport::wire::{classify, Frame, FrameKind, NetRepr};

/// The first WRITE message of `rc-write-8k.pcap` (opcodes 6, 7 × 6, 8).
fn rxe_message() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors/kernel-rxe/rc-write-8k.pcap");
    let frames = read_frames(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let roce: Vec<Vec<u8>> =
        frames.into_iter().filter(|f| f.ethernet && classify(&f.data) == FrameKind::RoceV2).map(|f| f.data).collect();
    let first = roce.iter().position(|f| Frame::verify(f).unwrap().packet.bth().opcode as u8 == 6).unwrap();
    let msg = roce[first..first + 8].to_vec();
    let ops: Vec<u8> = msg.iter().map(|f| Frame::verify(f).unwrap().packet.bth().opcode as u8).collect();
    assert_eq!(ops, [6, 7, 7, 7, 7, 7, 7, 8]);
    msg
}

/// The five WRITE ONLY packets of `rc-write-64.pcap` (64 bytes each).
fn rxe_small_writes() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors/kernel-rxe/rc-write-64.pcap");
    let frames = read_frames(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let writes: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| f.ethernet && classify(&f.data) == FrameKind::RoceV2)
        .map(|f| f.data)
        .filter(|f| Frame::verify(f).unwrap().packet.bth().opcode as u8 == 10)
        .collect();
    assert_eq!(writes.len(), 5);
    writes
}

/// `frames` from `src` to `dst` with identifications `ids`, their ICRCs
/// recomputed.
fn renumbered(frames: &[Vec<u8>], src: [u8; 6], dst: [u8; 6], ids: impl Iterator<Item = u16>) -> Vec<Vec<u8>> {
    frames
        .iter()
        .zip(ids)
        .map(|(bytes, id)| {
            let f = Frame::verify(bytes).unwrap();
            let mut repr = f.repr;
            repr.eth.src = EthernetAddress(src);
            repr.eth.dst = EthernetAddress(dst);
            let NetRepr::V4 { ip, .. } = &mut repr.net else { panic!("rxe sent IPv4") };
            ip.ident = id;
            let mut out = vec![0u8; repr.buffer_len()];
            let n = repr.emit(f.payload(), &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

/// `frames` moved to IPv6 (`fd5f::1` → `fd5f::2`, flow label 0x5f5f5) from
/// `src` to `dst`, with the UDP checksum computed as a QP here (and rxe)
/// sends it over IPv6, and their ICRCs recomputed.
fn as_ipv6(frames: &[Vec<u8>], src: [u8; 6], dst: [u8; 6]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|bytes| {
            let f = Frame::verify(bytes).unwrap();
            let mut repr = f.repr;
            repr.eth.src = EthernetAddress(src);
            repr.eth.dst = EthernetAddress(dst);
            let NetRepr::V4 { udp, .. } = repr.net else { panic!("rxe sent IPv4") };
            repr.net = NetRepr::V6 {
                ip: Ipv6Repr {
                    src: "fd5f::1".parse().unwrap(),
                    dst: "fd5f::2".parse().unwrap(),
                    traffic_class: 0,
                    flow_label: 0x5f5f5,
                    hop_limit: 64,
                    next_header: 17,
                },
                udp: UdpRepr { checksum: UdpChecksum::Computed, ..udp },
            };
            let mut out = vec![0u8; repr.buffer_len()];
            let n = repr.emit(f.payload(), &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

/// Every frame `link` receives within `wait` that is one of ours (IPv4 UDP
/// to port 4791), until `n` came.
fn receive(link: &mut Link, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; link.mtu + 18];
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Ok(Some(k)) = link.rx.recv(&mut buf, Duration::from_millis(50)) {
            if classify(&buf[..k]) == FrameKind::RoceV2 {
                got.push(buf[..k].to_vec());
            }
        }
    }
    got
}

/// Nobody has this MAC: the bridge floods frames sent to it to B and C.
const NOBODY: [u8; 6] = [2, 0x5f, 0x0d, 0, 0, 4];

/// A namespace with one bridge and three TAPs on it: A and B with
/// virtio-net headers (USO), C plain; B and C with their interface names.
fn three_taps() -> (NetNs, Link, (Link, String), (Link, String)) {
    let ns = NetNs::create(&unique_name("srg")).unwrap();
    let n = Some(ns.name());
    let br = unique_name("srb");
    netns::bridge(n, &br).unwrap();
    let open = |vnet_hdr: bool, mac: [u8; 6]| {
        let cfg = TapConfig { mac: Some(mac), vnet_hdr, ..TapConfig::in_netns(ns.name(), unique_name("srt")) };
        let (link, name) = open_tap_named(&cfg).unwrap();
        netns::enslave(n, &name, &br).unwrap();
        (link, name)
    };
    let (a, _) = open(true, [2, 0x5f, 0x0a, 0, 0, 1]);
    let b = open(true, [2, 0x5f, 0x0b, 0, 0, 2]);
    let c = open(false, [2, 0x5f, 0x0c, 0, 0, 3]);
    (ns, a, b, c)
}

#[test]
fn a_message_crosses_the_kernel_as_one_udp_gso_write() {
    softrdma::require_root!();
    let (ns, a, (mut b, tap_b), (mut c, tap_c)) = three_taps();
    let msg = renumbered(&rxe_message(), a.mac, NOBODY, (0..8u16).map(|i| 0xfffcu16.wrapping_add(i)));
    let noise = |l: &mut Link| while let Ok(Some(_)) = l.rx.recv(&mut [0u8; 2048], Duration::from_millis(20)) {};
    noise(&mut b);
    noise(&mut c);

    let (b0, c0) = (tx_packets(ns.name(), &tap_b), tx_packets(ns.name(), &tap_c));
    let mut batch = msg.clone();
    assert_eq!(a.tx.send_bufs(&mut batch), 0);
    let at_b = receive(&mut b, msg.len(), Duration::from_secs(2));
    let at_c = receive(&mut c, msg.len(), Duration::from_secs(2));
    let (b1, c1) = (tx_packets(ns.name(), &tap_b), tx_packets(ns.name(), &tap_c));
    assert_eq!(at_b, msg, "B hands back the frames as they were sent");
    assert!(b1 - b0 < msg.len() as u64, "the kernel carried {} packets to B for {} frames", b1 - b0, msg.len());
    assert!(c1 - c0 >= msg.len() as u64, "C got {} packets", c1 - c0);
    assert_eq!(at_c.len(), msg.len());
    for (got, sent) in at_c.iter().zip(&msg) {
        assert_eq!(got.len(), sent.len());
        assert_ne!(got[40..42], [0, 0], "the segmentation computed a UDP checksum");
        assert_eq!(got[..40], sent[..40]);
        assert_eq!(got[42..], sent[42..]);
        // Verifies the UDP checksum (non-zero) and the ICRC.
        Frame::verify(got).unwrap();
    }

    // A gap in the identifications splits the run; the order stays.
    let ids = [1u16, 2, 3, 9, 10, 11, 12, 13];
    let gap = renumbered(&rxe_message(), a.mac, NOBODY, ids.into_iter());
    let mut batch = gap.clone();
    assert_eq!(a.tx.send_bufs(&mut batch), 0);
    assert_eq!(receive(&mut b, gap.len(), Duration::from_secs(2)), gap);
    assert_eq!(receive(&mut c, gap.len(), Duration::from_secs(2)).len(), gap.len());

    // A run shorter than one MTU-sized buffer is read whole and cut too.
    let small = renumbered(&rxe_small_writes(), a.mac, NOBODY, 40..45);
    let mut batch = small.clone();
    let b0 = tx_packets(ns.name(), &tap_b);
    assert_eq!(a.tx.send_bufs(&mut batch), 0);
    assert_eq!(receive(&mut b, small.len(), Duration::from_secs(2)), small);
    assert!(tx_packets(ns.name(), &tap_b) - b0 < small.len() as u64, "the small run went as one packet");
    assert_eq!(receive(&mut c, small.len(), Duration::from_secs(2)).len(), small.len());

    drop((a, b, c));
    ns.delete().unwrap();
}

/// The same message over IPv6, where QPs send a computed UDP checksum: the
/// kernel carries it as fewer packets than frames to B, which hands the
/// frames back with the checksum zeroed (left unfinished by the kernel),
/// and cuts it for C into the frames exactly as they were sent, checksums
/// included.
#[test]
fn an_ipv6_message_crosses_the_kernel_in_runs() {
    softrdma::require_root!();
    let (ns, a, (mut b, tap_b), (mut c, _)) = three_taps();
    let msg = as_ipv6(&rxe_message(), a.mac, NOBODY);
    assert_eq!(softrdma::backend::vnet::run_len(&msg[1..]), 7, "the middles and the last make one run");
    let noise = |l: &mut Link| while let Ok(Some(_)) = l.rx.recv(&mut [0u8; 2048], Duration::from_millis(20)) {};
    noise(&mut b);
    noise(&mut c);

    let b0 = tx_packets(ns.name(), &tap_b);
    let mut batch = msg.clone();
    assert_eq!(a.tx.send_bufs(&mut batch), 0);
    let at_b = receive(&mut b, msg.len(), Duration::from_secs(2));
    let at_c = receive(&mut c, msg.len(), Duration::from_secs(2));
    let sent = tx_packets(ns.name(), &tap_b) - b0;
    assert!(sent < msg.len() as u64, "the kernel carried {sent} packets to B for {} frames", msg.len());
    assert_eq!(at_c, msg, "C gets the frames as they were sent, checksums included");
    assert_eq!(at_b.len(), msg.len());
    let u = 14 + 40;
    for (got, sent) in at_b.iter().zip(&msg) {
        assert_eq!(got[..u + 6], sent[..u + 6]);
        assert_eq!(got[u + 6..u + 8], [0, 0]);
        assert_eq!(got[u + 8..], sent[u + 8..]);
        Frame::verify(got).unwrap();
    }
    drop((a, b, c));
    ns.delete().unwrap();
}
