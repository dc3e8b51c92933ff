//! How the transport reaches memory: through the [`Memory`] trait, which
//! resolves an L_Key or R_Key to a registered region and checks protection
//! domain, access rights, bounds and (for atomics) alignment — the checks of
//! IBTA Vol 1 ch. 10 (memory region access validation) and ch. 9 for the
//! responder. Tests and the simulator use [`RegionTable`], plain `Vec`s.

use verbs_api::AccessFlags;

/// A key as a work request or a packet names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// An L_Key from a local SGE.
    Local(u32),
    /// An R_Key from a RETH, AtomicETH or IETH.
    Remote(u32),
}

/// Why an access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// No region has that key (or it was deregistered or invalidated).
    InvalidKey,
    /// The region belongs to another protection domain.
    PdMismatch,
    /// The region does not grant the access asked for.
    AccessDenied,
    /// The range leaves the region.
    OutOfBounds,
    /// An atomic address that is not 8-byte aligned.
    Misaligned,
}

/// The two atomic operations of IBTA Vol 1 ch. 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    CompareSwap { compare: u64, swap: u64 },
    FetchAdd { add: u64 },
}

/// Memory as the transport sees it. Implementations must check everything:
/// the transport trusts a successful return.
pub trait Memory {
    /// Checks that `[va, va+len)` under `key` may be accessed as `need`.
    fn check(&self, pd: u32, key: Key, va: u64, len: u64, need: AccessFlags) -> Result<(), MemError>;
    /// Copies out of memory (local gather, or remote READ with REMOTE_READ).
    fn read(&self, pd: u32, key: Key, va: u64, out: &mut [u8]) -> Result<(), MemError>;
    /// `read`, also hashing the bytes into a packet's ICRC. An
    /// implementation that can should hash them where they lie, not the
    /// copy in `out` (see [`crate::wire::icrc::Running`]); the bytes hashed
    /// must be the bytes copied.
    fn read_hashed(
        &self,
        pd: u32,
        key: Key,
        va: u64,
        out: &mut [u8],
        crc: &mut crate::wire::icrc::Running,
    ) -> Result<(), MemError> {
        self.read(pd, key, va, out)?;
        crc.update(out);
        Ok(())
    }
    /// `read_hashed` for a payload the device may leave where it lies and
    /// copy into `out` later, by the time the frame reaches its peer, as a
    /// NIC's DMA reads a payload at transmit time. The transport asks only
    /// where that is safe: nothing completes before the peer has the frame
    /// (an RC request completes when acknowledged; a READ response
    /// completes the peer's READ), and sealing the frame reads nothing of
    /// the payload (`FrameRepr::seals_without_payload`). The hash must be
    /// of the bytes that will be delivered.
    fn read_lent(
        &self,
        pd: u32,
        key: Key,
        va: u64,
        out: &mut [u8],
        crc: &mut crate::wire::icrc::Running,
    ) -> Result<(), MemError> {
        self.read_hashed(pd, key, va, out, crc)
    }
    /// Forgets what `read_lent` lent for a frame that is not emitted after
    /// all (a later gather entry failed).
    fn unlend(&self) {}
    /// Copies into memory (local scatter with LOCAL_WRITE, or remote WRITE with REMOTE_WRITE).
    fn write(&mut self, pd: u32, key: Key, va: u64, data: &[u8]) -> Result<(), MemError>;
    /// Executes an 8-byte atomic (REMOTE_ATOMIC, aligned); returns the original value.
    fn atomic(&mut self, pd: u32, rkey: u32, va: u64, op: AtomicOp) -> Result<u64, MemError>;
    /// Invalidates an R_Key (SEND WITH INVALIDATE).
    fn invalidate(&mut self, pd: u32, rkey: u32) -> Result<(), MemError>;
}

/// The right a key kind needs for a read or a write.
pub fn read_right(key: Key) -> AccessFlags {
    match key {
        Key::Local(_) => AccessFlags::NONE,
        Key::Remote(_) => AccessFlags::REMOTE_READ,
    }
}

pub fn write_right(key: Key) -> AccessFlags {
    match key {
        Key::Local(_) => AccessFlags::LOCAL_WRITE,
        Key::Remote(_) => AccessFlags::REMOTE_WRITE,
    }
}

/// What the shared checks need to know of a region (every `Memory`
/// implementation validates through these, so the rule lives in one place).
#[derive(Debug, Clone, Copy)]
pub struct RegionKeys {
    pub pd: u32,
    pub lkey: u32,
    pub rkey: u32,
    pub remote_valid: bool,
    pub access: AccessFlags,
    pub va: u64,
    pub len: u64,
}

/// IBTA Vol 1 ch. 10 (memory access validation), the key part: the key
/// names this region (an invalidated R_Key no longer does), the PD matches,
/// and the region grants `need`.
pub fn check_key(r: &RegionKeys, pd: u32, key: Key, need: AccessFlags) -> Result<(), MemError> {
    let named = match key {
        Key::Local(k) => r.lkey == k,
        Key::Remote(k) => r.rkey == k && r.remote_valid,
    };
    if !named {
        return Err(MemError::InvalidKey);
    }
    if r.pd != pd {
        return Err(MemError::PdMismatch);
    }
    if !r.access.contains(need) {
        return Err(MemError::AccessDenied);
    }
    Ok(())
}

/// The bounds part: `[va, va+len)` lies inside the region; returns the offset.
pub fn check_bounds(r: &RegionKeys, va: u64, len: u64) -> Result<usize, MemError> {
    let off = va.checked_sub(r.va).ok_or(MemError::OutOfBounds)?;
    let end = off.checked_add(len).ok_or(MemError::OutOfBounds)?;
    if end > r.len {
        return Err(MemError::OutOfBounds);
    }
    Ok(off as usize)
}

/// Executes `op` on an 8-byte word in host order (as ibverbs atomics see
/// memory); returns the original value.
pub fn apply_atomic(cell: &mut [u8; 8], op: AtomicOp) -> u64 {
    let orig = u64::from_ne_bytes(*cell);
    let new = match op {
        AtomicOp::CompareSwap { compare, swap } if orig == compare => swap,
        AtomicOp::CompareSwap { .. } => orig,
        AtomicOp::FetchAdd { add } => orig.wrapping_add(add),
    };
    *cell = new.to_ne_bytes();
    orig
}

/// A registered region of a [`RegionTable`].
#[derive(Debug, Clone)]
pub struct Region {
    pub pd: u32,
    pub va: u64,
    pub data: Vec<u8>,
    pub access: AccessFlags,
    pub lkey: u32,
    pub rkey: u32,
    /// False once the R_Key was invalidated; local access still works.
    pub remote_valid: bool,
}

/// Vec-backed memory: regions keyed like rxe's (index << 8 | key byte).
#[derive(Debug, Default, Clone)]
pub struct RegionTable {
    regions: Vec<Option<Region>>,
    key_byte: u8,
}

impl Region {
    fn keys(&self) -> RegionKeys {
        RegionKeys {
            pd: self.pd,
            lkey: self.lkey,
            rkey: self.rkey,
            remote_valid: self.remote_valid,
            access: self.access,
            va: self.va,
            len: self.data.len() as u64,
        }
    }
}

impl RegionTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `len` zeroed bytes at virtual address `va`; returns (lkey, rkey).
    pub fn register(&mut self, pd: u32, va: u64, len: usize, access: AccessFlags) -> (u32, u32) {
        let index = self.regions.len() as u32;
        self.key_byte = self.key_byte.wrapping_add(0x5b);
        let lkey = (index << 8) | self.key_byte as u32;
        let rkey = lkey;
        self.regions.push(Some(Region { pd, va, data: vec![0; len], access, lkey, rkey, remote_valid: true }));
        (lkey, rkey)
    }

    pub fn deregister(&mut self, lkey: u32) -> bool {
        match self.regions.get_mut((lkey >> 8) as usize) {
            Some(slot @ Some(_)) if slot.as_ref().is_some_and(|r| r.lkey == lkey) => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    pub fn region(&self, key: u32) -> Option<&Region> {
        self.regions.get((key >> 8) as usize)?.as_ref().filter(|r| r.lkey == key || r.rkey == key)
    }

    pub fn region_mut(&mut self, key: u32) -> Option<&mut Region> {
        self.regions.get_mut((key >> 8) as usize)?.as_mut().filter(|r| r.lkey == key || r.rkey == key)
    }

    fn lookup(&self, pd: u32, key: Key, va: u64, len: u64, need: AccessFlags) -> Result<(&Region, usize), MemError> {
        let k = match key {
            Key::Local(k) | Key::Remote(k) => k,
        };
        let r = self.region(k).ok_or(MemError::InvalidKey)?;
        check_key(&r.keys(), pd, key, need)?;
        Ok((r, check_bounds(&r.keys(), va, len)?))
    }
}

impl Memory for RegionTable {
    fn check(&self, pd: u32, key: Key, va: u64, len: u64, need: AccessFlags) -> Result<(), MemError> {
        self.lookup(pd, key, va, len, need).map(|_| ())
    }

    fn read(&self, pd: u32, key: Key, va: u64, out: &mut [u8]) -> Result<(), MemError> {
        let (r, off) = self.lookup(pd, key, va, out.len() as u64, read_right(key))?;
        out.copy_from_slice(&r.data[off..off + out.len()]);
        Ok(())
    }

    fn write(&mut self, pd: u32, key: Key, va: u64, data: &[u8]) -> Result<(), MemError> {
        let (r, off) = self.lookup(pd, key, va, data.len() as u64, write_right(key))?;
        let idx = (r.lkey >> 8) as usize;
        let r = self.regions[idx].as_mut().ok_or(MemError::InvalidKey)?;
        r.data[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn atomic(&mut self, pd: u32, rkey: u32, va: u64, op: AtomicOp) -> Result<u64, MemError> {
        if !va.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        let (r, off) = self.lookup(pd, Key::Remote(rkey), va, 8, AccessFlags::REMOTE_ATOMIC)?;
        let idx = (r.lkey >> 8) as usize;
        let r = self.regions[idx].as_mut().ok_or(MemError::InvalidKey)?;
        let cell: &mut [u8; 8] = (&mut r.data[off..off + 8]).try_into().map_err(|_| MemError::OutOfBounds)?;
        Ok(apply_atomic(cell, op))
    }

    fn invalidate(&mut self, pd: u32, rkey: u32) -> Result<(), MemError> {
        let r = self.region_mut(rkey).ok_or(MemError::InvalidKey)?;
        check_key(&r.keys(), pd, Key::Remote(rkey), AccessFlags::NONE)?;
        r.remote_valid = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_refuses_what_it_should() {
        let mut t = RegionTable::new();
        let rw = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        let (lk, rk) = t.register(1, 0x1000, 64, rw);
        assert_eq!(t.write(1, Key::Remote(rk), 0x1000, &[1; 64]), Ok(()));
        assert_eq!(t.write(2, Key::Remote(rk), 0x1000, &[1]), Err(MemError::PdMismatch));
        assert_eq!(t.write(1, Key::Remote(rk + 1), 0x1000, &[1]), Err(MemError::InvalidKey));
        assert_eq!(t.write(1, Key::Remote(rk), 0x103f, &[1, 2]), Err(MemError::OutOfBounds));
        assert_eq!(t.write(1, Key::Remote(rk), 0xfff, &[1]), Err(MemError::OutOfBounds));
        assert_eq!(t.read(1, Key::Remote(rk), 0x1000, &mut [0; 4]), Err(MemError::AccessDenied));
        assert_eq!(t.read(1, Key::Local(lk), 0x1000, &mut [0; 4]), Ok(()));
        assert_eq!(t.atomic(1, rk, 0x1000, AtomicOp::FetchAdd { add: 1 }), Err(MemError::AccessDenied));
        let (_, ark) = t.register(1, 0x2000, 16, AccessFlags::REMOTE_ATOMIC);
        assert_eq!(t.atomic(1, ark, 0x2004, AtomicOp::FetchAdd { add: 1 }), Err(MemError::Misaligned));
        assert_eq!(t.atomic(1, ark, 0x2008, AtomicOp::FetchAdd { add: 5 }), Ok(0));
        assert_eq!(t.atomic(1, ark, 0x2008, AtomicOp::CompareSwap { compare: 5, swap: 9 }), Ok(5));
        assert_eq!(t.atomic(1, ark, 0x2008, AtomicOp::CompareSwap { compare: 5, swap: 1 }), Ok(9));
        assert_eq!(t.atomic(1, ark, 0x2010, AtomicOp::FetchAdd { add: 1 }), Err(MemError::OutOfBounds));
        assert_eq!(t.invalidate(1, rk), Ok(()));
        assert_eq!(t.write(1, Key::Remote(rk), 0x1000, &[1]), Err(MemError::InvalidKey));
        assert_eq!(t.write(1, Key::Local(lk), 0x1000, &[1]), Ok(()), "local access survives invalidation");
    }
}
