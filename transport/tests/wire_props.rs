//! Property tests of the wire layer: every opcode survives emit → parse → emit
//! byte-exactly, no byte string makes a parser panic, and the ICRC catches every
//! change to an invariant byte while ignoring the variant fields.

use core::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::sample::Index;
use smoltcp::wire::{EthernetAddress, IpAddress, Ipv4Packet, UdpPacket};

use transport::wire::packet::pad_for;
use transport::wire::{
    classify, AethRepr, AtomicAckEthRepr, AtomicEthRepr, BthRepr, DethRepr, EthernetRepr, ExtHeaders, Frame, FrameKind,
    FrameRepr, GrhRepr, IbPacket, IbRepr, IethRepr, ImmDtRepr, Ipv4Repr, Ipv6Repr, NetRepr, Opcode, RethRepr, Syndrome,
    UdpChecksum, UdpRepr, VlanTag, ROCEV1_ETHERTYPE, ROCEV2_UDP_PORT,
};

const CASES: u32 = 256;

// ---------------------------------------------------------------- strategies

fn arb_mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}

fn arb_vlan() -> impl Strategy<Value = Option<VlanTag>> {
    prop::option::of((0u8..8, any::<bool>(), 0u16..4096).prop_map(|(pcp, dei, vid)| VlanTag { pcp, dei, vid }))
}

/// The EtherType is random on purpose: `FrameRepr::emit` must derive it.
fn arb_eth() -> impl Strategy<Value = EthernetRepr> {
    (arb_mac(), arb_mac(), arb_vlan(), any::<u16>()).prop_map(|(dst, src, vlan, ethertype)| EthernetRepr {
        dst,
        src,
        vlan,
        ethertype,
    })
}

fn arb_udp() -> impl Strategy<Value = UdpRepr> {
    (any::<u16>(), prop_oneof![Just(UdpChecksum::None), Just(UdpChecksum::Computed)])
        .prop_map(|(src_port, checksum)| UdpRepr { src_port, dst_port: ROCEV2_UDP_PORT, checksum })
}

fn arb_v4() -> impl Strategy<Value = NetRepr> {
    (any::<[u8; 4]>(), any::<[u8; 4]>(), 0u8..64, 0u8..4, any::<u16>(), any::<bool>(), any::<u8>(), arb_udp()).prop_map(
        |(src, dst, dscp, ecn, ident, dont_frag, ttl, udp)| NetRepr::V4 {
            ip: Ipv4Repr {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                dscp,
                ecn,
                ident,
                dont_frag,
                ttl,
                protocol: 17,
            },
            udp,
        },
    )
}

fn arb_v6() -> impl Strategy<Value = NetRepr> {
    (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u8>(), 0u32..1 << 20, any::<u8>(), arb_udp()).prop_map(
        |(src, dst, traffic_class, flow_label, hop_limit, udp)| NetRepr::V6 {
            ip: Ipv6Repr {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
                traffic_class,
                flow_label,
                hop_limit,
                next_header: 17,
            },
            udp,
        },
    )
}

fn arb_v1() -> impl Strategy<Value = NetRepr> {
    (any::<u8>(), 0u32..1 << 20, any::<u8>(), any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(
        |(traffic_class, flow_label, hop_limit, sgid, dgid)| NetRepr::V1 {
            grh: GrhRepr { traffic_class, flow_label, hop_limit, sgid, dgid },
        },
    )
}

fn arb_net() -> impl Strategy<Value = NetRepr> {
    prop_oneof![arb_v4(), arb_v6(), arb_v1()]
}

/// BTH fields other than the opcode and the pad count.
#[derive(Debug, Clone, Copy)]
struct BthFields {
    solicited: bool,
    mig_req: bool,
    pkey: u16,
    fecn: bool,
    becn: bool,
    dest_qpn: u32,
    ack_req: bool,
    psn: u32,
    resv6: u8,
    resv7: u8,
}

/// `reserved`: whether the reserved bits (BTH Resv6/Resv7, DETH resv8) are
/// random too; senders leave them zero, but a parsed packet keeps them.
fn arb_bth(reserved: bool) -> impl Strategy<Value = BthFields> {
    let resv_max6 = if reserved { 0x40 } else { 1 };
    let resv_max7 = if reserved { 0x80 } else { 1 };
    (
        (any::<bool>(), any::<bool>(), any::<u16>(), any::<bool>()),
        (any::<bool>(), 0u32..1 << 24, any::<bool>(), 0u32..1 << 24),
        (0u8..resv_max6, 0u8..resv_max7),
    )
        .prop_map(|((solicited, mig_req, pkey, fecn), (becn, dest_qpn, ack_req, psn), (resv6, resv7))| BthFields {
            solicited,
            mig_req,
            pkey,
            fecn,
            becn,
            dest_qpn,
            ack_req,
            psn,
            resv6,
            resv7,
        })
}

/// Every extension header filled at random; `ext_for` keeps those an opcode has.
fn arb_ext(reserved: bool) -> impl Strategy<Value = ExtHeaders> {
    let resv_max = if reserved { 256u16 } else { 1 };
    (
        (any::<u32>(), 0u32..1 << 24, 0u16..resv_max),
        (any::<u64>(), any::<u32>(), any::<u32>()),
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>()),
        (any::<u8>(), 0u32..1 << 24),
        (any::<u64>(), any::<u32>(), any::<u32>()),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(
            |(
                (qkey, src_qpn, resv8),
                (va, rkey, dma_len),
                (ava, arkey, swap_add, compare),
                (syndrome, msn),
                (orig, imm, inv_rkey),
                jkey,
            )| ExtHeaders {
                jketh: jkey.map(|jkey| transport::wire::JkethRepr { jkey, reserved: 0 }),
                deth: Some(DethRepr { qkey, src_qpn, resv8: resv8 as u8 }),
                reth: Some(RethRepr { va, rkey, dma_len }),
                atomic_eth: Some(AtomicEthRepr { va: ava, rkey: arkey, swap_add, compare }),
                aeth: Some(AethRepr { syndrome: Syndrome::from_byte(syndrome), msn }),
                atomic_ack_eth: Some(AtomicAckEthRepr { orig }),
                immdt: Some(ImmDtRepr { imm }),
                ieth: Some(IethRepr { rkey: inv_rkey }),
            },
        )
}

/// Everything a frame needs except its opcode, which `build` supplies.
#[derive(Debug, Clone)]
struct Case {
    eth: EthernetRepr,
    net: NetRepr,
    bth: BthFields,
    ext: ExtHeaders,
    payload: Vec<u8>,
}

fn arb_case_with(reserved: bool) -> impl Strategy<Value = Case> {
    (arb_eth(), arb_net(), arb_bth(reserved), arb_ext(reserved), prop::collection::vec(any::<u8>(), 0..=600))
        .prop_map(|(eth, net, bth, ext, payload)| Case { eth, net, bth, ext, payload })
}

fn arb_case() -> impl Strategy<Value = Case> {
    arb_case_with(false)
}

fn ext_for(op: Opcode, all: &ExtHeaders) -> ExtHeaders {
    let h = op.info().headers;
    ExtHeaders {
        // A JKETH may ride on any opcode.
        jketh: all.jketh,
        deth: all.deth.filter(|_| h.deth),
        reth: all.reth.filter(|_| h.reth),
        atomic_eth: all.atomic_eth.filter(|_| h.atomic_eth),
        aeth: all.aeth.filter(|_| h.aeth),
        atomic_ack_eth: all.atomic_ack_eth.filter(|_| h.atomic_ack_eth),
        immdt: all.immdt.filter(|_| h.immdt),
        ieth: all.ieth.filter(|_| h.ieth),
    }
}

/// The repr and payload of `case` with opcode `op` (payload dropped when the
/// opcode carries none, pad count set to what the payload needs).
fn build(op: Opcode, case: &Case) -> (FrameRepr, Vec<u8>) {
    let payload = if op.info().payload { case.payload.clone() } else { Vec::new() };
    let b = case.bth;
    let bth = BthRepr {
        opcode: op,
        solicited: b.solicited,
        mig_req: b.mig_req,
        pad: pad_for(payload.len()),
        pkey: b.pkey,
        fecn: b.fecn,
        becn: b.becn,
        resv6: b.resv6,
        dest_qpn: b.dest_qpn,
        ack_req: b.ack_req,
        // Resv7's top bit announces the JKETH (transport::wire::jketh).
        resv7: (b.resv7 & !transport::wire::jketh::BTH_FLAG)
            | if case.ext.jketh.is_some() { transport::wire::jketh::BTH_FLAG } else { 0 },
        psn: b.psn,
    };
    let repr = FrameRepr {
        eth: case.eth,
        net: case.net,
        ib: IbRepr { bth, ext: ext_for(op, &case.ext), payload_len: payload.len() },
    };
    (repr, payload)
}

/// Emits into a buffer pre-filled with `fill`, so that a byte `emit` forgets to
/// write shows up as a difference between two emissions.
fn emit(repr: &FrameRepr, payload: &[u8], fill: u8) -> Vec<u8> {
    let mut buf = vec![fill; repr.buffer_len()];
    let n = repr.emit(payload, &mut buf).expect("emit");
    assert_eq!(n, buf.len());
    buf
}

fn ethertype_of(net: &NetRepr) -> u16 {
    match net {
        NetRepr::V4 { .. } => 0x0800,
        NetRepr::V6 { .. } => 0x86dd,
        NetRepr::V1 { .. } => ROCEV1_ETHERTYPE,
    }
}

/// What `parse` should give back for `repr` once emitted.
fn expected(repr: &FrameRepr) -> FrameRepr {
    let mut e = *repr;
    e.eth.ethertype = ethertype_of(&repr.net);
    e
}

/// Offsets of the layers in an emitted frame.
struct Layout {
    l3: usize,
    udp: Option<usize>,
    bth: usize,
}

fn layout(repr: &FrameRepr) -> Layout {
    let l3 = repr.eth.header_len();
    let (udp, bth) = match repr.net {
        NetRepr::V4 { .. } => (Some(l3 + 20), l3 + 28),
        NetRepr::V6 { .. } => (Some(l3 + 40), l3 + 48),
        NetRepr::V1 { .. } => (None, l3 + 40),
    };
    Layout { l3, udp, bth }
}

/// The repr with every field the ICRC does not cover cleared: Ethernet (but its
/// EtherType), IPv4 DSCP/ECN/TTL, IPv6/GRH traffic class, flow label and hop
/// limit, the UDP checksum, and BTH byte 4 (FECN, BECN, Resv6).
fn invariant_view(r: &FrameRepr) -> FrameRepr {
    let mut r = *r;
    r.eth = EthernetRepr {
        dst: EthernetAddress([0; 6]),
        src: EthernetAddress([0; 6]),
        vlan: None,
        ethertype: r.eth.ethertype,
    };
    match &mut r.net {
        NetRepr::V4 { ip, udp } => {
            ip.dscp = 0;
            ip.ecn = 0;
            ip.ttl = 0;
            udp.checksum = UdpChecksum::None;
        }
        NetRepr::V6 { ip, udp } => {
            ip.traffic_class = 0;
            ip.flow_label = 0;
            ip.hop_limit = 0;
            udp.checksum = UdpChecksum::None;
        }
        NetRepr::V1 { grh } => {
            grh.traffic_class = 0;
            grh.flow_label = 0;
            grh.hop_limit = 0;
        }
    }
    r.ib.bth.fecn = false;
    r.ib.bth.becn = false;
    r.ib.bth.resv6 = 0;
    r
}

/// Recomputes the IPv4 header checksum and a non-zero UDP checksum, as a switch
/// that rewrote a variant field would.
fn refresh_checksums(buf: &mut [u8], repr: &FrameRepr) {
    let lay = layout(repr);
    let (src, dst) = match repr.net {
        NetRepr::V4 { ip, .. } => {
            Ipv4Packet::new_unchecked(&mut buf[lay.l3..lay.l3 + 20]).fill_checksum();
            (IpAddress::Ipv4(ip.src), IpAddress::Ipv4(ip.dst))
        }
        NetRepr::V6 { ip, .. } => (IpAddress::Ipv6(ip.src), IpAddress::Ipv6(ip.dst)),
        NetRepr::V1 { .. } => return,
    };
    let udp = lay.udp.unwrap();
    let mut p = UdpPacket::new_unchecked(&mut buf[udp..]);
    if p.checksum() != 0 {
        p.fill_checksum(&src, &dst);
    }
}

/// The round-trip oracle for any byte string: if it parses, re-emitting its repr
/// with its payload yields a frame that verifies and parses to the same repr and
/// payload. Returns whether the input parsed.
fn reparse_oracle(bytes: &[u8]) -> bool {
    let Ok(f) = Frame::parse(bytes) else {
        return false;
    };
    // A frame that parses is one `classify` lets through to the transport.
    let kind = classify(bytes);
    match f.repr.net {
        NetRepr::V1 { .. } => assert_eq!(kind, FrameKind::RoceV1),
        _ => assert_eq!(kind, FrameKind::RoceV2),
    }
    let out = emit(&f.repr, f.payload(), 0xa5);
    let g = Frame::verify(&out).expect("re-emitted frame verifies");
    assert_eq!(g.repr, f.repr);
    assert_eq!(g.payload(), f.payload());
    true
}

/// Calls every parser and accessor on `bytes`; none may panic.
fn poke_everything(bytes: &[u8]) {
    let _ = classify(bytes);
    let _ = Frame::verify(bytes);
    reparse_oracle(bytes);
    let _ = EthernetRepr::parse(bytes);
    let _ = Ipv4Repr::parse(bytes);
    let _ = Ipv6Repr::parse(bytes);
    let _ = GrhRepr::parse(bytes);
    for (s, d) in [
        (IpAddress::Ipv4(Ipv4Addr::new(10, 0, 0, 1)), IpAddress::Ipv4(Ipv4Addr::new(10, 0, 0, 2))),
        (IpAddress::Ipv6(Ipv6Addr::LOCALHOST), IpAddress::Ipv6(Ipv6Addr::UNSPECIFIED)),
    ] {
        let _ = UdpRepr::parse(bytes, &s, &d);
    }
    let _ = BthRepr::parse(bytes);
    let _ = DethRepr::parse(bytes);
    let _ = RethRepr::parse(bytes);
    let _ = AtomicEthRepr::parse(bytes);
    let _ = AethRepr::parse(bytes);
    let _ = AtomicAckEthRepr::parse(bytes);
    let _ = ImmDtRepr::parse(bytes);
    let _ = IethRepr::parse(bytes);
    if let Ok(p) = IbPacket::new_checked(bytes) {
        let _ = p.payload();
        let _ = p.pad_bytes();
        let _ = p.icrc();
        let _ = p.without_icrc();
        let _ = p.payload_in_buffer();
        let r = IbRepr::parse(&p);
        assert_eq!(r.payload_len, p.payload().len());
        assert_eq!(r.buffer_len(), bytes.len());
        // Every header the opcode calls for decodes from a checked packet.
        let h = p.info().headers;
        let e = p.ext_headers();
        assert_eq!(e, ext_for(r.bth.opcode, &e));
        assert_eq!(
            [e.deth.is_some(), e.reth.is_some(), e.atomic_eth.is_some(), e.aeth.is_some()],
            [h.deth, h.reth, h.atomic_eth, h.aeth]
        );
        assert_eq!(
            [e.atomic_ack_eth.is_some(), e.immdt.is_some(), e.ieth.is_some()],
            [h.atomic_ack_eth, h.immdt, h.ieth]
        );
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    Flip(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Insert(Index, u8),
    Remove(Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let len = buf.len();
    match m {
        Mutation::Set(i, b) if len > 0 => buf[i.index(len)] = *b,
        Mutation::Flip(i, bit) if len > 0 => buf[i.index(len)] ^= 1 << bit,
        Mutation::Truncate(i) => buf.truncate(i.index(len + 1)),
        Mutation::Extend(tail) => buf.extend_from_slice(tail),
        Mutation::Insert(i, b) => buf.insert(i.index(len + 1), *b),
        Mutation::Remove(i) if len > 0 => {
            buf.remove(i.index(len));
        }
        _ => {}
    }
}

/// Offsets (and XOR masks allowed there) of every byte the ICRC protects, from
/// the inner EtherType to the ICRC trailer itself.
fn invariant_bytes(repr: &FrameRepr, frame_len: usize) -> Vec<(usize, u8)> {
    let lay = layout(repr);
    let mut v: Vec<(usize, u8)> = vec![(lay.l3 - 2, 0xff), (lay.l3 - 1, 0xff)];
    let l3 = lay.l3;
    match repr.net {
        NetRepr::V4 { .. } => {
            // Version/IHL, total length, ident, flags/fragment, protocol, addresses.
            // (TOS, TTL and the checksum are variant.)
            v.extend([0, 2, 3, 4, 5, 6, 7, 9].map(|i| (l3 + i, 0xff)));
            v.extend((12..20).map(|i| (l3 + i, 0xff)));
        }
        NetRepr::V6 { .. } | NetRepr::V1 { .. } => {
            // The version nibble, payload length, next header, addresses.
            v.push((l3, 0xf0));
            v.extend([4, 5, 6].map(|i| (l3 + i, 0xff)));
            v.extend((8..40).map(|i| (l3 + i, 0xff)));
        }
    }
    if let Some(udp) = lay.udp {
        // Ports and length; the checksum is variant.
        v.extend((udp..udp + 6).map(|i| (i, 0xff)));
    }
    v.extend((lay.bth..frame_len).filter(|&i| i != lay.bth + 4).map(|i| (i, 0xff)));
    v
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// emit → verify → parse gives back the repr and the payload for every
    /// opcode, and re-emitting the parsed repr gives back the same bytes.
    #[test]
    fn every_opcode_round_trips(case in arb_case()) {
        for &op in Opcode::ALL {
            let (repr, payload) = build(op, &case);
            let buf = emit(&repr, &payload, 0xa5);
            let f = Frame::verify(&buf)
                .unwrap_or_else(|e| panic!("{}: emitted frame does not verify: {e}", op.name()));
            prop_assert_eq!(f.repr, expected(&repr), "{}", op.name());
            prop_assert_eq!(f.payload(), &payload[..], "{}", op.name());
            prop_assert!(f.packet.pad_bytes().iter().all(|&b| b == 0));
            prop_assert_eq!(f.packet.bth().pad, pad_for(payload.len()));
            let kind = if matches!(repr.net, NetRepr::V1 { .. }) {
                FrameKind::RoceV1
            } else {
                FrameKind::RoceV2
            };
            prop_assert_eq!(classify(&buf), kind, "{}", op.name());

            // Every byte is written by emit (two fills give the same frame) and
            // re-emitting the parse is byte-exact.
            prop_assert_eq!(&emit(&repr, &payload, 0x5a), &buf, "{}", op.name());
            let again = emit(&f.repr, f.payload(), 0x00);
            prop_assert_eq!(&again, &buf, "{}: re-emission differs", op.name());

            // The IB packet on its own.
            let ib = &buf[layout(&repr).bth..];
            let p = IbPacket::new_checked(ib).expect("IB packet");
            prop_assert_eq!(IbRepr::parse(&p), f.repr.ib);
            prop_assert_eq!(BthRepr::parse(ib), Ok(f.repr.ib.bth));
        }
    }

    /// A payload hashed where it lies, in pieces, as a sender gathers it
    /// from memory (`emit_around_payload`, then `seal`), gives the frame
    /// `emit` gives, and the headers leave the payload range alone.
    #[test]
    fn a_payload_hashed_in_pieces_gives_the_same_frame(case in arb_case(), cut in any::<Index>()) {
        for &op in Opcode::ALL {
            let (repr, payload) = build(op, &case);
            let want = emit(&repr, &payload, 0xa5);
            let mut buf = vec![0x3c; repr.buffer_len()];
            let (mut crc, sealing) = repr.emit_around_payload(&mut buf).expect("headers");
            let range = repr.payload_range();
            prop_assert!(buf[range.clone()].iter().all(|&b| b == 0x3c), "{}: payload range written", op.name());
            let at = cut.index(payload.len() + 1);
            for part in [&payload[..at], &payload[at..]] {
                crc.update(part);
            }
            buf[range].copy_from_slice(&payload);
            let n = repr.seal(sealing, &mut buf, crc).expect("seal");
            prop_assert_eq!(n, want.len());
            prop_assert_eq!(&buf, &want, "{}", op.name());
        }
    }

    /// Reserved bits a sender leaves zero are kept by the parser, so a packet
    /// that has them set still re-emits byte-exactly.
    #[test]
    fn reserved_bits_survive_a_round_trip(case in arb_case_with(true), op in prop::sample::select(Opcode::ALL)) {
        let (repr, payload) = build(op, &case);
        let buf = emit(&repr, &payload, 0xa5);
        let f = Frame::verify(&buf).expect("verifies");
        prop_assert_eq!(f.repr, expected(&repr));
        prop_assert_eq!(&emit(&f.repr, f.payload(), 0), &buf);
    }

    /// No byte string makes any parser or accessor panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        poke_everything(&bytes);
        // Also every suffix a layer boundary could leave (BTH after Ethernet+IPv4+UDP,
        // after a VLAN tag, after IPv6/GRH).
        for skip in [14usize, 18, 42, 46, 54, 58, 62, 66] {
            if let Some(rest) = bytes.get(skip..) {
                poke_everything(rest);
            }
        }
    }

    /// Arbitrary bytes behind a valid-looking header stack: reaches the IB
    /// parser far more often than fully random bytes.
    #[test]
    fn valid_headers_with_garbage_ib_never_panic(
        case in arb_case(),
        op in prop::sample::select(Opcode::ALL),
        ib in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let (repr, payload) = build(op, &case);
        let mut buf = emit(&repr, &payload, 0);
        let lay = layout(&repr);
        let n = buf.len().min(lay.bth + ib.len());
        buf[lay.bth..n].copy_from_slice(&ib[..n - lay.bth]);
        poke_everything(&buf);
        poke_everything(&buf[lay.bth..]);
    }

    /// Random edits of a valid frame never panic a parser; a parse that succeeds
    /// re-emits consistently; and a frame that still verifies has lost nothing the
    /// ICRC protects (only variant fields, Ethernet, or trailing padding changed).
    #[test]
    fn mutated_frames_never_panic_and_never_verify_wrongly(
        case in arb_case(),
        op in prop::sample::select(Opcode::ALL),
        muts in prop::collection::vec(arb_mutation(), 1..8),
    ) {
        let (repr, payload) = build(op, &case);
        let orig = emit(&repr, &payload, 0);
        let mut buf = orig.clone();
        for m in &muts {
            apply(&mut buf, m);
        }
        poke_everything(&buf);
        if let Ok(f) = Frame::verify(&buf) {
            prop_assert_eq!(invariant_view(&f.repr), invariant_view(&expected(&repr)));
            prop_assert_eq!(f.payload(), &payload[..]);
        }
    }

    /// Any single-byte change to a byte the ICRC protects (from the inner
    /// EtherType onwards, except the variant fields) makes `verify` fail.
    #[test]
    fn any_invariant_byte_change_fails_verification(
        case in arb_case(),
        op in prop::sample::select(Opcode::ALL),
        which in any::<Index>(),
        delta in 1u8..=255,
    ) {
        let (repr, payload) = build(op, &case);
        let orig = emit(&repr, &payload, 0);
        let bytes = invariant_bytes(&repr, orig.len());
        let (i, mask) = bytes[which.index(bytes.len())];
        let d = if delta & mask == 0 { mask } else { delta & mask };
        let mut buf = orig.clone();
        buf[i] ^= d;
        prop_assert!(Frame::verify(&buf).is_err(), "byte {} ^ {:#04x} still verifies", i, d);
    }

    /// Every IB byte after the BTH's byte 4, the ICRC included, is checked —
    /// exhaustively over positions for one frame per case.
    #[test]
    fn every_ib_byte_is_covered(case in arb_case(), op in prop::sample::select(Opcode::ALL), delta in 1u8..=255) {
        let (repr, payload) = build(op, &case);
        let orig = emit(&repr, &payload, 0);
        let bth = layout(&repr).bth;
        let mut buf = orig.clone();
        for i in (bth..orig.len()).filter(|&i| i != bth + 4) {
            buf[i] ^= delta;
            prop_assert!(Frame::verify(&buf).is_err(), "IB byte {} ^ {:#04x} still verifies", i - bth, delta);
            buf[i] ^= delta;
        }
    }

    /// Rewriting what the ICRC leaves out — Ethernet addresses and VLAN tag, IPv4
    /// TOS and TTL, IPv6/GRH traffic class, flow label and hop limit, BTH byte 4
    /// (FECN/BECN) — with the IP and UDP checksums refreshed as a router would,
    /// keeps the frame valid, and the parse shows the new values.
    #[test]
    fn variant_fields_do_not_affect_the_icrc(
        case in arb_case(),
        op in prop::sample::select(Opcode::ALL),
        eth in any::<[u8; 12]>(),
        tci in any::<[u8; 2]>(),
        l3 in any::<[u8; 5]>(),
        byte4 in any::<u8>(),
    ) {
        let (repr, payload) = build(op, &case);
        let mut buf = emit(&repr, &payload, 0);
        let lay = layout(&repr);
        buf[..12].copy_from_slice(&eth);
        if repr.eth.vlan.is_some() {
            buf[14..16].copy_from_slice(&tci);
        }
        let o = lay.l3;
        match repr.net {
            NetRepr::V4 { .. } => {
                buf[o + 1] = l3[0];
                buf[o + 8] = l3[1];
            }
            NetRepr::V6 { .. } | NetRepr::V1 { .. } => {
                buf[o] = 0x60 | (l3[0] & 0x0f);
                buf[o + 1..o + 4].copy_from_slice(&l3[1..4]);
                buf[o + 7] = l3[4];
            }
        }
        buf[lay.bth + 4] = byte4;
        refresh_checksums(&mut buf, &repr);
        let f = Frame::verify(&buf).expect("still verifies");
        prop_assert_eq!(invariant_view(&f.repr), invariant_view(&expected(&repr)));
        prop_assert_eq!(f.payload(), &payload[..]);
        prop_assert_eq!(f.repr.eth.dst.0, <[u8; 6]>::try_from(&eth[..6]).unwrap());
        prop_assert_eq!(f.repr.ib.bth.fecn, byte4 & 0x80 != 0);
        prop_assert_eq!(f.repr.ib.bth.becn, byte4 & 0x40 != 0);
        prop_assert_eq!(f.repr.ib.bth.resv6, byte4 & 0x3f);
        match f.repr.net {
            NetRepr::V4 { ip, .. } => {
                prop_assert_eq!((ip.dscp << 2) | ip.ecn, l3[0]);
                prop_assert_eq!(ip.ttl, l3[1]);
            }
            NetRepr::V6 { ip, .. } => prop_assert_eq!(ip.hop_limit, l3[4]),
            NetRepr::V1 { grh } => prop_assert_eq!(grh.hop_limit, l3[4]),
        }
    }

    /// A strict truncation never verifies; bytes appended after the frame are
    /// Ethernet padding and change nothing.
    #[test]
    fn truncation_fails_and_trailing_padding_is_ignored(
        case in arb_case(),
        op in prop::sample::select(Opcode::ALL),
        cut in any::<Index>(),
        tail in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let (repr, payload) = build(op, &case);
        let orig = emit(&repr, &payload, 0);
        let short = &orig[..cut.index(orig.len())];
        prop_assert!(Frame::parse(short).is_err());
        let mut long = orig.clone();
        long.extend_from_slice(&tail);
        let f = Frame::verify(&long).expect("padded frame verifies");
        prop_assert_eq!(f.repr, expected(&repr));
        prop_assert_eq!(f.payload(), &payload[..]);
    }
}
