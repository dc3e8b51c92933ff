//! Network namespaces: create, open and enter them, plus the `ip` plumbing the
//! TAP tests and the demo need (veth pairs, bridges, addresses).
//!
//! Namespaces are created with `ip netns add NAME`, i.e. as iproute2 does it
//! (a bind mount of the namespace on `/run/netns/NAME`), so that `ip -n NAME`
//! and `ip netns exec NAME` see them too. Doing the `unshare` + bind mount
//! ourselves would duplicate iproute2's handling of the `/run/netns` mount
//! propagation for no gain.
//!
//! Entering a namespace is per thread (`setns(2)` with `CLONE_NEWNET` moves
//! only the calling thread), so [`NetNs::run_in`] always runs the closure on a
//! dedicated new thread and never changes the namespace of the caller (which
//! may be an async worker or the test harness).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::thread::LinkNameSpaceType;

/// Where `ip netns` keeps its namespaces (`/var/run` is a link to `/run`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A handle on a named network namespace.
///
/// Holds an fd of the namespace, which keeps it alive even after its name is
/// removed. A namespace made by [`NetNs::create`] is deleted (its name
/// unmounted) when the handle is dropped; one found by [`NetNs::open`] is not.
pub struct NetNs {
    name: String,
    fd: OwnedFd,
    owned: bool,
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetNs").field("name", &self.name).field("owned", &self.owned).finish()
    }
}

fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad network namespace name {name:?} (want 1-64 of [A-Za-z0-9._-])"),
        ))
    }
}

/// Deletes a namespace this process created (`ip netns delete`), and
/// with it the reaper's record of it.
fn remove(name: &str) -> io::Result<()> {
    let r = ip(None, &["netns", "delete", name]);
    super::netns_reaper::untrack(name);
    r
}

fn ns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

impl NetNs {
    /// Creates the network namespace `name` (`ip netns add`); it is deleted
    /// again when the handle is dropped. Fails if it already exists.
    pub fn create(name: &str) -> io::Result<NetNs> {
        check_name(name)?;
        ip(None, &["netns", "add", name])?;
        super::netns_reaper::track(name);
        match Self::open_path(name) {
            Ok(fd) => Ok(NetNs { name: name.to_owned(), fd, owned: true }),
            Err(e) => {
                let _ = remove(name);
                Err(e)
            }
        }
    }

    /// Opens the existing named namespace `name` (`/run/netns/NAME`); it is
    /// left alone on drop.
    pub fn open(name: &str) -> io::Result<NetNs> {
        check_name(name)?;
        Ok(NetNs { name: name.to_owned(), fd: Self::open_path(name)?, owned: false })
    }

    fn open_path(name: &str) -> io::Result<OwnedFd> {
        let path = ns_path(name);
        rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("opening network namespace {}: {e}", path.display()))
        })
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle deletes the namespace on drop.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Runs `f` on a new thread that first enters this namespace; returns
    /// what `f` returns. The calling thread's namespace is never touched.
    /// Sockets and devices `f` creates belong to this namespace and stay
    /// there when the thread ends. A panic in `f` is resumed on the caller.
    pub fn run_in<R, F>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd.as_fd();
        let name = &self.name;
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new().name(format!("netns-{name}")).spawn_scoped(
                s,
                move || -> io::Result<R> {
                    rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::Network)).map_err(|e| {
                        io::Error::new(io::Error::from(e).kind(), format!("setns into network namespace {name}: {e}"))
                    })?;
                    Ok(f())
                },
            )?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Deletes the namespace now (if this handle owns it) and reports errors
    /// that a drop would swallow.
    pub fn delete(mut self) -> io::Result<()> {
        let owned = std::mem::replace(&mut self.owned, false);
        if owned {
            remove(&self.name)
        } else {
            Ok(())
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = remove(&self.name) {
                eprintln!("softrdma: could not delete network namespace {}: {e}", self.name);
            }
        }
    }
}

/// Runs `ip [-n NS] ARGS…`; an error carries the command line, the exit
/// status and whatever `ip` wrote to stderr.
pub fn ip(ns: Option<&str>, args: &[&str]) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    let line = || {
        let mut s = String::from("ip");
        if let Some(ns) = ns {
            s.push_str(" -n ");
            s.push_str(ns);
        }
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `{}`: {e}", line())))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(format!("`{}` failed ({}): {}", line(), out.status, stderr.trim())))
    }
}

/// Creates a veth pair: `a` inside namespace `ns_a`, its peer `b` inside
/// `ns_b` (`None` = the namespace of this process; tests never use that).
/// Both ends start down.
pub fn veth_pair(a: &str, ns_a: Option<&str>, b: &str, ns_b: Option<&str>) -> io::Result<()> {
    let mut args = vec!["link", "add", a, "type", "veth", "peer", "name", b];
    if let Some(nb) = ns_b {
        args.extend(["netns", nb]);
    }
    ip(ns_a, &args)
}

/// Creates a bridge (STP off, no forwarding delay) in `ns` and brings it up.
pub fn bridge(ns: Option<&str>, name: &str) -> io::Result<()> {
    ip(ns, &["link", "add", "name", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
    link_up(ns, name)
}

/// Makes `ifname` a port of `bridge` and brings it up.
pub fn enslave(ns: Option<&str>, ifname: &str, bridge: &str) -> io::Result<()> {
    ip(ns, &["link", "set", "dev", ifname, "master", bridge])?;
    link_up(ns, ifname)
}

/// Brings `ifname` up.
pub fn link_up(ns: Option<&str>, ifname: &str) -> io::Result<()> {
    ip(ns, &["link", "set", "dev", ifname, "up"])
}

/// Sets the MTU of `ifname`.
pub fn set_mtu(ns: Option<&str>, ifname: &str, mtu: usize) -> io::Result<()> {
    ip(ns, &["link", "set", "dev", ifname, "mtu", &mtu.to_string()])
}

/// Adds `cidr` (e.g. `10.0.0.1/24`, `fd00::1/64`) to `ifname`. IPv6
/// addresses are added with `nodad`, so they are usable at once.
pub fn add_addr(ns: Option<&str>, ifname: &str, cidr: &str) -> io::Result<()> {
    if cidr.contains(':') {
        ip(ns, &["addr", "add", cidr, "dev", ifname, "nodad"])
    } else {
        ip(ns, &["addr", "add", cidr, "dev", ifname])
    }
}

/// Deletes the link `ifname` (for a veth, both ends go).
pub fn del_link(ns: Option<&str>, ifname: &str) -> io::Result<()> {
    ip(ns, &["link", "del", "dev", ifname])
}

/// A name unique to this process for namespaces and interfaces:
/// `PREFIX` + pid + counter, cut to 15 bytes (the interface-name limit);
/// keep `prefix` short (≤ 4 bytes) so nothing is lost.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = format!("{prefix}{}x{n}", std::process::id());
    s.truncate(15);
    s
}

/// Effective capabilities of this process, from `/proc/self/status`.
fn cap_eff() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// `Ok` if this process can create network namespaces and TAP devices:
/// CAP_SYS_ADMIN and CAP_NET_ADMIN, `unshare(CLONE_NEWNET)` works (tried on
/// a throw-away thread), `/dev/net/tun` opens, and `ip` runs. Otherwise the
/// reason why not.
pub fn privileged() -> Result<(), String> {
    let caps = cap_eff().ok_or("cannot read CapEff from /proc/self/status")?;
    for (bit, name) in [(CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")] {
        if caps & (1 << bit) == 0 {
            return Err(format!("needs root ({name} missing)"));
        }
    }
    let unshared = std::thread::spawn(|| {
        // SAFETY: only CLONE_NEWNET, on a thread of our own that ends right
        // after; no memory, fd table or fs state is shared differently.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
    })
    .join()
    .map_err(|_| "unshare test thread panicked".to_string())?;
    unshared.map_err(|e| format!("cannot create a network namespace: unshare(CLONE_NEWNET): {e}"))?;
    rustix::fs::open("/dev/net/tun", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`ip -V` failed: {}", o.status)),
        Err(e) => Err(format!("cannot run `ip` (iproute2): {e}")),
    }
}

/// For root-only tests: `true` if the test may go on. Otherwise, with
/// `CI=true` in the environment, panics (a CI machine is expected to be
/// privileged, so a skip there would hide a broken setup); elsewhere prints
/// `skipped: REASON` and returns `false`.
pub fn require_root() -> bool {
    match privileged() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("root-only test skipped in CI: {reason}");
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}

/// `require_root!()` at the top of a root-only test returns from it (after
/// printing `skipped: REASON`) when the process is not privileged, and
/// panics instead when `CI=true`. See [`require_root`].
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::backend::netns::require_root() {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("srd123x0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a/b").is_err());
        let a = unique_name("srd");
        let b = unique_name("srd");
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("srd"));
    }

    #[test]
    fn ip_error_carries_stderr() {
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: no ip(8)");
            return;
        }
        let e = ip(None, &["link", "show", "dev", "srd-no-such-if0"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ip link show dev srd-no-such-if0"), "{msg}");
        assert!(msg.to_lowercase().contains("not exist") || msg.contains("Cannot"), "{msg}");
    }

    #[test]
    fn run_in_enters_namespace_and_cleans_up() {
        crate::require_root!();
        let name = unique_name("srd");
        let ns = NetNs::create(&name).unwrap();
        assert!(ns.is_owned());
        // Inside, only `lo` exists; outside, the calling thread is untouched.
        let inside = ns.run_in(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()).unwrap();
        let ifaces: Vec<_> = inside.lines().skip(2).map(|l| l.split(':').next().unwrap().trim()).collect();
        assert_eq!(ifaces, ["lo"]);
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let theirs = ns.run_in(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
        assert_ne!(mine, theirs);
        let opened = NetNs::open(&name).unwrap();
        assert!(!opened.is_owned());
        drop(opened);
        assert!(ns_path(&name).exists());
        drop(ns);
        assert!(!ns_path(&name).exists());
    }

    #[test]
    fn run_in_propagates_panics() {
        crate::require_root!();
        let ns = NetNs::create(&unique_name("srd")).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ns.run_in(|| panic!("boom")).unwrap();
        }));
        assert!(r.is_err());
    }
}
