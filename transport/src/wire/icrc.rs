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

/// Computes the ICRC of a packet.
///
/// - `l3`: the IPv4 header (20 bytes), the IPv6 header or the RoCEv1 GRH (40 bytes);
/// - `udp`: the UDP header of RoCEv2, `None` for RoCEv1;
/// - `ib`: from the first byte of the BTH up to (not including) the ICRC.
///
/// Slices shorter than their header are hashed as given (the caller has
/// validated lengths; a short slice only yields a CRC that will not match).
pub fn compute(l3: &[u8], udp: Option<&[u8]>, ib: &[u8]) -> u32 {
    // The masked headers go into one buffer and one CRC update: crc32fast
    // pays a fixed cost per call, and this runs twice per packet.
    let mut hdr = [0u8; HDR_MAX];
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

    let n = ib.len().min(bth::LEN);
    hdr[at..at + n].copy_from_slice(&ib[..n]);
    ones(&mut hdr[at..at + n], 4..5); // Resv8a / FECN / BECN
    at += n;
    match engine() {
        Engine::Simd => {
            let mut h = Hasher::new();
            h.update(&hdr[..at]);
            h.update(&ib[n..]);
            h.finalize()
        }
        Engine::Table => super::crc32::update(super::crc32::update(0, &hdr[..at]), &ib[n..]),
    }
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
}
