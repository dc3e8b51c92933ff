//! The scatter/gather list a posted send WQE keeps: perftest, NCCL and
//! most middleware post one or two SGEs per WR, so those stay inline in
//! the WQE and posting allocates nothing; longer lists go to the heap.

use core::ops::Deref;

use verbs_api::Sge;

const INLINE: usize = 2;

#[derive(Debug, Clone)]
pub(crate) enum SgeList {
    Inline { len: u8, sges: [Sge; INLINE] },
    Heap(Vec<Sge>),
}

impl SgeList {
    pub(crate) fn from_slice(s: &[Sge]) -> SgeList {
        if s.len() <= INLINE {
            let mut sges = [Sge::default(); INLINE];
            sges[..s.len()].copy_from_slice(s);
            SgeList::Inline { len: s.len() as u8, sges }
        } else {
            SgeList::Heap(s.to_vec())
        }
    }
}

impl Deref for SgeList {
    type Target = [Sge];
    fn deref(&self) -> &[Sge] {
        match self {
            SgeList::Inline { len, sges } => &sges[..*len as usize],
            SgeList::Heap(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lists_read_back_as_posted() {
        let sges: Vec<Sge> = (0..5).map(|i| Sge { addr: 0x1000 * i, length: 10 + i as u32, lkey: 7 }).collect();
        for n in 0..=sges.len() {
            let l = SgeList::from_slice(&sges[..n]);
            assert_eq!(&*l, &sges[..n]);
            assert_eq!(matches!(l, SgeList::Inline { .. }), n <= INLINE);
        }
    }
}
