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

use crate::lent::Lent;

/// The sending half of a link.
pub trait LinkTx: Send + Sync {
    /// Puts one Ethernet frame (no FCS) on the wire.
    fn send(&self, frame: &[u8]) -> io::Result<()>;

    /// Sends the frame held in `buf`. A link that can pass buffers on (the
    /// in-memory fabric) takes the buffer itself and leaves a recycled one
    /// in its place, so the frame is never copied; others copy it out.
    fn send_buf(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.send(buf)
    }

    /// Sends the frames in `bufs`, in order, as `send_buf` would each
    /// (every slot may come back holding another buffer); returns how many
    /// failed. A link whose receiver runs on another CPU (the in-memory
    /// fabric) queues the whole batch under one lock, so the lines that
    /// lock and its queue live on cross between the CPUs once per batch
    /// instead of once per frame.
    fn send_bufs(&self, bufs: &mut [Vec<u8>]) -> usize {
        bufs.iter_mut().map(|b| self.send_buf(b)).filter(Result::is_err).count()
    }

    /// Whether the link takes frames whose payloads are still in their
    /// MRs (`send_bufs_lent`), copying each in only on delivery.
    fn lends(&self) -> bool {
        false
    }

    /// `send_bufs` for frames of which some have payloads still in their
    /// MRs: `lent` holds `(index into bufs, payload)`, and is left empty.
    /// A link that does not `lends` copies them in first.
    fn send_bufs_lent(&self, bufs: &mut [Vec<u8>], lent: &mut Vec<(usize, Lent)>) -> usize {
        let mut spent = Vec::new();
        crate::lent::fill(lent, bufs, &mut spent);
        self.send_bufs(bufs)
    }

    /// Whether `send_bufs` is worth a batch: frames held back for it wait
    /// for their batch-mates, which pays only where the batch saves work.
    fn batches_sends(&self) -> bool {
        false
    }

    /// Whether each send is a system call that carries the frame through
    /// the kernel on the caller's CPU (a TAP's `write(2)`: ≈ 2–2.5 µs
    /// through the bridges). The device then writes frames after it lets go
    /// of its lock, so other threads (the receive thread with an ACK, say)
    /// do not wait out a whole window of writes.
    fn sends_are_syscalls(&self) -> bool {
        false
    }

    /// What the kernel does for this link's frames beyond carrying them
    /// (`dev show` reports it: a TAP that fell back to one frame per write
    /// runs at half the speed, and the user should be able to see why).
    fn offload(&self) -> Offload {
        Offload::Off
    }

    /// Whether this link finishes UDP checksums left partial
    /// (`UdpChecksum::Partial`) in every IPv6 RoCE frame it is given, as a
    /// NIC with checksum offload does: the device's QPs then leave them so.
    fn finishes_udp_checksums(&self) -> bool {
        false
    }

    /// Whether `next`, queued right behind `first`, crosses into the
    /// kernel in the same write (a TAP's UDP GSO run).
    fn sends_together(&self, _first: &[u8], _next: &[u8]) -> bool {
        false
    }
}

/// How frames cross a link's kernel boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// One complete frame per transfer (the in-memory fabric; a TAP
    /// without virtio-net headers).
    Off,
    /// Virtio-net headers, the kernel finishing UDP checksums, but one
    /// frame per write: the kernel refused UDP GSO.
    Csum,
    /// A run of one flow's frames per write, as one UDP GSO packet.
    Uso,
}

impl Offload {
    /// The word `dev show` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Offload::Off => "off",
            Offload::Csum => "csum",
            Offload::Uso => "uso",
        }
    }
}

/// Waits until a link holds a frame without taking it, so that whichever
/// thread is on duty (the receive thread, or an application thread that
/// busy-polls) takes it.
pub trait LinkWait: Send + Sync {
    /// `Ok(true)` when a frame is waiting, `Ok(false)` when `timeout`
    /// passed; an error of kind `BrokenPipe` means the link is gone.
    fn wait(&self, timeout: Duration) -> io::Result<bool>;

    /// Ends a wait in progress (or the next one) at once, returning
    /// `Ok(false)`: how a stopping device gets its receive thread back.
    fn wake(&self) {}
}

/// The receiving half of a link.
pub trait LinkRx: Send {
    /// A handle that waits for frames without the receiving half itself
    /// (`None`: the link only offers blocking `recv`).
    fn waiter(&self) -> Option<Arc<dyn LinkWait>> {
        None
    }

    /// How long the receive thread keeps polling this link after a batch
    /// unless the device says otherwise (`DeviceConfig::rx_linger`): long
    /// where a poll is cheap and a wake-up dear (the in-memory fabric),
    /// short where each poll is a syscall and the spinning CPU is one the
    /// kernel and other processes on the wire (an emulated peer, say) need.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether each poll of this link is a system call (a TAP's `read(2)`).
    /// An application thread that busy-polls such a link takes one frame
    /// per poll: after the frame it wants, another poll would only find
    /// the link empty, and that `read(2)` (≈ 170 ns) would sit between the
    /// frame and the application seeing it.
    fn polls_are_syscalls(&self) -> bool {
        false
    }

    /// The frames of the last `recv_batch` (bit `i` for `bufs[i]`) whose
    /// ICRC the link checked over their bytes as it copied them in (the
    /// in-memory fabric's lent payloads, `crate::lent::fill_checked`); the
    /// device does not compute those again. Taking it clears it.
    fn take_icrc_checked(&mut self) -> u64 {
        0
    }

    /// Another reader of the same link, with state of its own, for the
    /// receive thread to take frames while a descheduled application
    /// thread holds this one (`Shared::take_or_rescue`). Each frame goes
    /// to one reader. `None`: the link has no second reader.
    fn second_reader(&self) -> Option<Box<dyn LinkRx>> {
        None
    }

    /// Frames the link already holds, handed out without a system call
    /// (the rest of a UDP GSO frame a TAP read whole): a poll takes them
    /// with the frame it read.
    fn queued(&self) -> usize {
        0
    }

    /// Waits up to `timeout` for one frame and copies it into `buf`; returns
    /// its length, or `Ok(None)` when the timeout passed. `buf` is at least
    /// `mtu + 18` bytes long. An error of kind `BrokenPipe` means the link is
    /// gone for good.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;

    /// Like [`LinkRx::recv`], but a link that hands over buffers swaps its
    /// own into `buf` instead of copying. The frame is `buf[..n]` for the
    /// `n` returned (`buf` may be longer: it is not shrunk, so a reused
    /// buffer is not zeroed again for every frame). `max` is the largest
    /// frame the caller takes.
    fn recv_buf(&mut self, buf: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        if buf.len() < max {
            buf.resize(max, 0);
        }
        self.recv(&mut buf[..max], timeout)
    }

    /// Takes up to `bufs.len()` frames, waiting up to `first` for the
    /// first; frame `i` is `bufs[i][..lens[i]]`. Returns how many. An error
    /// is returned only when no frame was taken. A link that queues frames
    /// (the in-memory fabric) hands over a whole batch per lock.
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
        max: usize,
        first: Duration,
    ) -> io::Result<usize> {
        let mut k = 0;
        while k < bufs.len().min(lens.len()) {
            let wait = if k == 0 { first } else { Duration::ZERO };
            match self.recv_buf(&mut bufs[k], max, wait) {
                Ok(Some(n)) => {
                    lens[k] = n;
                    k += 1
                }
                Ok(None) => break,
                Err(e) if k == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(k)
    }
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
