//! Root-only: the TAP backend and the host stack against real kernels.
//!
//! Two network namespaces A and B, joined by a veth pair; in each, a bridge
//! enslaving the veth end and a TAP opened with `open_tap`. Behind each TAP
//! a `Host` answers ARP/NDISC/echo (a pump thread feeds it the received
//! frames). Checked: raw frames cross from link A to link B and back; the
//! kernel of namespace A pings host A (IPv4 and IPv6) through its bridge;
//! host B resolves host A's addresses across the veth; host A resolves the
//! kernel's bridge address. Everything is torn down by Drop guards, also when
//! an assertion fails, and the test checks that no namespace or TAP is left.
//!
//! Without root this prints `skipped: REASON` (and fails under `CI=true`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use softrdma::backend::host::{Host, Resolution};
use softrdma::backend::netns::{self, unique_name, NetNs};
use softrdma::backend::tap::{open_tap_named, TapConfig};
use softrdma::link::{Link, LinkTx};

const SUBNET_V4: &str = "10.77.0";
const SUBNET_V6: &str = "fd77:5ff:7e57::";

fn v4(host: u8) -> Ipv4Addr {
    format!("{SUBNET_V4}.{host}").parse().unwrap()
}
fn v6(host: u8) -> Ipv6Addr {
    format!("{SUBNET_V6}{host}").parse().unwrap()
}

/// A link plus the host behind it: a thread receives frames, lets the host
/// answer them and hands every frame on to the test.
struct Pump {
    tx: Arc<dyn LinkTx>,
    mac: [u8; 6],
    host: Arc<Mutex<Host>>,
    frames: Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    t0: Instant,
}

impl Pump {
    fn start(link: Link, addrs: Vec<(IpAddr, u8)>) -> Pump {
        let Link { tx, mut rx, mac, mtu } = link;
        let host = Arc::new(Mutex::new(Host::new(mac, addrs)));
        let stop = Arc::new(AtomicBool::new(false));
        let (frames_tx, frames) = mpsc::channel();
        let t0 = Instant::now();
        let thread = {
            let (tx, host, stop) = (tx.clone(), host.clone(), stop.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let mut buf = vec![0u8; mtu + 18];
                while !stop.load(Ordering::Relaxed) {
                    let Some(n) = rx.recv(&mut buf, Duration::from_millis(20))? else {
                        continue;
                    };
                    let frame = &buf[..n];
                    let replies = host.lock().unwrap().handle(frame, t0.elapsed());
                    for r in replies {
                        tx.send(&r)?;
                    }
                    let _ = frames_tx.send(frame.to_vec());
                }
                Ok(())
            })
        };
        Pump { tx, mac, host, frames, stop, thread: Some(thread), t0 }
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Resolves `ip` through the host, sending its requests, until known or
    /// `timeout` passes.
    fn resolve(&self, ip: IpAddr, timeout: Duration) -> Option<[u8; 6]> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let r = self.host.lock().unwrap().resolve(ip, self.now());
            match r {
                Resolution::Known(mac) => return Some(mac),
                Resolution::Pending(Some(req)) => self.tx.send(&req).unwrap(),
                Resolution::Pending(None) => {}
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits for a received frame that satisfies `want`.
    fn wait_frame(&self, want: impl Fn(&[u8]) -> bool, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok(f) if want(&f) => return Some(f),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Stops the thread and closes the TAP (both halves of the link).
    fn shutdown(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().expect("pump thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        let r = self.shutdown();
        if !std::thread::panicking() {
            r.expect("pump thread failed");
        }
    }
}

/// Everything the test creates. Fields drop in order: pumps (closing the
/// TAPs) before the namespaces (which takes the bridges and veths along).
struct Testbed {
    a: Pump,
    b: Pump,
    tap_a: String,
    tap_b: String,
    br_a: String,
    ns_a: NetNs,
    ns_b: NetNs,
}

impl Testbed {
    fn new() -> Testbed {
        let ns_a = NetNs::create(&unique_name("srd")).unwrap();
        let ns_b = NetNs::create(&unique_name("srd")).unwrap();
        let (na, nb) = (Some(ns_a.name()), Some(ns_b.name()));
        let (veth_a, veth_b) = (unique_name("srv"), unique_name("srv"));
        let (br_a, br_b) = (unique_name("srb"), unique_name("srb"));
        netns::veth_pair(&veth_a, na, &veth_b, nb).unwrap();
        netns::bridge(na, &br_a).unwrap();
        netns::bridge(nb, &br_b).unwrap();
        netns::enslave(na, &veth_a, &br_a).unwrap();
        netns::enslave(nb, &veth_b, &br_b).unwrap();
        netns::add_addr(na, &br_a, &format!("{}/24", v4(1))).unwrap();
        let ipv6 = ipv6_available();
        if ipv6 {
            netns::add_addr(na, &br_a, &format!("{}/64", v6(1))).unwrap();
        }

        let tap = |ns: &NetNs, mac: [u8; 6]| {
            let cfg = TapConfig { mac: Some(mac), ..TapConfig::in_netns(ns.name(), unique_name("srt")) };
            let (link, name) = open_tap_named(&cfg).unwrap();
            assert_eq!(link.mac, mac);
            assert_eq!(link.mtu, 1500);
            (link, name)
        };
        let (link_a, tap_a) = tap(&ns_a, [0x02, 0x5f, 0x0a, 0, 0, 2]);
        let (link_b, tap_b) = tap(&ns_b, [0x02, 0x5f, 0x0b, 0, 0, 3]);
        netns::enslave(na, &tap_a, &br_a).unwrap();
        netns::enslave(nb, &tap_b, &br_b).unwrap();

        let a = Pump::start(link_a, vec![(v4(2).into(), 24), (v6(2).into(), 64)]);
        let b = Pump::start(link_b, vec![(v4(3).into(), 24), (v6(3).into(), 64)]);
        Testbed { a, b, tap_a, tap_b, br_a, ns_a, ns_b }
    }
}

fn ipv6_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6").is_ok_and(|s| s.trim() == "0")
}

fn tun_links(ns: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "-o", "link", "show", "type", "tun"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The MAC of `ifname` in `ns`, from `ip -br link`.
fn if_mac(ns: &str, ifname: &str) -> [u8; 6] {
    let out = Command::new("ip").args(["-n", ns, "-br", "link", "show", "dev", ifname]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let field = text.split_whitespace().nth(2).unwrap_or_else(|| panic!("no MAC in {text:?}"));
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(field.split(':')) {
        *m = u8::from_str_radix(h, 16).unwrap();
    }
    mac
}

/// Makes the kernel of namespace `ns` ping `dst` twice: with ping(8) if
/// installed, else with a raw ICMP socket inside the namespace.
fn kernel_ping(ns: &NetNs, dst: IpAddr) -> Result<(), String> {
    let have_ping = Command::new("ping").arg("-V").output().is_ok_and(|o| o.status.success());
    if have_ping {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), "ping", "-c", "2", "-W", "2", &dst.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ping {dst} in {}: {}\n{}{}",
                ns.name(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        };
    }
    eprintln!("no ping(8): pinging {dst} from a raw ICMP socket in {}", ns.name());
    ns.run_in(|| raw_ping(dst)).map_err(|e| e.to_string())?
}

/// Two echo requests from a raw socket of the calling thread's namespace;
/// `Ok` if both are answered within 2 s each.
fn raw_ping(dst: IpAddr) -> Result<(), String> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{ipproto, recv, sendto, socket, AddressFamily, RecvFlags, SendFlags, SocketType};
    let (family, proto, request_type, reply_type) = match dst {
        IpAddr::V4(_) => (AddressFamily::INET, ipproto::ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (AddressFamily::INET6, ipproto::ICMPV6, 128, 129),
    };
    let fd = socket(family, SocketType::RAW, Some(proto)).map_err(|e| format!("raw socket: {e}"))?;
    let ident = (std::process::id() & 0xffff) as u16;
    for seq in 1..=2u16 {
        let mut msg = vec![request_type, 0, 0, 0];
        msg.extend_from_slice(&ident.to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(b"softrdma raw ping");
        if dst.is_ipv4() {
            // The kernel fills in the ICMPv6 checksum, not the ICMPv4 one.
            let mut sum: u32 =
                msg.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            msg[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        }
        let sent = match dst {
            IpAddr::V4(a) => sendto(&fd, &msg, SendFlags::empty(), &std::net::SocketAddrV4::new(a, 0)),
            IpAddr::V6(a) => sendto(&fd, &msg, SendFlags::empty(), &std::net::SocketAddrV6::new(a, 0, 0, 0)),
        };
        sent.map_err(|e| format!("sendto {dst}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        'wait: loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no echo reply from {dst} (seq {seq})"));
            }
            let ts = Timespec::try_from(left).unwrap();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            if poll(&mut fds, Some(&ts)).map_err(|e| e.to_string())? == 0 {
                continue;
            }
            let mut buf = [0u8; 2048];
            let (_, n) = recv(&fd, &mut buf[..], RecvFlags::empty()).map_err(|e| e.to_string())?;
            // Raw IPv4 sockets deliver the IP header too.
            let icmp = match dst {
                IpAddr::V4(_) => &buf[usize::from(buf[0] & 0x0f) * 4..n],
                IpAddr::V6(_) => &buf[..n],
            };
            if icmp.len() >= 8
                && icmp[0] == reply_type
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                break 'wait;
            }
        }
    }
    Ok(())
}

#[test]
fn tap_links_across_namespaces() {
    softrdma::require_root!();
    let ipv6 = ipv6_available();
    let tb = Testbed::new();
    let (na, nb) = (tb.ns_a.name().to_owned(), tb.ns_b.name().to_owned());
    assert!(tun_links(&na).contains(&tb.tap_a), "TAP A exists in namespace A");
    assert!(tun_links(&nb).contains(&tb.tap_b), "TAP B exists in namespace B");
    assert_ne!(if_mac(&na, &tb.tap_a), tb.a.mac, "the device MAC is not the TAP's");

    // (a) A raw Ethernet frame from link A arrives on link B, and back.
    for (from, to, marker) in [(&tb.a, &tb.b, b"softrdma a->b"), (&tb.b, &tb.a, b"softrdma b->a")] {
        let mut frame = Vec::new();
        frame.extend_from_slice(&to.mac);
        frame.extend_from_slice(&from.mac);
        frame.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        frame.extend_from_slice(marker);
        frame.resize(60, 0);
        let mut got = None;
        for _ in 0..25 {
            from.tx.send(&frame).unwrap();
            got = to.wait_frame(|f| f == frame.as_slice(), Duration::from_millis(200));
            if got.is_some() {
                break;
            }
        }
        assert_eq!(got.as_deref(), Some(frame.as_slice()), "{}", String::from_utf8_lossy(marker));
    }

    // (b) The kernel of namespace A pings host A through its bridge.
    kernel_ping(&tb.ns_a, v4(2).into()).unwrap();
    if ipv6 {
        kernel_ping(&tb.ns_a, v6(2).into()).unwrap();
    } else {
        eprintln!("IPv6 disabled here: skipping the IPv6 ping");
    }
    // ... and the kernel learnt host A's MAC for it.
    let neigh = Command::new("ip").args(["-n", &na, "neigh", "show", &v4(2).to_string()]).output().unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_lowercase();
    let mac_text: Vec<String> = tb.a.mac.iter().map(|b| format!("{b:02x}")).collect();
    assert!(neigh.contains(&mac_text.join(":")), "kernel neighbour entry: {neigh}");

    // (c) Host B resolves host A across the veth (IPv4, IPv6, link-local).
    assert_eq!(tb.b.resolve(v4(2).into(), Duration::from_secs(5)), Some(tb.a.mac));
    assert_eq!(tb.b.host.lock().unwrap().lookup(v4(2).into()), Some(tb.a.mac));
    if ipv6 {
        assert_eq!(tb.b.resolve(v6(2).into(), Duration::from_secs(5)), Some(tb.a.mac));
        let ll = tb.a.host.lock().unwrap().link_local();
        assert_eq!(tb.b.resolve(ll.into(), Duration::from_secs(5)), Some(tb.a.mac));
    }
    // Host A learnt host B from B's ARP request.
    assert_eq!(tb.a.host.lock().unwrap().lookup(v4(3).into()), Some(tb.b.mac));
    // Host A resolves the kernel's bridge address in namespace A.
    let br_mac = if_mac(&na, &tb.br_a);
    assert_eq!(tb.a.resolve(v4(1).into(), Duration::from_secs(5)), Some(br_mac));
    if ipv6 {
        assert_eq!(tb.a.resolve(v6(1).into(), Duration::from_secs(5)), Some(br_mac));
    }

    // Teardown: closing the links removes the TAPs, dropping the handles
    // removes the namespaces.
    let Testbed { mut a, mut b, ns_a, ns_b, .. } = tb;
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    drop((a, b));
    assert_eq!(tun_links(&na), "", "TAP A is gone");
    assert_eq!(tun_links(&nb), "", "TAP B is gone");
    ns_a.delete().unwrap();
    ns_b.delete().unwrap();
    let list = netns_list();
    assert!(!list.contains(&na) && !list.contains(&nb), "namespaces left: {list}");
}

#[test]
fn tap_link_reports_gone_device() {
    softrdma::require_root!();
    let ns = NetNs::create(&unique_name("srd")).unwrap();
    let cfg = TapConfig::in_netns(ns.name(), unique_name("srt"));
    let (mut link, name) = open_tap_named(&cfg).unwrap();
    assert_eq!(link.mac[0] & 0x03, 0x02, "random MAC is locally administered unicast");
    let mut buf = vec![0u8; link.mtu + 18];
    // Nothing arrives on an unconnected TAP (IPv6 noise aside): no error.
    let _ = link.rx.recv(&mut buf, Duration::from_millis(50)).unwrap();
    // Deleting the interface under the open fd: the link reports BrokenPipe.
    netns::del_link(Some(ns.name()), &name).unwrap();
    let mut err = None;
    for _ in 0..50 {
        if let Err(e) = link.rx.recv(&mut buf, Duration::from_millis(20)) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
    assert_eq!(link.tx.send(&[0u8; 60]).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
}
