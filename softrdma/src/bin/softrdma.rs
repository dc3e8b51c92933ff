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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode { files } => decode(&files),
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
