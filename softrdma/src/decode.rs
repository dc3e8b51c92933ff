//! `softrdma decode`: one line per RoCE packet of a capture, tshark-style, with
//! the ICRC checked — a quick way to look at one's own captures.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use transport::wire::{classify, Frame, FrameKind, NetRepr, Syndrome};

use crate::capture::{read_frames, CaptureError};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub packets: usize,
    pub icrc_ok: usize,
    pub bad: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        format!("{} packets, {} icrc ok, {} bad", self.packets, self.icrc_ok, self.bad)
    }
}

/// One line describing a parsed frame (without its location prefix).
pub fn describe(f: &Frame<'_>) -> String {
    let mut s = String::new();
    match &f.repr.net {
        NetRepr::V4 { ip, udp } => {
            let _ = write!(s, "{}:{} > {}:{}", ip.src, udp.src_port, ip.dst, udp.dst_port);
        }
        NetRepr::V6 { ip, udp } => {
            let _ = write!(s, "[{}]:{} > [{}]:{}", ip.src, udp.src_port, ip.dst, udp.dst_port);
        }
        NetRepr::V1 { grh } => {
            let _ =
                write!(s, "RoCEv1 {} > {}", core::net::Ipv6Addr::from(grh.sgid), core::net::Ipv6Addr::from(grh.dgid));
        }
    }
    let b = &f.repr.ib.bth;
    let _ = write!(
        s,
        " {} qpn=0x{:06x} psn=0x{:06x} pkey=0x{:04x} ackreq={} se={} pad={}",
        b.opcode.name(),
        b.dest_qpn,
        b.psn,
        b.pkey,
        b.ack_req as u8,
        b.solicited as u8,
        b.pad
    );
    if b.fecn || b.becn {
        let _ = write!(s, " fecn={} becn={}", b.fecn as u8, b.becn as u8);
    }
    let e = &f.repr.ib.ext;
    if let Some(d) = e.deth {
        let _ = write!(s, " deth[qkey=0x{:08x} srcqp=0x{:06x}]", d.qkey, d.src_qpn);
    }
    if let Some(r) = e.reth {
        let _ = write!(s, " reth[va=0x{:016x} rkey=0x{:08x} len={}]", r.va, r.rkey, r.dma_len);
    }
    if let Some(a) = e.atomic_eth {
        let _ = write!(
            s,
            " atomiceth[va=0x{:016x} rkey=0x{:08x} swap_add=0x{:x} cmp=0x{:x}]",
            a.va, a.rkey, a.swap_add, a.compare
        );
    }
    if let Some(a) = e.aeth {
        let syn = match a.syndrome {
            Syndrome::Ack { credits } => format!("ACK credits={credits}"),
            Syndrome::RnrNak { timer } => format!("RNR-NAK timer={timer}"),
            Syndrome::Nak(code) => format!("NAK {code:?}"),
            Syndrome::Reserved(b) => format!("reserved 0x{b:02x}"),
        };
        let _ = write!(s, " aeth[{syn} msn={}]", a.msn);
    }
    if let Some(a) = e.atomic_ack_eth {
        let _ = write!(s, " atomicacketh[orig=0x{:x}]", a.orig);
    }
    if let Some(i) = e.immdt {
        let _ = write!(s, " imm=0x{:08x}", i.imm);
    }
    if let Some(i) = e.ieth {
        let _ = write!(s, " ieth[rkey=0x{:08x}]", i.rkey);
    }
    let _ = write!(s, " payload={}", f.repr.ib.payload_len);
    if f.icrc_ok() {
        let _ = write!(s, " icrc=ok");
    } else {
        let _ = write!(s, " icrc=BAD(found 0x{:08x}, want 0x{:08x})", f.packet.icrc(), f.icrc_computed);
    }
    s
}

/// Decodes one file, writing a line per RoCE packet to `out`.
pub fn decode_file(path: &Path, out: &mut dyn Write, sum: &mut Summary) -> Result<(), CaptureError> {
    let name = path.display();
    for cf in read_frames(path)? {
        if !cf.ethernet {
            continue;
        }
        let kind = classify(&cf.data);
        if !matches!(kind, FrameKind::RoceV2 | FrameKind::RoceV1) {
            continue;
        }
        sum.packets += 1;
        let line = if cf.is_truncated() {
            sum.bad += 1;
            format!("error: captured {} of {} bytes (snaplen), cannot verify", cf.data.len(), cf.original_len)
        } else {
            match Frame::parse(&cf.data) {
                Ok(f) => {
                    if f.icrc_ok() {
                        sum.icrc_ok += 1;
                    } else {
                        sum.bad += 1;
                    }
                    describe(&f)
                }
                Err(e) => {
                    sum.bad += 1;
                    format!("error: {e}")
                }
            }
        };
        writeln!(out, "{name}:{} {line}", cf.number)?;
    }
    Ok(())
}
