//! Registered memory of a device: regions the device allocates and hands out
//! through `Pd::reg_mr`, reachable by the transport through
//! `transport::mem::Memory` with every check (key, PD, rights, bounds,
//! alignment). Each region's bytes sit behind a lock, so the application
//! (through `Mr::read`/`Mr::write`) and the device threads never race.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use transport::mem::{
    apply_atomic, check_bounds, check_key, read_right, write_right, AtomicOp, Key, MemError, Memory, RegionKeys,
};
use transport::wire::icrc::Running;
use verbs_api::AccessFlags;

use crate::lent::Lent;

#[derive(Debug)]
pub struct Region {
    pub pd: u32,
    pub va: u64,
    pub access: AccessFlags,
    pub lkey: u32,
    pub rkey: u32,
    pub remote_valid: AtomicBool,
    /// The length of `data`, fixed at registration (read without its lock).
    pub len: usize,
    pub data: RwLock<Box<[u8]>>,
}

impl Region {
    fn keys(&self) -> RegionKeys {
        RegionKeys {
            pd: self.pd,
            lkey: self.lkey,
            rkey: self.rkey,
            remote_valid: self.remote_valid.load(Ordering::Acquire),
            access: self.access,
            va: self.va,
            len: self.len() as u64,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Every region of a device, by key index.
#[derive(Debug, Default)]
pub struct DevMemory {
    /// By key index; FxHash, as this lookup is on every packet's path.
    regions: FxHashMap<u32, Arc<Region>>,
    next_index: u32,
    key_byte: u8,
    /// TEST-ONLY fault injection: R_Key accesses skip the bounds check, so
    /// out-of-bounds remote READ/WRITE/atomics "succeed" (the part outside
    /// the region is dropped on write, reads as zeros). Set only through
    /// `DeviceConfig::broken` so the conformance suite can prove its
    /// bounds cases fail on a non-conforming device; never set it otherwise.
    pub skip_rkey_bounds: bool,
    /// Payloads from this length on are lent (`read_lent`) rather than
    /// copied; `None`: never (a link that carries no lent payloads).
    pub lend_from: Option<usize>,
    /// What `read_lent` lent for the frame being emitted, until the
    /// device takes it (`take_lent`) or fills it in (`fill_lent`).
    lent: RefCell<Vec<Lent>>,
}

/// Regions live at device-chosen virtual addresses, 4 GiB apart.
const VA_BASE: u64 = 0x1000_0000_0000;

impl DevMemory {
    pub fn register(&mut self, pd: u32, len: usize, access: AccessFlags) -> Arc<Region> {
        self.next_index += 1;
        let index = self.next_index;
        self.key_byte = self.key_byte.wrapping_add(0x5b);
        let key = (index << 8) | self.key_byte as u32;
        let r = Arc::new(Region {
            pd,
            va: VA_BASE + ((index as u64) << 32),
            access,
            lkey: key,
            rkey: key,
            remote_valid: AtomicBool::new(true),
            len,
            data: RwLock::new(vec![0u8; len].into_boxed_slice()),
        });
        self.regions.insert(index, r.clone());
        r
    }

    pub fn deregister(&mut self, lkey: u32) -> bool {
        match self.regions.get(&(lkey >> 8)) {
            Some(r) if r.lkey == lkey => self.regions.remove(&(lkey >> 8)).is_some(),
            _ => false,
        }
    }

    /// Every registered region (for `resource show`).
    pub fn regions(&self) -> impl Iterator<Item = &Arc<Region>> {
        self.regions.values()
    }

    pub fn count(&self) -> usize {
        self.regions.len()
    }

    pub fn bytes(&self) -> u64 {
        self.regions.values().map(|r| r.len() as u64).sum()
    }

    /// Whether the frame just emitted has lent payloads.
    pub fn has_lent(&self) -> bool {
        !self.lent.borrow().is_empty()
    }

    /// Copies the frame's lent payloads into it (`frame` is the buffer it
    /// was emitted into).
    pub fn fill_lent(&self, frame: &mut [u8]) {
        crate::lent::fill_one(&mut self.lent.borrow_mut(), frame);
    }

    /// Hands the frame's lent payloads over, as `(index, payload)` with
    /// offsets into `frame`, to whoever delivers it; whether there were any.
    pub fn take_lent(&self, frame: &[u8], index: usize, to: &mut Vec<(usize, Lent)>) -> bool {
        let n = to.len();
        to.extend(self.lent.borrow_mut().drain(..).filter_map(|l| l.placed(frame)).map(|l| (index, l)));
        to.len() > n
    }

    fn lookup(
        &self,
        pd: u32,
        key: Key,
        va: u64,
        len: u64,
        need: AccessFlags,
    ) -> Result<(&Arc<Region>, usize), MemError> {
        let k = match key {
            Key::Local(k) | Key::Remote(k) => k,
        };
        let r = self.regions.get(&(k >> 8)).ok_or(MemError::InvalidKey)?;
        let keys = r.keys();
        check_key(&keys, pd, key, need)?;
        if matches!(key, Key::Remote(_)) && self.skip_rkey_bounds {
            return Ok((r, va.wrapping_sub(r.va).min(usize::MAX as u64) as usize));
        }
        Ok((r, check_bounds(&keys, va, len)?))
    }
}

/// The part of `[off, off + len)` inside a region of `size` bytes, as a
/// length from `off` (all of `len` unless `skip_rkey_bounds` let an
/// out-of-bounds access through).
fn inside(size: usize, off: usize, len: usize) -> usize {
    size.saturating_sub(off).min(len)
}

impl Memory for DevMemory {
    fn check(&self, pd: u32, key: Key, va: u64, len: u64, need: AccessFlags) -> Result<(), MemError> {
        self.lookup(pd, key, va, len, need).map(|_| ())
    }

    fn read(&self, pd: u32, key: Key, va: u64, out: &mut [u8]) -> Result<(), MemError> {
        let (r, off) = self.lookup(pd, key, va, out.len() as u64, read_right(key))?;
        let d = r.data.read().map_err(|_| MemError::InvalidKey)?;
        let n = inside(d.len(), off, out.len());
        out[n..].fill(0);
        if n > 0 {
            out[..n].copy_from_slice(&d[off..off + n]);
        }
        Ok(())
    }

    /// Hashes the region's bytes, not the copy: the copy's lines may still
    /// be on their way from the CPU that last read them (a fabric buffer
    /// back from its receiver), and reading them back would wait for that.
    fn read_hashed(&self, pd: u32, key: Key, va: u64, out: &mut [u8], crc: &mut Running) -> Result<(), MemError> {
        let (r, off) = self.lookup(pd, key, va, out.len() as u64, read_right(key))?;
        let d = r.data.read().map_err(|_| MemError::InvalidKey)?;
        let n = inside(d.len(), off, out.len());
        if n > 0 {
            // One pass, not a copy and then a hash: on a TAP this is most
            // of the sending CPU's own work per byte (docs/benchmarks-history.md,
            // "What stop 37 changed").
            crc.update_copy(&d[off..off + n], &mut out[..n]);
        }
        out[n..].fill(0);
        crc.update(&out[n..]);
        Ok(())
    }

    /// Hashes the payload where it lies and records where it goes
    /// (`crate::lent`); a short one is copied, as the lock and the
    /// region's count cost more than its lines.
    fn read_lent(&self, pd: u32, key: Key, va: u64, out: &mut [u8], crc: &mut Running) -> Result<(), MemError> {
        if self.lend_from.is_none_or(|min| out.len() < min) {
            return self.read_hashed(pd, key, va, out, crc);
        }
        let (r, off) = self.lookup(pd, key, va, out.len() as u64, read_right(key))?;
        let d = r.data.read().map_err(|_| MemError::InvalidKey)?;
        let Some(src) = d.get(off..off + out.len()) else {
            drop(d);
            return self.read_hashed(pd, key, va, out, crc); // past the end (skip_rkey_bounds only)
        };
        crc.update(src);
        drop(d);
        self.lent.borrow_mut().push(Lent { region: r.clone(), off, len: out.len(), at: out.as_ptr() as usize });
        Ok(())
    }

    fn unlend(&self) {
        self.lent.borrow_mut().clear();
    }

    fn write(&mut self, pd: u32, key: Key, va: u64, data: &[u8]) -> Result<(), MemError> {
        let (r, off) = self.lookup(pd, key, va, data.len() as u64, write_right(key))?;
        let mut d = r.data.write().map_err(|_| MemError::InvalidKey)?;
        let n = inside(d.len(), off, data.len());
        if n > 0 {
            d[off..off + n].copy_from_slice(&data[..n]);
        }
        Ok(())
    }

    fn atomic(&mut self, pd: u32, rkey: u32, va: u64, op: AtomicOp) -> Result<u64, MemError> {
        if !va.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        let (r, off) = self.lookup(pd, Key::Remote(rkey), va, 8, AccessFlags::REMOTE_ATOMIC)?;
        let mut d = r.data.write().map_err(|_| MemError::InvalidKey)?;
        if inside(d.len(), off, 8) < 8 {
            return Ok(0); // only with skip_rkey_bounds: nothing to operate on
        }
        let cell: &mut [u8; 8] = (&mut d[off..off + 8]).try_into().map_err(|_| MemError::OutOfBounds)?;
        Ok(apply_atomic(cell, op))
    }

    fn invalidate(&mut self, pd: u32, rkey: u32) -> Result<(), MemError> {
        let r = self.regions.get(&(rkey >> 8)).ok_or(MemError::InvalidKey)?;
        check_key(&r.keys(), pd, Key::Remote(rkey), AccessFlags::NONE)?;
        r.remote_valid.store(false, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport::wire::icrc;

    fn running() -> Running {
        icrc::start(&[0x45; 20], Some(&[0; 8]), &[0; 12])
    }

    /// `read_hashed` hashes the region's bytes rather than the copy: the
    /// copy and the CRC must still be what `read` and a hash of its copy
    /// give, including the zeros past a region's end when bounds are
    /// skipped (a test-only mode), and a refused access must fail alike.
    #[test]
    fn read_hashed_copies_and_hashes_what_read_copies() {
        let mut m = DevMemory::default();
        let r = m.register(1, 4096, AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ);
        for (i, b) in r.data.write().unwrap().iter_mut().enumerate() {
            *b = (i * 13 + 7) as u8;
        }
        let same = |m: &DevMemory, key: Key, va: u64, len: usize| {
            let (mut a, mut b) = (vec![0xee; len], vec![0x11; len]);
            let (mut ca, mut cb) = (running(), running());
            let ra = m.read_hashed(1, key, va, &mut a, &mut ca);
            let rb = m.read(1, key, va, &mut b);
            assert_eq!(ra, rb, "{key:?} {va:#x} {len}");
            if rb.is_ok() {
                cb.update(&b);
                assert_eq!(a, b, "{key:?} {va:#x} {len}");
                assert_eq!(ca.finish(), cb.finish(), "{key:?} {va:#x} {len}");
            }
            rb
        };
        for (off, len) in [(0, 4096), (7, 1000), (4000, 96), (0, 0), (4095, 1)] {
            assert!(same(&m, Key::Local(r.lkey), r.va + off, len).is_ok());
        }
        assert!(same(&m, Key::Local(r.lkey), r.va + 4000, 200).is_err(), "past the end");
        assert!(same(&m, Key::Local(r.lkey ^ 0x100), r.va, 8).is_err(), "unknown key");
        m.skip_rkey_bounds = true;
        assert!(same(&m, Key::Remote(r.rkey), r.va + 4000, 200).is_ok(), "zeros past the end");
    }

    /// `read_lent` hashes what `read_hashed` hashes and leaves the frame
    /// as it was; filled in, the frame holds what `read_hashed` copied.
    /// Short payloads, and any while lending is off, are copied at once.
    #[test]
    fn read_lent_hashes_now_and_fills_later_what_read_hashed_copies() {
        let mut m = DevMemory::default();
        let r = m.register(1, 8192, AccessFlags::LOCAL_WRITE);
        for (i, b) in r.data.write().unwrap().iter_mut().enumerate() {
            *b = (i * 31 + 5) as u8;
        }
        let key = Key::Local(r.lkey);
        for (lend_from, off, len, lends) in
            [(Some(1024), 100, 4096, true), (Some(1024), 0, 1023, false), (None, 0, 4096, false)]
        {
            m.lend_from = lend_from;
            let (mut want, mut frame) = (vec![0x11; len + 60], vec![0x22; len + 60]);
            let (mut cw, mut cf) = (running(), running());
            m.read_hashed(1, key, r.va + off, &mut want[40..40 + len], &mut cw).unwrap();
            m.read_lent(1, key, r.va + off, &mut frame[40..40 + len], &mut cf).unwrap();
            assert_eq!(cw.finish(), cf.finish(), "{off} {len}");
            assert_eq!(m.has_lent(), lends, "{off} {len}");
            if lends {
                assert!(frame[40..40 + len].iter().all(|&b| b == 0x22), "lent, yet copied");
            }
            m.fill_lent(&mut frame[..]);
            assert!(!m.has_lent());
            assert_eq!(&frame[40..40 + len], &want[40..40 + len], "{off} {len}");
        }
        m.lend_from = Some(1024);
        let mut frame = vec![0u8; 2048];
        m.read_lent(1, key, r.va, &mut frame[..], &mut running()).unwrap();
        m.unlend();
        assert!(!m.has_lent(), "unlend forgets what was lent");
        assert!(m.read_lent(1, Key::Local(r.lkey ^ 0x100), r.va, &mut frame[..], &mut running()).is_err());
        assert!(!m.has_lent(), "a refused access lends nothing");
    }
}
