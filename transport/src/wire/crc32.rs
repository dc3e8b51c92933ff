//! CRC-32 (IEEE 802.3: reflected, polynomial 0x04C11DB7, initial ~0, final
//! inversion) by table lookup, sixteen bytes a step ("slicing-by-16").
//!
//! crc32fast folds with PCLMULQDQ where the CPU has it, which is far faster
//! on real CPUs. This exists for CPUs where that instruction is slow: under
//! QEMU's TCG emulation (the kernel-rxe guest of docs/benchmarks.md) each
//! PCLMULQDQ is a helper call and the table is twice as fast. Which one runs
//! is [`super::icrc::set_engine`]'s choice; the bytes are the same.

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

/// Folds 16 bytes into the running (inverted) CRC `c`. The lookups of bytes
/// 4..16 do not depend on `c` and are XORed first; those of the first word,
/// which wait for the previous block, come last, so the chain that carries
/// `c` from block to block is one load and four XORs long (XORed the other
/// way round, this ran at half the speed).
#[inline(always)]
fn fold16(c: u32, ch: &[u8]) -> u32 {
    let t = &TABLES;
    let rest = t[0][ch[15] as usize]
        ^ t[1][ch[14] as usize]
        ^ t[2][ch[13] as usize]
        ^ t[3][ch[12] as usize]
        ^ t[4][ch[11] as usize]
        ^ t[5][ch[10] as usize]
        ^ t[6][ch[9] as usize]
        ^ t[7][ch[8] as usize]
        ^ t[8][ch[7] as usize]
        ^ t[9][ch[6] as usize]
        ^ t[10][ch[5] as usize]
        ^ t[11][ch[4] as usize];
    let a = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
    rest ^ t[12][(a >> 24) as usize]
        ^ t[13][((a >> 16) & 0xff) as usize]
        ^ t[14][((a >> 8) & 0xff) as usize]
        ^ t[15][(a & 0xff) as usize]
}

/// Continues the CRC `crc` (a finished CRC-32, 0 to start) over `data`,
/// as `crc32fast::Hasher` does across `update` calls.
#[allow(unsafe_code)] // code placement only: crate::code_page
#[cfg_attr(all(target_os = "linux", target_arch = "x86_64"), link_section = ".text.hot.softrdma")]
pub fn update(crc: u32, mut data: &[u8]) -> u32 {
    let mut c = !crc;
    // Four blocks a turn: the loads of one block overlap the lookups of
    // the one before.
    while data.len() >= 64 {
        c = fold16(c, &data[..16]);
        c = fold16(c, &data[16..32]);
        c = fold16(c, &data[32..48]);
        c = fold16(c, &data[48..64]);
        data = &data[64..];
    }
    while data.len() >= 16 {
        c = fold16(c, &data[..16]);
        data = &data[16..];
    }
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
    }

    #[test]
    fn agrees_with_crc32fast_at_every_length_and_split() {
        let data: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(update(0, &data[..len]), crc32fast::hash(&data[..len]), "len {len}");
        }
        for split in 0..64 {
            let mut h = crc32fast::Hasher::new();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(update(update(0, &data[..split]), &data[split..]), h.finalize(), "split {split}");
        }
    }
}
