//! A TAP device as a [`Link`]: the softrdma device sits behind a kernel TAP
//! interface (optionally inside a network namespace) and exchanges whole
//! Ethernet frames with it, one frame per `read(2)`/`write(2)` — or, with
//! virtio-net headers ([`TapConfig::vnet_hdr`], the default), a run of
//! RoCEv2 frames of one flow per call ([`super::vnet`]).
//!
//! The TAP interface itself is the kernel's side of the wire (it has its own
//! kernel MAC address, and is typically a bridge port); the device behind it
//! has the MAC in [`TapConfig::mac`], which is what [`Link::mac`] reports.
//! The TAP is not persistent: it disappears when the last fd is closed, i.e.
//! when both halves of the returned link are dropped.

use std::ffi::c_int;
use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{opcode, IntegerSetter, Opcode, Updater};

use super::netns::{self, NetNs};
use super::vnet::{self, Received, VnetHdr};
use crate::link::{Link, LinkRx, LinkTx, LinkWait, Offload};

/// How to open a TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// The named network namespace (`ip netns`) to create the TAP in; `None`
    /// for the namespace of this process.
    pub netns: Option<String>,
    /// The interface name (≤ 15 bytes); a `%d` in it lets the kernel pick
    /// a number (see [`open_tap_named`] for the name it chose).
    pub name: String,
    /// The device's MAC address behind the TAP; `None` picks a random
    /// locally administered unicast address.
    pub mac: Option<[u8; 6]>,
    /// The interface MTU (IP packet size).
    pub mtu: usize,
    /// Virtio-net headers before each frame, with checksum and UDP
    /// segmentation offload: runs of frames of one flow are written (and,
    /// where the kernel passes them on whole, read) as one
    /// ([`super::vnet`]). Off: one plain frame per `write(2)`/`read(2)`.
    pub vnet_hdr: bool,
}

impl TapConfig {
    /// A TAP named `name` in this process's namespace, random MAC, MTU 1500.
    pub fn new(name: impl Into<String>) -> TapConfig {
        TapConfig { netns: None, name: name.into(), mac: None, mtu: 1500, vnet_hdr: true }
    }

    /// The same, inside the named network namespace `netns`.
    pub fn in_netns(netns: impl Into<String>, name: impl Into<String>) -> TapConfig {
        TapConfig { netns: Some(netns.into()), ..TapConfig::new(name) }
    }
}

impl Default for TapConfig {
    fn default() -> TapConfig {
        TapConfig::new("srdtap%d")
    }
}

// <linux/if_tun.h>, <linux/if.h>
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const TUN_F_CSUM: usize = 0x01;
const TUN_F_USO4: usize = 0x20;
const TUN_F_USO6: usize = 0x40;
/// `TUNSETOFFLOAD = _IOW('T', 208, unsigned int)`; the flags are the argument.
const TUNSETOFFLOAD: Opcode = opcode::write::<u32>(b'T', 208);
const IFNAMSIZ: usize = 16;
/// `TUNSETIFF = _IOW('T', 202, int)` (the kernel reads a `struct ifreq`
/// regardless of the `int` in the definition).
const TUNSETIFF: Opcode = opcode::write::<c_int>(b'T', 202);

/// `struct ifreq` as far as TUNSETIFF uses it: the name, then the
/// `ifr_flags` member of the union, padded to the union's 24 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

fn check_ifname(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() < IFNAMSIZ
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")))
    }
}

/// Opens `/dev/net/tun` and attaches a TAP named `name` (in the caller's
/// network namespace); returns the fd, the name the kernel gave it, and
/// whether the kernel took UDP segmentation offload.
fn create_tap(name: &str, vnet_hdr: bool) -> io::Result<(OwnedFd, String, bool)> {
    let fd = rustix::fs::open("/dev/net/tun", OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("opening /dev/net/tun: {e}")))?;
    let vnet = if vnet_hdr { IFF_VNET_HDR } else { 0 };
    let mut req = IfReq { name: [0; IFNAMSIZ], flags: IFF_TAP | IFF_NO_PI | vnet, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq`
    // matches in layout and size; `req` outlives the call.
    unsafe { rustix::ioctl::ioctl(&fd, Updater::<TUNSETIFF, IfReq>::new(&mut req)) }
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("TUNSETIFF {name}: {e}")))?;
    let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    let actual = String::from_utf8_lossy(&req.name[..len]).into_owned();
    let uso = vnet_hdr && set_offload(&fd, &actual)?;
    Ok((fd, actual, uso))
}

/// Lets the kernel hand this TAP frames with unfinished UDP checksums and,
/// where it can (USO, Linux ≥ 6.2), whole UDP GSO frames; with checksums
/// only on older kernels, which cut GSO frames before the TAP. Returns
/// whether the kernel took USO.
fn set_offload(fd: &OwnedFd, name: &str) -> io::Result<bool> {
    let mut last = Errno::INVAL;
    for flags in [TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6, TUN_F_CSUM] {
        // SAFETY: TUNSETOFFLOAD takes its flags as the integer argument.
        match unsafe { rustix::ioctl::ioctl(fd, IntegerSetter::<TUNSETOFFLOAD>::new_usize(flags)) } {
            Ok(()) => return Ok(flags & TUN_F_USO4 != 0),
            Err(e) => last = e,
        }
    }
    Err(io::Error::new(io::Error::from(last).kind(), format!("TUNSETOFFLOAD {name}: {last}")))
}

/// A random locally administered unicast MAC address.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut mac)).is_ok();
    if !filled {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.write_u32(std::process::id());
        mac.copy_from_slice(&h.finish().to_be_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// Opens a TAP device as described by `cfg` and returns it as a link whose
/// MAC is the device's (not the TAP interface's). See [`open_tap_named`].
pub fn open_tap(cfg: &TapConfig) -> io::Result<Link> {
    open_tap_named(cfg).map(|(link, _)| link)
}

/// Like [`open_tap`], also returning the interface name the kernel chose
/// (which differs from `cfg.name` only if that contains `%d`).
///
/// The device file is opened and the TAP created on a thread inside
/// `cfg.netns`, so the interface lives in that namespace; then its MTU is
/// set and it is brought up with `ip`.
pub fn open_tap_named(cfg: &TapConfig) -> io::Result<(Link, String)> {
    check_ifname(&cfg.name)?;
    if !(68..=65535).contains(&cfg.mtu) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad MTU {}", cfg.mtu)));
    }
    let (fd, name, uso) = match &cfg.netns {
        Some(ns) => NetNs::open(ns)?.run_in(|| create_tap(&cfg.name, cfg.vnet_hdr))??,
        None => create_tap(&cfg.name, cfg.vnet_hdr)?,
    };
    // From here on, dropping `fd` removes the interface again.
    let ns = cfg.netns.as_deref();
    netns::ip(ns, &["link", "set", "dev", &name, "mtu", &cfg.mtu.to_string(), "up"])?;
    let fd = Arc::new(fd);
    let rx = TapRx { fd: fd.clone(), vnet: cfg.vnet_hdr.then(VnetRx::default), pending: Arc::default() };
    let link = Link {
        tx: Arc::new(TapTx { fd, vnet: cfg.vnet_hdr, runs: AtomicBool::new(uso) }),
        rx: Box::new(rx),
        mac: cfg.mac.unwrap_or_else(random_mac),
        mtu: cfg.mtu,
    };
    Ok((link, name))
}

/// Errors that mean the TAP is gone for good (its interface was deleted,
/// e.g. with its namespace).
fn is_gone(e: Errno) -> bool {
    e == Errno::BADFD || e == Errno::NODEV || e == Errno::NXIO || e == Errno::PIPE
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "TAP device is gone")
}

/// The sending half: one `write(2)` per frame, or per run of frames of one
/// flow (`vnet`), on the shared fd.
struct TapTx {
    fd: Arc<OwnedFd>,
    vnet: bool,
    /// Set when the kernel took USO on this TAP (Linux ≥ 6.2); cleared if
    /// it refuses a UDP GSO write all the same: frames go one by one.
    runs: AtomicBool,
}

/// The virtio-net header of a frame that needs nothing done to it.
const PLAIN: [u8; vnet::HDR_LEN] = [0; vnet::HDR_LEN];

impl TapTx {
    fn write(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        loop {
            return match rustix::io::writev(self.fd.as_fd(), parts) {
                Ok(n) if n == len => Ok(()),
                Ok(n) => Err(io::Error::new(io::ErrorKind::WriteZero, format!("TAP took {n} of {len} bytes"))),
                Err(Errno::INTR) => continue,
                Err(e) if is_gone(e) => Err(gone()),
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Writes `run` (frames `vnet::run_len` put together) in one UDP GSO
    /// write: the run's headers, then each frame's UDP payload.
    fn write_run(&self, run: &[Vec<u8>]) -> io::Result<()> {
        let rh = vnet::run_headers(run);
        let headers = rh.headers();
        let mut parts = [IoSlice::new(&[]); 2 + vnet::MAX_SEGMENTS];
        parts[0] = IoSlice::new(&rh.vnet);
        parts[1] = IoSlice::new(headers);
        for (p, f) in parts[2..].iter_mut().zip(run) {
            *p = IoSlice::new(&f[headers.len()..]);
        }
        self.write(&parts[..2 + run.len()])
    }
}

/// The two ways a TAP takes frames, apart from the fd so that the fallback
/// from runs to single frames can be tested against a kernel that refuses.
trait FrameWriter {
    fn frame(&self, frame: &[u8]) -> io::Result<()>;
    fn run(&self, run: &[Vec<u8>]) -> io::Result<()>;
}

impl FrameWriter for TapTx {
    fn frame(&self, frame: &[u8]) -> io::Result<()> {
        if !self.vnet {
            return self.write(&[IoSlice::new(frame)]);
        }
        // An IPv6 RoCE frame's checksum was left to the link
        // (`finishes_udp_checksums`): the kernel finishes it where a
        // receiver needs it.
        match transport::wire::peek::ipv6_udp_offset(frame) {
            Some(at) => self.write(&[IoSlice::new(&vnet::needs_csum(at)), IoSlice::new(frame)]),
            None => self.write(&[IoSlice::new(&PLAIN), IoSlice::new(frame)]),
        }
    }

    fn run(&self, run: &[Vec<u8>]) -> io::Result<()> {
        self.write_run(run)
    }
}

/// Writes `bufs` in order, as runs while `runs` holds; returns how many
/// frames failed. A kernel that refuses a UDP GSO write (`EINVAL`: a TAP
/// before Linux 6.2) turns runs off for good, and the refused run goes
/// again frame by frame, so no frame is lost to the fallback.
fn send_in_runs(w: &impl FrameWriter, runs: &AtomicBool, bufs: &[Vec<u8>]) -> usize {
    let mut failed = 0;
    let mut i = 0;
    while i < bufs.len() {
        let n = if runs.load(Ordering::Relaxed) { vnet::run_len(&bufs[i..]) } else { 1 };
        if n > 1 {
            match w.run(&bufs[i..i + n]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    runs.store(false, Ordering::Relaxed);
                    continue;
                }
                Err(_) => failed += n,
            }
        } else if w.frame(&bufs[i]).is_err() {
            failed += 1;
        }
        i += n;
    }
    failed
}

impl LinkTx for TapTx {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.frame(frame)
    }

    fn send_bufs(&self, bufs: &mut [Vec<u8>]) -> usize {
        send_in_runs(self, &self.runs, bufs)
    }

    fn sends_are_syscalls(&self) -> bool {
        true
    }

    fn finishes_udp_checksums(&self) -> bool {
        self.vnet
    }

    fn sends_together(&self, first: &[u8], next: &[u8]) -> bool {
        self.runs.load(Ordering::Relaxed) && vnet::run_len(&[first, next]) == 2
    }

    fn offload(&self) -> Offload {
        match (self.vnet, self.runs.load(Ordering::Relaxed)) {
            (false, _) => Offload::Off,
            (true, false) => Offload::Csum,
            (true, true) => Offload::Uso,
        }
    }
}

/// The receiving half: `poll(2)` with the timeout, then `read(2)`.
struct TapRx {
    fd: Arc<OwnedFd>,
    vnet: Option<VnetRx>,
    /// Segments of a UDP GSO frame not handed out yet (seen by `TapWait`).
    pending: Arc<AtomicUsize>,
}

/// A UDP GSO frame read whole, handed out one segment per `recv`.
#[derive(Default)]
struct VnetRx {
    hdr: VnetHdr,
    /// Each read lands here: the virtio-net header, then the frame, which
    /// is `whole[vnet::HDR_LEN..][..len]`.
    whole: Vec<u8>,
    len: usize,
    next: usize,
    count: usize,
}

/// Room for the largest GSO frame: an IPv4 or IPv6 packet of 64 KiB.
const WHOLE: usize = 14 + 40 + 65535;

impl VnetRx {
    fn frame(&self) -> &[u8] {
        &self.whole[vnet::HDR_LEN..vnet::HDR_LEN + self.len]
    }
}

impl TapRx {
    /// Hands out the next segment of the frame read whole, if any is left.
    fn next_segment(&mut self, buf: &mut [u8]) -> Option<usize> {
        let v = self.vnet.as_mut()?;
        while v.next < v.count {
            let i = v.next;
            v.next += 1;
            self.pending.store(v.count - v.next, Ordering::Release);
            if let Some(n) = vnet::segment(&v.hdr, v.frame(), i, buf) {
                return Some(n);
            }
        }
        None
    }

    /// One `read(2)` with the virtio-net header: the frame's length in
    /// `buf`, or `None` if it was taken whole (segments to hand out) or
    /// dropped. A plain `read(2)` into one buffer, not a `readv(2)` that
    /// would put the header and the frame apart: a busy poll is mostly
    /// reads that find nothing, and `readv` costs 30 ns more for each
    /// (importing the iovec), which a frame waits for half of on average;
    /// the copy of a frame that fits `buf` costs less than that for the
    /// small frames a latency turn has.
    fn read_vnet(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
        let v = self.vnet.as_mut().expect("vnet reads only on a vnet TAP");
        // Read into the buffer's spare capacity, never zeroed: its pages
        // become resident only as far as frames reach, so a device whose
        // frames are small keeps 60 KiB less per reader (`scale_ns`).
        v.whole.clear();
        v.whole.reserve_exact(vnet::HDR_LEN + WHOLE);
        let n = rustix::io::read(self.fd.as_fd(), rustix::buffer::spare_capacity(&mut v.whole))?;
        let (Some(len), Some(hdr)) =
            (n.checked_sub(vnet::HDR_LEN), v.whole.get(..vnet::HDR_LEN).and_then(VnetHdr::parse))
        else {
            return Ok(None);
        };
        let frame = &mut v.whole[vnet::HDR_LEN..vnet::HDR_LEN + len];
        match vnet::received(&hdr, frame) {
            Received::Frame if len <= buf.len() => {
                buf[..len].copy_from_slice(frame);
                return Ok(Some(len));
            }
            Received::Segments(count) => {
                (v.hdr, v.len, v.next, v.count) = (hdr, len, 0, count);
                self.pending.store(count, Ordering::Release);
            }
            // Anything else (a frame past the buffer, a GSO frame of
            // another kind) is dropped, as a plain read drops a frame past
            // the MTU.
            _ => {}
        }
        Ok(None)
    }
}

/// Waits on the TAP's fd with `poll(2)`, leaving the frame to be read; an
/// eventfd in the same poll set ends the wait early (`wake`).
struct TapWait {
    fd: Arc<OwnedFd>,
    wake: Option<OwnedFd>,
    pending: Arc<AtomicUsize>,
}

impl LinkWait for TapWait {
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        if self.pending.load(Ordering::Acquire) > 0 {
            return Ok(true);
        }
        let ts = Timespec::try_from(timeout).unwrap_or(Timespec { tv_sec: 3600, tv_nsec: 0 });
        let mut fds = vec![PollFd::new(&*self.fd, PollFlags::IN)];
        if let Some(w) = &self.wake {
            fds.push(PollFd::new(w, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(Errno::INTR) => Ok(false),
            Ok(_) if fds.get(1).is_some_and(|w| w.revents().contains(PollFlags::IN)) => {
                let mut b = [0u8; 8];
                if let Some(w) = &self.wake {
                    let _ = rustix::io::read(w, &mut b);
                }
                Ok(false)
            }
            Ok(_) => {
                let ev = fds[0].revents();
                if ev.contains(PollFlags::IN) {
                    Ok(true)
                } else if ev.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
                    Err(gone())
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            let _ = rustix::io::write(w, &1u64.to_ne_bytes());
        }
    }
}

impl LinkRx for TapRx {
    fn waiter(&self) -> Option<Arc<dyn LinkWait>> {
        // Without an eventfd the wait still works; it just cannot be cut short.
        let wake =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)
                .ok();
        Some(Arc::new(TapWait { fd: self.fd.clone(), wake, pending: self.pending.clone() }))
    }

    /// Long enough to bridge the gap between frames of a stream at the
    /// TAP's speed (≈ 3 µs per 4 KiB frame here), so the sender's
    /// `write(2)` does not pay for waking this thread per frame; short
    /// enough that a slow peer (an emulated guest, 80 µs between frames)
    /// finds the thread asleep and the CPU free.
    fn linger(&self) -> Duration {
        Duration::from_micros(5)
    }

    fn polls_are_syscalls(&self) -> bool {
        true
    }

    /// The same fd: each `read(2)` takes its own frame. Its GSO segments
    /// are its own too (the waiter does not count them: the rescue takes
    /// them all before it lets go).
    fn second_reader(&self) -> Option<Box<dyn LinkRx>> {
        Some(Box::new(TapRx {
            fd: self.fd.clone(),
            vnet: self.vnet.as_ref().map(|_| VnetRx::default()),
            pending: Arc::new(AtomicUsize::new(0)),
        }))
    }

    fn queued(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        // The clock is read only once a wait is due (busy polling reads
        // with a zero timeout, one syscall per poll).
        let mut deadline = None;
        loop {
            if let Some(n) = self.next_segment(buf) {
                return Ok(Some(n));
            }
            let read = if self.vnet.is_some() {
                match self.read_vnet(buf) {
                    Ok(Some(n)) => Ok(n),
                    Ok(None) => continue,
                    Err(e) => Err(e),
                }
            } else {
                rustix::io::read(self.fd.as_fd(), &mut *buf)
            };
            match read {
                // Cannot happen for frames within the MTU; drop the rest.
                Ok(n) if n > buf.len() => continue,
                Ok(n) => return Ok(Some(n)),
                Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                Err(e) if is_gone(e) => return Err(gone()),
                Err(e) => return Err(e.into()),
            }
            if timeout.is_zero() {
                return Ok(None);
            }
            let d = *deadline.get_or_insert_with(|| Instant::now().checked_add(timeout));
            let left = match d {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Ok(None);
            }
            let ts = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: 3600, tv_nsec: 0 });
            let mut fds = [PollFd::new(&*self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    let ev = fds[0].revents();
                    if ev.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) && !ev.contains(PollFlags::IN) {
                        return Err(gone());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..16 {
            let m = random_mac();
            assert_eq!(m[0] & 0x03, 0x02, "{m:02x?}");
        }
        assert_ne!(random_mac(), random_mac());
    }

    /// Takes lone frames, in order; refuses runs the way a kernel without
    /// UDP GSO on TAPs does, or fails them.
    struct Kernel {
        got: std::sync::Mutex<Vec<Vec<u8>>>,
        runs: io::ErrorKind,
    }

    impl FrameWriter for Kernel {
        fn frame(&self, frame: &[u8]) -> io::Result<()> {
            self.got.lock().unwrap().push(frame.to_vec());
            Ok(())
        }

        fn run(&self, _: &[Vec<u8>]) -> io::Result<()> {
            Err(io::Error::new(self.runs, "refused"))
        }
    }

    fn six_frames() -> Vec<Vec<u8>> {
        (0..6u16).map(|i| vnet::tests::frame(0x100 + i, 1024)).collect()
    }

    #[test]
    fn a_refused_run_goes_again_frame_by_frame() {
        let bufs = six_frames();
        assert_eq!(vnet::run_len(&bufs), 6, "the frames make one run");
        let k = Kernel { got: Default::default(), runs: io::ErrorKind::InvalidInput };
        let runs = AtomicBool::new(true);
        assert_eq!(send_in_runs(&k, &runs, &bufs), 0, "nothing lost to the fallback");
        assert!(!runs.load(Ordering::Relaxed), "runs are off for good");
        let got = k.got.into_inner().unwrap();
        assert_eq!(got, bufs, "every frame once, in order");
        // Later batches go frame by frame at once.
        let k2 = Kernel { got: Default::default(), runs: io::ErrorKind::InvalidInput };
        assert_eq!(send_in_runs(&k2, &runs, &bufs[..3]), 0);
        assert_eq!(k2.got.into_inner().unwrap().len(), 3);
    }

    #[test]
    fn a_run_that_fails_otherwise_counts_each_frame() {
        let bufs = six_frames();
        let k = Kernel { got: Default::default(), runs: io::ErrorKind::BrokenPipe };
        let runs = AtomicBool::new(true);
        assert_eq!(send_in_runs(&k, &runs, &bufs), 6);
        assert!(runs.load(Ordering::Relaxed), "a gone TAP says nothing about GSO");
    }

    #[test]
    fn config_checks() {
        assert!(check_ifname("srd1234x0").is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a b").is_err());
        let bad = TapConfig { mtu: 10, ..TapConfig::new("x") };
        assert_eq!(open_tap(&bad).err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }
}
