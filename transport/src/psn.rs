//! 24-bit packet sequence numbers (IBTA Vol 1 §9.7.1).
//!
//! PSNs wrap modulo 2^24. Ordering is only meaningful inside a window of half
//! the space: IBTA Vol 1 ch. 9 defines a PSN as "ahead" of another when it lies within
//! the next 2^23 values, which is how rxe's `psn_compare` works too (shift the
//! difference into the top 24 bits of an i32 and read its sign).

use core::cmp::Ordering;
use core::fmt;

pub const PSN_BITS: u32 = 24;
pub const PSN_MASK: u32 = (1 << PSN_BITS) - 1;

/// A 24-bit packet sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Psn(u32);

impl Psn {
    pub const MAX: Psn = Psn(PSN_MASK);

    /// The low 24 bits of `v`.
    pub const fn new(v: u32) -> Self {
        Psn(v & PSN_MASK)
    }

    pub const fn value(self) -> u32 {
        self.0
    }

    pub const fn add(self, n: u32) -> Self {
        Psn(self.0.wrapping_add(n) & PSN_MASK)
    }

    pub const fn sub(self, n: u32) -> Self {
        Psn(self.0.wrapping_sub(n) & PSN_MASK)
    }

    pub const fn next(self) -> Self {
        self.add(1)
    }

    /// Signed distance from `other` to `self`, in (-2^23, 2^23]: positive when
    /// `self` is ahead of `other`.
    pub const fn distance(self, other: Psn) -> i32 {
        ((self.0.wrapping_sub(other.0)) << (32 - PSN_BITS)) as i32 >> (32 - PSN_BITS)
    }

    /// Forward distance from `other` to `self` (0 ..= 2^24-1).
    pub const fn forward_from(self, other: Psn) -> u32 {
        self.0.wrapping_sub(other.0) & PSN_MASK
    }

    /// Wrap-aware comparison inside the half-space window.
    pub fn cmp_wrapping(self, other: Psn) -> Ordering {
        self.distance(other).cmp(&0)
    }

    pub fn is_after(self, other: Psn) -> bool {
        self.distance(other) > 0
    }

    pub fn is_before(self, other: Psn) -> bool {
        self.distance(other) < 0
    }
}

impl fmt::Debug for Psn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psn({:#08x})", self.0)
    }
}

impl fmt::Display for Psn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#08x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_at_2_pow_24() {
        assert_eq!(Psn::MAX.next(), Psn::new(0));
        assert_eq!(Psn::new(0).sub(1), Psn::MAX);
        assert_eq!(Psn::new(0x1_000_005), Psn::new(5));
        assert_eq!(Psn::new(2).distance(Psn::MAX), 3);
        assert_eq!(Psn::MAX.distance(Psn::new(2)), -3);
        assert!(Psn::new(1).is_after(Psn::new(0xff_fff0)));
        assert_eq!(Psn::new(3).forward_from(Psn::new(0xff_fffe)), 5);
    }

    #[test]
    fn window_edges() {
        let a = Psn::new(0);
        assert_eq!(a.add(1 << 23).distance(a), -(1 << 23), "exactly half the space reads as behind");
        assert_eq!(a.add((1 << 23) - 1).distance(a), (1 << 23) - 1);
    }

    proptest! {
        #[test]
        fn add_then_distance_is_identity(base in 0u32..=PSN_MASK, n in 0u32..(1 << 23)) {
            let a = Psn::new(base);
            let b = a.add(n);
            prop_assert_eq!(b.distance(a), n as i32);
            prop_assert_eq!(a.distance(b), -(n as i32));
            prop_assert_eq!(b.forward_from(a), n);
            prop_assert_eq!(b.sub(n), a);
        }

        #[test]
        fn compare_is_antisymmetric_and_shift_invariant(x in 0u32..=PSN_MASK, y in 0u32..=PSN_MASK, shift in 0u32..=PSN_MASK) {
            let (a, b) = (Psn::new(x), Psn::new(y));
            // Antisymmetric except on the single ambiguous point 2^23 apart.
            if a.forward_from(b) != 1 << 23 {
                prop_assert_eq!(a.cmp_wrapping(b), b.cmp_wrapping(a).reverse());
            }
            // Moving both across the 2^24 wrap changes nothing.
            prop_assert_eq!(a.add(shift).cmp_wrapping(b.add(shift)), a.cmp_wrapping(b));
        }
    }
}
