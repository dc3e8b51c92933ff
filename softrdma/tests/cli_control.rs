//! The management commands end to end: a daemon process, TAP devices in two
//! real network namespaces, and the CLI run from the host and from inside
//! each namespace — where it sees only its own namespace (root; in CI a
//! skip is a failure).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use softrdma::backend::netns::{self, NetNs};
use softrdma::require_root;

const BIN: &str = env!("CARGO_BIN_EXE_softrdma");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(ns: Option<&str>, socket: &str, args: &[&str]) -> (bool, String, String) {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let o = c.args(args).args(["--socket", socket]).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn link_add_and_views_from_inside_namespaces() {
    require_root!();
    let dir = softrdma::testbed::ScratchDir::new("srd-ctl").unwrap();
    let socket = dir.join("ctl.sock").display().to_string();
    let (a, b) =
        (NetNs::create(&netns::unique_name("srca")).unwrap(), NetNs::create(&netns::unique_name("srcb")).unwrap());
    let _d = Daemon(Command::new(BIN).args(["daemon", "--socket", &socket]).spawn().unwrap());
    let t = Instant::now();
    while !std::path::Path::new(&socket).exists() {
        assert!(t.elapsed() < Duration::from_secs(5), "daemon socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (na, nb) = (a.name().to_string(), b.name().to_string());
    for args in [
        vec!["link", "add", "srdA", "netns", &na, "tap", "srdtapa", "addr", "10.45.0.1/24"],
        vec![
            "link",
            "add",
            "srdB",
            "netns",
            &nb,
            "tap",
            "srdtapb",
            "mode",
            "partition",
            "gid",
            "::ffff:10.45.0.9",
            "offload",
            "off",
        ],
        vec!["pkey", "add", "srdA", "0x8001"],
        vec!["limit", "set", &na, "qp", "8"],
    ] {
        let (ok, _, err) = cli(None, &socket, &args);
        assert!(ok, "{args:?}: {err}");
    }
    // The TAP exists in its namespace.
    let links = Command::new("ip").args(["-n", &na, "-o", "link", "show", "srdtapa"]).output().unwrap();
    assert!(links.status.success());
    // The host sees both devices.
    let (ok, out, _) = cli(None, &socket, &["dev", "show"]);
    assert!(ok && out.contains("srdA") && out.contains("srdB"), "{out}");
    // Inside namespace A: only A, in text and JSON.
    let (ok, out, err) = cli(Some(&na), &socket, &["dev", "show"]);
    assert!(ok && out.contains("srdA") && !out.contains("srdB"), "{out}{err}");
    // The TAP's offload as the kernel took it: A writes runs of frames as
    // UDP GSO packets (this kernel has USO on TAPs), B was asked for none.
    assert!(out.contains("offload uso"), "{out}");
    let (_, out, _) = cli(Some(&nb), &socket, &["dev", "show", "--json"]);
    assert!(out.contains("\"offload\":\"off\""), "{out}");
    let (_, gids, _) = cli(Some(&na), &socket, &["gid", "show", "--json"]);
    assert!(gids.contains("::ffff:10.45.0.1") && !gids.contains("10.45.0.9"), "{gids}");
    let (_, pk, _) = cli(Some(&na), &socket, &["pkey", "show"]);
    assert!(pk.contains("0x8001 full"), "{pk}");
    let (_, st, _) = cli(Some(&nb), &socket, &["statistic"]);
    assert!(st.contains("link srdB/1") && !st.contains("srdA"), "{st}");
    let (_, lim, _) = cli(Some(&nb), &socket, &["limit", "show"]);
    assert!(!lim.contains(&na), "B sees nothing of A's limits: {lim}");
    // From inside a namespace the configuration is read-only.
    let (ok, _, err) = cli(Some(&na), &socket, &["limit", "set", &na, "qp", "100"]);
    assert!(!ok && err.contains("permission denied"), "{err}");
    // Bad arguments: a clear error and a non-zero exit.
    let (ok, _, err) = cli(None, &socket, &["link", "add", "srdC", "netns", &na, "tap", "t", "mode", "sideways"]);
    assert!(!ok && err.contains("unknown mode sideways"), "{err}");
    let (ok, _, err) = cli(None, &socket, &["link", "add", "srdC", "netns", &na, "tap", "t", "offload", "maybe"]);
    assert!(!ok && err.contains("unknown offload maybe"), "{err}");
    for n in ["srdA", "srdB"] {
        assert!(cli(None, &socket, &["link", "del", n]).0);
    }
    drop(_d);
    drop((a, b));
}
