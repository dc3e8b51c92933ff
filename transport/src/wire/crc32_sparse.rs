//! CRC-32 of long buffers without tables: a sparse multiple of the
//! polynomial pushes each 64-bit word of the message ahead with shifts and
//! XORs, and only the last 300 bits are left for the table.
//!
//! Why: under QEMU's TCG (the kernel-rxe guest of docs/benchmarks.md)
//! every guest load pays a software TLB check, and the table CRC makes
//! 1.125 loads per byte, nine of every ten into its 16 KiB of tables. This
//! makes one load per eight bytes and otherwise only register shifts and
//! XORs, which TCG translates almost one for one. Under `qemu-x86_64 -cpu
//! max` a 1 KiB CRC takes 286 ns against the table's 827 (4 KiB: 885
//! against 3 321); natively it is also a little faster than the table
//! (186 against 230 ns per KiB), though there crc32fast's carry-less
//! folding runs at 27 and is the engine a device picks.
//!
//! The idea is Chorba's (Sam Russell, "Chorba: A novel CRC32
//! implementation", 2024): if a polynomial Q with few terms is a multiple
//! of the CRC polynomial P, then Q ≡ 0 (mod P), so a message bit at degree
//! D ≥ deg Q may be replaced by the other terms of x^(D − deg Q)·Q without
//! changing the remainder. The multiple used here was found by a
//! meet-in-the-middle search over x^i mod P (the smallest of weight five
//! whose middle terms all lie at least 64 below its top, so that a word
//! never lands in itself; none of weight four exists below degree 3 000):
//!
//!   Q = x^300 + x^155 + x^117 + x^89 + 1
//!
//! (test `the_multiple_is_one`). In the reflected bit order of this CRC
//! the first bit of the message is its highest degree, so replacing a
//! bit moves it *later* in the message, by 300 − e for each lower term
//! x^e: 145, 183, 211 and 300 bits. Word `w` of the message (bits 64w to
//! 64w + 63, little-endian) thus goes into words w+2 … w+5, and the
//! message ends in a remainder of the last 300 bits plus the 32 zero bits
//! that the CRC's x^32 appends, which the table reduces.

use super::crc32::by_table;

/// Shorter buffers go to the table: the table's 34–41-byte tail costs
/// more than the words save below this (under TCG the two cross at about
/// 128 bytes; the ICRC's headers are shorter, payloads longer).
pub const FROM: usize = 128;

/// Continues the CRC `crc` (a finished CRC-32, 0 to start) over `data`,
/// as [`super::crc32::update`] does; any length (short ones by table).
#[allow(unsafe_code)] // code placement only: crate::code_page
#[cfg_attr(all(target_os = "linux", target_arch = "x86_64"), link_section = ".text.hot.softrdma")]
pub fn update(crc: u32, data: &[u8]) -> u32 {
    let n = data.len();
    if n < FROM {
        return by_table(crc, data);
    }
    // The last word whose moved bits (at most 300 + 63 past its start)
    // stay inside the message and its 32 appended bits: 64w + 363 ≤ 8n + 31.
    let last = (8 * n - 332) / 64;
    let (words, rest) = data.split_at(8 * (last + 1));
    // s0 holds what earlier words moved into the word being read, s1..s4
    // the next four. Continuing a CRC is starting from zero with the
    // running (inverted) remainder XORed into the first four bytes.
    let (mut s0, mut s1, mut s2, mut s3, mut s4) = (u64::from(!crc), 0u64, 0u64, 0u64, 0u64);
    // Five words a turn, so that the five registers take turns by name
    // rather than by moves.
    macro_rules! push_ahead {
        ($x:expr, $s0:ident, $s1:ident, $s2:ident, $s3:ident, $s4:ident) => {
            let x = $x ^ $s0;
            $s2 ^= (x << 17) ^ (x << 55); // 145 = 2·64 + 17 and 183 = 2·64 + 55 bits on
            $s3 ^= (x >> 47) ^ (x >> 9) ^ (x << 19); // their overflow, and 211 = 3·64 + 19
            $s4 ^= (x >> 45) ^ (x << 44); // 211's overflow, 300 = 4·64 + 44
            $s0 = x >> 20; // 300's overflow, into word w+5
        };
    }
    let mut fives = words.chunks_exact(40);
    for c in &mut fives {
        push_ahead!(word(c, 0), s0, s1, s2, s3, s4);
        push_ahead!(word(c, 1), s1, s2, s3, s4, s0);
        push_ahead!(word(c, 2), s2, s3, s4, s0, s1);
        push_ahead!(word(c, 3), s3, s4, s0, s1, s2);
        push_ahead!(word(c, 4), s4, s0, s1, s2, s3);
    }
    for c in fives.remainder().chunks_exact(8) {
        push_ahead!(word(c, 0), s0, s1, s2, s3, s4);
        (s0, s1, s2, s3, s4) = (s1, s2, s3, s4, s0);
    }
    // The remainder: the last 34–41 message bytes and the 32 appended
    // bits, with what was moved into them.
    let m = rest.len();
    let mut tail = [0u8; 48];
    tail[..32].copy_from_slice(&rest[..32]);
    for (t, r) in tail[32..m].iter_mut().zip(&rest[32..]) {
        *t = *r; // 2–9 bytes: a call of memcpy costs more under TCG
    }
    for (i, s) in [s0, s1, s2, s3, s4].into_iter().enumerate() {
        let w = word(&tail, i) ^ s;
        tail[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    // The table gives the message part times x^32 mod P; the appended
    // bits are already below x^32 and are added as they are.
    let appended = u32::from_le_bytes([tail[m], tail[m + 1], tail[m + 2], tail[m + 3]]);
    !(!by_table(!0, &tail[..m]) ^ appended)
}

/// Little-endian word `i` of `b` (the caller's slice holds it).
#[inline(always)]
fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[8 * i..8 * i + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// x^e mod P, P = x^32 + 0x04C11DB7 (unreflected).
    fn x_pow_mod(e: u32) -> u32 {
        let mut r: u64 = 1;
        for _ in 0..e {
            r <<= 1;
            if r >> 32 != 0 {
                r ^= 0x1_04C1_1DB7;
            }
        }
        r as u32
    }

    #[test]
    fn the_multiple_is_one() {
        // Q = x^300 + x^155 + x^117 + x^89 + 1 ≡ 0 (mod P)
        let q = [300, 155, 117, 89, 0].into_iter().fold(0, |acc, e| acc ^ x_pow_mod(e));
        assert_eq!(q, 0);
        // and a near miss is not: the test can fail
        assert_ne!([300, 155, 117, 88, 0].into_iter().fold(0, |acc, e| acc ^ x_pow_mod(e)), 0);
    }

    #[test]
    fn agrees_with_crc32fast_at_every_length_from_empty_to_a_jumbo_frame() {
        let data: Vec<u8> = (0..9100u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in (0..600).chain((600..data.len()).step_by(97)).chain([data.len()]) {
            assert_eq!(update(0, &data[..len]), crc32fast::hash(&data[..len]), "len {len}");
        }
    }

    proptest! {
        #[test]
        fn continues_any_crc_as_crc32fast_does(init: u32, data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut h = crc32fast::Hasher::new_with_initial(init);
            h.update(&data);
            prop_assert_eq!(update(init, &data), h.finalize());
        }
    }
}
