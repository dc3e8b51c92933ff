//! Invariant CRC, IBTA Vol 1 §7.8.1 as RoCE redefines it (Annex A16.8 for the
//! GRH of RoCEv1, Annex A17.8 for the IP/UDP headers of RoCEv2).
//!
//! > "The ICRC is calculated over the IP header, UDP header and IBA transport
//! > headers and payload, with the variant fields replaced by ones" — and the
//! > 8 bytes an InfiniBand LRH would occupy, also taken as all ones.
//!
//! Variant fields set to ones (kernel rxe's `rxe_icrc_hdr` agrees):
//! - IPv4: Type of Service, Time to Live, Header Checksum;
//! - IPv6 / GRH: Traffic Class, Flow Label, Hop Limit;
//! - UDP: Checksum;
//! - BTH: byte 4 (Resv8a, where RoCEv2 keeps FECN/BECN).
//!
//! The CRC is the Ethernet CRC-32 (reflected, polynomial 0x04C11DB7, initial
//! ~0, final inversion) and is stored least-significant byte first. crc32fast
//! computes exactly this CRC, with SIMD folding where the CPU has it; where
//! that is slow (an emulated CPU), [`Engine::Table`] computes it by table.

use core::sync::atomic::{AtomicU8, Ordering};

use crc32fast::Hasher;

use super::bth;

pub const LEN: usize = 4;

const LRH_STANDIN: [u8; 8] = [0xff; 8];
const MAX_L3: usize = 40;
/// LRH stand-in, the largest L3 header, UDP and BTH.
const HDR_MAX: usize = 8 + MAX_L3 + 8 + bth::LEN;
/// What follows the BTH that [`start`] hashes with the masked headers in
/// one update rather than two (a request's extension headers, up to
/// DETH + JKETH + AtomicETH + ImmDt, say; a sender hashes its payload
/// separately).
const REST_MERGED: usize = 48;

/// Computes the ICRC of a packet.
///
/// - `l3`: the IPv4 header (20 bytes), the IPv6 header or the RoCEv1 GRH (40 bytes);
/// - `udp`: the UDP header of RoCEv2, `None` for RoCEv1;
/// - `ib`: from the first byte of the BTH up to (not including) the ICRC.
///
/// Slices shorter than their header are hashed as given (the caller has
/// validated lengths; a short slice only yields a CRC that will not match).
#[allow(unsafe_code)] // code placement only: crate::code_page
#[cfg_attr(all(target_os = "linux", target_arch = "x86_64"), link_section = ".text.hot.softrdma")]
pub fn compute(l3: &[u8], udp: Option<&[u8]>, ib: &[u8]) -> u32 {
    start(l3, udp, ib).finish()
}

/// An ICRC computed piece by piece, in packet order: [`start`] hashes the
/// headers, then [`Running::update`] the rest. A sender that gathers a
/// payload from memory hashes it there, as it copies it
/// (`Memory::read_hashed`): hashing the copy would read lines the copy has
/// just written, and where those were last read by another CPU (a fabric
/// frame buffer back from its receiver) the reads wait for every store to
/// finish claiming its line.
pub struct Running(State);

enum State {
    Simd(Hasher),
    Table(u32),
}

impl Running {
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        // An empty update still costs crc32fast its per-call work.
        if data.is_empty() {
            return;
        }
        match &mut self.0 {
            State::Simd(h) => h.update(data),
            State::Table(c) => *c = super::crc32::update(*c, data),
        }
    }

    /// `update` with `src`, copied into `dst` (as long) in the same pass
    /// where the CPU can ([`super::icrc_copy`]); hashing the copy after
    /// copying would read every byte twice.
    pub fn update_copy(&mut self, src: &[u8], dst: &mut [u8]) {
        let n = src.len().min(dst.len());
        let (src, dst) = (&src[..n], &mut dst[..n]);
        match &mut self.0 {
            State::Simd(h) => {
                let crc = super::icrc_copy::copy_and_hash(h.clone().finalize(), src, dst);
                *h = Hasher::new_with_initial(crc);
            }
            State::Table(c) => {
                dst.copy_from_slice(src);
                *c = super::crc32::update(*c, dst);
            }
        }
    }

    #[inline]
    pub fn finish(self) -> u32 {
        match self.0 {
            State::Simd(h) => h.finalize(),
            State::Table(c) => c,
        }
    }
}

/// Starts the ICRC of a packet: the headers with their variant fields
/// masked, then all of `ib` (which begins with the BTH). Arguments as for
/// [`compute`].
#[allow(unsafe_code)] // code placement only: crate::code_page
#[cfg_attr(all(target_os = "linux", target_arch = "x86_64"), link_section = ".text.hot.softrdma")]
#[inline]
pub fn start(l3: &[u8], udp: Option<&[u8]>, ib: &[u8]) -> Running {
    // The masked headers go into one buffer and one CRC update: crc32fast
    // pays a fixed cost per call, and this runs twice per packet. The usual
    // header sizes get their own calls of `masked_headers` so that, inlined,
    // every copy has a constant length and compiles to moves rather than
    // calls of memcpy (calls and returns through the GOT are what costs
    // under QEMU's TCG; crate::code_page).
    let mut hdr = [0u8; HDR_MAX + REST_MERGED];
    let n = ib.len().min(bth::LEN);
    let at = match (l3.len(), udp.map(<[u8]>::len)) {
        (20, Some(8)) if n == bth::LEN => masked_headers(&mut hdr, &l3[..20], udp.map(|u| &u[..8]), &ib[..bth::LEN]),
        (40, Some(8)) if n == bth::LEN => masked_headers(&mut hdr, &l3[..40], udp.map(|u| &u[..8]), &ib[..bth::LEN]),
        (40, None) if n == bth::LEN => masked_headers(&mut hdr, &l3[..40], None, &ib[..bth::LEN]),
        _ => masked_headers(&mut hdr, l3, udp, &ib[..n]),
    };
    let rest = &ib[n..];
    let merged = rest.len() <= REST_MERGED;
    let mut at = at;
    if merged {
        hdr[at..at + rest.len()].copy_from_slice(rest);
        at += rest.len();
    }
    let mut r = match engine() {
        Engine::Simd => {
            let mut h = Hasher::new();
            h.update(&hdr[..at]);
            Running(State::Simd(h))
        }
        Engine::Table => Running(State::Table(super::crc32::update(0, &hdr[..at]))),
    };
    if !merged {
        r.update(rest);
    }
    r
}

/// Writes the LRH stand-in and the headers, variant fields set to ones, into
/// `hdr`; returns how many bytes it wrote.
#[inline(always)]
fn masked_headers(hdr: &mut [u8; HDR_MAX + REST_MERGED], l3: &[u8], udp: Option<&[u8]>, bth: &[u8]) -> usize {
    hdr[..8].copy_from_slice(&LRH_STANDIN);
    let mut at = 8;
    let n = l3.len().min(MAX_L3);
    hdr[at..at + n].copy_from_slice(&l3[..n]);
    let ip = &mut hdr[at..at + n];
    at += n;
    let version = ip.first().map_or(0, |b| b >> 4);
    let ones = |b: &mut [u8], idx: core::ops::Range<usize>| {
        for i in idx {
            if let Some(x) = b.get_mut(i) {
                *x = 0xff;
            }
        }
    };
    if version == 4 {
        ones(ip, 1..2); // Type of Service
        ones(ip, 8..9); // Time to Live
        ones(ip, 10..12); // Header Checksum
    } else {
        if let Some(b0) = ip.get_mut(0) {
            *b0 |= 0x0f; // high nibble of Traffic Class
        }
        ones(ip, 1..4); // rest of Traffic Class, Flow Label
        ones(ip, 7..8); // Hop Limit
    }

    if let Some(udp) = udp {
        let n = udp.len().min(8);
        hdr[at..at + n].copy_from_slice(&udp[..n]);
        ones(&mut hdr[at..at + n], 6..8); // Checksum
        at += n;
    }

    let n = bth.len();
    hdr[at..at + n].copy_from_slice(bth);
    ones(&mut hdr[at..at + n], 4..5); // Resv8a / FECN / BECN
    at + n
}

/// How the CRC is computed; both give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// crc32fast: PCLMULQDQ/AVX folding where the CPU has it (the default).
    Simd,
    /// Table lookup (`wire::crc32`): for CPUs whose carry-less multiply is
    /// slow, such as QEMU's TCG.
    Table,
}

static ENGINE: AtomicU8 = AtomicU8::new(0);

/// Chooses the CRC engine for the whole process (a device measures both once
/// and picks the faster; see `softrdma::icrc_engine`).
pub fn set_engine(e: Engine) {
    ENGINE.store(e as u8, Ordering::Relaxed);
}

pub fn engine() -> Engine {
    if ENGINE.load(Ordering::Relaxed) == Engine::Table as u8 {
        Engine::Table
    } else {
        Engine::Simd
    }
}

/// Reads the ICRC trailer (little-endian, as rxe and hardware store it).
pub fn read(trailer: [u8; 4]) -> u32 {
    u32::from_le_bytes(trailer)
}

pub fn write(icrc: u32) -> [u8; 4] {
    icrc.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first RDMA WRITE ONLY of rc-write-64.pcap (kernel rxe), IP header onwards.
    const RXE_FRAME: &str = "4500007cd0b340004011550d0a4d000b0a4d000cc12112b7006800000a00ffff0000001180d2541a00005632b82880000000022000000040a9eb7daa811246b1fc09b4e2bc6ef75dd43640dbfb278c4eebf33b4d341ae9dd0666878778ce3974d7ed56935c4df03083300c7e5798cc428b0890bf22799c28941d377b";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn matches_kernel_rxe_icrc() {
        let f = hex(RXE_FRAME);
        let (ip, rest) = f.split_at(20);
        let (udp, ib) = rest.split_at(8);
        let (body, trailer) = ib.split_at(ib.len() - 4);
        let found = read(trailer.try_into().unwrap());
        assert_eq!(compute(ip, Some(udp), body), found);
    }

    #[test]
    fn both_engines_compute_kernel_rxes_icrc() {
        let f = hex(RXE_FRAME);
        let found = read(f[f.len() - 4..].try_into().unwrap());
        let body = &f[28..f.len() - 4];
        // The engine is process-wide; other tests in this process compute
        // ICRCs meanwhile, which is fine: both engines give the same bytes.
        for e in [Engine::Table, Engine::Simd] {
            set_engine(e);
            assert_eq!(engine(), e);
            assert_eq!(compute(&f[..20], Some(&f[20..28]), body), found, "{e:?}");
        }
    }

    #[test]
    fn variant_fields_do_not_change_it_and_invariant_ones_do() {
        let f = hex(RXE_FRAME);
        let base = compute(&f[..20], Some(&f[20..28]), &f[28..f.len() - 4]);
        for (i, variant) in [
            (1usize, true),
            (8, true),
            (10, true),
            (11, true),
            (26, true),
            (27, true),
            (32, true),
            (9, false),
            (12, false),
            (24, false),
            (28, false),
            (40, false),
        ] {
            let mut g = f.clone();
            g[i] ^= 0x5a;
            let c = compute(&g[..20], Some(&g[20..28]), &g[28..g.len() - 4]);
            assert_eq!(c == base, variant, "byte {i}");
        }
    }

    /// The ICRC spelled out once more, slowly: the masked copy of every
    /// header after eight bytes of ones, then the payload, through crc32fast.
    fn reference(l3: &[u8], udp: Option<&[u8]>, ib: &[u8]) -> u32 {
        let mut m = vec![0xffu8; 8];
        let mut ip = l3.to_vec();
        if ip.first().map_or(0, |b| b >> 4) == 4 {
            for i in [1, 8, 10, 11] {
                if let Some(b) = ip.get_mut(i) {
                    *b = 0xff;
                }
            }
        } else {
            if let Some(b) = ip.get_mut(0) {
                *b |= 0x0f;
            }
            for i in [1, 2, 3, 7] {
                if let Some(b) = ip.get_mut(i) {
                    *b = 0xff;
                }
            }
        }
        m.extend_from_slice(&ip);
        if let Some(u) = udp {
            let mut u = u.to_vec();
            for i in [6, 7] {
                if let Some(b) = u.get_mut(i) {
                    *b = 0xff;
                }
            }
            m.extend_from_slice(&u);
        }
        let mut ib = ib.to_vec();
        if let Some(b) = ib.get_mut(4) {
            *b = 0xff;
        }
        m.extend_from_slice(&ib);
        crc32fast::hash(&m)
    }

    #[test]
    fn every_header_shape_agrees_with_the_spelled_out_icrc() {
        // IPv4 and IPv6 with UDP, the GRH of RoCEv1 without, and the odd
        // lengths that take the general path (short headers, short BTH).
        let bytes: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let v4 = |n: usize| {
            let mut v = bytes[..n].to_vec();
            if let Some(b) = v.first_mut() {
                *b = 0x45;
            }
            v
        };
        let v6 = |n: usize| {
            let mut v = bytes[..n].to_vec();
            if let Some(b) = v.first_mut() {
                *b = 0x6a;
            }
            v
        };
        let udp = &bytes[100..108];
        for ib_len in [0, 5, 11, 12, 13, 40, 76] {
            let ib = &bytes[110..110 + ib_len];
            for (l3, u) in [
                (v4(20), Some(udp)),
                (v6(40), Some(udp)),
                (v6(40), None),
                (v4(12), Some(udp)),
                (v4(20), Some(&udp[..5])),
                (v6(33), None),
                (v4(20), None),
            ] {
                assert_eq!(
                    compute(&l3, u, ib),
                    reference(&l3, u, ib),
                    "l3 {} udp {:?} ib {ib_len}",
                    l3.len(),
                    u.map(<[u8]>::len)
                );
            }
        }
    }
}
