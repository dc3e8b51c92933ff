use core::fmt;

/// Why a frame or header was refused. Every variant says what was wrong, so a
/// counted drop can be explained to a user looking at their own capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the header (or declared length) needs.
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A length field disagrees with the bytes that carry it.
    BadLength {
        what: &'static str,
        declared: usize,
        actual: usize,
    },
    /// Not a RoCE frame at all (other EtherType, other UDP port, not UDP).
    NotRoce,
    /// IP version nibble disagrees with the EtherType.
    BadIpVersion(u8),
    /// IPv4 header with options: RoCE never sends them and the ICRC rule
    /// (Annex A17.8) is written for the 20-byte header.
    Ipv4Options {
        header_len: usize,
    },
    /// A fragment: RoCE packets are never fragmented (DF set by every sender).
    Ipv4Fragment,
    Ipv4Checksum,
    UdpChecksum,
    /// IPv6 or GRH next header that is not UDP (RoCEv2) / IBA transport 0x1B (RoCEv1).
    BadNextHeader(u8),
    /// BTH transport header version other than 0 (IBTA Vol 1 ch. 9: silently dropped).
    BadTver(u8),
    /// BTH opcode that IBTA leaves reserved, or that softrdma does not speak (RD, XRC).
    UnknownOpcode(u8),
    /// An opcode that is valid, but not for the transport service it is used with.
    OpcodeNotForTransport {
        opcode: u8,
        transport: super::Transport,
    },
    /// Pad count larger than the payload space, or payload+pad not a multiple of 4.
    BadPad {
        pad: u8,
        payload_and_pad: usize,
    },
    /// Payload bytes on an opcode that carries none (ACK, READ request, atomics).
    UnexpectedPayload {
        opcode: u8,
        len: usize,
    },
    /// The ICRC in the trailer is not the one computed over the packet.
    IcrcMismatch {
        expected: u32,
        found: u32,
    },
    /// The output buffer given to `emit` is too small.
    BufferTooSmall {
        need: usize,
        have: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match *self {
            Truncated { what, need, have } => {
                write!(f, "truncated {what}: need {need} bytes, have {have}")
            }
            BadLength { what, declared, actual } => {
                write!(f, "bad {what} length: declared {declared}, actual {actual}")
            }
            NotRoce => write!(f, "not a RoCE frame"),
            BadIpVersion(v) => write!(f, "bad IP version {v}"),
            Ipv4Options { header_len } => {
                write!(f, "IPv4 header with options ({header_len} bytes) is not RoCE")
            }
            Ipv4Fragment => write!(f, "fragmented IPv4 packet is not RoCE"),
            Ipv4Checksum => write!(f, "bad IPv4 header checksum"),
            UdpChecksum => write!(f, "bad UDP checksum"),
            BadNextHeader(n) => write!(f, "unexpected next header {n}"),
            BadTver(v) => write!(f, "BTH transport version {v} (only 0 is defined)"),
            UnknownOpcode(op) => write!(f, "unknown or unsupported BTH opcode 0x{op:02x}"),
            OpcodeNotForTransport { opcode, transport } => {
                write!(f, "opcode 0x{opcode:02x} is not legal on a {transport:?} QP")
            }
            BadPad { pad, payload_and_pad } => {
                write!(f, "bad pad count {pad} for {payload_and_pad} bytes of payload and pad")
            }
            UnexpectedPayload { opcode, len } => {
                write!(f, "opcode 0x{opcode:02x} carries no payload, found {len} bytes")
            }
            IcrcMismatch { expected, found } => {
                write!(f, "ICRC mismatch: computed 0x{expected:08x}, packet has 0x{found:08x}")
            }
            BufferTooSmall { need, have } => {
                write!(f, "output buffer too small: need {need} bytes, have {have}")
            }
        }
    }
}

impl std::error::Error for Error {}
