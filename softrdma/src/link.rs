//! How a device reaches its wire: a link carries whole Ethernet frames.
//!
//! The sending half is shared by every thread that posts work (a frame goes
//! out from the thread that produced it); the receiving half is owned by the
//! device's receive thread. Backends: [`crate::backend::memory`] (in-process
//! fabric, no privileges) and [`crate::backend::tap`] (a TAP device inside a
//! network namespace).

use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The sending half of a link.
pub trait LinkTx: Send + Sync {
    /// Puts one Ethernet frame (no FCS) on the wire.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
}

/// The receiving half of a link.
pub trait LinkRx: Send {
    /// Waits up to `timeout` for one frame and copies it into `buf`; returns
    /// its length, or `Ok(None)` when the timeout passed. `buf` is at least
    /// `mtu + 18` bytes long. An error of kind `BrokenPipe` means the link is
    /// gone for good.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
}

/// A link as a backend hands it to a device.
pub struct Link {
    pub tx: Arc<dyn LinkTx>,
    pub rx: Box<dyn LinkRx>,
    /// The device's own MAC address on this link.
    pub mac: [u8; 6],
    /// The link MTU (IP packet size), e.g. 1500.
    pub mtu: usize,
}
