//! Wire formats of RoCE frames, after smoltcp's `wire` module: a checked view over
//! untrusted bytes (`check_len` once, then accessors that cannot panic) and a
//! `Repr` type holding the meaning of a header, with `parse` and `emit`.
//!
//! Ethernet, IPv4, IPv6 and UDP views are smoltcp's; the InfiniBand transport
//! headers are zerocopy structs with network-endian fields, one file per header.
//!
//! Layout of a RoCEv2 frame (IBTA Vol 1 Annex A17):
//! ```text
//! Ethernet [802.1Q] | IPv4 or IPv6 | UDP (dst 4791) | BTH | ext headers | payload | pad | ICRC
//! ```
//! and of a RoCEv1 frame (Annex A16): `Ethernet (0x8915) | GRH | BTH | ...`.

pub mod aeth;
pub mod atomic_ack_eth;
pub mod atomic_eth;
pub mod bth;
pub mod crc32;
pub mod crc32_sparse;
pub mod deth;
mod error;
pub mod ethernet;
pub mod frame;
pub mod grh;
pub mod icrc;
pub mod icrc_copy;
pub mod ieth;
pub mod immdt;
pub mod ip;
pub mod jketh;
pub mod opcode;
pub mod packet;
pub mod peek;
pub mod reth;
pub mod roce;
pub mod udp;

pub use aeth::{AethRepr, NakCode, Syndrome};
pub use atomic_ack_eth::AtomicAckEthRepr;
pub use atomic_eth::AtomicEthRepr;
pub use bth::BthRepr;
pub use deth::DethRepr;
pub use error::Error;
pub use ethernet::{EthernetRepr, VlanTag};
pub use frame::{Frame, FrameRepr, NetRepr};
pub use grh::GrhRepr;
pub use ieth::IethRepr;
pub use immdt::ImmDtRepr;
pub use ip::{Ipv4Repr, Ipv6Repr};
pub use jketh::JkethRepr;
pub use opcode::{Opcode, OpcodeInfo, Transport};
pub use packet::{ExtHeaders, IbPacket, IbRepr, Payload};
pub use reth::RethRepr;
pub use roce::{classify, FrameKind, ROCEV1_ETHERTYPE, ROCEV2_UDP_PORT};
pub use udp::{UdpChecksum, UdpRepr};

pub type Result<T> = core::result::Result<T, Error>;
