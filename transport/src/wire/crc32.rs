//! CRC-32 (IEEE 802.3: reflected, polynomial 0x04C11DB7, initial ~0, final
//! inversion) in software: buffers of [`super::crc32_sparse::FROM`] bytes
//! or more by the sparse multiple of `crc32_sparse`, shorter ones and that
//! one's tail by table lookup, sixteen bytes a step ("slicing-by-16").
//!
//! crc32fast folds with PCLMULQDQ where the CPU has it, which is far faster
//! on real CPUs. This exists for CPUs where that instruction is slow: under
//! QEMU's TCG emulation (the kernel-rxe guest of docs/benchmarks.md) each
//! PCLMULQDQ is a helper call and the table alone was twice as fast. Which
//! one runs is [`super::icrc::set_engine`]'s choice; the bytes are the same.
//!
//! Bigger tables did not pay under TCG: 12-bit indices (eight lookups per
//! twelve bytes, 128 KiB of tables) ran 12 % faster alone in the guest but
//! made `write_bw` 9 % slower there, the tables crowding the emulated TLB;
//! 16-bit indices (1 MiB) were slower even alone.

/// `TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes.
static TABLES: [[u32; 256]; 16] = make_tables();

const fn make_tables() -> [[u32; 256]; 16] {
    let mut t = [[0u32; 256]; 16];
    let mut b = 0;
    while b < 256 {
        let mut c = b as u32;
        let mut i = 0;
        while i < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            i += 1;
        }
        t[0][b] = c;
        b += 1;
    }
    let mut k = 1;
    while k < 16 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            b += 1;
        }
        k += 1;
    }
    t
}

/// Folds 16 bytes into the running (inverted) CRC `c`. Byte `i` of the
/// block is looked up in `TABLES[15 - i]`. The bytes come out of two 64-bit
/// loads by shifts: under TCG every guest load pays a software TLB check,
/// and byte-by-byte loads made this 10 % slower there (natively the SIMD
/// engine runs instead). The lookups of the second word do not depend on
/// `c` and are XORed first, so the chain that carries `c` from block to
/// block is one load and a few XORs long.
#[inline(always)]
fn fold16(c: u32, ch: &[u8; 16]) -> u32 {
    let (lo, hi) = ch.split_at(8);
    let hi = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
    let lo = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])) ^ u64::from(c);
    let rest = word(hi, 7);
    rest ^ word(lo, 15)
}

/// The lookups of the eight bytes of `w`, byte `i` in `TABLES[top - i]`,
/// XORed together.
#[inline(always)]
fn word(w: u64, top: usize) -> u32 {
    (0..8).fold(0, |acc, i| acc ^ TABLES[top - i][((w >> (8 * i)) & 0xff) as usize])
}

/// A 16-byte chunk as an array (`chunks_exact` guarantees the length).
#[inline(always)]
fn split16(b: &[u8]) -> &[u8; 16] {
    b.try_into().unwrap_or(&[0; 16])
}

/// Continues the CRC `crc` (a finished CRC-32, 0 to start) over `data`,
/// as `crc32fast::Hasher` does across `update` calls.
#[inline]
pub fn update(crc: u32, data: &[u8]) -> u32 {
    super::crc32_sparse::update(crc, data)
}

/// [`update`] by table lookup alone.
#[allow(unsafe_code)] // code placement only: crate::code_page
#[cfg_attr(all(target_os = "linux", target_arch = "x86_64"), link_section = ".text.hot.softrdma")]
pub fn by_table(crc: u32, mut data: &[u8]) -> u32 {
    let mut c = !crc;
    // Four blocks a turn: the loads of one block overlap the lookups of
    // the one before.
    let mut blocks = data.chunks_exact(64);
    for b in &mut blocks {
        let (b0, b1, b2, b3) = (split16(&b[..16]), split16(&b[16..32]), split16(&b[32..48]), split16(&b[48..]));
        c = fold16(fold16(fold16(fold16(c, b0), b1), b2), b3);
    }
    data = blocks.remainder();
    let mut sixteens = data.chunks_exact(16);
    for b in &mut sixteens {
        c = fold16(c, split16(b));
    }
    data = sixteens.remainder();
    for &b in data {
        c = (c >> 8) ^ TABLES[0][((c ^ b as u32) & 0xff) as usize];
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_catalogue() {
        // "123456789" -> 0xCBF43926 (the CRC-32/ISO-HDLC check value).
        assert_eq!(update(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(update(0, b""), 0);
        assert_eq!(by_table(0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn agrees_with_crc32fast_at_every_length_and_split() {
        let data: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(update(0, &data[..len]), crc32fast::hash(&data[..len]), "len {len}");
            assert_eq!(by_table(0, &data[..len]), crc32fast::hash(&data[..len]), "len {len}");
        }
        for split in 0..64 {
            let mut h = crc32fast::Hasher::new();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(update(update(0, &data[..split]), &data[split..]), h.finalize(), "split {split}");
        }
    }
}
