//! Every RoCEv2 packet captured from Linux kernel rxe parses, carries a correct
//! ICRC, and re-emits byte-identically from its parsed `Repr` plus payload; and
//! flipping any byte the ICRC covers makes verification fail.

use std::path::{Path, PathBuf};

use softrdma::capture::read_frames;
use transport::wire::{classify, icrc, Frame, FrameKind, NetRepr};

fn vector_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The repository's copy always; the shared original too when it sits beside
    // the checkout, so a refreshed capture set is picked up.
    let mut dirs = vec![root.join("vectors/kernel-rxe")];
    let shared = root.join("../shared/vectors/kernel-rxe");
    if shared.is_dir() {
        dirs.push(shared);
    }
    dirs
}

fn captures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in vector_dirs() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 11, "expected the kernel-rxe captures, found {files:?}");
    files
}

fn roce_frames(path: &Path) -> Vec<Vec<u8>> {
    let frames = read_frames(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    frames.into_iter().filter(|f| f.ethernet && classify(&f.data) == FrameKind::RoceV2).map(|f| f.data).collect()
}

/// Offset of the IP header and of the first byte after the frame's IP packet
/// (Ethernet padding of short frames is not part of the RoCE packet).
fn ip_span(f: &Frame<'_>) -> (usize, usize) {
    let l2 = f.repr.eth.header_len();
    let net = match f.repr.net {
        NetRepr::V4 { .. } => 20 + 8,
        NetRepr::V6 { .. } => 40 + 8,
        NetRepr::V1 { .. } => 40,
    };
    (l2, l2 + net + f.repr.ib.buffer_len())
}

#[test]
fn every_rxe_packet_parses_verifies_and_reemits_identically() {
    let mut total = 0;
    let mut per_file = Vec::new();
    for path in captures() {
        let frames = roce_frames(&path);
        for (i, bytes) in frames.iter().enumerate() {
            let f = Frame::verify(bytes).unwrap_or_else(|e| panic!("{} #{i}: {e}", path.display()));
            let (_, end) = ip_span(&f);
            let mut out = vec![0u8; f.repr.buffer_len()];
            let n = f.repr.emit(f.payload(), &mut out).unwrap();
            assert_eq!(n, end);
            assert_eq!(&out[..], &bytes[..end], "{} #{i}: re-emitted bytes differ", path.display());
        }
        per_file.push((path.file_name().unwrap().to_owned(), frames.len()));
        total += frames.len();
    }
    // The counts the capture README lists (each file at least once).
    for (name, n) in [
        ("rc-write-8k.pcap", 45),
        ("rc-write-64.pcap", 10),
        ("rc-send-4k.pcap", 25),
        ("rc-read-8k.pcap", 45),
        ("rc-fetch-add.pcap", 10),
        ("rc-cmp-swap.pcap", 10),
        ("ud-send-512.pcap", 5),
        ("uc-write-4k.pcap", 20),
        ("rc-pingpong.pcap", 50),
        ("rc-pingpong.pcapng", 50),
        ("ud-pingpong.pcap", 10),
    ] {
        assert!(
            per_file.iter().any(|(f, c)| f.to_str() == Some(name) && *c == n),
            "{name}: expected {n} RoCEv2 packets, got {per_file:?}"
        );
    }
    assert!(total >= 280);
}

/// The software engine (the one an emulated CPU picks: table for short
/// spans, the sparse multiple for long ones) checks every captured ICRC
/// too; the 4 KiB and 8 KiB captures take the sparse path. The engine is
/// process-wide, which the other tests here do not mind: both engines give
/// the same bytes.
#[test]
fn every_rxe_packet_verifies_with_the_software_crc_too() {
    icrc::set_engine(icrc::Engine::Table);
    let mut long = 0;
    for path in captures() {
        for (i, bytes) in roce_frames(&path).iter().enumerate() {
            let f = Frame::verify(bytes).unwrap_or_else(|e| panic!("{} #{i}, software CRC: {e}", path.display()));
            if f.payload().len() >= transport::wire::crc32_sparse::FROM {
                long += 1;
            }
        }
    }
    icrc::set_engine(icrc::Engine::Simd);
    assert!(long >= 100, "only {long} packets long enough for the sparse path");
}

/// IPv4 bytes the ICRC masks (TOS, TTL, header checksum) and the UDP checksum,
/// relative to the IP header; and BTH byte 4 relative to the BTH.
fn is_variant(off_in_ip: usize) -> bool {
    matches!(off_in_ip, 1 | 8 | 10 | 11 | 26 | 27 | 32)
}

#[test]
fn flipping_any_icrc_covered_byte_fails_verification() {
    let mut checked = 0usize;
    for path in captures() {
        for bytes in roce_frames(&path) {
            let f = Frame::verify(&bytes).unwrap();
            let (start, end) = ip_span(&f);
            assert!(matches!(f.repr.net, NetRepr::V4 { .. }), "captures are IPv4");
            // Every byte from the IP header to the last payload/pad byte.
            for i in start..end - icrc::LEN {
                if is_variant(i - start) {
                    continue;
                }
                for flip in [0x01u8, 0x80] {
                    let mut g = bytes.clone();
                    g[i] ^= flip;
                    assert!(
                        Frame::verify(&g).is_err(),
                        "{}: flipping byte {i} by {flip:#x} still verifies",
                        path.display()
                    );
                    checked += 1;
                }
            }
            // And the ICRC trailer itself.
            for i in end - icrc::LEN..end {
                let mut g = bytes.clone();
                g[i] ^= 0x01;
                assert!(matches!(Frame::verify(&g), Err(transport::wire::Error::IcrcMismatch { .. })));
            }
        }
    }
    assert!(checked > 100_000, "checked {checked}");
}

#[test]
fn variant_fields_may_change_without_breaking_the_icrc() {
    // A router rewriting TTL/DSCP/ECN (and fixing the IP checksum), or a switch
    // marking FECN, must not invalidate the ICRC (Annex A17.8).
    let path = &captures()[0];
    let bytes = &roce_frames(path)[0];
    let f = Frame::verify(bytes).unwrap();
    let mut repr = f.repr;
    if let NetRepr::V4 { ip, .. } = &mut repr.net {
        ip.ttl = 3;
        ip.dscp = 26;
        ip.ecn = 3;
    }
    repr.ib.bth.fecn = true;
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(f.payload(), &mut out).unwrap();
    let g = Frame::verify(&out).unwrap();
    assert_eq!(g.packet.icrc(), f.packet.icrc(), "same ICRC with different variant fields");
}
