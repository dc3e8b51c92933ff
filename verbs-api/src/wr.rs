use core::ops::BitOr;

/// A scatter/gather element (`struct ibv_sge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `enum ibv_send_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendFlags(pub u32);

impl SendFlags {
    pub const NONE: Self = Self(0);
    pub const FENCE: Self = Self(1);
    pub const SIGNALED: Self = Self(1 << 1);
    pub const SOLICITED: Self = Self(1 << 2);
    pub const INLINE: Self = Self(1 << 3);

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for SendFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// What a send work request does (`enum ibv_wr_opcode` with its operands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    Send,
    SendWithImm { imm: u32 },
    SendWithInv { invalidate_rkey: u32 },
    RdmaWrite { remote_addr: u64, rkey: u32 },
    RdmaWriteWithImm { remote_addr: u64, rkey: u32, imm: u32 },
    RdmaRead { remote_addr: u64, rkey: u32 },
    AtomicCmpSwp { remote_addr: u64, rkey: u32, compare: u64, swap: u64 },
    AtomicFetchAdd { remote_addr: u64, rkey: u32, add: u64 },
}

impl SendOp {
    pub fn is_atomic(&self) -> bool {
        matches!(self, SendOp::AtomicCmpSwp { .. } | SendOp::AtomicFetchAdd { .. })
    }
    pub fn is_read_or_atomic(&self) -> bool {
        self.is_atomic() || matches!(self, SendOp::RdmaRead { .. })
    }
}

/// A send work request (`struct ibv_send_wr`). For UD, the destination comes
/// from an address handle the device resolves; `remote_qpn`/`remote_qkey` are
/// its `wr.ud` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWr {
    pub wr_id: u64,
    pub op: SendOp,
    pub sg_list: Vec<Sge>,
    pub flags: SendFlags,
    /// Bytes of an inline send, copied when the request is posted (the sge
    /// list is then ignored, as with `IBV_SEND_INLINE`).
    pub inline_data: Option<Vec<u8>>,
    pub remote_qpn: u32,
    pub remote_qkey: u32,
}

impl SendWr {
    pub fn new(wr_id: u64, op: SendOp, sg_list: Vec<Sge>) -> Self {
        SendWr { wr_id, op, sg_list, flags: SendFlags::SIGNALED, inline_data: None, remote_qpn: 0, remote_qkey: 0 }
    }

    /// Total bytes the request moves (for atomics: the 8-byte result).
    pub fn length(&self) -> u64 {
        match &self.inline_data {
            Some(d) => d.len() as u64,
            None => self.sg_list.iter().map(|s| s.length as u64).sum(),
        }
    }
}

/// A receive work request (`struct ibv_recv_wr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWr {
    pub wr_id: u64,
    pub sg_list: Vec<Sge>,
}
