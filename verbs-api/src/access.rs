use core::ops::{BitAnd, BitOr, BitOrAssign};

/// Memory-region and QP access rights (`enum ibv_access_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccessFlags(pub u32);

impl AccessFlags {
    pub const NONE: Self = AccessFlags(0);
    pub const LOCAL_WRITE: Self = AccessFlags(1);
    pub const REMOTE_WRITE: Self = AccessFlags(1 << 1);
    pub const REMOTE_READ: Self = AccessFlags(1 << 2);
    pub const REMOTE_ATOMIC: Self = AccessFlags(1 << 3);
    pub const MW_BIND: Self = AccessFlags(1 << 4);

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Self) -> Self {
        AccessFlags(self.0 | other.0)
    }
    /// All remote rights at once, as tests and demos like to ask for.
    pub const fn all() -> Self {
        AccessFlags(0x1f)
    }
}

impl BitOr for AccessFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl BitOrAssign for AccessFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for AccessFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        AccessFlags(self.0 & rhs.0)
    }
}
