//! The BTH opcode table of IBTA Vol 1 §9.2 (the "OpCode Field" table): which
//! transport service an opcode belongs to, which extension headers follow the BTH
//! in which order (§9.2 "packet header layout"), and whether a payload may follow.
//!
//! The upper three bits select the transport (000 RC, 001 UC, 010 RD, 011 UD,
//! 100 CNP, 101 XRC); RD and XRC are not spoken by softrdma and are rejected.

use super::Error;

/// Transport service of a QP (the upper three opcode bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Rc,
    Uc,
    Ud,
    /// RoCEv2 congestion notification packet (Annex A17.9.3), opcode 0x81.
    Cnp,
}

/// Which extension headers follow the BTH. The order on the wire is fixed:
/// DETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, IETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderSet {
    pub deth: bool,
    pub reth: bool,
    pub atomic_eth: bool,
    pub aeth: bool,
    pub atomic_ack_eth: bool,
    pub immdt: bool,
    pub ieth: bool,
}

impl HeaderSet {
    /// Bytes of these headers on the wire.
    pub const fn wire_len(&self) -> usize {
        (self.deth as usize) * super::deth::LEN
            + (self.reth as usize) * super::reth::LEN
            + (self.atomic_eth as usize) * super::atomic_eth::LEN
            + (self.aeth as usize) * super::aeth::LEN
            + (self.atomic_ack_eth as usize) * super::atomic_ack_eth::LEN
            + (self.immdt as usize) * super::immdt::LEN
            + (self.ieth as usize) * super::ieth::LEN
    }
}

/// What a packet does, independent of its transport and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Send,
    RdmaWrite,
    ReadRequest,
    ReadResponse,
    Acknowledge,
    AtomicAcknowledge,
    CompareSwap,
    FetchAdd,
    Cnp,
}

/// Where a packet sits in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    First,
    Middle,
    Last,
    Only,
}

impl Position {
    pub fn starts_message(self) -> bool {
        matches!(self, Position::First | Position::Only)
    }
    pub fn ends_message(self) -> bool {
        matches!(self, Position::Last | Position::Only)
    }
}

/// Everything the table says about one opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpcodeInfo {
    pub name: &'static str,
    pub transport: Transport,
    pub operation: Operation,
    pub position: Position,
    pub headers: HeaderSet,
    /// Whether payload bytes may follow the headers.
    pub payload: bool,
    /// `headers.wire_len()`, worked out when the table is built: the parser and
    /// the emitter ask for it several times per packet.
    ext_len: u8,
}

impl OpcodeInfo {
    /// Bytes of extension headers after the 12-byte BTH.
    #[inline]
    pub const fn ext_len(&self) -> usize {
        self.ext_len as usize
    }

    /// Bytes from the start of the BTH to the payload.
    #[inline]
    pub const fn header_len(&self) -> usize {
        super::bth::LEN + self.ext_len()
    }
}

const fn hs(
    deth: bool,
    reth: bool,
    atomic_eth: bool,
    aeth: bool,
    atomic_ack_eth: bool,
    immdt: bool,
    ieth: bool,
) -> HeaderSet {
    HeaderSet { deth, reth, atomic_eth, aeth, atomic_ack_eth, immdt, ieth }
}
const NONE: HeaderSet = hs(false, false, false, false, false, false, false);
const IMM: HeaderSet = hs(false, false, false, false, false, true, false);
const INV: HeaderSet = hs(false, false, false, false, false, false, true);
const RETH: HeaderSet = hs(false, true, false, false, false, false, false);
const RETH_IMM: HeaderSet = hs(false, true, false, false, false, true, false);
const AETH: HeaderSet = hs(false, false, false, true, false, false, false);
const AETH_ATOMIC: HeaderSet = hs(false, false, false, true, true, false, false);
const ATOMIC: HeaderSet = hs(false, false, true, false, false, false, false);
const DETH: HeaderSet = hs(true, false, false, false, false, false, false);
const DETH_IMM: HeaderSet = hs(true, false, false, false, false, true, false);

const NOT_AN_OPCODE: u8 = u8::MAX;

macro_rules! opcodes {
    ($($variant:ident = $value:literal, $name:literal, $transport:ident, $op:ident, $pos:ident, $headers:ident, $payload:literal;)*) => {
        /// Every BTH opcode softrdma knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Opcode {
            $($variant = $value,)*
        }

        impl Opcode {
            /// All known opcodes, in numeric order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$variant,)*];

            /// What the opcode means; a reference into a static table (this
            /// runs several times per packet). Indexed rather than matched:
            /// a `match` compiles to a jump table and a call, and each
            /// indirect jump costs a translation-block lookup under QEMU's
            /// TCG (docs/benchmarks-history.md, the TCG work).
            #[inline]
            pub const fn info(self) -> &'static OpcodeInfo {
                &INFOS[INDEX[self as u8 as usize] as usize]
            }
        }

        /// The opcodes' meanings, in the order of [`Opcode::ALL`].
        static INFOS: [OpcodeInfo; Opcode::ALL.len()] = [$(OpcodeInfo {
            name: $name,
            transport: Transport::$transport,
            operation: Operation::$op,
            position: Position::$pos,
            headers: $headers,
            payload: $payload,
            ext_len: $headers.wire_len() as u8,
        },)*];

        /// Opcode value → position in [`Opcode::ALL`]; `NOT_AN_OPCODE` for
        /// the values no opcode has.
        static INDEX: [u8; 256] = {
            let mut t = [NOT_AN_OPCODE; 256];
            let mut i = 0;
            while i < Opcode::ALL.len() {
                t[Opcode::ALL[i] as u8 as usize] = i as u8;
                i += 1;
            }
            t
        };

        impl TryFrom<u8> for Opcode {
            type Error = Error;
            #[inline]
            fn try_from(value: u8) -> Result<Self, Error> {
                match INDEX[value as usize] {
                    NOT_AN_OPCODE => Err(Error::UnknownOpcode(value)),
                    i => Ok(Opcode::ALL[i as usize]),
                }
            }
        }
    };
}

opcodes! {
    RcSendFirst = 0x00, "RC_SEND_FIRST", Rc, Send, First, NONE, true;
    RcSendMiddle = 0x01, "RC_SEND_MIDDLE", Rc, Send, Middle, NONE, true;
    RcSendLast = 0x02, "RC_SEND_LAST", Rc, Send, Last, NONE, true;
    RcSendLastImm = 0x03, "RC_SEND_LAST_WITH_IMMEDIATE", Rc, Send, Last, IMM, true;
    RcSendOnly = 0x04, "RC_SEND_ONLY", Rc, Send, Only, NONE, true;
    RcSendOnlyImm = 0x05, "RC_SEND_ONLY_WITH_IMMEDIATE", Rc, Send, Only, IMM, true;
    RcWriteFirst = 0x06, "RC_RDMA_WRITE_FIRST", Rc, RdmaWrite, First, RETH, true;
    RcWriteMiddle = 0x07, "RC_RDMA_WRITE_MIDDLE", Rc, RdmaWrite, Middle, NONE, true;
    RcWriteLast = 0x08, "RC_RDMA_WRITE_LAST", Rc, RdmaWrite, Last, NONE, true;
    RcWriteLastImm = 0x09, "RC_RDMA_WRITE_LAST_WITH_IMMEDIATE", Rc, RdmaWrite, Last, IMM, true;
    RcWriteOnly = 0x0a, "RC_RDMA_WRITE_ONLY", Rc, RdmaWrite, Only, RETH, true;
    RcWriteOnlyImm = 0x0b, "RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE", Rc, RdmaWrite, Only, RETH_IMM, true;
    RcReadRequest = 0x0c, "RC_RDMA_READ_REQUEST", Rc, ReadRequest, Only, RETH, false;
    RcReadResponseFirst = 0x0d, "RC_RDMA_READ_RESPONSE_FIRST", Rc, ReadResponse, First, AETH, true;
    RcReadResponseMiddle = 0x0e, "RC_RDMA_READ_RESPONSE_MIDDLE", Rc, ReadResponse, Middle, NONE, true;
    RcReadResponseLast = 0x0f, "RC_RDMA_READ_RESPONSE_LAST", Rc, ReadResponse, Last, AETH, true;
    RcReadResponseOnly = 0x10, "RC_RDMA_READ_RESPONSE_ONLY", Rc, ReadResponse, Only, AETH, true;
    RcAcknowledge = 0x11, "RC_ACKNOWLEDGE", Rc, Acknowledge, Only, AETH, false;
    RcAtomicAcknowledge = 0x12, "RC_ATOMIC_ACKNOWLEDGE", Rc, AtomicAcknowledge, Only, AETH_ATOMIC, false;
    RcCompareSwap = 0x13, "RC_COMPARE_SWAP", Rc, CompareSwap, Only, ATOMIC, false;
    RcFetchAdd = 0x14, "RC_FETCH_ADD", Rc, FetchAdd, Only, ATOMIC, false;
    RcSendLastInv = 0x16, "RC_SEND_LAST_WITH_INVALIDATE", Rc, Send, Last, INV, true;
    RcSendOnlyInv = 0x17, "RC_SEND_ONLY_WITH_INVALIDATE", Rc, Send, Only, INV, true;
    UcSendFirst = 0x20, "UC_SEND_FIRST", Uc, Send, First, NONE, true;
    UcSendMiddle = 0x21, "UC_SEND_MIDDLE", Uc, Send, Middle, NONE, true;
    UcSendLast = 0x22, "UC_SEND_LAST", Uc, Send, Last, NONE, true;
    UcSendLastImm = 0x23, "UC_SEND_LAST_WITH_IMMEDIATE", Uc, Send, Last, IMM, true;
    UcSendOnly = 0x24, "UC_SEND_ONLY", Uc, Send, Only, NONE, true;
    UcSendOnlyImm = 0x25, "UC_SEND_ONLY_WITH_IMMEDIATE", Uc, Send, Only, IMM, true;
    UcWriteFirst = 0x26, "UC_RDMA_WRITE_FIRST", Uc, RdmaWrite, First, RETH, true;
    UcWriteMiddle = 0x27, "UC_RDMA_WRITE_MIDDLE", Uc, RdmaWrite, Middle, NONE, true;
    UcWriteLast = 0x28, "UC_RDMA_WRITE_LAST", Uc, RdmaWrite, Last, NONE, true;
    UcWriteLastImm = 0x29, "UC_RDMA_WRITE_LAST_WITH_IMMEDIATE", Uc, RdmaWrite, Last, IMM, true;
    UcWriteOnly = 0x2a, "UC_RDMA_WRITE_ONLY", Uc, RdmaWrite, Only, RETH, true;
    UcWriteOnlyImm = 0x2b, "UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE", Uc, RdmaWrite, Only, RETH_IMM, true;
    UdSendOnly = 0x64, "UD_SEND_ONLY", Ud, Send, Only, DETH, true;
    UdSendOnlyImm = 0x65, "UD_SEND_ONLY_WITH_IMMEDIATE", Ud, Send, Only, DETH_IMM, true;
    Cnp = 0x81, "CNP", Cnp, Cnp, Only, NONE, true;
}

impl Opcode {
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Refuses an opcode that is not legal on a QP of `transport` (IBTA Vol 1 ch. 9:
    /// "the responder shall silently drop a packet whose opcode does not match
    /// the QP's transport service").
    pub fn check_transport(self, transport: Transport) -> Result<(), Error> {
        if self.info().transport == transport {
            Ok(())
        } else {
            Err(Error::OpcodeNotForTransport { opcode: self as u8, transport })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_round_trips_and_its_upper_bits_name_its_transport() {
        for &op in Opcode::ALL {
            assert_eq!(Opcode::try_from(op as u8), Ok(op));
            let expected = match (op as u8) >> 5 {
                0 => Transport::Rc,
                1 => Transport::Uc,
                3 => Transport::Ud,
                4 => Transport::Cnp,
                _ => unreachable!("table holds only RC/UC/UD/CNP"),
            };
            assert_eq!(op.info().transport, expected, "{}", op.name());
        }
    }

    #[test]
    fn reserved_and_unsupported_opcodes_are_refused() {
        let known: Vec<u8> = Opcode::ALL.iter().map(|&o| o as u8).collect();
        for v in 0..=255u8 {
            if !known.contains(&v) {
                assert_eq!(Opcode::try_from(v), Err(Error::UnknownOpcode(v)));
            }
        }
        // RC 0x15 is reserved; RD (0x40..) and XRC (0xa0..) are not spoken.
        assert!(Opcode::try_from(0x15).is_err());
        assert!(Opcode::try_from(0x44).is_err());
        assert!(Opcode::try_from(0xa4).is_err());
        assert_eq!(known.len(), 38);
    }

    #[test]
    fn header_lengths_follow_table_38() {
        assert_eq!(Opcode::RcSendFirst.info().header_len(), 12);
        assert_eq!(Opcode::RcWriteOnlyImm.info().header_len(), 12 + 16 + 4);
        assert_eq!(Opcode::RcReadResponseFirst.info().header_len(), 16);
        assert_eq!(Opcode::RcAtomicAcknowledge.info().header_len(), 12 + 4 + 8);
        assert_eq!(Opcode::RcFetchAdd.info().header_len(), 12 + 28);
        assert_eq!(Opcode::UdSendOnlyImm.info().header_len(), 12 + 8 + 4);
        assert_eq!(Opcode::RcSendOnlyInv.info().header_len(), 16);
    }

    #[test]
    fn transport_check_refuses_cross_transport_opcodes() {
        assert!(Opcode::UcWriteOnly.check_transport(Transport::Uc).is_ok());
        assert_eq!(
            Opcode::RcReadRequest.check_transport(Transport::Uc),
            Err(Error::OpcodeNotForTransport { opcode: 0x0c, transport: Transport::Uc })
        );
        assert!(Opcode::UdSendOnly.check_transport(Transport::Rc).is_err());
    }
}
