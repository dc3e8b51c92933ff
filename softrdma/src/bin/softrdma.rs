use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use softrdma::decode::{decode_file, Summary};

/// A userspace soft-RDMA (RoCEv2) device.
#[derive(Parser)]
#[command(name = "softrdma", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one line per RoCE packet of pcap/pcapng captures and check each ICRC.
    ///
    /// Exits 1 if any RoCE packet fails to parse or verify, 2 if a file cannot be read.
    Decode {
        /// Capture files (pcap or pcapng, Ethernet link type).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Two devices, RC and UD traffic of every opcode, data verified.
    ///
    /// As root: two network namespaces joined through a bridge, a TAP in
    /// each; otherwise (or with --fabric memory) the in-memory fabric.
    Demo {
        /// memory or tap (default: tap when run as root, else memory).
        #[arg(long, value_parser = ["memory", "tap"])]
        fabric: Option<String>,
        /// Capture each device's frames to PREFIX-0.pcap and PREFIX-1.pcap.
        #[arg(long, value_name = "PREFIX")]
        pcap: Option<PathBuf>,
    },
    /// rdma-core's ibv_{rc,uc,ud,srq}_pingpong on a softrdma device, wire- and
    /// exchange-compatible with the real tools (see softrdma/src/pingpong.rs).
    Pingpong(Box<softrdma::pingpong::PingpongArgs>),
    /// Run the control daemon that hosts devices and answers the
    /// management commands below on a Unix socket.
    Daemon {
        #[arg(long, default_value = softrdma::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Management in the style of iproute2's `rdma`, answered by the daemon
    /// from the caller's network namespace: `link add NAME netns NS tap TAP
    /// [mode netdev|partition] [addr CIDR]… [gid GID]… [mac MAC]`, `link del
    /// NAME`, `dev show`, `gid show [DEV]`, `pkey add|del DEV PKEY`, `pkey
    /// show`, `jkey set NS JKEY|none`, `limit set NS RES N|unlimited`, `limit
    /// show`, `rate set NS [bytes N] [msgs N]`, `resource show [qp|mr|cq|pd]`,
    /// `statistic`, `audit`. Options anywhere: `--json`, `--socket PATH`.
    #[command(external_subcommand)]
    Rdma(Vec<String>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C in a demo or pingpong on TAPs must not leave its namespaces behind.
    if let Err(e) = softrdma::backend::netns_reaper::delete_on_signals() {
        eprintln!("softrdma: {e}; an interrupted run may leave network namespaces behind");
    }
    match cli.command {
        Command::Decode { files } => decode(&files),
        Command::Demo { fabric, pcap } => demo(fabric.as_deref(), pcap),
        Command::Pingpong(args) => softrdma::pingpong::main(&args),
        Command::Daemon { socket } => match softrdma::control::serve(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("softrdma daemon: {e}");
                ExitCode::from(2)
            }
        },
        Command::Rdma(args) => rdma(args),
    }
}

/// Sends a management command to the daemon and prints its answer.
fn rdma(args: Vec<String>) -> ExitCode {
    const GROUPS: [&str; 10] =
        ["link", "dev", "gid", "pkey", "jkey", "limit", "rate", "resource", "statistic", "audit"];
    let mut json = false;
    let mut socket = PathBuf::from(softrdma::control::DEFAULT_SOCKET);
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" | "-j" => json = true,
            "--socket" => match it.next() {
                Some(p) => socket = PathBuf::from(p),
                None => {
                    eprintln!("softrdma: --socket needs a path");
                    return ExitCode::from(2);
                }
            },
            _ => rest.push(a),
        }
    }
    if !rest.first().is_some_and(|g| GROUPS.contains(&g.as_str())) {
        eprintln!(
            "softrdma: unknown command {:?}; see softrdma --help",
            rest.first().map(String::as_str).unwrap_or("")
        );
        return ExitCode::from(2);
    }
    match softrdma::control::request(&socket, &rest, json) {
        Ok((true, text)) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Ok((false, text)) => {
            eprintln!("softrdma: {text}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("softrdma: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo(fabric: Option<&str>, pcap: Option<PathBuf>) -> ExitCode {
    use softrdma::backend::{memory::Faults, netns};
    use softrdma::testbed::{Testbed, TestbedOptions};
    let opts = TestbedOptions { pcap_prefix: pcap, ..Default::default() };
    let tap = match fabric {
        Some("tap") => true,
        Some(_) => false,
        None => netns::privileged().is_ok(),
    };
    let bed = if tap { Testbed::tap(2, &opts) } else { Testbed::memory(2, Faults::default(), &opts) };
    let bed = match bed {
        Ok(b) => b,
        Err(e) => {
            eprintln!("softrdma demo: cannot set up the {} testbed: {e}", if tap { "TAP" } else { "memory" });
            return ExitCode::from(2);
        }
    };
    let where_ = if tap {
        format!(
            "TAP devices in network namespaces {} and {}",
            bed.netns_of(0).unwrap_or("?"),
            bed.netns_of(1).unwrap_or("?")
        )
    } else {
        "the in-memory fabric".to_string()
    };
    println!("softrdma demo: srd0 (10.99.0.1) and srd1 (10.99.0.2) on {where_}");
    for d in &bed.devices {
        let gids: Vec<String> = d.gids().iter().map(|g| format!("GID[{}] {}", g.index, g.gid)).collect();
        println!("  {}: {}", d.name(), gids.join(", "));
    }
    let ctx = bed.contexts();
    match softrdma::demo::run(&ctx[0], &ctx[1]) {
        Ok(report) => {
            print!("{}", report.render());
            let (dc, ec, qc) = bed.devices[0].counters();
            println!(
                "srd0: {} frames out, {} in, {} retransmitted, {} ICRC errors; all data verified",
                dc.tx_frames, dc.rx_frames, qc.retransmitted_pkts, ec.rx_icrc_err
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("softrdma demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn decode(files: &[PathBuf]) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut sum = Summary::default();
    let mut unreadable = false;
    for f in files {
        if let Err(e) = decode_file(f, &mut out, &mut sum) {
            if let softrdma::capture::CaptureError::Io(io) = &e {
                // `softrdma decode x.pcap | head`: the reader left, nothing to report.
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("softrdma decode: {}: {e}", f.display());
            unreadable = true;
        }
    }
    let _ = writeln!(out, "{}", sum.line());
    if unreadable {
        ExitCode::from(2)
    } else if sum.bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
