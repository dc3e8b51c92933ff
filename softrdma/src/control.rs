//! The control plane: `softrdma daemon` hosts devices and answers the
//! iproute2-`rdma`-style commands (`link`, `dev`, `gid`, `pkey`, `jkey`,
//! `limit`, `rate`, `resource`, `statistic`, `audit`) on a Unix socket.
//!
//! The daemon learns the caller's network namespace from the socket peer's
//! credentials (SO_PEERCRED → /proc/PID/ns/net) and answers from that
//! namespace's view only: a caller inside a container sees its own devices,
//! GIDs, P_Keys, counters, resources and audit events, and nothing of any
//! other namespace. Changing the configuration is for the initial
//! namespace (the host's administrator).
//!
//! Protocol: one request line of arguments separated by U+001F, then the
//! answer until EOF; its first line is `ok` or `error`.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use verbs_api::Gid;

use crate::args::{parse_cidr, parse_mac};
use crate::audit::json_str;
use crate::backend::memory::Fabric;
use crate::backend::tap::{open_tap, TapConfig};
use crate::device::{Device, DeviceConfig};
use crate::namespace::{BoundaryMode, Namespace, Resource};
use crate::qos::RateLimit;

pub const DEFAULT_SOCKET: &str = "/run/softrdma/ctl.sock";
const SEP: char = '\u{1f}';

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's namespace as the daemon names it (`init` for the host's).
    pub ns: String,
    /// Callers in the initial namespace may change the configuration.
    pub admin: bool,
}

impl Caller {
    pub fn host() -> Self {
        Caller { ns: "init".into(), admin: true }
    }
}

struct Entry {
    dev: Arc<Device>,
    netns: String,
    mode: BoundaryMode,
}

#[derive(Default)]
struct State {
    namespaces: BTreeMap<String, Arc<Namespace>>,
    devices: BTreeMap<String, Entry>,
}

/// The daemon's devices and namespaces.
pub struct Control {
    state: Mutex<State>,
    fabric: Fabric,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

type Answer = Result<String, String>;

fn parse_u16(s: &str) -> Result<u16, String> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse::<u32>(),
    };
    v.ok().and_then(|v| u16::try_from(v).ok()).ok_or_else(|| format!("bad 16-bit value {s}"))
}

fn resource(name: &str) -> Result<Resource, String> {
    Resource::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| format!("unknown resource {name} (one of: {})", Resource::ALL.map(|r| r.name()).join(", ")))
}

impl Control {
    pub fn new() -> Self {
        Control { state: Mutex::new(State::default()), fabric: Fabric::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn namespace(st: &mut State, name: &str) -> Arc<Namespace> {
        st.namespaces
            .entry(name.to_string())
            .or_insert_with(|| if name == "init" { Namespace::host() } else { Namespace::new(name, false, false) })
            .clone()
    }

    /// Devices the caller may see: its namespace's (the host sees all).
    fn visible<'a>(st: &'a State, c: &Caller) -> Vec<(&'a String, &'a Entry)> {
        st.devices.iter().filter(|(_, e)| c.ns == "init" || e.dev.namespace().name == c.ns).collect()
    }

    fn need_admin(c: &Caller) -> Result<(), String> {
        if c.admin {
            Ok(())
        } else {
            Err(format!(
                "permission denied: only the initial namespace may change the configuration (caller is in {})",
                c.ns
            ))
        }
    }

    /// Answers one command.
    pub fn handle(&self, c: &Caller, args: &[String], json: bool) -> Answer {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["link", "add", name, rest @ ..] => self.link_add(c, name, rest),
            ["link", "del", name] | ["link", "delete", name] => {
                Self::need_admin(c)?;
                let e = self.lock().devices.remove(*name).ok_or_else(|| format!("no device {name}"))?;
                e.dev.shutdown();
                Ok(String::new())
            }
            ["link"] | ["link", "show"] | ["dev"] | ["dev", "show"] => Ok(self.dev_show(c, json)),
            ["gid"] | ["gid", "show"] => Ok(self.gid_show(c, None, json)),
            ["gid", "show", dev] => Ok(self.gid_show(c, Some(dev), json)),
            ["pkey", "show"] | ["pkey"] => Ok(self.pkey_show(c, None, json)),
            ["pkey", "show", dev] => Ok(self.pkey_show(c, Some(dev), json)),
            ["pkey", op @ ("add" | "del"), dev, key] => {
                Self::need_admin(c)?;
                let key = parse_u16(key)?;
                let st = self.lock();
                let e = st.devices.get(*dev).ok_or_else(|| format!("no device {dev}"))?;
                let mut keys = e.dev.pkeys();
                if *op == "add" {
                    if keys.contains(&key) {
                        return Err(format!("P_Key {key:#06x} already in {dev}'s table"));
                    }
                    keys.push(key);
                } else {
                    let i = keys
                        .iter()
                        .position(|k| *k == key)
                        .ok_or_else(|| format!("P_Key {key:#06x} not in {dev}'s table"))?;
                    if i == 0 {
                        return Err("index 0 (the default partition) cannot be removed".into());
                    }
                    keys.remove(i);
                }
                e.dev.set_pkeys(keys);
                Ok(String::new())
            }
            ["jkey", "set", ns, key] => {
                Self::need_admin(c)?;
                let key = if *key == "none" { None } else { Some(parse_u16(key)?) };
                let mut st = self.lock();
                Self::namespace(&mut st, ns).set_jkey(key);
                Ok(String::new())
            }
            ["limit", "set", ns, res, value] => {
                Self::need_admin(c)?;
                let r = resource(res)?;
                let v = if *value == "unlimited" {
                    None
                } else {
                    Some(value.parse::<u64>().map_err(|_| format!("bad limit {value}"))?)
                };
                let mut st = self.lock();
                Self::namespace(&mut st, ns).set_limit(r, v);
                Ok(String::new())
            }
            ["limit"] | ["limit", "show"] => Ok(self.limit_show(c, None, json)),
            ["limit", "show", ns] => Ok(self.limit_show(c, Some(ns), json)),
            ["rate", "set", ns, rest @ ..] => {
                Self::need_admin(c)?;
                let mut limit = RateLimit::default();
                for kv in rest.chunks(2) {
                    let v = kv.get(1).and_then(|v| v.parse::<u64>().ok()).ok_or("rate set NS [bytes N] [msgs N]")?;
                    match kv[0] {
                        "bytes" => limit.bytes_per_sec = Some(v),
                        "msgs" => limit.msgs_per_sec = Some(v),
                        k => return Err(format!("unknown rate {k} (bytes or msgs)")),
                    }
                }
                let mut st = self.lock();
                Self::namespace(&mut st, ns).set_rate_limit(limit);
                Ok(String::new())
            }
            ["resource"] | ["resource", "show"] => Ok(self.resource_show(c, None, json)),
            ["resource", "show", kind] => Ok(self.resource_show(c, Some(kind), json)),
            ["statistic"] | ["statistic", "show"] => Ok(self.statistic(c, json)),
            ["audit"] | ["audit", "show"] => Ok(self.audit(c)),
            _ => Err(format!("unknown command: {}", a.join(" "))),
        }
    }

    fn link_add(&self, c: &Caller, name: &str, rest: &[&str]) -> Answer {
        Self::need_admin(c)?;
        let mut netns = None;
        let mut tap = None;
        let mut mode = BoundaryMode::Netdev;
        let mut addrs = Vec::new();
        let mut gids = Vec::new();
        let mut mac = None;
        let mut memory = false;
        let mut offload = true;
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let mut v = || it.next().copied().ok_or_else(|| format!("{k} needs a value"));
            match *k {
                "netns" => netns = Some(v()?.to_string()),
                "tap" => tap = Some(v()?.to_string()),
                "mode" => {
                    mode = match v()? {
                        "netdev" => BoundaryMode::Netdev,
                        "partition" => BoundaryMode::Partition,
                        m => return Err(format!("unknown mode {m} (netdev or partition)")),
                    }
                }
                "addr" => addrs.push(parse_cidr(v()?)?),
                "gid" => {
                    let g: std::net::Ipv6Addr = v()?.parse().map_err(|_| format!("bad GID {k}"))?;
                    gids.push(Gid::from_ipv6(g));
                }
                "mac" => mac = Some(parse_mac(v()?)?),
                "memory" => memory = true,
                "offload" => {
                    offload = match v()? {
                        "on" => true,
                        "off" => false,
                        o => return Err(format!("unknown offload {o} (on or off)")),
                    }
                }
                "rocev1" => {
                    return Err("RoCEv1 is refused for devices in containers; softrdma devices speak RoCEv2".into())
                }
                other => return Err(format!("unknown link option {other}")),
            }
        }
        let ns_name = netns.clone().unwrap_or_else(|| "init".to_string());
        if self.lock().devices.contains_key(name) {
            return Err(format!("device {name} exists"));
        }
        let mac = mac.unwrap_or_else(crate::backend::tap::random_mac);
        let link = if memory {
            self.fabric.attach(mac, 1500)
        } else {
            let tap = tap.ok_or(
                "link add NAME netns NS tap TAP [mode netdev|partition] [addr CIDR]... [gid GID]... [mac MAC] [offload on|off]",
            )?;
            let mut cfg = match &netns {
                Some(ns) => TapConfig::in_netns(ns.clone(), tap),
                None => TapConfig::new(tap),
            };
            cfg.mac = Some(mac);
            cfg.vnet_hdr = offload;
            open_tap(&cfg).map_err(|e| format!("cannot open the TAP: {e}"))?
        };
        let mut st = self.lock();
        let ns = Self::namespace(&mut st, &ns_name);
        let mut cfg = DeviceConfig::new(name, addrs);
        cfg.namespace = Some(ns);
        cfg.mode = mode;
        cfg.granted_gids = gids;
        let dev = Device::start(cfg, link).map_err(|e| format!("cannot start {name}: {e}"))?;
        st.devices.insert(name.to_string(), Entry { dev, netns: ns_name, mode });
        Ok(String::new())
    }

    fn dev_show(&self, c: &Caller, json: bool) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (i, (n, e)) in Self::visible(&st, c).into_iter().enumerate() {
            let mac = e.dev.mac().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            let offload = e.dev.offload().as_str();
            if json {
                out.push(format!(
                    "{{\"ifindex\":{i},\"ifname\":{},\"netns\":{},\"mode\":{},\"mac\":{},\"offload\":{},\"state\":\"ACTIVE\"}}",
                    json_str(n),
                    json_str(&e.netns),
                    json_str(&format!("{:?}", e.mode).to_lowercase()),
                    json_str(&mac),
                    json_str(offload)
                ));
            } else {
                out.push(format!(
                    "{i}: {n}: netns {} mode {:?} mac {mac} offload {offload} port 1 state ACTIVE",
                    e.netns, e.mode
                ));
            }
        }
        if json {
            format!("[{}]", out.join(","))
        } else {
            out.join("\n")
        }
    }

    fn gid_show(&self, c: &Caller, dev: Option<&str>, json: bool) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (n, e) in Self::visible(&st, c) {
            if dev.is_some_and(|d| d != n) {
                continue;
            }
            for g in e.dev.gids() {
                out.push(if json {
                    format!(
                        "{{\"ifname\":{},\"port\":1,\"index\":{},\"gid\":{},\"type\":\"RoCE v2\"}}",
                        json_str(n),
                        g.index,
                        json_str(&g.gid.to_string())
                    )
                } else {
                    format!("{n} port 1 index {} gid {} RoCE v2", g.index, g.gid)
                });
            }
        }
        if json {
            format!("[{}]", out.join(","))
        } else {
            out.join("\n")
        }
    }

    fn pkey_show(&self, c: &Caller, dev: Option<&str>, json: bool) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (n, e) in Self::visible(&st, c) {
            if dev.is_some_and(|d| d != n) {
                continue;
            }
            for (i, k) in e.dev.pkeys().iter().enumerate() {
                let member = if k & 0x8000 != 0 { "full" } else { "limited" };
                out.push(if json {
                    format!(
                        "{{\"ifname\":{},\"index\":{i},\"pkey\":\"{k:#06x}\",\"membership\":\"{member}\"}}",
                        json_str(n)
                    )
                } else {
                    format!("{n} port 1 index {i} pkey {k:#06x} {member}")
                });
            }
        }
        if json {
            format!("[{}]", out.join(","))
        } else {
            out.join("\n")
        }
    }

    fn limit_show(&self, c: &Caller, ns: Option<&str>, json: bool) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (name, n) in &st.namespaces {
            if (c.ns != "init" && *name != c.ns) || ns.is_some_and(|x| x != name) {
                continue;
            }
            let cells: Vec<String> = Resource::ALL
                .iter()
                .map(|r| {
                    let l = n.limit(*r).map_or("unlimited".to_string(), |l| l.to_string());
                    if json {
                        format!("{}:{{\"used\":{},\"limit\":{}}}", json_str(r.name()), n.usage(*r), json_str(&l))
                    } else {
                        format!("{} {}/{l}", r.name(), n.usage(*r))
                    }
                })
                .collect();
            let rl = n.rate_limit();
            out.push(if json {
                format!(
                    "{{\"namespace\":{},{},\"jkey\":{}}}",
                    json_str(name),
                    cells.join(","),
                    n.jkey().map_or("null".into(), |j| j.to_string())
                )
            } else {
                format!(
                    "{name}: {} jkey {} rate bytes/s {} msgs/s {}",
                    cells.join(" "),
                    n.jkey().map_or("none".into(), |j| format!("{j:#x}")),
                    rl.bytes_per_sec.map_or("unlimited".into(), |v| v.to_string()),
                    rl.msgs_per_sec.map_or("unlimited".into(), |v| v.to_string())
                )
            });
        }
        if json {
            format!("[{}]", out.join(","))
        } else {
            out.join("\n")
        }
    }

    fn resource_show(&self, c: &Caller, kind: Option<&str>, json: bool) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (_, e) in Self::visible(&st, c) {
            for (k, line) in e.dev.resources() {
                if kind.is_some_and(|x| x != k) {
                    continue;
                }
                out.push(if json {
                    format!("{{\"type\":{},\"line\":{}}}", json_str(k), json_str(&line))
                } else {
                    format!("{k} {line}")
                });
            }
        }
        if json {
            format!("[{}]", out.join(","))
        } else {
            out.join("\n")
        }
    }

    fn statistic(&self, c: &Caller, json: bool) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (n, e) in Self::visible(&st, c) {
            let tree = crate::view::tree(&e.dev.namespace().name);
            let prefix = format!("{n}/ports/1/hw_counters/");
            let counters: Vec<(String, String)> =
                tree.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|c| (c.to_string(), v.clone()))).collect();
            if json {
                let cells: Vec<String> = counters.iter().map(|(k, v)| format!("{}:{v}", json_str(k))).collect();
                out.push(format!("{{\"ifname\":{},\"port\":1,{}}}", json_str(n), cells.join(",")));
            } else {
                let cells: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
                out.push(format!("link {n}/1 {}", cells.join(" ")));
            }
        }
        if json {
            format!("[{}]", out.join(","))
        } else {
            out.join("\n")
        }
    }

    fn audit(&self, c: &Caller) -> String {
        let st = self.lock();
        let mut out = Vec::new();
        for (name, n) in &st.namespaces {
            if c.ns == "init" || *name == c.ns {
                out.extend(n.audit.events().iter().map(|e| e.to_json()));
            }
        }
        out.join("\n")
    }

    /// Names the namespace a peer process is in, by comparing nsfs inodes.
    fn caller_of(&self, stream: &UnixStream) -> Caller {
        let pid = rustix::net::sockopt::socket_peercred(stream).map(|c| c.pid.as_raw_nonzero().get()).ok();
        let ino = |p: &str| std::fs::metadata(p).ok().map(|m| m.ino());
        let theirs = pid.and_then(|p| ino(&format!("/proc/{p}/ns/net")));
        let ours = ino("/proc/self/ns/net");
        if theirs.is_none() || theirs == ours {
            return Caller::host();
        }
        let st = self.lock();
        for name in st.namespaces.keys() {
            if ino(&format!("{}/{name}", crate::backend::netns::NETNS_RUN_DIR)) == theirs {
                return Caller { ns: name.clone(), admin: false };
            }
        }
        Caller { ns: format!("unknown-netns-{}", theirs.unwrap_or(0)), admin: false }
    }

    fn serve_one(&self, mut s: UnixStream) -> io::Result<()> {
        let caller = self.caller_of(&s);
        let mut line = String::new();
        BufReader::new(s.try_clone()?).read_line(&mut line)?;
        let mut args: Vec<String> =
            line.trim_end_matches('\n').split(SEP).filter(|a| !a.is_empty()).map(String::from).collect();
        let json = args.first().is_some_and(|a| a == "--json");
        if json {
            args.remove(0);
        }
        match self.handle(&caller, &args, json) {
            Ok(text) => write!(s, "ok\n{text}"),
            Err(e) => write!(s, "error\n{e}"),
        }
    }
}

/// Runs the daemon on `socket` until the process ends.
pub fn serve(socket: &Path) -> io::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let control = Arc::new(Control::new());
    for s in listener.incoming() {
        let Ok(s) = s else { continue };
        let c = control.clone();
        std::thread::spawn(move || {
            let _ = c.serve_one(s);
        });
    }
    Ok(())
}

/// Sends one command to the daemon; returns (ok, text).
pub fn request(socket: &Path, args: &[String], json: bool) -> io::Result<(bool, String)> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot reach the softrdma daemon at {}: {e}", socket.display()))
    })?;
    let mut line: Vec<String> = Vec::new();
    if json {
        line.push("--json".into());
    }
    line.extend(args.iter().cloned());
    writeln!(s, "{}", line.join(&SEP.to_string()))?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (status, text) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    Ok((status == "ok", text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn commands_configure_and_views_are_scoped() {
        let c = Control::new();
        let host = Caller::host();
        for cmd in [
            "link add ctla0 memory netns ctl-a addr 10.44.0.1/24",
            "link add ctlb0 memory netns ctl-b addr 10.44.0.2/24 mode partition gid ::ffff:10.44.0.9",
            "pkey add ctla0 0x8001",
            "limit set ctl-a qp 4",
            "jkey set ctl-a 7",
            "rate set ctl-b bytes 1000000",
        ] {
            c.handle(&host, &args(cmd), false).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        }
        let a = Caller { ns: "ctl-a".into(), admin: false };
        let dev = c.handle(&a, &args("dev show"), false).unwrap();
        assert!(dev.contains("ctla0") && !dev.contains("ctlb0"), "{dev}");
        let gids = c.handle(&a, &args("gid show"), false).unwrap();
        assert!(
            gids.contains("::ffff:10.44.0.1") && !gids.contains("10.44.0.2") && !gids.contains("10.44.0.9"),
            "{gids}"
        );
        let pk = c.handle(&a, &args("pkey show"), true).unwrap();
        assert!(pk.contains("\"pkey\":\"0x8001\"") && pk.starts_with('['), "{pk}");
        let lim = c.handle(&a, &args("limit show"), false).unwrap();
        assert!(lim.contains("qp 0/4") && lim.contains("jkey 0x7") && !lim.contains("ctl-b"), "{lim}");
        let b = Caller { ns: "ctl-b".into(), admin: false };
        let gb = c.handle(&b, &args("gid show"), false).unwrap();
        assert!(gb.contains("::ffff:10.44.0.9") && !gb.contains("10.44.0.2"), "partition mode grants: {gb}");
        let st = c.handle(&b, &args("statistic"), false).unwrap();
        assert!(st.starts_with("link ctlb0/1") && st.contains("rx_bad_pkey 0") && !st.contains("ctla0"), "{st}");
        // Containers may look but not touch.
        let e = c.handle(&a, &args("limit set ctl-a qp 100"), false).unwrap_err();
        assert!(e.contains("permission denied"), "{e}");
        // Bad input gets a clear error.
        for (cmd, want) in [
            ("link add x memory addr 10.0.0.1", "needs a /prefix"),
            ("limit set ctl-a cows 3", "unknown resource"),
            ("pkey add ctla0 0x12345", "bad 16-bit"),
            ("link add y memory rocev1", "RoCEv1 is refused"),
            ("frobnicate", "unknown command"),
        ] {
            let e = c.handle(&host, &args(cmd), false).unwrap_err();
            assert!(e.contains(want), "{cmd}: {e}");
        }
        c.handle(&host, &args("link del ctla0"), false).unwrap();
        c.handle(&host, &args("link del ctlb0"), false).unwrap();
    }
}
