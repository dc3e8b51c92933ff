//! Copying bytes and hashing them into a CRC in one pass.
//!
//! A receiver that copies a payload into a frame and then checks the
//! frame's ICRC reads the payload twice: once from where it came (on the
//! in-memory fabric, lines another CPU holds) and once from the copy. The
//! CRC's carry-less multiplies and the copy's loads and stores use
//! different units, so done together they cost about what the CRC costs
//! alone (docs/benchmarks-history.md, "What stop 27 changed").
//!
//! The folding is the one of Intel's "Fast CRC Computation for Generic
//! Polynomials Using PCLMULQDQ Instruction" (2009): eight 128-bit lanes
//! wide on 256-bit VPCLMULQDQ, as crc32fast folds, or sixteen on 512-bit
//! VPCLMULQDQ where the CPU has AVX-512 (there crc32fast's own fold is as
//! wide, and a 256-bit fused pass was slower than copying and then
//! hashing: docs/benchmarks-history.md, "What stop 28 changed"). Its constants are
//! derived here from the polynomial rather than written down. The last
//! block of folded state is congruent, modulo the polynomial, to all the
//! bytes folded into it, so crc32fast finishes the CRC over it and the
//! tail: no reduction code of our own.

use crc32fast::Hasher;

/// Hashes `src` into the CRC-32 `crc` (a crc32fast value: the CRC of the
/// bytes so far) while copying it into `dst`, which must be as long;
/// returns the CRC of the bytes so far and `src`.
pub fn copy_and_hash(crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    #[cfg(target_arch = "x86_64")]
    if n >= FOLD_FROM {
        if let Some(width) = fold::widest() {
            return fold::copy_and_hash(width, crc, src, dst);
        }
    }
    dst.copy_from_slice(src);
    // The copy's lines are this CPU's now; `src`'s may not be.
    let mut h = Hasher::new_with_initial(crc);
    h.update(dst);
    h.finalize()
}

/// Below this the copy and crc32fast's own folding are as fast: the fold
/// needs two blocks to pay for its final hash of one.
const FOLD_FROM: usize = 512;

/// `x^n mod P(x)` for the CRC-32 polynomial, bit-reflected and shifted
/// left by one: the form a reflected CRC's fold multiplies by.
const fn fold_constant(n: u32) -> u64 {
    const P: u64 = 0x1_04C1_1DB7;
    let mut r: u64 = 1;
    let mut i = 0;
    while i < n {
        r <<= 1;
        if r & (1 << 32) != 0 {
            r ^= P;
        }
        i += 1;
    }
    ((r as u32).reverse_bits() as u64) << 1
}

/// Folding a 128-bit lane forward by 1024 bits (eight lanes, one 128-byte
/// block): its low half is multiplied by `x^(1024+32)`, its high half by
/// `x^(1024-32)`.
const K_LOW: u64 = fold_constant(1024 + 32);
const K_HIGH: u64 = fold_constant(1024 - 32);
/// The same for sixteen lanes (one 256-byte block, 2048 bits).
const K512_LOW: u64 = fold_constant(2048 + 32);
const K512_HIGH: u64 = fold_constant(2048 - 32);

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // SIMD intrinsics, behind a run-time check of the CPU's features
mod fold {
    use core::arch::x86_64::*;
    use crc32fast::Hasher;

    /// How wide a fold the CPU can run.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Width {
        /// 256-bit VPCLMULQDQ, 128-byte blocks.
        Avx2,
        /// 512-bit VPCLMULQDQ, 256-byte blocks.
        Avx512,
    }

    pub(super) fn available(width: Width) -> bool {
        let base = std::is_x86_feature_detected!("vpclmulqdq") && std::is_x86_feature_detected!("pclmulqdq");
        base && match width {
            Width::Avx2 => std::is_x86_feature_detected!("avx2"),
            Width::Avx512 => std::is_x86_feature_detected!("avx512f"),
        }
    }

    pub(super) fn widest() -> Option<Width> {
        [Width::Avx512, Width::Avx2].into_iter().find(|&w| available(w))
    }

    /// `super::copy_and_hash` for `src.len() == dst.len() >= 256`, with
    /// `width` `available`.
    pub(super) fn copy_and_hash(width: Width, crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
        assert!(src.len() == dst.len() && src.len() >= 256 && available(width));
        // SAFETY: the features each fold is compiled for were checked just
        // above; the lengths are as the folds need them.
        unsafe {
            match width {
                Width::Avx2 => fold256(crc, src, dst),
                Width::Avx512 => fold512(crc, src, dst),
            }
        }
    }

    /// Loads 32 bytes at `src[at..]`, stores them at `dst[at..]` and returns them.
    ///
    /// SAFETY: `at + 32` is within both slices, and the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn carry(src: &[u8], dst: &mut [u8], at: usize) -> __m256i {
        debug_assert!(at + 32 <= src.len() && at + 32 <= dst.len());
        let v = _mm256_loadu_si256(src.as_ptr().add(at).cast());
        _mm256_storeu_si256(dst.as_mut_ptr().add(at).cast(), v);
        v
    }

    /// Two 128-bit lanes folded forward by one block, and `next` added.
    #[inline]
    #[target_feature(enable = "avx2", enable = "vpclmulqdq")]
    unsafe fn fold_into(x: __m256i, k: __m256i, next: __m256i) -> __m256i {
        let lo = _mm256_clmulepi64_epi128(x, k, 0x00);
        let hi = _mm256_clmulepi64_epi128(x, k, 0x11);
        _mm256_xor_si256(_mm256_xor_si256(lo, hi), next)
    }

    /// SAFETY: the CPU has AVX2, VPCLMULQDQ and PCLMULQDQ;
    /// `src.len() == dst.len() >= 128`.
    #[target_feature(enable = "avx2", enable = "vpclmulqdq", enable = "pclmulqdq")]
    unsafe fn fold256(crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
        let blocks = src.len() / 128;
        let mut x0 = carry(src, dst, 0);
        let mut x1 = carry(src, dst, 32);
        let mut x2 = carry(src, dst, 64);
        let mut x3 = carry(src, dst, 96);
        // The CRC so far enters as its register (the value inverted), added
        // to the first four bytes.
        x0 = _mm256_xor_si256(x0, _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, !crc as i32));
        let k = _mm256_set_epi64x(super::K_HIGH as i64, super::K_LOW as i64, super::K_HIGH as i64, super::K_LOW as i64);
        for b in 1..blocks {
            let at = b * 128;
            x0 = fold_into(x0, k, carry(src, dst, at));
            x1 = fold_into(x1, k, carry(src, dst, at + 32));
            x2 = fold_into(x2, k, carry(src, dst, at + 64));
            x3 = fold_into(x3, k, carry(src, dst, at + 96));
        }
        let mut state = [0u8; 128];
        for (i, x) in [x0, x1, x2, x3].into_iter().enumerate() {
            _mm256_storeu_si256(state.as_mut_ptr().add(32 * i).cast(), x);
        }
        finish(&state, src, dst, blocks * 128)
    }

    /// `carry` for 64 bytes.
    ///
    /// SAFETY: `at + 64` is within both slices, and the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn carry512(src: &[u8], dst: &mut [u8], at: usize) -> __m512i {
        debug_assert!(at + 64 <= src.len() && at + 64 <= dst.len());
        let v = _mm512_loadu_si512(src.as_ptr().add(at).cast());
        _mm512_storeu_si512(dst.as_mut_ptr().add(at).cast(), v);
        v
    }

    /// `fold_into` for four lanes; one three-way XOR adds the halves and `next`.
    #[inline]
    #[target_feature(enable = "avx512f", enable = "vpclmulqdq")]
    unsafe fn fold_into512(x: __m512i, k: __m512i, next: __m512i) -> __m512i {
        let lo = _mm512_clmulepi64_epi128(x, k, 0x00);
        let hi = _mm512_clmulepi64_epi128(x, k, 0x11);
        _mm512_ternarylogic_epi64(lo, hi, next, 0x96)
    }

    /// `fold256` on 512-bit registers: four of them, 256-byte blocks.
    ///
    /// SAFETY: the CPU has AVX-512F, VPCLMULQDQ and PCLMULQDQ;
    /// `src.len() == dst.len() >= 256`.
    #[target_feature(enable = "avx512f", enable = "vpclmulqdq", enable = "pclmulqdq")]
    unsafe fn fold512(crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
        let blocks = src.len() / 256;
        let mut x0 = carry512(src, dst, 0);
        let mut x1 = carry512(src, dst, 64);
        let mut x2 = carry512(src, dst, 128);
        let mut x3 = carry512(src, dst, 192);
        x0 = _mm512_xor_si512(x0, _mm512_castsi128_si512(_mm_cvtsi32_si128(!crc as i32)));
        let k = _mm512_set_epi64(
            super::K512_HIGH as i64,
            super::K512_LOW as i64,
            super::K512_HIGH as i64,
            super::K512_LOW as i64,
            super::K512_HIGH as i64,
            super::K512_LOW as i64,
            super::K512_HIGH as i64,
            super::K512_LOW as i64,
        );
        for b in 1..blocks {
            let at = b * 256;
            x0 = fold_into512(x0, k, carry512(src, dst, at));
            x1 = fold_into512(x1, k, carry512(src, dst, at + 64));
            x2 = fold_into512(x2, k, carry512(src, dst, at + 128));
            x3 = fold_into512(x3, k, carry512(src, dst, at + 192));
        }
        let mut state = [0u8; 256];
        for (i, x) in [x0, x1, x2, x3].into_iter().enumerate() {
            _mm512_storeu_si512(state.as_mut_ptr().add(64 * i).cast(), x);
        }
        finish(&state, src, dst, blocks * 256)
    }

    /// Copies the tail from `done` on and hashes the folded state and the
    /// tail from a zero register (the value !0), as the CRC so far is
    /// already in the state.
    fn finish(state: &[u8], src: &[u8], dst: &mut [u8], done: usize) -> u32 {
        dst[done..].copy_from_slice(&src[done..]);
        let mut h = Hasher::new_with_initial(!0);
        h.update(state);
        h.update(&dst[done..]);
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 17) as u8).collect()
    }

    fn crc_of(init: u32, data: &[u8]) -> u32 {
        let mut h = Hasher::new_with_initial(init);
        h.update(data);
        h.finalize()
    }

    /// The constants are the ones the fold of 128 bits (x^160, x^96) and
    /// of 512 bits (x^544, x^480) are known by (the Intel paper; zlib's
    /// and Linux's reflected CRC-32 folds use the same).
    #[test]
    fn fold_constants_are_the_known_ones() {
        assert_eq!(fold_constant(160), 0x1_7519_97d0);
        assert_eq!(fold_constant(96), 0x0_ccaa_009e);
        assert_eq!(fold_constant(544), 0x1_5444_2bd4);
        assert_eq!(fold_constant(480), 0x1_c6e4_1596);
    }

    /// Every length around the block sizes and the threshold, from several
    /// CRCs so far, copies exactly and gives crc32fast's CRC.
    #[test]
    fn copies_and_hashes_as_crc32fast_does() {
        let src = bytes(9000, 7);
        let mut lens: Vec<usize> = (0..=1100).collect();
        lens.extend([1535, 1536, 1537, 2048, 4095, 4096, 4097, 4100, 8191, 8192, 9000]);
        for &n in &lens {
            for init in [0u32, 0xffff_ffff, 0x1234_5678, crc_of(0, &src[..n / 3])] {
                let mut dst = vec![0xa5u8; n];
                let got = copy_and_hash(init, &src[..n], &mut dst);
                assert_eq!(got, crc_of(init, &src[..n]), "len {n} init {init:#x}");
                assert_eq!(dst, &src[..n], "len {n}");
            }
        }
    }

    /// Each fold this CPU can run, not only the widest that
    /// `copy_and_hash` picks, from its smallest length on. A CPU with
    /// neither prints so: CI's hosts have had both.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_fold_width_the_cpu_has() {
        use super::fold::{available, copy_and_hash, Width};
        let src = bytes(5000, 11);
        let mut ran = 0;
        for width in [Width::Avx2, Width::Avx512] {
            if !available(width) {
                eprintln!("this CPU has no {width:?} fold; not tested here");
                continue;
            }
            ran += 1;
            for n in (256..=1300).chain([2047, 2048, 2049, 4096, 4097, 5000]) {
                for init in [0u32, 0xdead_beef] {
                    let mut dst = vec![0u8; n];
                    let got = copy_and_hash(width, init, &src[..n], &mut dst);
                    assert_eq!(got, crc_of(init, &src[..n]), "{width:?} len {n} init {init:#x}");
                    assert_eq!(dst, &src[..n], "{width:?} len {n}");
                }
            }
        }
        eprintln!("{ran} fold width(s) tested");
    }

    /// Unaligned source and destination, and a destination of another
    /// length (only the common part is copied and hashed).
    #[test]
    fn unaligned_and_uneven() {
        let src = bytes(5000, 3);
        for off in 1..8 {
            let mut dst = vec![0u8; 4200];
            let s = &src[off..off + 4096];
            let got = copy_and_hash(0, s, &mut dst[off + 3..off + 3 + 4096]);
            assert_eq!(got, crc_of(0, s), "offset {off}");
            assert_eq!(&dst[off + 3..off + 3 + 4096], s);
        }
        let mut short = vec![0u8; 700];
        assert_eq!(copy_and_hash(5, &src[..1000], &mut short), crc_of(5, &src[..700]));
        assert_eq!(short, &src[..700]);
    }
}
